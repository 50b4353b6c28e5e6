//! One conformance suite for every transport: the AMQP transport against
//! our own broker (embedded, in-process, over real TCP). The same kit runs
//! against the memory transport and RabbitMQ in eventbus-core's tests.

use eventbus::embedded::EmbeddedBroker;
use eventbus::testing;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_transport_on_embedded_broker_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let broker = EmbeddedBroker::start(dir.path())
        .await
        .expect("start broker");
    let transport = broker.transport().await.expect("connect");
    testing::run_conformance(&transport).await;
    transport.close().await.unwrap();
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_topology_on_embedded_broker() {
    let dir = tempfile::tempdir().unwrap();
    let broker = EmbeddedBroker::start(dir.path())
        .await
        .expect("start broker");
    testing::amqp::run_amqp_topology(&broker.amqp_url()).await;
    broker.shutdown().await;
}
