//! The transport conformance kit (feature `test-util`).
//!
//! Every transport runs the same checks against a live instance, so the
//! memory transport, AMQP (our broker and RabbitMQ) and NATS behave alike:
//!
//! ```ignore
//! #[tokio::test]
//! async fn memory_transport_conforms() {
//!     eventbus_core::testing::run_conformance(&MemoryTransport::new()).await;
//! }
//! ```
//!
//! Each check uses fresh, unique group and event names, so it can run
//! against a shared broker repeatedly. A failing check panics with a message
//! naming the guarantee that was broken.

pub mod bus;
pub use bus::run_bus_conformance;

use std::collections::HashSet;
use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;

use crate::event::JSON_CONTENT_TYPE as JSON;
use crate::transport::{Delivery, Subscription, SubscriptionSpec, Transport};
use crate::{Envelope, Headers};

/// How long a check waits for a delivery that must come.
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a check waits to be sure a delivery does *not* come.
pub const QUIET_PERIOD: Duration = Duration::from_millis(300);

/// A unique name for this run: `prefix-<uuid>`.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", crate::event::new_message_id().simple())
}

/// A test envelope for event `name` with key `key` and payload `{"n": n}`.
pub fn envelope(name: &str, key: Option<&str>, n: u64) -> Envelope {
    let mut headers = Headers::new();
    headers.insert("x-test-n", n.to_string());
    Envelope {
        id: crate::event::new_message_id(),
        name: name.to_owned().into(),
        version: 1,
        key: key.map(str::to_owned),
        headers,
        occurred_at: Utc::now(),
        content_type: JSON.into(),
        payload: Bytes::from(format!("{{\"n\":{n}}}")),
    }
}

/// The next delivery, or panic after [`DELIVERY_TIMEOUT`].
pub async fn expect_delivery(sub: &mut Subscription, what: &str) -> Delivery {
    match tokio::time::timeout(DELIVERY_TIMEOUT, sub.next()).await {
        Ok(Some(Ok(d))) => d,
        Ok(Some(Err(e))) => panic!("{what}: subscription error: {e}"),
        Ok(None) => panic!("{what}: subscription ended"),
        Err(_) => panic!("{what}: no delivery within {DELIVERY_TIMEOUT:?}"),
    }
}

/// Panics if a delivery arrives within [`QUIET_PERIOD`].
pub async fn expect_quiet(sub: &mut Subscription, what: &str) {
    if let Ok(Some(Ok(d))) = tokio::time::timeout(QUIET_PERIOD, sub.next()).await {
        panic!("{what}: unexpected delivery {:?}", d.envelope);
    }
}

async fn subscribe<T: Transport + ?Sized>(
    t: &T,
    group: &str,
    events: &[&str],
    prefetch: u16,
) -> Subscription {
    t.subscribe(SubscriptionSpec::new(group, events.iter().copied()).prefetch(prefetch))
        .await
        .unwrap_or_else(|e| panic!("subscribe {group}: {e}"))
}

async fn publish<T: Transport + ?Sized>(t: &T, env: &Envelope) {
    t.publish(env)
        .await
        .unwrap_or_else(|e| panic!("publish {}: {e}", env.name));
}

/// Runs every check.
pub async fn run_conformance<T: Transport + ?Sized>(t: &T) {
    envelope_round_trip(t).await;
    delivers_in_publish_order(t).await;
    fans_out_across_groups(t).await;
    consumers_of_a_group_compete(t).await;
    routes_only_subscribed_events(t).await;
    nack_requeue_redelivers(t).await;
    dropped_subscription_releases_unacked(t).await;
    prefetch_bounds_unacked(t).await;
    dead_letter_moves_message(t).await;
    publish_batch_delivers_all(t).await;
}

/// Every envelope field survives the trip unchanged.
pub async fn envelope_round_trip<T: Transport + ?Sized>(t: &T) {
    let (group, event) = (unique("g-roundtrip"), unique("ev.roundtrip"));
    let mut sub = subscribe(t, &group, &[&event], 16).await;
    let mut sent = envelope(&event, Some("key-1"), 1);
    sent.headers.insert(
        "traceparent",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    );
    sent.headers.insert("custom", "value with spaces");
    sent.version = 3;
    let unkeyed = envelope(&event, None, 2);
    publish(t, &sent).await;
    publish(t, &unkeyed).await;
    let d = expect_delivery(&mut sub, "round trip").await;
    assert_eq!(*d.envelope, sent, "envelope changed in transit");
    assert!(!d.redelivered, "first delivery flagged redelivered");
    d.ack().await.expect("ack");
    let d = expect_delivery(&mut sub, "round trip unkeyed").await;
    assert_eq!(*d.envelope, unkeyed, "unkeyed envelope changed in transit");
    d.ack().await.expect("ack");
}

/// One group receives messages in publish order.
pub async fn delivers_in_publish_order<T: Transport + ?Sized>(t: &T) {
    let (group, event) = (unique("g-order"), unique("ev.order"));
    let mut sub = subscribe(t, &group, &[&event], 64).await;
    let sent: Vec<Envelope> = (0..100).map(|n| envelope(&event, Some("k"), n)).collect();
    for e in &sent {
        publish(t, e).await;
    }
    for (i, e) in sent.iter().enumerate() {
        let d = expect_delivery(&mut sub, "in order").await;
        assert_eq!(d.envelope.id, e.id, "message {i} out of order");
        d.ack().await.expect("ack");
    }
    expect_quiet(&mut sub, "after all acked").await;
}

/// Every group gets every event it subscribed to.
pub async fn fans_out_across_groups<T: Transport + ?Sized>(t: &T) {
    let event = unique("ev.fanout");
    let (g1, g2) = (unique("g-fan1"), unique("g-fan2"));
    let mut s1 = subscribe(t, &g1, &[&event], 16).await;
    let mut s2 = subscribe(t, &g2, &[&event], 16).await;
    let sent: Vec<Envelope> = (0..5).map(|n| envelope(&event, None, n)).collect();
    for e in &sent {
        publish(t, e).await;
    }
    for sub in [&mut s1, &mut s2] {
        for e in &sent {
            let d = expect_delivery(sub, "fan-out").await;
            assert_eq!(d.envelope.id, e.id);
            d.ack().await.expect("ack");
        }
    }
}

/// Two consumers of one group share its messages: each message goes to one.
pub async fn consumers_of_a_group_compete<T: Transport + ?Sized>(t: &T) {
    let (group, event) = (unique("g-compete"), unique("ev.compete"));
    let mut a = subscribe(t, &group, &[&event], 1).await;
    let mut b = subscribe(t, &group, &[&event], 1).await;
    let sent: Vec<Envelope> = (0..20).map(|n| envelope(&event, None, n)).collect();
    for e in &sent {
        publish(t, e).await;
    }
    // With prefetch 1, while `a` holds its first delivery unacked, the next
    // one must go to `b`.
    let first = expect_delivery(&mut a, "compete: a").await;
    let second = expect_delivery(&mut b, "compete: b").await;
    let mut seen = HashSet::new();
    assert!(seen.insert(first.envelope.id));
    assert!(
        seen.insert(second.envelope.id),
        "both consumers got the same message"
    );
    first.ack().await.expect("ack");
    second.ack().await.expect("ack");
    while seen.len() < sent.len() {
        let d = tokio::select! {
            d = expect_delivery(&mut a, "compete: rest") => d,
            d = expect_delivery(&mut b, "compete: rest") => d,
        };
        assert!(
            seen.insert(d.envelope.id),
            "message delivered twice to the group"
        );
        d.ack().await.expect("ack");
    }
    expect_quiet(&mut a, "compete: a after all").await;
    expect_quiet(&mut b, "compete: b after all").await;
}

/// A group does not get events it did not subscribe to.
pub async fn routes_only_subscribed_events<T: Transport + ?Sized>(t: &T) {
    let (group, wanted, other) = (unique("g-route"), unique("ev.wanted"), unique("ev.other"));
    let mut sub = subscribe(t, &group, &[&wanted], 16).await;
    publish(t, &envelope(&other, None, 1)).await;
    let w = envelope(&wanted, None, 2);
    publish(t, &w).await;
    let d = expect_delivery(&mut sub, "routing").await;
    assert_eq!(
        d.envelope.id, w.id,
        "got an event the group did not subscribe to"
    );
    d.ack().await.expect("ack");
    expect_quiet(&mut sub, "routing").await;
}

/// `nack(requeue)` brings the message back, flagged redelivered.
pub async fn nack_requeue_redelivers<T: Transport + ?Sized>(t: &T) {
    let (group, event) = (unique("g-nack"), unique("ev.nack"));
    let mut sub = subscribe(t, &group, &[&event], 16).await;
    let e = envelope(&event, Some("k"), 1);
    publish(t, &e).await;
    let d = expect_delivery(&mut sub, "nack: first").await;
    assert_eq!(d.envelope.id, e.id);
    d.nack(true).await.expect("nack");
    let d = expect_delivery(&mut sub, "nack: redelivery").await;
    assert_eq!(d.envelope.id, e.id, "a different message came back");
    assert!(d.redelivered, "redelivery not flagged");
    d.ack().await.expect("ack");
    expect_quiet(&mut sub, "nack: after ack").await;
}

/// Unacked deliveries of a dropped subscription go to the next consumer.
pub async fn dropped_subscription_releases_unacked<T: Transport + ?Sized>(t: &T) {
    let (group, event) = (unique("g-drop"), unique("ev.drop"));
    let mut sub = subscribe(t, &group, &[&event], 16).await;
    let sent: Vec<Envelope> = (0..3).map(|n| envelope(&event, Some("k"), n)).collect();
    for e in &sent {
        publish(t, e).await;
    }
    let held = expect_delivery(&mut sub, "drop: held").await;
    assert_eq!(held.envelope.id, sent[0].id);
    drop(held);
    drop(sub);
    let mut sub = subscribe(t, &group, &[&event], 16).await;
    for (i, e) in sent.iter().enumerate() {
        let d = expect_delivery(&mut sub, "drop: after resubscribe").await;
        assert_eq!(
            d.envelope.id, e.id,
            "message {i} lost or reordered after consumer went away"
        );
        if i == 0 {
            assert!(d.redelivered, "released delivery not flagged redelivered");
        }
        d.ack().await.expect("ack");
    }
}

/// No more than `prefetch` deliveries are outstanding.
pub async fn prefetch_bounds_unacked<T: Transport + ?Sized>(t: &T) {
    let (group, event) = (unique("g-prefetch"), unique("ev.prefetch"));
    let mut sub = subscribe(t, &group, &[&event], 2).await;
    for n in 0..5 {
        publish(t, &envelope(&event, None, n)).await;
    }
    let d1 = expect_delivery(&mut sub, "prefetch 1").await;
    let d2 = expect_delivery(&mut sub, "prefetch 2").await;
    expect_quiet(&mut sub, "prefetch exceeded").await;
    d1.ack().await.expect("ack");
    let d3 = expect_delivery(&mut sub, "prefetch after ack").await;
    d2.ack().await.expect("ack");
    d3.ack().await.expect("ack");
    for _ in 0..2 {
        expect_delivery(&mut sub, "prefetch rest")
            .await
            .ack()
            .await
            .expect("ack");
    }
}

/// A dead-lettered message lands on the group's dead-letter destination,
/// with its headers, and is gone from the group's queue.
pub async fn dead_letter_moves_message<T: Transport + ?Sized>(t: &T) {
    let (group, event) = (unique("g-dlq"), unique("ev.dlq"));
    let mut sub = subscribe(t, &group, &[&event], 16).await;
    let mut dlq = t
        .subscribe_dead_letters(&group, 16)
        .await
        .expect("subscribe dead letters");
    let e = envelope(&event, Some("k"), 1);
    publish(t, &e).await;
    let d = expect_delivery(&mut sub, "dlq: delivery").await;
    let dead = (*d.envelope)
        .clone()
        .with_header(crate::header::DEAD_LETTER_ERROR, "boom");
    d.dead_letter(dead.clone()).await.expect("dead_letter");
    let got = expect_delivery(&mut dlq, "dlq: dead letter").await;
    assert_eq!(
        *got.envelope, dead,
        "dead letter differs from what was sent"
    );
    got.ack().await.expect("ack dlq");
    expect_quiet(&mut sub, "dlq: original must not come back").await;
}

/// `publish_batch` delivers every message, in order.
pub async fn publish_batch_delivers_all<T: Transport + ?Sized>(t: &T) {
    let (group, event) = (unique("g-batch"), unique("ev.batch"));
    let mut sub = subscribe(t, &group, &[&event], 256).await;
    let sent: Vec<Envelope> = (0..200).map(|n| envelope(&event, Some("k"), n)).collect();
    t.publish_batch(&sent).await.expect("publish_batch");
    for (i, e) in sent.iter().enumerate() {
        let d = expect_delivery(&mut sub, "batch").await;
        assert_eq!(
            d.envelope.id, e.id,
            "batch message {i} missing or out of order"
        );
        d.ack().await.expect("ack");
    }
}
