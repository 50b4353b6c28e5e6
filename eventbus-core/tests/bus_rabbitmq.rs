//! The bus-level conformance suite over AMQP against the real RabbitMQ on
//! 127.0.0.1:5672 (`EVENTBUS_RABBITMQ_URL` to override): every bus a check
//! starts gets its own connection. Fails (never skips) when RabbitMQ is not
//! running.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use eventbus_core::testing::bus::run_bus_conformance;
use eventbus_core::transport::amqp::{AmqpConfig, AmqpTransport};
use eventbus_core::Transport;

fn rabbitmq_url() -> String {
    std::env::var("EVENTBUS_RABBITMQ_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bus_over_amqp_on_rabbitmq_conforms() {
    let opened: Arc<Mutex<Vec<AmqpTransport>>> = Arc::default();
    run_bus_conformance(|| {
        let opened = opened.clone();
        async move {
            let mut config = AmqpConfig::new(rabbitmq_url());
            // Test groups are unique per run; let RabbitMQ remove them afterwards.
            config.queue_expires = Some(Duration::from_secs(60));
            let t = AmqpTransport::connect_with(config)
                .await
                .unwrap_or_else(|e| panic!("RabbitMQ must be running at {}: {e}", rabbitmq_url()));
            opened.lock().unwrap().push(t.clone());
            Arc::new(t) as Arc<dyn Transport>
        }
    })
    .await;
    let opened = std::mem::take(&mut *opened.lock().unwrap());
    for t in opened {
        t.close().await.unwrap();
    }
}
