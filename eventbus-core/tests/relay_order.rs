//! Per-key order of the relay under partial batch failure, on SQLite,
//! PostgreSQL and MariaDB.
//!
//! A pipelined batch publish sends every envelope before the first confirm
//! comes back, so a negative confirm for `K:3` can arrive after `K:4` and
//! `K:5` already reached the broker. The publisher here does exactly that
//! (it accepts everything else in the batch and then reports the failure),
//! and records every envelope that "reached the broker". The invariant
//! checked: for every key, no row reaches the broker before every earlier
//! row of its key reached it at least once (duplicates allowed); nothing
//! is lost; rows that failed for good are parked with their key's later
//! rows waiting behind them.
//!
//! The relay is driven with [`Relay::step`] until nothing is claimable (row
//! backoff zero), so the tests are deterministic and wait for nothing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use eventbus_core::outbox::{OutboxStore, Relay, RelayConfig, StepOutcome};
use eventbus_core::testing::{envelope, unique};
use eventbus_core::{Backoff, Envelope, Publisher, TransportError};
use uuid::Uuid;

/// What goes wrong when an envelope is published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// The broker nacks it (the rest of the batch is accepted).
    Nack,
    /// The broker nacks it every time (not used up: the row is parked).
    Refused,
    /// The connection drops just before it: the envelopes sent before it in
    /// the batch reached the broker, it and the rest did not.
    Outage,
}

/// A transport that pipelines batches and fails chosen envelopes.
#[derive(Default)]
struct FaultyTransport {
    /// Per message id, the faults still to inject, first first.
    plan: Mutex<HashMap<Uuid, Vec<Fault>>>,
    /// Everything that reached the broker, in order, duplicates included.
    reached: Mutex<Vec<Envelope>>,
    /// Publish calls that failed.
    failures: Mutex<u32>,
    /// How long each publish call takes (a slow broker).
    latency: Duration,
}

impl FaultyTransport {
    fn new(plan: HashMap<Uuid, Vec<Fault>>) -> Arc<Self> {
        Arc::new(Self {
            plan: Mutex::new(plan),
            ..Default::default()
        })
    }

    fn next_fault(&self, id: Uuid) -> Option<Fault> {
        let mut plan = self.plan.lock().unwrap();
        let faults = plan.get_mut(&id)?;
        match faults.first()? {
            Fault::Refused => Some(Fault::Refused),
            _ => Some(faults.remove(0)),
        }
    }
}

#[async_trait]
impl Publisher for FaultyTransport {
    async fn publish(&self, envelope: &Envelope) -> Result<(), TransportError> {
        self.publish_batch(std::slice::from_ref(envelope)).await
    }

    /// Pipelined, like the AMQP transport: every envelope is sent before any
    /// confirm is looked at, so one nack does not stop the envelopes after it.
    async fn publish_batch(&self, envelopes: &[Envelope]) -> Result<(), TransportError> {
        if !self.latency.is_zero() {
            tokio::time::sleep(self.latency).await;
        }
        let mut nacked = 0;
        for e in envelopes {
            match self.next_fault(e.id) {
                Some(Fault::Outage) => {
                    *self.failures.lock().unwrap() += 1;
                    return Err(TransportError::Unavailable("connection lost (test)".into()));
                }
                Some(Fault::Nack | Fault::Refused) => nacked += 1,
                None => self.reached.lock().unwrap().push(e.clone()),
            }
        }
        if nacked > 0 {
            *self.failures.lock().unwrap() += 1;
            return Err(TransportError::Rejected(format!(
                "broker nacked {nacked} message(s) (test)"
            )));
        }
        Ok(())
    }
}

/// Shares the transport behind an `Arc`.
struct Shared(Arc<FaultyTransport>);
#[async_trait]
impl Publisher for Shared {
    async fn publish(&self, envelope: &Envelope) -> Result<(), TransportError> {
        self.0.publish(envelope).await
    }
    async fn publish_batch(&self, envelopes: &[Envelope]) -> Result<(), TransportError> {
        self.0.publish_batch(envelopes).await
    }
}

fn config(batch_size: usize, max_attempts: u32) -> RelayConfig {
    let zero = Backoff {
        initial: Duration::ZERO,
        max: Duration::ZERO,
        multiplier: 1,
        jitter: false,
    };
    RelayConfig {
        batch_size,
        window: batch_size * 4,
        max_attempts,
        row_backoff: zero,
        outage_backoff: zero,
        linger: Duration::ZERO,
        publish_timeout: Duration::from_secs(10),
        ..RelayConfig::default()
    }
}

/// Steps the relay until nothing is claimable.
async fn drain(store: Arc<dyn OutboxStore>, transport: &Arc<FaultyTransport>, config: RelayConfig) {
    let relay = Relay::new(store, Arc::new(Shared(transport.clone()))).with_config(config);
    for _ in 0..10_000 {
        match relay.step().await {
            Ok(StepOutcome::Idle) => return,
            Ok(StepOutcome::Batch { .. }) => {}
            Err(eventbus_core::outbox::RelayError::Transport(_)) => {}
            Err(e) => panic!("outbox database failed: {e}"),
        }
    }
    panic!("relay did not drain the outbox in 10,000 steps");
}

fn n_of(e: &Envelope) -> u64 {
    e.headers.get("x-test-n").unwrap().parse().unwrap()
}

/// Checks the order invariant and returns, per key, how many of its rows
/// (0, 1, 2, … in order) reached the broker; unkeyed rows are counted under "".
fn check_first_publication_order(reached: &[Envelope]) -> HashMap<String, u64> {
    let mut next: HashMap<String, u64> = HashMap::new();
    let mut unkeyed = std::collections::HashSet::new();
    for (i, e) in reached.iter().enumerate() {
        let n = n_of(e);
        let Some(key) = &e.key else {
            unkeyed.insert(n);
            continue;
        };
        let expected = next.entry(key.clone()).or_default();
        assert!(
            n <= *expected,
            "publication {i}: {key}:{n} reached the broker before {key}:{expected} ever did \
             (per-key order broken); publications: {:?}",
            reached
                .iter()
                .map(|e| format!("{}:{}", e.key.as_deref().unwrap_or("-"), n_of(e)))
                .collect::<Vec<_>>()
        );
        if n == *expected {
            *expected += 1;
        }
    }
    next.insert(String::new(), unkeyed.len() as u64);
    next
}

/// A database holding one fresh outbox table.
#[async_trait]
trait Db: Send + Sync {
    fn store(&self) -> Arc<dyn OutboxStore>;
    /// Commits `envs` to the outbox in one transaction.
    async fn insert(&self, envs: &[Envelope]);
}

/// Keys `a`..`d` with six rows each (0..=5), interleaved, plus unkeyed rows;
/// `a:2` is nacked once, `b:0` twice, `c:5` once, `d:1` always (parked
/// after three attempts), and the connection drops once at `a:4`.
async fn partial_batch_failure_keeps_key_order(db: &dyn Db) {
    let ev = unique("ev.relay-order");
    let mut rows = Vec::new();
    for n in 0..6 {
        for k in ["a", "b", "c", "d"] {
            rows.push(envelope(&ev, Some(k), n));
        }
        rows.push(envelope(&ev, None, n));
    }
    let id = |k: &str, n: u64| {
        rows.iter()
            .find(|e| e.key.as_deref() == Some(k) && n_of(e) == n)
            .unwrap()
            .id
    };
    let plan = HashMap::from([
        (id("a", 2), vec![Fault::Nack]),
        (id("a", 4), vec![Fault::Outage]),
        (id("b", 0), vec![Fault::Nack, Fault::Nack]),
        (id("c", 5), vec![Fault::Nack]),
        (id("d", 1), vec![Fault::Refused]),
    ]);
    db.insert(&rows).await;
    let transport = FaultyTransport::new(plan);
    // One batch holds every row, so each failure hits a pipelined batch
    // with later rows of the same key behind it.
    drain(db.store(), &transport, config(100, 3)).await;

    let reached = transport.reached.lock().unwrap().clone();
    assert!(
        *transport.failures.lock().unwrap() >= 6,
        "the faults were injected"
    );
    let counts = check_first_publication_order(&reached);
    for k in ["a", "b", "c"] {
        assert_eq!(counts[k], 6, "every row of key {k} published");
    }
    assert_eq!(counts[""], 6, "every unkeyed row published");
    assert_eq!(counts["d"], 1, "d:1 is parked; d:2.. wait behind it");
    let store = db.store();
    let parked = store.parked(10).await.unwrap();
    assert_eq!(parked.len(), 1, "{parked:?}");
    assert_eq!(parked[0].id, id("d", 1));
    assert_eq!(parked[0].attempts, 3);
    assert_eq!(
        store.backlog().await.unwrap(),
        5,
        "d:1..=5 stay in the outbox"
    );

    // Discarding the parked row lets the rest of d flow, in order.
    assert!(store.discard_parked(id("d", 1)).await.unwrap());
    drain(db.store(), &transport, config(100, 3)).await;
    let reached = transport.reached.lock().unwrap().clone();
    let mut seen = std::collections::HashSet::new();
    let d: Vec<u64> = reached
        .iter()
        .filter(|e| e.key.as_deref() == Some("d") && seen.insert(e.id))
        .map(n_of)
        .collect();
    assert_eq!(d, [0, 2, 3, 4, 5], "first publications of key d");
    assert_eq!(store.backlog().await.unwrap(), 0);
}

#[cfg(feature = "sqlite")]
mod sqlite {
    use super::*;
    use eventbus_core::outbox::{Outbox, OutboxConfig};
    use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
    use sqlx::Sqlite;

    pub struct Lite {
        _dir: tempfile::TempDir,
        pool: sqlx::SqlitePool,
        outbox: Outbox<Sqlite>,
    }

    impl Lite {
        pub async fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let options = SqliteConnectOptions::new()
                .filename(dir.path().join("outbox.db"))
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .busy_timeout(Duration::from_secs(30));
            let pool = SqlitePoolOptions::new()
                .max_connections(4)
                .connect_with(options)
                .await
                .unwrap();
            let outbox = Outbox::sqlite_with(pool.clone(), OutboxConfig::new());
            outbox.migrate().await.unwrap();
            Self {
                _dir: dir,
                pool,
                outbox,
            }
        }
    }

    #[async_trait]
    impl Db for Lite {
        fn store(&self) -> Arc<dyn OutboxStore> {
            self.outbox.store()
        }
        async fn insert(&self, envs: &[Envelope]) {
            let mut tx = self.pool.begin().await.unwrap();
            self.outbox.add_envelopes(&mut tx, envs).await.unwrap();
            tx.commit().await.unwrap();
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite_partial_batch_failure_keeps_key_order() {
        partial_batch_failure_keeps_key_order(&Lite::new().await).await;
    }

    /// One key's rows take one confirm round trip each; on a slow broker
    /// (100 ms per publish) a batch of 20 would outlive a 400 ms lease, and
    /// another relay could take the key over mid-batch. The batch stops
    /// after half the lease, says so, and leaves the rest unsent for the
    /// next batch.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite_slow_batch_stops_at_half_the_lease() {
        let db = Lite::new().await;
        let ev = unique("ev.relay-slow");
        let rows: Vec<_> = (0..20).map(|n| envelope(&ev, Some("k"), n)).collect();
        db.insert(&rows).await;
        let transport = Arc::new(FaultyTransport {
            latency: Duration::from_millis(100),
            ..Default::default()
        });
        let config = RelayConfig {
            lease: Duration::from_millis(400),
            ..super::config(100, 3)
        };
        let relay =
            Relay::new(db.store(), Arc::new(Shared(transport.clone()))).with_config(config.clone());
        let outcome = relay.step().await.unwrap();
        let StepOutcome::Batch {
            sent,
            failed: 0,
            deferred: true,
        } = outcome
        else {
            panic!("expected a batch cut short by the lease: {outcome:?}");
        };
        assert!((1..20).contains(&sent), "{sent} rows sent");
        assert_eq!(db.store().backlog().await.unwrap(), 20 - sent as u64);
        // The next batches take over where it stopped.
        drain(db.store(), &transport, config).await;
        let reached = transport.reached.lock().unwrap().clone();
        assert_eq!(
            reached.iter().map(|e| e.id).collect::<Vec<_>>(),
            rows.iter().map(|e| e.id).collect::<Vec<_>>(),
            "each row once, in order"
        );
        assert_eq!(db.store().backlog().await.unwrap(), 0);
    }
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_partial_batch_failure_keeps_key_order() {
    use eventbus_core::outbox::{Outbox, OutboxConfig};
    use sqlx::Postgres;

    struct Pg {
        pool: sqlx::PgPool,
        outbox: Outbox<Postgres>,
    }
    #[async_trait]
    impl Db for Pg {
        fn store(&self) -> Arc<dyn OutboxStore> {
            self.outbox.store()
        }
        async fn insert(&self, envs: &[Envelope]) {
            let mut tx = self.pool.begin().await.unwrap();
            self.outbox.add_envelopes(&mut tx, envs).await.unwrap();
            tx.commit().await.unwrap();
        }
    }

    let url = std::env::var("EVENTBUS_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        .connect(&url)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {url} is required for this test: {e}"));
    let table = format!("ob_{}", eventbus_core::event::new_message_id().simple());
    let outbox = Outbox::postgres_with(pool.clone(), OutboxConfig::new().table(&table).unwrap());
    outbox.migrate().await.unwrap();
    partial_batch_failure_keeps_key_order(&Pg { pool, outbox }).await;
}

#[cfg(feature = "mysql")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_partial_batch_failure_keeps_key_order() {
    use eventbus_core::outbox::{Outbox, OutboxConfig};
    use sqlx::MySql;

    struct My {
        pool: sqlx::MySqlPool,
        outbox: Outbox<MySql>,
    }
    #[async_trait]
    impl Db for My {
        fn store(&self) -> Arc<dyn OutboxStore> {
            self.outbox.store()
        }
        async fn insert(&self, envs: &[Envelope]) {
            let mut tx = self.pool.begin().await.unwrap();
            self.outbox.add_envelopes(&mut tx, envs).await.unwrap();
            tx.commit().await.unwrap();
        }
    }

    let url = std::env::var("EVENTBUS_TEST_MYSQL_URL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".into());
    let pool = sqlx::mysql::MySqlPoolOptions::new()
        .max_connections(4)
        .connect(&url)
        .await
        .unwrap_or_else(|e| panic!("MariaDB/MySQL at {url} is required for this test: {e}"));
    let table = format!("ob_{}", eventbus_core::event::new_message_id().simple());
    let outbox = Outbox::mysql_with(pool.clone(), OutboxConfig::new().table(&table).unwrap());
    outbox.migrate().await.unwrap();
    partial_batch_failure_keeps_key_order(&My { pool, outbox }).await;
}

#[cfg(feature = "sqlite")]
mod random_failures {
    use super::*;
    use proptest::prelude::*;

    /// One row: its key (`None` = unkeyed) and the faults injected into it.
    fn row() -> impl Strategy<Value = (Option<u8>, Vec<Fault>)> {
        let key = prop_oneof![4 => (0u8..4).prop_map(Some), 1 => Just(None)];
        let faults = prop_oneof![
            6 => Just(vec![]),
            2 => Just(vec![Fault::Nack]),
            1 => Just(vec![Fault::Nack, Fault::Nack]),
            1 => Just(vec![Fault::Outage]),
            1 => Just(vec![Fault::Nack, Fault::Outage]),
            1 => Just(vec![Fault::Nack, Fault::Nack, Fault::Nack]),
            1 => Just(vec![Fault::Refused]),
        ];
        (key, faults)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

        /// Random failure patterns over several keys and batch sizes: per
        /// key, first publications keep insert order; every row before a
        /// key's first parked row is published, none after it; everything
        /// unpublished is still in the outbox.
        #[test]
        fn random_failures_keep_first_publication_order(
            rows in prop::collection::vec(row(), 1..40),
            batch_size in 1usize..30,
        ) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let db = super::sqlite::Lite::new().await;
                let ev = unique("ev.relay-prop");
                let mut per_key: HashMap<Option<u8>, u64> = HashMap::new();
                let mut envs = Vec::new();
                let mut plan = HashMap::new();
                // Per key, the position of its first row that is parked.
                let mut first_parked: HashMap<String, u64> = HashMap::new();
                let mut unkeyed_expected = 0;
                for (key, faults) in &rows {
                    let n = per_key.entry(*key).or_default();
                    let name = key.map(|k| format!("k{k}"));
                    let e = envelope(&ev, name.as_deref(), *n);
                    let refused = faults.contains(&Fault::Refused);
                    match &name {
                        Some(k) if refused => {
                            first_parked.entry(k.clone()).or_insert(*n);
                        }
                        None if !refused => unkeyed_expected += 1,
                        _ => {}
                    }
                    plan.insert(e.id, faults.clone());
                    envs.push(e);
                    *n += 1;
                }
                db.insert(&envs).await;
                let transport = FaultyTransport::new(plan);
                drain(db.store(), &transport, config(batch_size, 3)).await;

                let reached = transport.reached.lock().unwrap().clone();
                let counts = check_first_publication_order(&reached);
                let mut published = 0;
                for (key, total) in &per_key {
                    let Some(k) = key else { continue };
                    let k = format!("k{k}");
                    let expected = first_parked.get(&k).copied().unwrap_or(*total);
                    assert_eq!(
                        counts.get(&k).copied().unwrap_or(0),
                        expected,
                        "key {k}: rows before its first parked row are published, none after"
                    );
                    published += expected;
                }
                assert_eq!(counts[""], unkeyed_expected, "unkeyed rows not parked are published");
                published += unkeyed_expected;
                let backlog = db.store().backlog().await.unwrap();
                assert_eq!(
                    backlog,
                    envs.len() as u64 - published,
                    "every row not published is still in the outbox"
                );
            });
        }
    }
}
