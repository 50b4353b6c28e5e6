//! The relay: claims outbox rows, publishes them confirmed, deletes them.

use std::collections::HashSet;
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
    /// (SQLite). Longer than any publish (default 60 s).
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
    },
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
pub struct Relay {
    store: Arc<dyn OutboxStore>,
    publisher: Arc<dyn Publisher>,
    config: RelayConfig,
    id: Arc<str>,
    stats: Arc<RelayStats>,
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
                Ok(StepOutcome::Batch { sent, failed })
                    if sent + failed >= self.config.batch_size =>
                {
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

        // Rows that cannot even be read back fail at once, and the later
        // rows of their key stay back.
        let mut failures = Vec::new();
        let mut blocked_keys: HashSet<Option<String>> = HashSet::new();
        let mut to_send: Vec<(i64, Option<String>, i32)> = Vec::with_capacity(records.len());
        let mut envelopes: Vec<Envelope> = Vec::with_capacity(records.len());
        for r in records {
            if r.key.is_some() && blocked_keys.contains(&r.key) {
                continue;
            }
            match &r.envelope {
                Ok(env) => {
                    to_send.push((r.seq, r.key.clone(), r.attempts));
                    envelopes.push(env.clone());
                }
                Err(e) => {
                    failures.push(self.failure(r.seq, r.attempts, e.clone()));
                    if r.key.is_some() {
                        blocked_keys.insert(r.key.clone());
                    }
                }
            }
        }

        let mut sent: Vec<i64> = Vec::with_capacity(to_send.len());
        let mut outage: Option<TransportError> = None;
        match self.publish_batch(&envelopes).await {
            Ok(()) => sent.extend(to_send.iter().map(|(seq, ..)| *seq)),
            Err(e) if is_outage(&e) => outage = Some(e),
            Err(e) => {
                // Some row was refused: find it by publishing one by one, in
                // order; a refused row holds back the rest of its key.
                tracing::debug!(relay = %self.id, error = %e, "batch publish refused; publishing rows singly");
                for ((seq, key, attempts), env) in to_send.iter().zip(&envelopes) {
                    if key.is_some() && blocked_keys.contains(key) {
                        continue;
                    }
                    match self.publish_one(env).await {
                        Ok(()) => sent.push(*seq),
                        Err(e) if is_outage(&e) => {
                            outage = Some(e);
                            break;
                        }
                        Err(e) => {
                            failures.push(self.failure(*seq, *attempts, e.to_string()));
                            if key.is_some() {
                                blocked_keys.insert(key.clone());
                            }
                        }
                    }
                }
            }
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
        self.stats
            .failed
            .fetch_add(n_failed as u64, Ordering::Relaxed);
        if let Some(e) = outage {
            return Err(RelayError::Transport(e));
        }
        Ok(StepOutcome::Batch {
            sent: n_sent,
            failed: n_failed,
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
