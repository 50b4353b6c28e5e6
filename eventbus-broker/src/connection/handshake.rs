//! The connection handshake: protocol header, start/start-ok (SASL), tune/tune-ok, open.

use amq_protocol::protocol::{connection, AMQPClass};
use amq_protocol::types::{AMQPValue, FieldTable, LongString};

use crate::auth::sasl;

/// Where the handshake is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionStep {
    /// Waiting for the 8-byte protocol header.
    ProtocolHeader,
    /// `connection.start` sent, waiting for `start-ok`.
    StartOk,
    /// `connection.tune` sent, waiting for `tune-ok`.
    TuneOk,
    /// Waiting for `connection.open`.
    Open,
    /// Open: normal operation.
    Running,
    /// `connection.close` sent, waiting for `close-ok`.
    Closing,
}

/// The server properties RabbitMQ sends, including the capabilities clients check.
pub fn server_properties() -> FieldTable {
    let mut caps = FieldTable::default();
    for c in [
        "publisher_confirms",
        "exchange_exchange_bindings",
        "basic.nack",
        "consumer_cancel_notify",
        "connection.blocked",
        "consumer_priorities",
        "authentication_failure_close",
        "per_consumer_qos",
        "direct_reply_to",
    ] {
        caps.insert(c.into(), AMQPValue::Boolean(true));
    }
    let mut t = FieldTable::default();
    t.insert("capabilities".into(), AMQPValue::FieldTable(caps));
    let s = |v: &str| AMQPValue::LongString(v.into());
    t.insert("product".into(), s("eventbus-broker"));
    t.insert("version".into(), s(env!("CARGO_PKG_VERSION")));
    t.insert("platform".into(), s("Rust"));
    t.insert("cluster_name".into(), s("eventbus-broker@localhost"));
    t.insert("copyright".into(), s("eventbus authors"));
    t.insert("information".into(), s("Licensed under MIT OR Apache-2.0"));
    t
}

/// The `connection.start` method.
pub fn start() -> AMQPClass {
    AMQPClass::Connection(connection::AMQPMethod::Start(connection::Start {
        version_major: 0,
        version_minor: 9,
        server_properties: server_properties(),
        mechanisms: LongString::from(sasl::MECHANISMS),
        locales: LongString::from("en_US"),
    }))
}

/// Does the client advertise `capability` as true in its `client_properties`?
pub fn client_capability(props: &FieldTable, capability: &str) -> bool {
    props
        .inner()
        .get("capabilities")
        .and_then(|c| c.as_field_table())
        .and_then(|c| c.inner().get(capability))
        .and_then(|v| v.as_bool())
        .unwrap_or(false)
}

/// Negotiate a tune value: 0 means "no limit" on either side.
pub fn negotiate<T: Ord + Copy + Default + PartialEq>(server: T, client: T) -> T {
    let zero = T::default();
    if client == zero {
        server
    } else if server == zero {
        client
    } else {
        server.min(client)
    }
}
