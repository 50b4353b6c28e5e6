//! The relay: claims outbox rows, publishes them confirmed, deletes them.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{ClaimRequest, Failure, OutboxError, OutboxStore};
use crate::{Backoff, Envelope, Publisher, TransportError};

/// Tuning for a [`Relay`].
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Maximum rows per batch (default 500).
    pub batch_size: usize,
    /// Oldest unsent rows scanned per claim to find keys no other relay
    /// holds (default 4 × `batch_size`).
    pub window: usize,
    /// Safety-net polling interval when idle (default 1 s; PostgreSQL is
    /// woken by `NOTIFY` long before).
    pub poll_interval: Duration,
    /// Failed publish attempts of one row before it is parked (default 10).
    pub max_attempts: u32,
    /// Delay before retrying a row the transport rejected.
    pub row_backoff: Backoff,
    /// Delay before retrying when the transport is down or the database fails.
    pub outage_backoff: Backoff,
    /// After a wake-up, wait this long before claiming, so that rows
    /// committed in the meantime share one batch (default 5 ms). Trades a
    /// little latency for far fewer claim round trips under load.
    pub linger: Duration,
    /// Limit for one publish call; exceeding it counts as an outage (default 30 s).
    pub publish_timeout: Duration,
    /// How long a claim holds its rows where the database has no row locks
    /// (SQLite). Longer than any publish (default 60 s). On every database a
    /// batch starts no new publish once half of it has passed; the rows it
    /// did not reach are released for the next batch.
    pub lease: Duration,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            batch_size: 500,
            window: 2000,
            poll_interval: Duration::from_secs(1),
            max_attempts: 10,
            row_backoff: Backoff {
                initial: Duration::from_secs(1),
                max: Duration::from_secs(300),
                multiplier: 2,
                jitter: true,
            },
            outage_backoff: Backoff {
                initial: Duration::from_millis(100),
                max: Duration::from_secs(30),
                multiplier: 2,
                jitter: true,
            },
            linger: Duration::from_millis(5),
            publish_timeout: Duration::from_secs(30),
            lease: Duration::from_secs(60),
        }
    }
}

/// What one [`Relay::step`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepOutcome {
    /// Nothing was claimable.
    Idle,
    /// A batch was processed: rows published and rows that failed.
    Batch {
        /// Rows confirmed and deleted.
        sent: usize,
        /// Rows that failed (retry scheduled or parked).
        failed: usize,
        /// The batch stopped early (after half the lease) with rows left
        /// unattempted: there is more to do at once.
        deferred: bool,
    },
}

/// A claimed row that could be read back.
struct Row<'a> {
    seq: i64,
    attempts: i32,
    envelope: &'a Envelope,
}

/// Counters of a running relay.
#[derive(Debug, Default)]
pub struct RelayStats {
    /// Rows published and deleted.
    pub sent: AtomicU64,
    /// Row failures recorded.
    pub failed: AtomicU64,
    /// Batches whose publish hit an outage.
    pub outages: AtomicU64,
}

/// Moves rows from an [`OutboxStore`] to a [`Publisher`].
///
/// Run it as a task inside a service ([`Relay::spawn`]) or in the
/// standalone `eventbus-relay` binary. Any number of relays may run against
/// one table; see the [module docs](super) for the guarantees.
///
/// Start it once the consumers' queues exist (after the bus has started):
/// an event published before any group is bound to it is confirmed and
/// deleted from the outbox without reaching a handler.
///
/// # Example: a SQLite outbox and a relay in the same service
///
/// ```
/// # #[cfg(feature = "sqlite")]
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
///
/// use eventbus_core::outbox::{Outbox, RelayConfig};
/// use eventbus_core::{Event, MemoryTransport, Subscriber, SubscriptionSpec};
/// use serde::{Deserialize, Serialize};
/// use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
///
/// #[derive(Debug, Event, Serialize, Deserialize)]
/// #[event(name = "order.placed", key = "customer")]
/// struct OrderPlaced {
///     customer: String,
///     total_cents: u64,
/// }
///
/// # let dir = tempfile::tempdir()?;
/// # let path = dir.path().join("app.db");
/// let pool = SqlitePoolOptions::new()
///     .connect_with(
///         SqliteConnectOptions::new()
///             .filename(path)
///             .create_if_missing(true)
///             // Business writes and the relay side by side.
///             .journal_mode(SqliteJournalMode::Wal)
///             .busy_timeout(Duration::from_secs(30)),
///     )
///     .await?;
/// let outbox = Outbox::sqlite(pool.clone());
/// outbox.migrate().await?; // creates/upgrades `eventbus_outbox`
///
/// // The consumer's queue exists before the relay publishes.
/// let transport = MemoryTransport::new();
/// let mut billing = transport
///     .subscribe(SubscriptionSpec::new("billing", ["order.placed"]))
///     .await?;
///
/// let mut tx = pool.begin().await?;
/// // ... the business write, on `tx` ...
/// let id = outbox
///     .add(&mut tx, &OrderPlaced { customer: "c-1".into(), total_cents: 4200 })
///     .await?;
/// tx.commit().await?;
///
/// let relay = outbox
///     .relay(transport.clone())
///     .with_config(RelayConfig {
///         poll_interval: Duration::from_millis(100), // SQLite polls
///         ..RelayConfig::default()
///     })
///     .spawn();
/// let delivery = tokio::time::timeout(Duration::from_secs(10), billing.next())
///     .await?
///     .expect("subscription open")?;
/// assert_eq!(delivery.envelope.id, id);
/// delivery.ack().await?;
/// relay.shutdown().await;
/// assert_eq!(outbox.backlog().await?, 0, "published rows are deleted");
/// # Ok(())
/// # }
/// # #[cfg(not(feature = "sqlite"))]
/// # fn main() {}
/// ```
pub struct Relay {
    store: Arc<dyn OutboxStore>,
    publisher: Arc<dyn Publisher>,
    config: RelayConfig,
    id: Arc<str>,
    stats: Arc<RelayStats>,
    metrics: RelayMetrics,
}

/// The relay's metric handles (see [`crate::observe`]), resolved once.
struct RelayMetrics {
    published: metrics::Counter,
    failed: metrics::Counter,
    lag: metrics::Histogram,
}

impl RelayMetrics {
    fn new(table: String) -> Self {
        use crate::observe::names;
        Self {
            published: metrics::counter!(names::RELAY_PUBLISHED, "table" => table.clone()),
            failed: metrics::counter!(names::RELAY_FAILED, "table" => table.clone()),
            lag: metrics::histogram!(names::RELAY_LAG, "table" => table),
        }
    }

    /// Records the lag of a confirmed row: from the event's creation to now.
    fn confirmed(&self, envelope: &Envelope, now: chrono::DateTime<chrono::Utc>) {
        let lag = (now - envelope.occurred_at).to_std().unwrap_or_default();
        self.lag.record(lag.as_secs_f64());
    }
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("id", &self.id)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// A spawned relay: stop it with [`RelayHandle::shutdown`].
#[derive(Debug)]
pub struct RelayHandle {
    token: CancellationToken,
    join: JoinHandle<()>,
    stats: Arc<RelayStats>,
}

impl RelayHandle {
    /// The relay's counters.
    pub fn stats(&self) -> &RelayStats {
        &self.stats
    }
    /// Stops after the current batch and waits for it.
    pub async fn shutdown(self) {
        self.token.cancel();
        let _ = self.join.await;
    }
}

/// Until the insert signal ticks or `timeout` passes.
async fn wait(signal: &mut Option<tokio::sync::watch::Receiver<u64>>, timeout: Duration) {
    match signal {
        Some(rx) => {
            if let Ok(Err(_)) = tokio::time::timeout(timeout, rx.changed()).await {
                // The listener is gone: poll from now on.
                *signal = None;
                tokio::time::sleep(timeout).await;
            }
        }
        None => tokio::time::sleep(timeout).await,
    }
}

fn is_outage(e: &TransportError) -> bool {
    matches!(e, TransportError::Unavailable(_) | TransportError::Closed)
}

impl Relay {
    /// A relay with default settings.
    pub fn new(store: Arc<dyn OutboxStore>, publisher: Arc<dyn Publisher>) -> Self {
        Self {
            metrics: RelayMetrics::new(store.table_name()),
            store,
            publisher,
            config: RelayConfig::default(),
            id: Arc::from(crate::event::new_message_id().to_string()),
            stats: Arc::default(),
        }
    }

    /// Replaces the settings.
    pub fn with_config(mut self, config: RelayConfig) -> Self {
        self.config = config;
        self
    }

    /// The settings.
    pub fn config(&self) -> &RelayConfig {
        &self.config
    }

    /// The relay's counters.
    pub fn stats(&self) -> Arc<RelayStats> {
        self.stats.clone()
    }

    /// Runs [`Relay::run`] on a new task.
    pub fn spawn(self) -> RelayHandle {
        let token = CancellationToken::new();
        let stats = self.stats.clone();
        let join = tokio::spawn(self.run(token.clone()));
        RelayHandle { token, join, stats }
    }

    /// Relays until `shutdown` is cancelled: claims and publishes batches
    /// back to back while there is work, then waits for a notification (or
    /// the poll interval); backs off while the transport or database is down.
    pub async fn run(self, shutdown: CancellationToken) {
        tracing::info!(relay = %self.id, "outbox relay started");
        let mut outage = 0u32;
        let mut wake = self.store.insert_signal();
        loop {
            if shutdown.is_cancelled() {
                break;
            }
            if let Some(rx) = wake.as_mut() {
                rx.borrow_and_update();
            }
            // A batch in flight is finished (bounded by the publish
            // timeout) so that what was confirmed is also marked sent.
            match self.step().await {
                Ok(StepOutcome::Batch {
                    sent,
                    failed,
                    deferred,
                }) if deferred || sent + failed >= self.config.batch_size => {
                    // Full batch: there is probably more; go on at once.
                    outage = 0;
                }
                Ok(_) => {
                    // Caught up: sleep until rows are added (or the poll
                    // interval passes), then let a few more commits gather.
                    outage = 0;
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = wait(&mut wake, self.config.poll_interval) => {}
                    }
                    if !self.config.linger.is_zero() {
                        tokio::time::sleep(self.config.linger).await;
                    }
                }
                Err(e) => {
                    outage = outage.saturating_add(1);
                    self.stats.outages.fetch_add(1, Ordering::Relaxed);
                    let delay = self.config.outage_backoff.delay(outage);
                    tracing::warn!(relay = %self.id, error = %e, retry_in_ms = delay.as_millis() as u64, "outbox relay: batch failed; backing off");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
        tracing::info!(relay = %self.id, "outbox relay stopped");
    }

    /// Claims and publishes one batch.
    ///
    /// The batch goes out in *waves*, each one pipelined
    /// [`Publisher::publish_batch`]: the first holds every unkeyed row and
    /// the first row of every key, each later one the next row of every key
    /// whose previous row was confirmed. So a key never has more than one
    /// unconfirmed row in flight, and a row the transport refuses (a nack,
    /// say, arriving while other rows were already sent) can never be
    /// overtaken by a later row of its key: that key stops for this batch,
    /// its later rows are released unsent and wait behind the refused row's
    /// retry. Confirmed rows are deleted. A wave the transport refuses is
    /// published again row by row to find the refused rows; rows of it that
    /// had got through go out twice (at-least-once). The cost: a key's rows
    /// take one confirm round trip each, so one key alone moves at most one
    /// row per round trip; many keys share each round trip.
    ///
    /// Returns `Err` when the database failed or the transport is down
    /// (rows that were confirmed before the outage are still deleted).
    pub async fn step(&self) -> Result<StepOutcome, RelayError> {
        let req = ClaimRequest {
            batch_size: self.config.batch_size.max(1),
            window: self.config.window.max(self.config.batch_size.max(1)),
            relay_id: self.id.clone(),
            lease: self.config.lease,
        };
        let Some(batch) = self.store.claim(&req).await? else {
            return Ok(StepOutcome::Idle);
        };
        let records = batch.records();
        if records.is_empty() {
            batch.complete(&[], &[]).await?;
            return Ok(StepOutcome::Idle);
        }

        // Per key, its rows in sequence order, not yet published. A row that
        // cannot even be read back fails at once, and the later rows of its
        // key stay back.
        let mut failures = Vec::new();
        let mut lanes: Vec<VecDeque<Row<'_>>> = Vec::new();
        let mut lane_of: HashMap<&str, usize> = HashMap::new();
        let mut stopped: HashSet<&str> = HashSet::new();
        let mut unkeyed: Vec<Row<'_>> = Vec::new();
        for r in records {
            let row = match &r.envelope {
                Ok(env) => Row {
                    seq: r.seq,
                    attempts: r.attempts,
                    envelope: env,
                },
                Err(e) => {
                    failures.push(self.failure(r.seq, r.attempts, e.clone()));
                    if let Some(key) = &r.key {
                        stopped.insert(key);
                    }
                    continue;
                }
            };
            match &r.key {
                None => unkeyed.push(row),
                Some(key) if stopped.contains(key.as_str()) => {}
                Some(key) => {
                    let lane = *lane_of.entry(key).or_insert_with(|| {
                        lanes.push(VecDeque::new());
                        lanes.len() - 1
                    });
                    lanes[lane].push_back(row);
                }
            }
        }

        // Waves: the first holds every unkeyed row and the head of every
        // key; each later one the next row of every key whose previous row
        // was confirmed. A wave is one pipelined publish, and it never
        // holds two rows of one key, so a failure in it cannot have let a
        // later row of the failed row's key reach the broker.
        let started = tokio::time::Instant::now();
        let budget = self.config.lease / 2;
        let mut sent: Vec<i64> = Vec::with_capacity(records.len());
        let mut outage: Option<TransportError> = None;
        let mut deferred = false;
        let mut wave: Vec<(Option<usize>, Row<'_>)> =
            unkeyed.into_iter().map(|r| (None, r)).collect();
        wave.extend(
            lanes
                .iter_mut()
                .enumerate()
                .filter_map(|(i, lane)| lane.pop_front().map(|r| (Some(i), r))),
        );
        'waves: while !wave.is_empty() {
            if started.elapsed() >= budget && !sent.is_empty() {
                // Past half the lease: leave the rest for the next batch
                // rather than risk another relay taking over these keys.
                deferred = true;
                break;
            }
            #[allow(unused_mut)]
            let mut envelopes: Vec<Envelope> =
                wave.iter().map(|(_, r)| r.envelope.clone()).collect();
            #[cfg(feature = "otel")]
            let _spans: Vec<tracing::Span> = envelopes.iter_mut().map(publish_span).collect();
            let mut advanced: Vec<usize> = Vec::with_capacity(wave.len());
            match self.publish_batch(&envelopes).await {
                Ok(()) => {
                    let now = chrono::Utc::now();
                    for (lane, row) in &wave {
                        sent.push(row.seq);
                        advanced.extend(*lane);
                        self.metrics.confirmed(row.envelope, now);
                    }
                }
                Err(e) if is_outage(&e) => {
                    outage = Some(e);
                    break;
                }
                Err(e) => {
                    // Some row of the wave was refused: find it by publishing
                    // them one by one. Rows the batch already got through go
                    // out twice (at-least-once); none has a later row of its
                    // key out yet, so that reorders nothing.
                    tracing::debug!(relay = %self.id, error = %e, "batch publish refused; publishing rows singly");
                    for (lane, row) in &wave {
                        if started.elapsed() >= budget && !sent.is_empty() {
                            deferred = true;
                            break 'waves;
                        }
                        #[cfg(feature = "otel")]
                        let (envelope, _span) = {
                            let mut e = row.envelope.clone();
                            let span = publish_span(&mut e);
                            (e, span)
                        };
                        #[cfg(feature = "otel")]
                        let published = self.publish_one(&envelope).await;
                        #[cfg(not(feature = "otel"))]
                        let published = self.publish_one(row.envelope).await;
                        match published {
                            Ok(()) => {
                                sent.push(row.seq);
                                advanced.extend(*lane);
                                self.metrics.confirmed(row.envelope, chrono::Utc::now());
                            }
                            Err(e) if is_outage(&e) => {
                                outage = Some(e);
                                break 'waves;
                            }
                            // A refused row stops its key: the key's later
                            // rows are released unsent, to wait behind it.
                            Err(e) => {
                                failures.push(self.failure(row.seq, row.attempts, e.to_string()))
                            }
                        }
                    }
                }
            }
            wave = advanced
                .into_iter()
                .filter_map(|i| lanes[i].pop_front().map(|r| (Some(i), r)))
                .collect();
        }
        let (n_sent, n_failed) = (sent.len(), failures.len());
        // Rows published before an outage are still confirmed: delete them.
        // Failures are not recorded during an outage (the transport, not the
        // rows, is at fault) unless they were refused before it.
        if let Err(e) = batch.complete(&sent, &failures).await {
            // The rows in `sent` are published: delete them in a fresh
            // transaction so that a transient failure (a deadlock or lock
            // timeout on MariaDB, say) does not publish the whole batch again.
            // Failures recorded in the rolled-back transaction are retried
            // later like any unsent row.
            if sent.is_empty() || !self.delete_published(&sent).await {
                return Err(e.into());
            }
            tracing::warn!(relay = %self.id, error = %e, rows = sent.len(), "outbox relay: completing a batch failed; deleted its published rows separately");
        }
        self.stats.sent.fetch_add(n_sent as u64, Ordering::Relaxed);
        self.metrics.published.increment(n_sent as u64);
        self.metrics.failed.increment(n_failed as u64);
        self.stats
            .failed
            .fetch_add(n_failed as u64, Ordering::Relaxed);
        if let Some(e) = outage {
            return Err(RelayError::Transport(e));
        }
        Ok(StepOutcome::Batch {
            sent: n_sent,
            failed: n_failed,
            deferred,
        })
    }

    /// [`OutboxStore::delete_published`] with a few quick retries; false if
    /// it kept failing (the rows are then published again later).
    async fn delete_published(&self, sent: &[i64]) -> bool {
        for delay_ms in [0u64, 20, 100, 500] {
            if delay_ms > 0 {
                tokio::time::sleep(Duration::from_millis(delay_ms)).await;
            }
            match self.store.delete_published(sent).await {
                Ok(()) => return true,
                Err(e) => {
                    tracing::debug!(relay = %self.id, error = %e, "deleting published rows failed")
                }
            }
        }
        false
    }

    fn failure(&self, seq: i64, attempts: i32, error: String) -> Failure {
        let attempt = u32::try_from(attempts).unwrap_or(0).saturating_add(1);
        let retry_in = (attempt < self.config.max_attempts.max(1))
            .then(|| self.config.row_backoff.delay(attempt));
        if retry_in.is_none() {
            tracing::error!(relay = %self.id, seq, error = %error, attempts = attempt, "outbox row parked");
        } else {
            tracing::warn!(relay = %self.id, seq, error = %error, attempts = attempt, "outbox row refused by transport; will retry");
        }
        Failure {
            seq,
            error,
            retry_in,
        }
    }

    async fn publish_batch(&self, envelopes: &[Envelope]) -> Result<(), TransportError> {
        if envelopes.is_empty() {
            return Ok(());
        }
        match tokio::time::timeout(
            self.config.publish_timeout,
            self.publisher.publish_batch(envelopes),
        )
        .await
        {
            Ok(r) => r,
            Err(_) => Err(TransportError::Unavailable("publish timed out".into())),
        }
    }

    async fn publish_one(&self, envelope: &Envelope) -> Result<(), TransportError> {
        match tokio::time::timeout(
            self.config.publish_timeout,
            self.publisher.publish(envelope),
        )
        .await
        {
            Ok(r) => r,
            Err(_) => Err(TransportError::Unavailable("publish timed out".into())),
        }
    }
}

/// Feature `otel`: an `eventbus.relay.publish` span continuing the trace
/// the row carries; `envelope` is given the span's context, so the
/// handler's span is its child. Lives until the publish was confirmed.
#[cfg(feature = "otel")]
fn publish_span(envelope: &mut Envelope) -> tracing::Span {
    let span = tracing::info_span!(
        "eventbus.relay.publish",
        event = %envelope.name,
        message_id = %envelope.id,
    );
    crate::observe::otel::set_parent_from(&span, &envelope.headers);
    crate::observe::otel::inject(&span, envelope);
    span
}

/// A relay step failed as a whole.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The outbox database failed.
    #[error(transparent)]
    Store(#[from] OutboxError),
    /// The transport is down.
    #[error("transport down: {0}")]
    Transport(TransportError),
}
