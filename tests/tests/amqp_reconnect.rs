//! The AMQP transport survives a broker restart: publishing reconnects and
//! subscriptions re-open their consumers by themselves.

mod support;

use std::time::Duration;

use eventbus::testing::{envelope, expect_delivery, unique};
use eventbus::{Publisher, Subscriber, SubscriptionSpec, TransportError};
use support::{free_port, start_broker};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transport_recovers_from_a_broker_restart() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let broker = start_broker(dir.path(), port).await;
    let transport = broker.transport().await.unwrap();
    let (group, event) = (unique("g"), unique("ev"));
    let mut sub = transport
        .subscribe(SubscriptionSpec::new(&group, [event.as_str()]))
        .await
        .unwrap();
    let before = envelope(&event, Some("k"), 1);
    transport.publish(&before).await.unwrap();
    let d = expect_delivery(&mut sub, "before restart").await;
    assert_eq!(d.envelope.id, before.id);
    d.ack().await.unwrap();

    broker.shutdown().await;
    let err = transport.publish(&envelope(&event, None, 2)).await;
    assert!(
        matches!(err, Err(TransportError::Unavailable(_))),
        "publishing while the broker is down must fail as Unavailable, got {err:?}"
    );
    let broker = start_broker(dir.path(), port).await;

    // The publisher reconnects on the next attempt; retry like the relay does.
    let after = envelope(&event, Some("k"), 3);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        match transport.publish(&after).await {
            Ok(()) => break,
            Err(e) if tokio::time::Instant::now() < deadline => {
                eprintln!("publish after restart: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("publisher did not reconnect: {e}"),
        }
    }
    let d = expect_delivery(&mut sub, "after restart (consumer re-opened)").await;
    assert_eq!(d.envelope.id, after.id);
    d.ack().await.unwrap();
    transport.close().await.unwrap();
    broker.shutdown().await;
}
