//! The built-in broker inside your process (feature `embedded`).
//!
//! The broker listens on a loopback port and the bus reaches it through the
//! AMQP transport — the very code path that talks to RabbitMQ — so moving to
//! a standalone broker or RabbitMQ later changes only the URL.
//!
//! ```no_run
//! # async fn f() -> Result<(), eventbus::BoxError> {
//! let broker = eventbus::embedded::EmbeddedBroker::start("./data/broker").await?;
//! let bus = eventbus::EventBus::new(broker.transport().await?);
//! // … register handlers, start, publish …
//! broker.shutdown().await;
//! # Ok(()) }
//! ```

use std::path::PathBuf;

use eventbus_broker::{Broker, Config};
use eventbus_core::transport::amqp::{AmqpConfig, AmqpTransport};
use eventbus_core::{BoxError, TransportError};

/// A broker running in this process.
#[derive(Debug)]
pub struct EmbeddedBroker {
    broker: Broker,
}

impl EmbeddedBroker {
    /// Starts a broker on `127.0.0.1` (a free port) keeping its data in `data_dir`, with
    /// the management HTTP API on another free loopback port ([`management_url`]).
    ///
    /// [`management_url`]: EmbeddedBroker::management_url
    pub async fn start(data_dir: impl Into<PathBuf>) -> Result<Self, BoxError> {
        let config = Config {
            amqp_listen: ([127, 0, 0, 1], 0).into(),
            management_listen: Some(([127, 0, 0, 1], 0).into()),
            data_dir: data_dir.into(),
            ..Config::default()
        };
        Self::start_with(config).await
    }

    /// Starts a broker with a full configuration.
    pub async fn start_with(config: Config) -> Result<Self, BoxError> {
        let broker = Broker::start(config).await?;
        Ok(Self { broker })
    }

    /// `amqp://guest:guest@127.0.0.1:<port>/%2f` — for any AMQP client.
    pub fn amqp_url(&self) -> String {
        format!("amqp://guest:guest@{}/%2f", self.broker.amqp_addr())
    }

    /// `http://127.0.0.1:<port>` — the management HTTP API (RabbitMQ-compatible, under
    /// `/api/`) and Prometheus metrics (`/metrics`); `None` when disabled.
    pub fn management_url(&self) -> Option<String> {
        self.broker.management_addr().map(|a| format!("http://{a}"))
    }

    /// The broker handle (users, vhosts, limits).
    pub fn broker(&self) -> &Broker {
        &self.broker
    }

    /// An AMQP transport connected to this broker.
    pub async fn transport(&self) -> Result<AmqpTransport, TransportError> {
        AmqpTransport::connect(&self.amqp_url()).await
    }

    /// An AMQP transport with custom settings (its `uri` is replaced).
    pub async fn transport_with(
        &self,
        mut config: AmqpConfig,
    ) -> Result<AmqpTransport, TransportError> {
        config.uri = self.amqp_url();
        AmqpTransport::connect_with(config).await
    }

    /// Stops the broker gracefully (clients get `connection.close` 320).
    pub async fn shutdown(self) {
        self.broker.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::EmbeddedBroker;

    /// The embedded broker serves the management API on its own loopback port.
    #[tokio::test]
    async fn management_url_answers_http() {
        let dir =
            std::env::temp_dir().join(format!("eventbus-embedded-mgmt-{}", std::process::id()));
        let broker = EmbeddedBroker::start(&dir).await.unwrap();
        let url = broker.management_url().expect("management enabled");
        let addr = url.strip_prefix("http://").unwrap();
        assert_ne!(addr, broker.broker().amqp_addr().to_string());
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        // guest:guest
        s.write_all(
            b"GET /api/whoami HTTP/1.1\r\nHost: x\r\nAuthorization: Basic Z3Vlc3Q6Z3Vlc3Q=\r\nConnection: close\r\n\r\n",
        )
        .await
        .unwrap();
        let mut resp = String::new();
        s.read_to_string(&mut resp).await.unwrap();
        assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
        assert!(resp.contains(r#""name":"guest""#), "{resp}");
        broker.shutdown().await;
        let _ = std::fs::remove_dir_all(dir);
    }
}
