//! Shared by the outbox/inbox tests: a recording publisher and the
//! database-independent scenarios every backend runs.
#![allow(dead_code, unused_macros)]

pub mod scenarios;

/// The scenarios every database runs, as `#[tokio::test]`s over harness
/// type `$h` (which has `async fn new()` and an `inbox: Inbox<_>` field).
macro_rules! database_scenarios {
    ($h:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn commit_publishes_rollback_does_not() {
            scenarios::commit_publishes_rollback_does_not(&$h::new().await).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn typed_add_keeps_order_and_trace() {
            scenarios::typed_add_keeps_order_and_trace(&$h::new().await).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn parked_row_blocks_only_its_key() {
            scenarios::parked_row_blocks_only_its_key(&$h::new().await).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn transport_outage_backs_off_and_resumes() {
            scenarios::transport_outage_backs_off_and_resumes(&$h::new().await).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn failed_completion_does_not_publish_again() {
            scenarios::failed_completion_does_not_publish_again(&$h::new().await).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn inbox_explicit_api() {
            scenarios::inbox_explicit(&$h::new().await).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn inbox_layer_in_pipeline() {
            let h = Arc::new($h::new().await);
            let layer = h.inbox.layer();
            scenarios::inbox_layer_in_pipeline(h, layer).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn inbox_pruning_in_batches() {
            scenarios::inbox_pruning(&$h::new().await).await;
        }
    };
}
#[allow(unused_imports)]
pub(crate) use database_scenarios;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use eventbus_core::inbox::InboxStore;
use eventbus_core::outbox::OutboxStore;
use eventbus_core::{Envelope, Publisher, TransportError};
use uuid::Uuid;

/// A publisher that records what it confirmed, can be "down", and refuses
/// envelopes carrying the header `x-poison`.
#[derive(Default)]
pub struct Recorder {
    pub published: Mutex<Vec<Envelope>>,
    pub down: AtomicBool,
    pub attempts: AtomicU32,
}

impl Recorder {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }
    pub fn ids(&self) -> Vec<Uuid> {
        self.published
            .lock()
            .unwrap()
            .iter()
            .map(|e| e.id)
            .collect()
    }
    pub fn len(&self) -> usize {
        self.published.lock().unwrap().len()
    }
}

#[async_trait]
impl Publisher for Recorder {
    async fn publish(&self, envelope: &Envelope) -> Result<(), TransportError> {
        self.publish_batch(std::slice::from_ref(envelope)).await
    }
    async fn publish_batch(&self, envelopes: &[Envelope]) -> Result<(), TransportError> {
        self.attempts.fetch_add(1, Ordering::Relaxed);
        if self.down.load(Ordering::SeqCst) {
            return Err(TransportError::Unavailable("broker down (test)".into()));
        }
        if envelopes
            .iter()
            .any(|e| e.headers.get("x-poison").is_some())
        {
            return Err(TransportError::Rejected("poison (test)".into()));
        }
        self.published
            .lock()
            .unwrap()
            .extend(envelopes.iter().cloned());
        Ok(())
    }
}

/// Shares a publisher behind an `Arc`.
pub struct Shared<P>(pub Arc<P>);
#[async_trait]
impl<P: Publisher> Publisher for Shared<P> {
    async fn publish(&self, envelope: &Envelope) -> Result<(), TransportError> {
        self.0.publish(envelope).await
    }
    async fn publish_batch(&self, envelopes: &[Envelope]) -> Result<(), TransportError> {
        self.0.publish_batch(envelopes).await
    }
}

/// What a scenario needs from a database.
#[async_trait]
pub trait Harness: Send + Sync + 'static {
    /// The relay side of this test's outbox table (already migrated).
    fn store(&self) -> Arc<dyn OutboxStore>;
    /// Inserts `envs` through the typed `Outbox::add_envelopes` in one
    /// transaction with a business row, then commits or rolls back.
    async fn add(&self, envs: &[Envelope], commit: bool);
    /// Inserts typed events with `Outbox::add` / `add_all`; returns ids.
    async fn add_events(&self, n: usize, key: &str) -> Vec<Uuid>;
    /// Business rows written by committed `add` calls.
    async fn business_rows(&self) -> i64;
    /// The inbox store of this test's inbox table (already migrated).
    fn inbox(&self) -> Arc<dyn InboxStore>;
    /// Handles `id` for `group` the explicit way: begin, write an effect, commit
    /// (or fail after writing when `fail`). Returns false for a duplicate.
    async fn handle_explicit(&self, id: Uuid, group: &str, fail: bool) -> bool;
    /// Inside an inbox-layer handler: writes an effect through the layer's transaction.
    async fn write_effect_in_layer_tx(&self, id: Uuid) -> Result<(), eventbus_core::BoxError>;
    /// Effects recorded for `id`.
    async fn effects(&self, id: Uuid) -> i64;
    /// Makes an inbox row look `age` old.
    async fn age_inbox(&self, age: Duration);
    /// Rows in the inbox table.
    async fn inbox_rows(&self) -> i64;
}

pub fn keys_in_order(published: &[Envelope]) -> std::collections::HashMap<String, Vec<u64>> {
    let mut m: std::collections::HashMap<String, Vec<u64>> = Default::default();
    for e in published {
        let n: u64 = e.headers.get("x-test-n").unwrap().parse().unwrap();
        m.entry(e.key.clone().unwrap_or_default())
            .or_default()
            .push(n);
    }
    m
}

pub fn distinct(ids: &[Uuid]) -> usize {
    ids.iter().collect::<HashSet<_>>().len()
}

pub async fn eventually<F: Fn() -> bool>(what: &str, f: F) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
