//! The bus-level conformance suite over AMQP against our own broker
//! (embedded, in-process, port 0, over real TCP): every bus a check starts
//! gets its own connection. The same suite runs on the memory transport
//! and on RabbitMQ in eventbus-core's tests.

use std::sync::{Arc, Mutex};

use eventbus::embedded::EmbeddedBroker;
use eventbus::testing::bus::run_bus_conformance;
use eventbus::transport::amqp::{AmqpConfig, AmqpTransport};
use eventbus::Transport;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bus_over_amqp_on_embedded_broker_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let broker = EmbeddedBroker::start(dir.path())
        .await
        .expect("start broker");
    let opened: Arc<Mutex<Vec<AmqpTransport>>> = Arc::default();
    run_bus_conformance(|| {
        let (opened, broker) = (opened.clone(), &broker);
        async move {
            let t = broker
                .transport_with(AmqpConfig::new(""))
                .await
                .expect("connect to the embedded broker");
            opened.lock().unwrap().push(t.clone());
            Arc::new(t) as Arc<dyn Transport>
        }
    })
    .await;
    let opened = std::mem::take(&mut *opened.lock().unwrap());
    for t in opened {
        t.close().await.unwrap();
    }
    broker.shutdown().await;
}
