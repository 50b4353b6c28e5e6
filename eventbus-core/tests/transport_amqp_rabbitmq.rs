//! The AMQP transport against the real RabbitMQ on 127.0.0.1:5672 passes
//! the conformance kit. Fails (never skips) when RabbitMQ is not running.

use std::time::Duration;

use eventbus_core::testing;
use eventbus_core::transport::amqp::{AmqpConfig, AmqpTransport};

fn rabbitmq_url() -> String {
    std::env::var("EVENTBUS_RABBITMQ_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

async fn connect() -> AmqpTransport {
    let mut config = AmqpConfig::new(rabbitmq_url());
    // Test groups are unique per run; let RabbitMQ remove them afterwards.
    config.queue_expires = Some(Duration::from_secs(60));
    AmqpTransport::connect_with(config)
        .await
        .unwrap_or_else(|e| panic!("RabbitMQ must be running at {}: {e}", rabbitmq_url()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_transport_on_rabbitmq_conforms() {
    let t = connect().await;
    testing::run_conformance(&t).await;
    t.close().await.unwrap();
}
