//! The in-memory transport passes the conformance kit.

use eventbus_core::testing;
use eventbus_core::MemoryTransport;

#[tokio::test]
async fn memory_transport_conforms() {
    let t = MemoryTransport::new();
    testing::run_conformance(&t).await;
}

#[tokio::test]
async fn closed_transport_refuses_work() {
    use eventbus_core::{Publisher, Subscriber, SubscriptionSpec, TransportError};
    let t = MemoryTransport::new();
    t.close();
    let e = testing::envelope("ev", None, 1);
    assert!(matches!(t.publish(&e).await, Err(TransportError::Closed)));
    assert!(matches!(
        t.subscribe(SubscriptionSpec::new("g", ["ev"])).await,
        Err(TransportError::Closed)
    ));
}

#[tokio::test]
async fn unrouted_events_are_kept_bounded_and_not_delivered_later() {
    use eventbus_core::{Publisher, Subscriber, SubscriptionSpec};
    let t = MemoryTransport::with_limits(1024, 3);
    let event = testing::unique("ev.unrouted");
    let sent: Vec<_> = (0..5).map(|n| testing::envelope(&event, None, n)).collect();
    for e in &sent {
        t.publish(e).await.unwrap();
    }
    let kept: Vec<_> = t.unrouted().iter().map(|e| e.id).collect();
    let newest: Vec<_> = sent[2..].iter().map(|e| e.id).collect();
    assert_eq!(kept, newest, "the newest 3 are kept, oldest dropped first");
    // A group subscribing later does not get them.
    let mut sub = t
        .subscribe(SubscriptionSpec::new("g-late", [event.as_str()]))
        .await
        .unwrap();
    testing::expect_quiet(&mut sub, "late group got unrouted events").await;
    // Routed events are not kept.
    t.publish(&testing::envelope(&event, None, 9))
        .await
        .unwrap();
    testing::expect_delivery(&mut sub, "routed")
        .await
        .ack()
        .await
        .unwrap();
    assert_eq!(t.take_unrouted().len(), 3);
    assert!(t.unrouted().is_empty());
}

#[tokio::test]
async fn partitioned_group_rejects_a_different_partition_count() {
    use eventbus_core::{Subscriber, SubscriptionSpec};
    let t = MemoryTransport::new();
    let spec = SubscriptionSpec::new("g-p", ["ev.p"]).partitions(4);
    t.declare(&spec).await.unwrap();
    t.declare(&spec).await.unwrap();
    assert!(t.declare(&spec.clone().partitions(8)).await.is_err());
    assert!(t
        .declare(&SubscriptionSpec::new("g-p", ["ev.p"]))
        .await
        .is_err());
    assert!(t
        .declare(&SubscriptionSpec::new("g-q", ["ev.p"]).partitions(2000))
        .await
        .is_err());
}

#[tokio::test]
async fn partition_changes_hands_only_after_its_deliveries_are_settled() {
    use eventbus_core::worker::{HashPartitioner, Partitioner};
    use eventbus_core::{Publisher, Subscriber, SubscriptionSpec};
    let t = MemoryTransport::new();
    let spec = SubscriptionSpec::new("g-hand", ["ev.hand"]).partitions(2);
    let mut a = t.subscribe(spec.clone()).await.unwrap();
    assert_eq!(a.owned_partitions(), Some(vec![0, 1]));
    // A key of partition 1: the partition `a` gives up when `b` joins.
    let key = (0..)
        .map(|i| format!("k{i}"))
        .find(|k| HashPartitioner.partition(k, 2) == 1)
        .unwrap();
    t.publish(&testing::envelope("ev.hand", Some(&key), 0))
        .await
        .unwrap();
    t.publish(&testing::envelope("ev.hand", Some(&key), 1))
        .await
        .unwrap();
    let first = testing::expect_delivery(&mut a, "first").await;
    assert_eq!(first.envelope.headers.get("x-test-n"), Some("0"));
    let mut b = t.subscribe(spec.clone()).await.unwrap();
    let owned = testing::await_partition_balance(&[&a, &b], 2).await;
    assert_eq!(owned, vec![vec![0], vec![1]]);
    // `a` still holds key:0, so `b` must not get key:1 yet.
    testing::expect_quiet(&mut b, "b took key:1 while a still held key:0").await;
    testing::expect_quiet(&mut a, "a took from a partition it gave up").await;
    first.ack().await.unwrap();
    let d = testing::expect_delivery(&mut b, "handover").await;
    assert_eq!(d.envelope.headers.get("x-test-n"), Some("1"));
    assert!(!d.redelivered);
    d.ack().await.unwrap();
}
