//! Scenarios every outbox/inbox backend runs.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use eventbus_core::outbox::{
    ClaimRequest, ClaimedBatch, Failure, OutboxError, OutboxRecord, OutboxStore, ParkedEvent,
    Relay, RelayConfig,
};
use eventbus_core::testing::{envelope, unique};
use eventbus_core::{
    handler_fn, Backoff, Context, EventBus, HandlerConfig, InboxLayer, MemoryTransport, Publisher,
    RetryPolicy,
};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{distinct, eventually, keys_in_order, Harness, Recorder, Shared};

pub fn fast_config() -> RelayConfig {
    let quick = Backoff {
        initial: Duration::from_millis(5),
        max: Duration::from_millis(20),
        multiplier: 2,
        jitter: false,
    };
    RelayConfig {
        batch_size: 200,
        window: 800,
        poll_interval: Duration::from_millis(20),
        max_attempts: 3,
        row_backoff: quick,
        outage_backoff: quick,
        linger: Duration::from_millis(1),
        publish_timeout: Duration::from_secs(5),
        lease: Duration::from_secs(30),
    }
}

fn relay<H: Harness>(
    h: &H,
    rec: &Arc<Recorder>,
    config: RelayConfig,
) -> eventbus_core::outbox::RelayHandle {
    Relay::new(h.store(), Arc::new(Shared(rec.clone())))
        .with_config(config)
        .spawn()
}

/// Committed events are published; rolled-back ones never exist.
pub async fn commit_publishes_rollback_does_not<H: Harness>(h: &H) {
    let ev = unique("ev");
    let committed: Vec<_> = (0..3).map(|n| envelope(&ev, Some("k"), n)).collect();
    let rolled_back: Vec<_> = (10..12).map(|n| envelope(&ev, Some("k"), n)).collect();
    h.add(&committed, true).await;
    h.add(&rolled_back, false).await;
    assert_eq!(h.business_rows().await, 1, "business write committed once");
    assert_eq!(h.store().backlog().await.unwrap(), 3);
    let rec = Recorder::new();
    let r = relay(h, &rec, fast_config());
    eventually("3 published", || rec.len() >= 3).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    r.shutdown().await;
    assert_eq!(
        rec.ids(),
        committed.iter().map(|e| e.id).collect::<Vec<_>>()
    );
    let published = rec.published.lock().unwrap().clone();
    for (p, c) in published.iter().zip(&committed) {
        // Databases keep microseconds (SQLite: the full RFC 3339 text).
        let drift = (p.occurred_at - c.occurred_at)
            .num_microseconds()
            .unwrap()
            .abs();
        assert!(
            drift < 1,
            "occurred_at {} vs {}",
            p.occurred_at,
            c.occurred_at
        );
        let mut p = p.clone();
        p.occurred_at = c.occurred_at;
        assert_eq!(&p, c, "envelopes round-trip unchanged");
    }
    assert_eq!(h.store().backlog().await.unwrap(), 0, "sent rows deleted");
}

/// `Outbox::add` on a typed event stores a traceparent and keeps insert order.
pub async fn typed_add_keeps_order_and_trace<H: Harness>(h: &H) {
    let ids = h.add_events(5, "acct-1").await;
    let rec = Recorder::new();
    let r = relay(h, &rec, fast_config());
    eventually("5 published", || rec.len() >= 5).await;
    r.shutdown().await;
    assert_eq!(rec.ids(), ids);
    for e in rec.published.lock().unwrap().iter() {
        let tp = e
            .headers
            .traceparent()
            .expect("traceparent captured at add time");
        assert!(tp.starts_with("00-") && tp.len() == 55, "{tp}");
        assert_eq!(e.key.as_deref(), Some("acct-1"));
    }
}

/// A refused row is retried, then parked; it blocks only its own key; it can
/// be retried and discarded through the API.
pub async fn parked_row_blocks_only_its_key<H: Harness>(h: &H) {
    let ev = unique("ev");
    let poison = envelope(&ev, Some("a"), 2).with_header("x-poison", "1");
    let rows = vec![
        envelope(&ev, Some("a"), 1),
        poison.clone(),
        envelope(&ev, Some("a"), 3),
        envelope(&ev, Some("b"), 1),
        envelope(&ev, Some("b"), 2),
        envelope(&ev, None, 1),
    ];
    h.add(&rows, true).await;
    let rec = Recorder::new();
    let r = relay(h, &rec, fast_config());
    let store = h.store();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let parked = loop {
        let p = store.parked(10).await.unwrap();
        if !p.is_empty() {
            break p;
        }
        assert!(tokio::time::Instant::now() < deadline, "row never parked");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(parked.len(), 1);
    assert_eq!(parked[0].id, poison.id);
    assert_eq!(parked[0].key.as_deref(), Some("a"));
    assert_eq!(parked[0].attempts, 3, "parked after max_attempts");
    assert!(parked[0].last_error.as_deref().unwrap().contains("poison"));
    eventually("other keys flowed", || rec.len() >= 4).await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    let order = keys_in_order(&rec.published.lock().unwrap());
    assert_eq!(order["a"], vec![1], "a3 waits behind parked a2");
    assert_eq!(order["b"], vec![1, 2]);
    assert_eq!(order[""], vec![1]);
    assert_eq!(store.backlog().await.unwrap(), 2);

    // Retry: still refused → parked again.
    assert!(store.retry_parked(poison.id).await.unwrap());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while store.parked(10).await.unwrap().first().map(|p| p.attempts) != Some(3) {
        assert!(tokio::time::Instant::now() < deadline, "not parked again");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Discard: a3 flows.
    assert!(store.discard_parked(poison.id).await.unwrap());
    assert!(!store.discard_parked(poison.id).await.unwrap());
    eventually("a3 published", || rec.len() >= 5).await;
    r.shutdown().await;
    let order = keys_in_order(&rec.published.lock().unwrap());
    assert_eq!(order["a"], vec![1, 3]);
    assert_eq!(store.backlog().await.unwrap(), 0);
}

/// While the transport is down nothing is lost or parked; it resumes.
pub async fn transport_outage_backs_off_and_resumes<H: Harness>(h: &H) {
    let ev = unique("ev");
    let rows: Vec<_> = (0..20).map(|n| envelope(&ev, Some("k"), n)).collect();
    let rec = Recorder::new();
    rec.down.store(true, Ordering::SeqCst);
    h.add(&rows, true).await;
    let r = relay(h, &rec, fast_config());
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        rec.attempts.load(Ordering::Relaxed) >= 3,
        "relay kept retrying"
    );
    assert_eq!(rec.len(), 0);
    assert!(
        h.store().parked(10).await.unwrap().is_empty(),
        "an outage parks nothing"
    );
    assert_eq!(h.store().backlog().await.unwrap(), 20);
    rec.down.store(false, Ordering::SeqCst);
    eventually("all published after the outage", || rec.len() >= 20).await;
    r.shutdown().await;
    assert_eq!(rec.ids(), rows.iter().map(|e| e.id).collect::<Vec<_>>());
}

/// Wraps a real store; the first non-empty batch's completion fails after
/// the publish and rolls back, as a deadlock or lock timeout would.
struct FailFirstCompletion {
    inner: Arc<dyn OutboxStore>,
    failed: AtomicBool,
}

struct RolledBack(Box<dyn ClaimedBatch>);

#[async_trait]
impl ClaimedBatch for RolledBack {
    fn records(&self) -> &[OutboxRecord] {
        self.0.records()
    }
    async fn complete(self: Box<Self>, _: &[i64], _: &[Failure]) -> Result<(), OutboxError> {
        drop(self.0); // rollback / claim released
        Err(OutboxError::Database(eventbus_core::sqlx::Error::Protocol(
            "simulated deadlock while completing".into(),
        )))
    }
}

#[async_trait]
impl OutboxStore for FailFirstCompletion {
    async fn claim(
        &self,
        req: &ClaimRequest,
    ) -> Result<Option<Box<dyn ClaimedBatch>>, OutboxError> {
        let batch = self.inner.claim(req).await?;
        Ok(batch.map(|b| {
            if !b.records().is_empty() && !self.failed.swap(true, Ordering::SeqCst) {
                Box::new(RolledBack(b)) as Box<dyn ClaimedBatch>
            } else {
                b
            }
        }))
    }
    async fn migrate(&self) -> Result<(), OutboxError> {
        self.inner.migrate().await
    }
    async fn backlog(&self) -> Result<u64, OutboxError> {
        self.inner.backlog().await
    }
    async fn parked(&self, limit: u32) -> Result<Vec<ParkedEvent>, OutboxError> {
        self.inner.parked(limit).await
    }
    async fn retry_parked(&self, id: Uuid) -> Result<bool, OutboxError> {
        self.inner.retry_parked(id).await
    }
    async fn discard_parked(&self, id: Uuid) -> Result<bool, OutboxError> {
        self.inner.discard_parked(id).await
    }
    async fn delete_published(&self, seqs: &[i64]) -> Result<(), OutboxError> {
        self.inner.delete_published(seqs).await
    }
}

/// A batch whose completion fails after its rows were published is not
/// published again: the relay deletes the published rows in a fresh
/// transaction.
pub async fn failed_completion_does_not_publish_again<H: Harness>(h: &H) {
    let ev = unique("ev");
    let rows: Vec<_> = (0..40)
        .map(|n| envelope(&ev, Some(&format!("k{}", n % 4)), n))
        .collect();
    h.add(&rows, true).await;
    let store = Arc::new(FailFirstCompletion {
        inner: h.store(),
        failed: AtomicBool::new(false),
    });
    let rec = Recorder::new();
    let r = Relay::new(store.clone(), Arc::new(Shared(rec.clone())))
        .with_config(fast_config())
        .spawn();
    eventually("all published", || distinct(&rec.ids()) >= rows.len()).await;
    // give a wrongly repeated batch time to show up
    tokio::time::sleep(Duration::from_millis(300)).await;
    r.shutdown().await;
    assert!(
        store.failed.load(Ordering::SeqCst),
        "the failure was injected"
    );
    assert_eq!(
        rec.ids(),
        rows.iter().map(|e| e.id).collect::<Vec<_>>(),
        "each row published once, in order"
    );
    assert_eq!(
        h.store().backlog().await.unwrap(),
        0,
        "published rows deleted"
    );
}

/// Several relays on one table: per-key order intact, nothing missing.
pub async fn relays_keep_per_key_order<H: Harness>(
    h: Arc<H>,
    relays: usize,
    keys: usize,
    per_key: usize,
    chunk: usize,
) {
    let ev = unique("ev");
    let rec = Recorder::new();
    let mut config = fast_config();
    config.batch_size = 500;
    config.window = 2000;
    let handles: Vec<_> = (0..relays)
        .map(|_| relay(&*h, &rec, config.clone()))
        .collect();
    // Writers insert while the relays run: events round-robin over keys.
    let total = keys * per_key;
    let mut all = Vec::with_capacity(total);
    for n in 0..per_key {
        for k in 0..keys {
            all.push(envelope(&ev, Some(&format!("key-{k}")), n as u64));
        }
    }
    let writers = 4;
    let per_writer: Vec<Vec<_>> = {
        // Each key's events must come from one writer (one aggregate, one
        // writer at a time), so split by key.
        let mut v = vec![Vec::new(); writers];
        for e in &all {
            let k: usize = e.key.as_deref().unwrap()[4..].parse().unwrap();
            v[k % writers].push(e.clone());
        }
        v
    };
    let mut tasks = Vec::new();
    for part in per_writer {
        let h = h.clone();
        tasks.push(tokio::spawn(async move {
            for c in part.chunks(chunk) {
                h.add(c, true).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
    // Count distinct ids: duplicates (at-least-once) must not end the wait early.
    while distinct(&rec.ids()) < total {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} of {total} published",
            distinct(&rec.ids())
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for r in handles {
        r.shutdown().await;
    }
    let published = rec.published.lock().unwrap().clone();
    let ids: Vec<_> = published.iter().map(|e| e.id).collect();
    assert_eq!(distinct(&ids), total, "nothing missing");
    // At-least-once: a batch whose delete fails after its publish (e.g. a
    // lock conflict on MariaDB, seen about once in 15 runs) has its rows
    // deleted again by the relay; only if that fails too are they published
    // again. Duplicates are allowed (the inbox absorbs them) but must stay
    // rare and keep per-key order: the first publication of each event is
    // checked for order below.
    let duplicates = published.len() - total;
    if duplicates > 0 {
        eprintln!("{duplicates} duplicate publications (at-least-once)");
    }
    assert!(
        duplicates <= total / 50,
        "{duplicates} duplicates without crashes: too many"
    );
    let mut seen = HashSet::new();
    let first: Vec<eventbus_core::Envelope> = published
        .iter()
        .filter(|e| seen.insert(e.id))
        .cloned()
        .collect();
    let order = keys_in_order(&first);
    assert_eq!(order.len(), keys);
    for (k, ns) in order {
        let expected: Vec<u64> = (0..per_key as u64).collect();
        assert_eq!(ns, expected, "order of key {k}");
    }
    assert_eq!(h.store().backlog().await.unwrap(), 0);
}

/// The explicit inbox API: first delivery handled, duplicate skipped,
/// failure rolls back effect and inbox row together.
pub async fn inbox_explicit<H: Harness>(h: &H) {
    let id = eventbus_core::event::new_message_id();
    let group = unique("g");
    assert!(h.handle_explicit(id, &group, false).await);
    assert!(
        !h.handle_explicit(id, &group, false).await,
        "duplicate skipped"
    );
    assert_eq!(h.effects(id).await, 1);
    assert!(
        h.handle_explicit(id, &unique("other"), false).await,
        "other group handles it too"
    );
    assert_eq!(h.effects(id).await, 2);
    assert!(h.inbox().contains(id, &group).await.unwrap());

    let id2 = eventbus_core::event::new_message_id();
    assert!(
        h.handle_explicit(id2, &group, true).await,
        "failing attempt"
    );
    assert_eq!(h.effects(id2).await, 0, "effect rolled back");
    assert!(
        !h.inbox().contains(id2, &group).await.unwrap(),
        "inbox row rolled back"
    );
    assert!(
        h.handle_explicit(id2, &group, false).await,
        "retry handles it"
    );
    assert_eq!(h.effects(id2).await, 1);
}

/// The inbox layer in a real pipeline: duplicates deliveries and a failing
/// first attempt still leave exactly one effect per message.
pub async fn inbox_layer_in_pipeline<H: Harness>(h: Arc<H>, layer: InboxLayer) {
    let t = MemoryTransport::new();
    let group = unique("g");
    let event: &'static str = Box::leak(unique("ev").into_boxed_str());
    let mut config = HandlerConfig::new(&group);
    config.retry = RetryPolicy {
        max_attempts: 3,
        backoff: Backoff {
            initial: Duration::from_millis(1),
            max: Duration::from_millis(2),
            multiplier: 2,
            jitter: false,
        },
    };
    let calls = Arc::new(AtomicU32::new(0));
    let (hh, c) = (h.clone(), calls.clone());
    let mut bus = EventBus::new(t.clone());
    bus.register_with(
        handler_fn(config, vec![event], move |cx: Context| {
            let (h, c) = (hh.clone(), c.clone());
            async move {
                c.fetch_add(1, Ordering::SeqCst);
                h.write_effect_in_layer_tx(cx.message_id()).await?;
                if cx.envelope().headers.get("x-fail-first").is_some() && cx.attempt() == 1 {
                    return Err("fails after writing (test)".into());
                }
                Ok(())
            }
        }),
        |p| p.inbox(layer),
    );
    let running = bus.start().await.unwrap();
    let once = envelope(event, Some("k"), 1);
    let flaky = envelope(event, Some("k"), 2).with_header("x-fail-first", "1");
    for e in [&once, &once, &flaky, &once, &flaky] {
        t.publish(e).await.unwrap();
    }
    eventually("handled", || calls.load(Ordering::SeqCst) >= 3).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let s = t.queue_stats(&group).unwrap();
        if s.ready == 0 && s.unacked == 0 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    running.shutdown().await;
    assert_eq!(h.effects(once.id).await, 1, "duplicates skipped");
    assert_eq!(h.effects(flaky.id).await, 1, "failed attempt rolled back");
    assert_eq!(
        calls.load(Ordering::SeqCst),
        3,
        "handler ran for first deliveries and the retry only"
    );
}

/// Pruning removes old rows in batches and keeps recent ones.
pub async fn inbox_pruning<H: Harness>(h: &H) {
    let group = unique("g");
    for _ in 0..5 {
        assert!(
            h.handle_explicit(eventbus_core::event::new_message_id(), &group, false)
                .await
        );
    }
    h.age_inbox(Duration::from_secs(2 * 24 * 3600)).await;
    for _ in 0..2 {
        assert!(
            h.handle_explicit(eventbus_core::event::new_message_id(), &group, false)
                .await
        );
    }
    let store = h.inbox();
    let mut deleted = 0;
    loop {
        let n = store
            .prune_batch(Duration::from_secs(24 * 3600), 2)
            .await
            .unwrap();
        assert!(n <= 2, "batches are bounded");
        deleted += n;
        if n < 2 {
            break;
        }
    }
    assert_eq!(deleted, 5);
    assert_eq!(h.inbox_rows().await, 2);
}

/// Keeps the token type in use for crash tests that share this module.
pub fn _token() -> CancellationToken {
    CancellationToken::new()
}
