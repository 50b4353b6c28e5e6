//! A declaration the broker refuses makes `EventBus::start` fail with an
//! error naming what was refused and the broker's reply, and leaves nothing
//! consuming: on the built-in broker, as a user whose `configure`
//! permission excludes one group's queue, or a partitioned group's
//! consistent-hash exchange.

use std::time::Duration;

use eventbus::embedded::EmbeddedBroker;
use eventbus::testing::{envelope, unique};
use eventbus::transport::amqp::AmqpTransport;
use eventbus::{handler_fn, EventBus, HandlerConfig, Publisher};
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};

const USER: &str = "limited";

/// The broker with user `limited` allowed to configure only names matching
/// `configure` (and to read and write everything).
async fn broker_with_limited_user(dir: &std::path::Path, configure: &str) -> EmbeddedBroker {
    let broker = EmbeddedBroker::start(dir).await.expect("start broker");
    let admin = broker.broker().admin();
    admin.add_user(USER, "secret", &[]).expect("add user");
    admin
        .set_permissions(USER, "/", configure, ".*", ".*")
        .expect("set permissions");
    broker
}

fn limited_url(broker: &EmbeddedBroker) -> String {
    broker
        .amqp_url()
        .replace("guest:guest@", &format!("{USER}:secret@"))
}

/// Ready messages and consumers of `queue` (as guest).
async fn queue_counts(broker: &EmbeddedBroker, queue: &str) -> (u32, u32) {
    let conn = Connection::connect(&broker.amqp_url(), ConnectionProperties::default())
        .await
        .expect("admin connection");
    let ch = conn.create_channel().await.unwrap();
    let q = ch
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap_or_else(|e| panic!("inspect {queue}: {e}"));
    let _ = conn.close(200, "bye".into()).await;
    (q.message_count(), q.consumer_count())
}

fn handler(group: &str, event: &'static str, partitions: u16) -> impl eventbus::Handler {
    let mut config = HandlerConfig::new(group);
    config.partitions = partitions;
    handler_fn(config, vec![event], |_cx| async {
        panic!("nothing may be consumed when start failed")
    })
}

/// Starts a bus with `allowed`'s handler and then `refused`'s, expects the
/// start to fail, and returns its error text.
async fn start_fails(
    url: &str,
    allowed: &str,
    refused: (&str, u16),
    event: &'static str,
) -> String {
    let transport = AmqpTransport::connect(url)
        .await
        .expect("connect as limited");
    let mut bus = EventBus::new(transport.clone());
    bus.register(handler(allowed, event, 1));
    bus.register(handler(refused.0, event, refused.1));
    let err = match tokio::time::timeout(Duration::from_secs(30), bus.start())
        .await
        .expect("start neither failed nor succeeded within 30 s")
    {
        Ok(_) => panic!("start succeeded although the broker refused {}", refused.0),
        Err(e) => e.to_string(),
    };
    transport.close().await.unwrap();
    err
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_queue_fails_start_with_the_queue_and_the_reply() {
    let dir = tempfile::tempdir().unwrap();
    let allowed = unique("ok");
    let refused = unique("denied");
    let event: &'static str = unique("ev.refused").leak();
    let broker = broker_with_limited_user(dir.path(), "^(eventbus.*|ok-.*)$").await;
    let err = start_fails(&limited_url(&broker), &allowed, (&refused, 1), event).await;
    assert!(
        err.contains(&format!("cannot subscribe group `{refused}`")),
        "error does not name the group: {err}"
    );
    assert!(
        err.contains(&format!(
            "the broker refused to declare queue '{refused}.dead-letter'"
        )),
        "error does not name the refused queue: {err}"
    );
    assert!(
        err.contains("ACCESS_REFUSED") && err.contains(USER),
        "error does not carry the broker's reply: {err}"
    );
    // The allowed group was declared but nothing consumes it: what is
    // published to it stays there.
    let publisher = broker.transport().await.unwrap();
    publisher
        .publish(&envelope(event, Some("k"), 1))
        .await
        .unwrap();
    assert_eq!(queue_counts(&broker, &allowed).await, (1, 0));
    publisher.close().await.unwrap();
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_partition_exchange_fails_start_with_the_exchange_and_the_reply() {
    let dir = tempfile::tempdir().unwrap();
    let allowed = unique("ok");
    let group = unique("part");
    let event: &'static str = unique("ev.refused").leak();
    // Every queue of the partitioned group, not its exchange `<group>.partitions`.
    let configure = format!(r"^(eventbus.*|ok-.*|{group}\.(p[0-9]+|members|dead-letter))$");
    let broker = broker_with_limited_user(dir.path(), &configure).await;
    let err = start_fails(&limited_url(&broker), &allowed, (&group, 4), event).await;
    let exchange = format!("{group}.partitions");
    assert!(
        err.contains(&format!(
            "the broker refused to declare exchange '{exchange}'"
        )),
        "error does not name the refused exchange: {err}"
    );
    assert!(
        err.contains("ACCESS_REFUSED") && err.contains(USER),
        "error does not carry the broker's reply: {err}"
    );
    let publisher = broker.transport().await.unwrap();
    publisher
        .publish(&envelope(event, Some("k"), 1))
        .await
        .unwrap();
    assert_eq!(queue_counts(&broker, &allowed).await, (1, 0));
    publisher.close().await.unwrap();
    broker.shutdown().await;
}
