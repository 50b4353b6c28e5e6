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
mod harness;
pub mod process;

pub use bus::run_bus_conformance;
pub use harness::{Attempt, RunningTestBus, TestBus};

use std::collections::{HashMap, HashSet};
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
    dead_letter_kept_without_subscriber(t).await;
    declare_provisions_before_consuming(t).await;
    publish_batch_delivers_all(t).await;
    partitioned_group_shares_partitions(t).await;
    pending_counts_unsettled_deliveries(t, 1).await;
    pending_counts_unsettled_deliveries(t, 4).await;
}

/// [`Subscriber::pending`](crate::Subscriber::pending), where the transport
/// can tell, counts a group's deliveries until they are settled, on a plain
/// (`partitions` 1) or a partitioned group.
pub async fn pending_counts_unsettled_deliveries<T: Transport + ?Sized>(t: &T, partitions: u16) {
    let (group, event) = (unique("g-pending"), unique("ev.pending"));
    let spec = SubscriptionSpec::new(&group, [event.as_str()])
        .prefetch(16)
        .partitions(partitions);
    let mut sub = t.subscribe(spec).await.expect("subscribe");
    if partitions > 1 {
        await_partition_balance(&[&sub], partitions).await;
    }
    let pending = || async { t.pending(&group).await.expect("pending") };
    if pending().await.is_none() {
        return;
    }
    assert_eq!(pending().await, Some(0), "pending of a fresh group");
    for n in 0..3 {
        publish(t, &envelope(&event, Some(&format!("k{n}")), n)).await;
    }
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(expect_delivery(&mut sub, "pending: delivery").await);
    }
    assert_eq!(pending().await, Some(3), "three delivered, none settled");
    held.pop().unwrap().ack().await.expect("ack");
    assert_eq!(pending().await, Some(2), "one of three acked");
    for d in held {
        d.ack().await.expect("ack");
    }
    assert_eq!(pending().await, Some(0), "all acked");
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

/// A group whose dead letters nobody consumes yet still keeps them: the
/// dead-letter destination exists as soon as the group does.
pub async fn dead_letter_kept_without_subscriber<T: Transport + ?Sized>(t: &T) {
    let (group, event) = (unique("g-dlq-nosub"), unique("ev.dlq-nosub"));
    let mut sub = subscribe(t, &group, &[&event], 16).await;
    let e = envelope(&event, Some("k"), 1);
    publish(t, &e).await;
    let d = expect_delivery(&mut sub, "dlq without subscriber: delivery").await;
    let dead = (*d.envelope)
        .clone()
        .with_header(crate::header::DEAD_LETTER_ERROR, "boom");
    d.dead_letter(dead.clone())
        .await
        .expect("dead_letter without a dead-letter subscriber");
    expect_quiet(&mut sub, "dlq without subscriber: original came back").await;
    let mut dlq = t
        .subscribe_dead_letters(&group, 16)
        .await
        .expect("subscribe dead letters");
    let got = expect_delivery(
        &mut dlq,
        "dead letter lost: nothing in the dead-letter queue",
    )
    .await;
    assert_eq!(
        *got.envelope, dead,
        "dead letter differs from what was sent"
    );
    got.ack().await.expect("ack dlq");
}

/// `declare` binds a group before anything consumes: what is published
/// in between waits for the first subscription.
pub async fn declare_provisions_before_consuming<T: Transport + ?Sized>(t: &T) {
    let (group, event) = (unique("g-declare"), unique("ev.declare"));
    let spec = SubscriptionSpec::new(&group, [event.as_str()]).prefetch(16);
    t.declare(&spec).await.expect("declare");
    let e = envelope(&event, Some("k"), 1);
    publish(t, &e).await;
    let mut sub = t.subscribe(spec).await.expect("subscribe");
    let d = expect_delivery(&mut sub, "declared group: event published before subscribe").await;
    assert_eq!(d.envelope.id, e.id);
    d.ack().await.expect("ack");
}

/// Waits until the subscriptions own disjoint partitions covering all
/// `partitions`, each at most `ceil(partitions / subs)`; returns them.
pub async fn await_partition_balance(subs: &[&Subscription], partitions: u16) -> Vec<Vec<u16>> {
    let mut watches: Vec<_> = subs
        .iter()
        .map(|s| s.partition_watch().expect("a partitioned subscription"))
        .collect();
    let share = usize::from(partitions).div_ceil(subs.len());
    let balanced = |owned: &[Vec<u16>]| {
        let mut all: Vec<u16> = owned.iter().flatten().copied().collect();
        all.sort_unstable();
        all == (0..partitions).collect::<Vec<_>>() && owned.iter().all(|o| o.len() <= share)
    };
    let deadline = tokio::time::Instant::now() + DELIVERY_TIMEOUT * 2;
    loop {
        let owned: Vec<Vec<u16>> = watches
            .iter_mut()
            .map(|w| w.borrow_and_update().clone())
            .collect();
        if balanced(&owned) {
            return owned;
        }
        let changed =
            futures_util::future::select_all(watches.iter_mut().map(|w| Box::pin(w.changed())));
        if tokio::time::timeout_at(deadline, changed).await.is_err() {
            panic!(
                "partitions not balanced over {} subscriptions: {owned:?}",
                subs.len()
            );
        }
    }
}

/// The next delivery from any of `subs`, with the index of its subscription.
async fn next_of(subs: &mut [Subscription], what: &str) -> (usize, Delivery) {
    let next = futures_util::future::select_all(subs.iter_mut().map(|s| Box::pin(s.next())));
    match tokio::time::timeout(DELIVERY_TIMEOUT, next).await {
        Ok((Some(Ok(d)), i, _)) => (i, d),
        Ok((Some(Err(e)), i, _)) => panic!("{what}: subscription {i} error: {e}"),
        Ok((None, i, _)) => panic!("{what}: subscription {i} ended"),
        Err(_) => panic!("{what}: no delivery within {DELIVERY_TIMEOUT:?}"),
    }
}

fn n_of(d: &Delivery) -> u64 {
    d.envelope
        .headers
        .get("x-test-n")
        .expect("x-test-n")
        .parse()
        .expect("n")
}

/// A partitioned group's subscriptions share its partitions: each is owned
/// by exactly one, a key's events all go to one subscription, in order;
/// when a subscription goes away, the others take its partitions over and
/// get its unsettled deliveries first, in order, flagged redelivered.
pub async fn partitioned_group_shares_partitions<T: Transport + ?Sized>(t: &T) {
    const P: u16 = 6;
    const KEYS: usize = 30;
    let (group, event) = (unique("g-part"), unique("ev.part"));
    let spec = SubscriptionSpec::new(&group, [event.as_str()])
        .prefetch(64)
        .partitions(P);
    let mut subs = Vec::new();
    for _ in 0..3 {
        subs.push(
            t.subscribe(spec.clone())
                .await
                .expect("subscribe partitioned"),
        );
    }
    let owned = await_partition_balance(&subs.iter().collect::<Vec<_>>(), P).await;
    assert!(
        owned.iter().all(|o| o.len() == 2),
        "unfair shares: {owned:?}"
    );

    // Round 1: one event per key; each key lands on exactly one subscription.
    let keys: Vec<String> = (0..KEYS).map(|k| format!("key-{k}")).collect();
    for k in &keys {
        publish(t, &envelope(&event, Some(k), 0)).await;
    }
    let mut home: HashMap<String, usize> = HashMap::new();
    for _ in 0..KEYS {
        let (i, d) = next_of(&mut subs, "partitioned: round 1").await;
        let key = d.envelope.key.clone().expect("keyed");
        assert!(
            home.insert(key.clone(), i).is_none(),
            "{key} delivered twice"
        );
        d.ack().await.expect("ack");
    }
    for (i, s) in subs.iter().enumerate() {
        assert!(
            home.values().any(|h| *h == i),
            "subscription {i} got no key; owned {:?}",
            s.owned_partitions()
        );
    }

    // Round 2: keys stay home, in order. Subscription 2 settles n = 1 and
    // holds n = 2..=4 of its keys, then goes away.
    for n in 1..=4 {
        for k in &keys {
            publish(t, &envelope(&event, Some(k), n)).await;
        }
    }
    let mine: usize = home.values().filter(|h| **h == 2).count();
    let mut last: HashMap<String, u64> = keys.iter().map(|k| (k.clone(), 0)).collect();
    let mut held = Vec::new();
    let mut remaining = KEYS * 4;
    while remaining > 0 {
        let (i, d) = next_of(&mut subs, "partitioned: round 2").await;
        remaining -= 1;
        let key = d.envelope.key.clone().expect("keyed");
        assert_eq!(
            home[&key], i,
            "{key} moved to subscription {i} while its home was alive"
        );
        let n = n_of(&d);
        assert_eq!(n, last[&key] + 1, "{key}: {n} after {}", last[&key]);
        last.insert(key, n);
        if i == 2 && n >= 2 {
            held.push(d);
        } else {
            d.ack().await.expect("ack");
        }
    }
    assert_eq!(held.len(), mine * 3);
    drop(held);
    let gone = subs.pop().expect("three");
    drop(gone);
    let owned = await_partition_balance(&subs.iter().collect::<Vec<_>>(), P).await;
    assert!(
        owned.iter().all(|o| o.len() == 3),
        "unfair shares after a subscription left: {owned:?}"
    );
    let mut next: HashMap<String, u64> = home
        .iter()
        .filter(|(_, h)| **h == 2)
        .map(|(k, _)| (k.clone(), 2))
        .collect();
    for _ in 0..mine * 3 {
        let (_, d) = next_of(&mut subs, "partitioned: takeover").await;
        let key = d.envelope.key.clone().expect("keyed");
        let want = next
            .get_mut(&key)
            .unwrap_or_else(|| panic!("{key} redelivered but was settled"));
        assert_eq!(n_of(&d), *want, "{key}: taken over out of order");
        assert!(
            d.redelivered,
            "{key}: released delivery not flagged redelivered"
        );
        *want += 1;
        d.ack().await.expect("ack");
    }
    for s in &mut subs {
        expect_quiet(s, "partitioned: after takeover").await;
    }
}

/// Checks of the AMQP transport's topology, against a live broker (our
/// built-in one or RabbitMQ), by its URI.
#[cfg(feature = "amqp")]
pub mod amqp {
    use std::time::Duration;

    use futures_util::StreamExt;
    use lapin::options::{
        BasicAckOptions, BasicConsumeOptions, ExchangeDeclareOptions, QueueDeclareOptions,
        QueueDeleteOptions,
    };
    use lapin::types::FieldTable;
    use lapin::{Connection, ConnectionProperties, ExchangeKind};

    use super::*;
    use crate::transport::amqp::{AmqpConfig, AmqpTransport};
    use crate::transport::{dead_letter_name, Publisher, Subscriber};

    /// Settings with exchanges of their own (so that a shared broker's
    /// existing `eventbus` exchange does not matter) and expiring queues.
    pub fn isolated_config(uri: &str) -> AmqpConfig {
        let mut config = AmqpConfig::new(uri);
        config.exchange = unique("x-eb");
        config.dead_letter_exchange = format!("{}.dead-letter", config.exchange);
        config.unrouted_exchange = format!("{}.unrouted", config.exchange);
        config.queue_expires = Some(Duration::from_secs(60));
        config.rebalance_interval = Duration::from_millis(200);
        config
    }

    async fn connect(config: AmqpConfig) -> AmqpTransport {
        AmqpTransport::connect_with(config)
            .await
            .unwrap_or_else(|e| panic!("connect: {e}"))
    }

    async fn raw(uri: &str) -> Connection {
        Connection::connect(uri, ConnectionProperties::default())
            .await
            .expect("raw connection")
    }

    /// Runs every AMQP topology check.
    pub async fn run_amqp_topology(uri: &str) {
        dead_letter_to_a_deleted_queue_fails_and_keeps_the_original(uri).await;
        unrouted_events_land_in_the_unrouted_queue(uri).await;
        existing_exchange_without_alternate_exchange_is_accepted(uri).await;
        dead_instance_partitions_are_taken_over(uri).await;
        partitions_share_keys_evenly(uri).await;
        close_during_a_rebalance_succeeds(uri).await;
    }

    /// `close` right after a partitioned subscription is dropped, while its
    /// balancer may still be opening channels: the connection closes and
    /// `close` says so (a late `channel.open-ok` is not an error of it).
    /// Repeated with the close at different points of the balancer's round.
    pub async fn close_during_a_rebalance_succeeds(uri: &str) {
        for round in 0..40u64 {
            let mut config = isolated_config(uri);
            config.rebalance_interval = Duration::from_millis(1);
            let t = connect(config).await;
            let (group, event) = (unique("g-close"), unique("ev.close"));
            let sub = t
                .subscribe(SubscriptionSpec::new(&group, [event.as_str()]).partitions(8))
                .await
                .expect("subscribe");
            // Let the balancer get to a different point of its round each time.
            for _ in 0..round {
                tokio::task::yield_now().await;
            }
            drop(sub);
            t.close()
                .await
                .unwrap_or_else(|e| panic!("round {round}: close during a rebalance: {e}"));
        }
    }

    /// 1000 keys over 8 partitions: no partition queue gets more than
    /// twice its fair share (the binding weight, see
    /// [`PARTITION_POINTS`](crate::transport::amqp::PARTITION_POINTS)).
    pub async fn partitions_share_keys_evenly(uri: &str) {
        const P: u16 = 8;
        const KEYS: usize = 1000;
        let t = connect(isolated_config(uri)).await;
        let (group, event) = (unique("g-spread"), unique("ev.spread"));
        let spec = SubscriptionSpec::new(&group, [event.as_str()]).partitions(P);
        t.declare(&spec).await.expect("declare");
        let sent: Vec<Envelope> = (0..KEYS)
            .map(|k| envelope(&event, Some(&format!("k{k}")), 0))
            .collect();
        t.publish_batch(&sent).await.expect("publish");
        let admin = raw(uri).await;
        let ch = admin.create_channel().await.unwrap();
        let mut counts = Vec::new();
        for i in 0..P {
            let q = ch
                .queue_declare(
                    crate::transport::partition_name(&group, i).as_str().into(),
                    QueueDeclareOptions {
                        passive: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await
                .expect("inspect partition");
            counts.push(q.message_count() as usize);
        }
        assert_eq!(counts.iter().sum::<usize>(), KEYS, "routed: {counts:?}");
        let fair = KEYS / usize::from(P);
        assert!(
            counts.iter().all(|c| *c <= 2 * fair),
            "keys per partition {counts:?}: more than twice the fair share {fair}"
        );
        for i in 0..P {
            let _ = ch
                .queue_delete(
                    crate::transport::partition_name(&group, i).as_str().into(),
                    QueueDeleteOptions::default(),
                )
                .await;
        }
        let _ = admin.close(200, "bye".into()).await;
        t.close().await.unwrap();
    }

    /// The dead-letter queue deleted behind the transport's back: the dead
    /// letter is returned unroutable, `dead_letter` fails, and the original
    /// is redelivered rather than lost.
    pub async fn dead_letter_to_a_deleted_queue_fails_and_keeps_the_original(uri: &str) {
        let t = connect(isolated_config(uri)).await;
        let (group, event) = (unique("g-dlq-gone"), unique("ev.dlq-gone"));
        let mut sub = subscribe(&t, &group, &[&event], 16).await;
        let admin = raw(uri).await;
        let ch = admin.create_channel().await.unwrap();
        ch.queue_delete(
            dead_letter_name(&group).as_str().into(),
            QueueDeleteOptions::default(),
        )
        .await
        .expect("delete the dead-letter queue");
        let e = envelope(&event, Some("k"), 1);
        publish(&t, &e).await;
        let d = expect_delivery(&mut sub, "dlq gone: delivery").await;
        let dead = (*d.envelope).clone();
        let r = d.dead_letter(dead).await;
        assert!(
            r.is_err(),
            "dead letter to a missing queue reported stored: lost"
        );
        let again = expect_delivery(&mut sub, "dlq gone: original redelivered").await;
        assert_eq!(again.envelope.id, e.id);
        assert!(again.redelivered);
        again.ack().await.expect("ack");
        let _ = admin.close(200, "bye".into()).await;
        t.close().await.unwrap();
    }

    /// An event no group is bound to goes to the unrouted queue.
    pub async fn unrouted_events_land_in_the_unrouted_queue(uri: &str) {
        let config = isolated_config(uri);
        let unrouted = config.unrouted_exchange.clone();
        let t = connect(config).await;
        let e = envelope(&unique("ev.nobody"), None, 1);
        publish(&t, &e).await;
        let admin = raw(uri).await;
        let ch = admin.create_channel().await.unwrap();
        let mut consumer = ch
            .basic_consume(
                unrouted.as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("consume the unrouted queue");
        let d = tokio::time::timeout(DELIVERY_TIMEOUT, consumer.next())
            .await
            .expect("nothing in the unrouted queue: the event was dropped")
            .expect("consumer ended")
            .expect("delivery");
        assert_eq!(
            d.properties.message_id().as_ref().map(|m| m.as_str()),
            Some(e.id.to_string().as_str())
        );
        d.acker.ack(BasicAckOptions::default()).await.unwrap();
        let _ = admin.close(200, "bye".into()).await;
        t.close().await.unwrap();
    }

    /// A deployment whose bus exchange was declared without the alternate
    /// exchange still connects (the transport cannot change it; it warns).
    pub async fn existing_exchange_without_alternate_exchange_is_accepted(uri: &str) {
        let config = isolated_config(uri);
        let admin = raw(uri).await;
        let ch = admin.create_channel().await.unwrap();
        ch.exchange_declare(
            config.exchange.as_str().into(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                auto_delete: false,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
        let t = AmqpTransport::connect_with(config)
            .await
            .expect("connect to an existing exchange without alternate-exchange");
        let (group, event) = (unique("g-old-x"), unique("ev.old-x"));
        let mut sub = subscribe(&t, &group, &[&event], 16).await;
        publish(&t, &envelope(&event, None, 1)).await;
        expect_delivery(&mut sub, "old exchange")
            .await
            .ack()
            .await
            .unwrap();
        let _ = admin.close(200, "bye".into()).await;
        t.close().await.unwrap();
    }

    /// An instance whose connection dies (no orderly release) loses its
    /// partitions to the others, which get its unacked deliveries first.
    pub async fn dead_instance_partitions_are_taken_over(uri: &str) {
        const P: u16 = 4;
        let config = isolated_config(uri);
        let a = connect(config.clone()).await;
        let b = connect(config).await;
        let (group, event) = (unique("g-dead"), unique("ev.dead"));
        let spec = SubscriptionSpec::new(&group, [event.as_str()])
            .prefetch(64)
            .partitions(P);
        let mut sa = a.subscribe(spec.clone()).await.expect("subscribe a");
        let mut sb = b.subscribe(spec).await.expect("subscribe b");
        await_partition_balance(&[&sa, &sb], P).await;
        let keys: Vec<String> = (0..20).map(|k| format!("key-{k}")).collect();
        for n in 0..3 {
            for k in &keys {
                publish(&a, &envelope(&event, Some(k), n)).await;
            }
        }
        // `b` holds everything it got; `a` acks.
        let mut held: HashMap<String, Vec<u64>> = HashMap::new();
        let mut on_b = 0;
        let mut unsettled = Vec::new();
        for _ in 0..keys.len() * 3 {
            tokio::select! {
                d = expect_delivery(&mut sa, "dead: a") => d.ack().await.expect("ack"),
                d = expect_delivery(&mut sb, "dead: b") => {
                    held.entry(d.envelope.key.clone().unwrap()).or_default().push(n_of(&d));
                    on_b += 1;
                    unsettled.push(d);
                }
            }
        }
        assert!(on_b > 0, "b got nothing");
        // b dies: its connection closes without releasing anything.
        b.close().await.unwrap();
        drop(sb);
        drop(unsettled);
        let mut got: HashMap<String, Vec<u64>> = HashMap::new();
        for _ in 0..on_b {
            let d = expect_delivery(&mut sa, "dead: takeover").await;
            assert!(d.redelivered, "taken-over delivery not flagged redelivered");
            got.entry(d.envelope.key.clone().unwrap())
                .or_default()
                .push(n_of(&d));
            d.ack().await.expect("ack");
        }
        assert_eq!(got, held, "b's unacked deliveries not redelivered in order");
        await_partition_balance(&[&sa], P).await;
        expect_quiet(&mut sa, "dead: after takeover").await;
        a.close().await.unwrap();
    }
}
