//! Test support: a broker on 127.0.0.1:0 with a temporary data dir, and lapin helpers.

#![allow(dead_code)]

use std::time::Duration;

use eventbus_broker::{Broker, Config};
pub use futures_util::StreamExt;
pub use lapin::options::*;
pub use lapin::types::{AMQPValue, FieldTable, ShortString};
pub use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};

/// A running test broker; keeps its data dir alive.
pub struct TestBroker {
    pub broker: Broker,
    pub dir: tempfile::TempDir,
}

impl TestBroker {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(f: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config {
            amqp_listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: dir.path().to_path_buf(),
            ..Config::default()
        };
        f(&mut config);
        let broker = Broker::start(config).await.unwrap();
        Self { broker, dir }
    }

    pub fn uri(&self) -> String {
        format!("amqp://guest:guest@{}/%2f", self.broker.amqp_addr())
    }

    pub fn uri_for(&self, user: &str, pass: &str, vhost: &str) -> String {
        let v = if vhost == "/" {
            "%2f".to_owned()
        } else {
            vhost.to_owned()
        };
        format!("amqp://{user}:{pass}@{}/{v}", self.broker.amqp_addr())
    }

    pub async fn connect(&self) -> Connection {
        Connection::connect(&self.uri(), ConnectionProperties::default())
            .await
            .unwrap()
    }

    pub async fn channel(&self) -> (Connection, Channel) {
        let c = self.connect().await;
        let ch = c.create_channel().await.unwrap();
        (c, ch)
    }
}

pub fn ss(s: &str) -> ShortString {
    s.into()
}

pub async fn declare(ch: &Channel, name: &str) -> String {
    ch.queue_declare(
        ss(name),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap()
    .name()
    .to_string()
}

pub async fn publish(ch: &Channel, exchange: &str, rk: &str, body: &[u8]) {
    ch.basic_publish(
        ss(exchange),
        ss(rk),
        BasicPublishOptions::default(),
        body,
        BasicProperties::default(),
    )
    .await
    .unwrap();
}

pub async fn publish_props(
    ch: &Channel,
    exchange: &str,
    rk: &str,
    body: &[u8],
    props: BasicProperties,
) {
    ch.basic_publish(
        ss(exchange),
        ss(rk),
        BasicPublishOptions::default(),
        body,
        props,
    )
    .await
    .unwrap();
}

/// basic.get with no-ack; body as string.
pub async fn get(ch: &Channel, q: &str) -> Option<String> {
    ch.basic_get(ss(q), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .map(|m| String::from_utf8(m.delivery.data).unwrap())
}

/// Poll basic.get until a message arrives (publishes are asynchronous without confirms).
pub async fn get_wait(ch: &Channel, q: &str) -> Option<String> {
    for _ in 0..100 {
        if let Some(m) = get(ch, q).await {
            return Some(m);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None
}

/// Drain all available messages: publishes without confirms are asynchronous, so keep polling
/// until the queue has stayed empty for a while (robust on a loaded CI machine).
pub async fn drain(ch: &Channel, q: &str) -> Vec<String> {
    // a round trip on the channel: the broker handles a connection's frames in order, so every
    // publish sent before it on this channel has been routed once it returns
    ch.exchange_declare(
        ss("amq.direct"),
        ExchangeKind::Direct,
        ExchangeDeclareOptions {
            passive: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    let mut v = Vec::new();
    let mut idle_since = std::time::Instant::now();
    loop {
        match get(ch, q).await {
            Some(m) => {
                v.push(m);
                idle_since = std::time::Instant::now();
            }
            None if idle_since.elapsed() > Duration::from_millis(200) => return v,
            None => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

/// The AMQP reply code in a lapin error, if it is a protocol error.
pub fn reply_code(e: &lapin::Error) -> Option<u16> {
    match e.kind() {
        lapin::ErrorKind::ProtocolError(a) => Some(a.get_id()),
        _ => None,
    }
}

pub fn table(pairs: &[(&str, AMQPValue)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in pairs {
        t.insert((*k).into(), v.clone());
    }
    t
}

pub fn lstr(s: &str) -> AMQPValue {
    AMQPValue::LongString(s.into())
}

pub async fn timeout<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(10), f)
        .await
        .expect("timed out")
}

/// Ready messages in `q` (a passive declare).
pub async fn count(ch: &Channel, q: &str) -> u32 {
    ch.queue_declare(
        ss(q),
        QueueDeclareOptions {
            passive: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap()
    .message_count()
}
