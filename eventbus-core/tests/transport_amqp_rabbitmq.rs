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

/// Dead letters to a vanished queue fail, unrouted events are kept, an old
/// exchange without alternate-exchange is accepted, a dead instance's
/// partitions are taken over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_topology_on_rabbitmq() {
    testing::amqp::run_amqp_topology(&rabbitmq_url()).await;
}

/// Partitioned groups on RabbitMQ need the consistent-hash plugin; where a
/// declaration is refused, `subscribe` names the cause (checked by hand
/// with the plugin disabled: "x-consistent-hash exchange type not
/// available: enable rabbitmq_consistent_hash_exchange").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitioned_subscribe_declares_the_hash_exchange() {
    use eventbus_core::{Subscriber, SubscriptionSpec};
    let t = connect().await;
    let group = testing::unique("g-hash");
    let sub = t
        .subscribe(SubscriptionSpec::new(&group, ["ev.hash"]).partitions(2))
        .await
        .unwrap_or_else(|e| panic!("enable rabbitmq_consistent_hash_exchange (.ci/run does): {e}"));
    drop(sub);
    t.close().await.unwrap();
}
