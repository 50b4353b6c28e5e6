//! Shared by the tests that restart the built-in broker (`bus_reconnect.rs`,
//! `amqp_reconnect.rs`): a port to restart it on and its start.

use std::path::Path;

use eventbus::embedded::EmbeddedBroker;

/// A port free now, to start (and restart) a broker on: it must keep its
/// port across the restart, which port 0 would not.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind a free port")
        .local_addr()
        .expect("local address")
        .port()
}

/// Starts the built-in broker on 127.0.0.1:`port` with its data in `dir`.
pub async fn start_broker(dir: &Path, port: u16) -> EmbeddedBroker {
    let config = eventbus_broker::Config {
        amqp_listen: ([127, 0, 0, 1], port).into(),
        data_dir: dir.to_path_buf(),
        ..Default::default()
    };
    EmbeddedBroker::start_with(config)
        .await
        .unwrap_or_else(|e| panic!("start the broker on port {port}: {e}"))
}
