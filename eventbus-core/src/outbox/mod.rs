//! The transactional outbox and its relay.
//!
//! A service writes its business change and the events it causes in **one**
//! database transaction: [`Outbox::add`] inserts the event's [`Envelope`]
//! into the outbox table through the caller's own sqlx transaction. If the
//! transaction rolls back, the event never existed; if it commits, the
//! [`Relay`] publishes it — at least once, confirmed, in commit order per key.
//!
//! ```text
//! service ─ Outbox::add(&mut tx) ─ commit ─► outbox table
//! relay: claim batch ─► Publisher::publish_batch (confirmed) ─► delete rows ─► commit
//! ```
//!
//! # Guarantees
//! - **No loss, no phantom events.** A row exists only if the business
//!   transaction committed, and is deleted only after the transport
//!   confirmed it. A relay that dies mid-batch leaves its rows in place
//!   (PostgreSQL/MySQL: the row locks vanish with its transaction; SQLite: its
//!   lease expires), so they are published again: duplicates are possible,
//!   the inbox absorbs them.
//! - **Order per key.** A relay publishes the rows of one key only while it
//!   holds the lock on that key's *head* (its lowest unsent row): PostgreSQL
//!   and MySQL take it with `FOR UPDATE SKIP LOCKED`, so a second relay skips
//!   the whole key instead of overtaking it; SQLite leases the key's rows in
//!   an immediate (single-writer) transaction. Rows of a key are published
//!   in sequence order (assigned at insert). Transactions that write events
//!   of the same key are normally serialised by the business row they
//!   update, and then sequence order *is* their commit order. (Two
//!   unsynchronised transactions racing on one key have no meaningful
//!   order; a row that commits after a later-numbered row of its key was
//!   already published is published next — still in commit order.)
//! - **Parking.** A row the transport keeps rejecting is retried with
//!   backoff and, after [`RelayConfig::max_attempts`], *parked* with its
//!   error. A parked row blocks the later rows of its own key only; other
//!   keys keep flowing. [`Outbox::parked`], [`Outbox::retry_parked`] and
//!   [`Outbox::discard_parked`] manage them. A transport that is *down*
//!   ([`TransportError::Unavailable`](crate::TransportError::Unavailable) or
//!   `Closed`) does not count against any row: the relay backs off and
//!   tries again.
//! - **Latency.** On PostgreSQL an insert trigger `NOTIFY`s the relays,
//!   which `LISTEN`, so a commit is picked up at once; polling
//!   ([`RelayConfig::poll_interval`]) is only the safety net. MySQL and
//!   SQLite poll.
//!
//! ---
#![doc = include_str!("../../docs/outbox.md")]

mod inspect;
mod relay;

#[cfg(feature = "mysql")]
pub mod mysql;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "sqlite")]
pub mod sqlite;

pub use relay::{Relay, RelayConfig, RelayError, RelayHandle, RelayStats, StepOutcome};

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::migrate::{InvalidTableName, MigrateError, TableName};
use crate::{EncodeError, Envelope, Event, Headers};

/// The default outbox table name.
pub const DEFAULT_TABLE: &str = "eventbus_outbox";

/// Where the outbox lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxConfig {
    table: TableName,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        Self {
            table: TableName::new(DEFAULT_TABLE).expect("valid default"),
        }
    }
}

impl OutboxConfig {
    /// The default table, `eventbus_outbox`.
    pub fn new() -> Self {
        Self::default()
    }
    /// Uses table `name` (`name` or `schema.name`).
    pub fn table(mut self, name: &str) -> Result<Self, InvalidTableName> {
        self.table = TableName::new(name)?;
        Ok(self)
    }
    /// The table name.
    pub fn table_name(&self) -> &TableName {
        &self.table
    }
}

/// An outbox operation failed.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    /// The event could not be encoded.
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// The database failed.
    #[cfg(any(feature = "postgres", feature = "mysql", feature = "sqlite"))]
    #[error("outbox database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Migrating the table failed.
    #[error(transparent)]
    Migrate(#[from] MigrateError),
}

/// One unsent outbox row, as claimed by a relay.
#[derive(Debug, Clone)]
pub struct OutboxRecord {
    /// Position in the outbox (insert order).
    pub seq: i64,
    /// The partition key (copied out so a row that cannot be decoded still
    /// blocks only its own key).
    pub key: Option<String>,
    /// Publish attempts that failed so far.
    pub attempts: i32,
    /// The stored envelope, or why it cannot be read back.
    pub envelope: Result<Envelope, String>,
}

/// A row that failed to publish in a batch.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The row.
    pub seq: i64,
    /// What went wrong.
    pub error: String,
    /// Retry after this delay, or `None` to park the row.
    pub retry_in: Option<Duration>,
}

/// A parked row (see [`Outbox::parked`]).
#[derive(Debug, Clone)]
pub struct ParkedEvent {
    /// Position in the outbox.
    pub seq: i64,
    /// The message id.
    pub id: Uuid,
    /// Event name.
    pub name: String,
    /// Partition key (its later rows wait behind this one).
    pub key: Option<String>,
    /// Failed attempts.
    pub attempts: i32,
    /// The last error.
    pub last_error: Option<String>,
    /// When it was parked.
    pub parked_at: DateTime<Utc>,
    /// Payload schema version.
    pub version: u32,
    /// MIME type of `payload`.
    pub content_type: String,
    /// The encoded event ([`ParkedEvent::describe`] shows it decoded).
    pub payload: bytes::Bytes,
}

/// The state of an outbox table at one moment (see [`Outbox::stats`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OutboxStats {
    /// Unsent rows, parked included.
    pub backlog: u64,
    /// Parked rows.
    pub parked: u64,
    /// Age of the oldest unsent row (by its insert time); zero when empty.
    pub oldest_age: Duration,
}

/// How a relay claims work (see [`RelayConfig`]).
#[derive(Debug, Clone)]
pub struct ClaimRequest {
    /// Maximum rows in the batch.
    pub batch_size: usize,
    /// How many of the oldest unsent rows are scanned to find claimable keys.
    pub window: usize,
    /// The claiming relay (leases on SQLite).
    pub relay_id: Arc<str>,
    /// How long a lease lasts (SQLite).
    pub lease: Duration,
}

/// The storage side of the outbox, as the relay sees it: one implementation
/// per database. Object-safe, so a relay runs on `Arc<dyn OutboxStore>`.
#[async_trait]
pub trait OutboxStore: Send + Sync + 'static {
    /// Claims a batch of unsent rows (see the module docs for the rules);
    /// `None` when nothing is claimable now.
    async fn claim(&self, req: &ClaimRequest)
        -> Result<Option<Box<dyn ClaimedBatch>>, OutboxError>;

    /// A signal that ticks when rows may have been added (PostgreSQL:
    /// `LISTEN`). `None` (the default) means the relay polls only. The
    /// receiver remembers ticks that happen while the relay is busy.
    fn insert_signal(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        None
    }

    /// Applies the outbox migrations.
    async fn migrate(&self) -> Result<(), OutboxError>;

    /// Unsent rows (parked included).
    async fn backlog(&self) -> Result<u64, OutboxError>;

    /// Backlog, parked rows and the oldest row's age, in one query. The
    /// default (for stores that do not know better) counts with
    /// [`OutboxStore::backlog`] and [`OutboxStore::parked`] and reports no age.
    async fn stats(&self) -> Result<OutboxStats, OutboxError> {
        Ok(OutboxStats {
            backlog: self.backlog().await?,
            parked: self.parked(u32::MAX).await?.len() as u64,
            oldest_age: Duration::ZERO,
        })
    }

    /// The table (the `table` label of the relay's and outbox's metrics).
    /// The default is [`DEFAULT_TABLE`].
    fn table_name(&self) -> String {
        DEFAULT_TABLE.to_owned()
    }

    /// Parked rows, oldest first.
    async fn parked(&self, limit: u32) -> Result<Vec<ParkedEvent>, OutboxError>;

    /// Un-parks the row with message id `id` (attempts reset); `false` if no such parked row.
    async fn retry_parked(&self, id: Uuid) -> Result<bool, OutboxError>;

    /// Deletes the parked row with message id `id`, unblocking its key; `false` if none.
    async fn discard_parked(&self, id: Uuid) -> Result<bool, OutboxError>;

    /// Deletes rows that were published (confirmed) but whose
    /// [`ClaimedBatch::complete`] failed and rolled back, in a transaction of
    /// its own. Rows already gone are ignored.
    async fn delete_published(&self, seqs: &[i64]) -> Result<(), OutboxError>;
}

/// Rows claimed by one relay. Dropping it without [`ClaimedBatch::complete`]
/// releases the claim (rollback / lease expiry): the rows stay unsent.
#[async_trait]
pub trait ClaimedBatch: Send {
    /// The claimed rows, in sequence order.
    fn records(&self) -> &[OutboxRecord];

    /// Deletes the `sent` rows, records `failed` ones, releases the rest.
    async fn complete(self: Box<Self>, sent: &[i64], failed: &[Failure])
        -> Result<(), OutboxError>;
}

/// Writes events into the outbox table inside the caller's transaction, and
/// manages the table (migrations, parked rows). One per table; cheap to clone.
///
/// Constructed per database: [`Outbox::postgres`], [`Outbox::mysql`],
/// [`Outbox::sqlite`]; `add` / `add_all` / `add_envelopes` are on those
/// typed outboxes and write through an [`OutboxConn`] — normally `&mut tx`.
pub struct Outbox<DB: sqlx_db::Db> {
    pool: sqlx_db::Pool<DB>,
    config: Arc<OutboxConfig>,
}

impl<DB: sqlx_db::Db> Clone for Outbox<DB> {
    fn clone(&self) -> Self {
        Self {
            pool: self.pool.clone(),
            config: self.config.clone(),
        }
    }
}

impl<DB: sqlx_db::Db> std::fmt::Debug for Outbox<DB> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox")
            .field("table", &self.config.table)
            .finish_non_exhaustive()
    }
}

impl<DB: sqlx_db::Db> Outbox<DB>
where
    Self: AsStore,
{
    /// The table's configuration.
    pub fn config(&self) -> &OutboxConfig {
        &self.config
    }
    /// The pool this outbox manages its table with.
    pub fn pool(&self) -> &sqlx_db::Pool<DB> {
        &self.pool
    }
    /// The relay-side store over the same table.
    pub fn store(&self) -> Arc<dyn OutboxStore> {
        self.as_store()
    }
    /// Creates or upgrades the outbox table (idempotent; safe to call from
    /// every instance on start).
    pub async fn migrate(&self) -> Result<(), OutboxError> {
        self.as_store().migrate().await
    }
    /// A relay publishing this outbox through `publisher`.
    pub fn relay<P: crate::Publisher>(&self, publisher: P) -> Relay {
        Relay::new(self.as_store(), Arc::new(publisher))
    }
    /// Unsent rows, parked included.
    pub async fn backlog(&self) -> Result<u64, OutboxError> {
        self.as_store().backlog().await
    }
    /// Backlog, parked rows and the oldest row's age.
    pub async fn stats(&self) -> Result<OutboxStats, OutboxError> {
        self.as_store().stats().await
    }
    /// Parked rows, oldest first.
    pub async fn parked(&self, limit: u32) -> Result<Vec<ParkedEvent>, OutboxError> {
        self.as_store().parked(limit).await
    }
    /// Gives the parked row with message id `id` another round of attempts.
    pub async fn retry_parked(&self, id: Uuid) -> Result<bool, OutboxError> {
        self.as_store().retry_parked(id).await
    }
    /// Deletes the parked row with message id `id` (never published), unblocking its key.
    pub async fn discard_parked(&self, id: Uuid) -> Result<bool, OutboxError> {
        self.as_store().discard_parked(id).await
    }
}

/// How a database inserts envelopes into its outbox table (implemented for
/// each supported database; the generic `add` methods call it).
#[doc(hidden)]
#[async_trait]
pub trait InsertEnvelopes<DB: sqlx_db::Db> {
    /// Inserts `envelopes` in order through `conn`.
    async fn insert_envelopes(
        &self,
        conn: &mut DB::Connection,
        envelopes: &[Envelope],
    ) -> Result<(), OutboxError>;
}

impl<DB: sqlx_db::Db> Outbox<DB>
where
    Self: InsertEnvelopes<DB>,
{
    /// Inserts `event` into the outbox through `conn` — normally `&mut tx`,
    /// the transaction that also holds the business change. The current
    /// trace context is stored in its `traceparent` header. Returns the
    /// message id.
    pub async fn add<C, E>(&self, conn: &mut C, event: &E) -> Result<Uuid, OutboxError>
    where
        C: OutboxConn<DB> + ?Sized,
        E: Event,
    {
        // Feature `otel`: an `eventbus.outbox.insert` span whose context the row carries.
        #[cfg(feature = "otel")]
        let span = tracing::info_span!("eventbus.outbox.insert", event = E::NAME);
        #[cfg(feature = "otel")]
        let envelope = span.in_scope(|| Envelope::from_event(event))?;
        #[cfg(not(feature = "otel"))]
        let envelope = Envelope::from_event(event)?;
        let insert = self.add_envelopes(conn, std::slice::from_ref(&envelope));
        #[cfg(feature = "otel")]
        let insert = tracing::Instrument::instrument(insert, span);
        insert.await?;
        Ok(envelope.id)
    }

    /// Inserts `events` in order (batched statements). Returns their ids.
    pub async fn add_all<C, E>(&self, conn: &mut C, events: &[E]) -> Result<Vec<Uuid>, OutboxError>
    where
        C: OutboxConn<DB> + ?Sized,
        E: Event,
    {
        #[cfg(feature = "otel")]
        let span = tracing::info_span!(
            "eventbus.outbox.insert",
            event = E::NAME,
            rows = events.len()
        );
        let make = || {
            events
                .iter()
                .map(Envelope::from_event)
                .collect::<Result<Vec<_>, _>>()
        };
        #[cfg(feature = "otel")]
        let envelopes = span.in_scope(make)?;
        #[cfg(not(feature = "otel"))]
        let envelopes = make()?;
        let insert = self.add_envelopes(conn, &envelopes);
        #[cfg(feature = "otel")]
        let insert = tracing::Instrument::instrument(insert, span);
        insert.await?;
        Ok(envelopes.iter().map(|e| e.id).collect())
    }

    /// Inserts prepared envelopes in order.
    pub async fn add_envelopes<C>(
        &self,
        conn: &mut C,
        envelopes: &[Envelope],
    ) -> Result<(), OutboxError>
    where
        C: OutboxConn<DB> + ?Sized,
    {
        self.insert_envelopes(conn.connection(), envelopes).await
    }
}

/// Something [`Outbox::add`](Outbox) can write through: a connection, a
/// `sqlx::Transaction` (the usual case: `outbox.add(&mut tx, &event)`), or
/// a pooled connection.
pub trait OutboxConn<DB: sqlx_db::Db>: Send {
    /// The underlying connection.
    fn connection(&mut self) -> &mut DB::Connection;
}

impl<DB: sqlx_db::Db> OutboxConn<DB> for sqlx::Transaction<'_, DB> {
    fn connection(&mut self) -> &mut DB::Connection {
        self
    }
}

impl<DB: sqlx_db::Db> OutboxConn<DB> for sqlx::pool::PoolConnection<DB> {
    fn connection(&mut self) -> &mut DB::Connection {
        self
    }
}

#[cfg(feature = "postgres")]
impl OutboxConn<sqlx::Postgres> for sqlx::PgConnection {
    fn connection(&mut self) -> &mut sqlx::PgConnection {
        self
    }
}

#[cfg(feature = "mysql")]
impl OutboxConn<sqlx::MySql> for sqlx::MySqlConnection {
    fn connection(&mut self) -> &mut sqlx::MySqlConnection {
        self
    }
}

#[cfg(feature = "sqlite")]
impl OutboxConn<sqlx::Sqlite> for sqlx::SqliteConnection {
    fn connection(&mut self) -> &mut sqlx::SqliteConnection {
        self
    }
}

/// Implemented by each database's `Outbox<DB>`: its relay-side store.
#[doc(hidden)]
pub trait AsStore {
    fn as_store(&self) -> Arc<dyn OutboxStore>;
}

/// Which sqlx database types an outbox can live in.
#[doc(hidden)]
pub mod sqlx_db {
    /// A database with an outbox implementation.
    pub trait Db: sqlx::Database {}
    #[cfg(feature = "postgres")]
    impl Db for sqlx::Postgres {}
    #[cfg(feature = "mysql")]
    impl Db for sqlx::MySql {}
    #[cfg(feature = "sqlite")]
    impl Db for sqlx::Sqlite {}
    pub use sqlx::Pool;
}

/// Headers as stored (JSON object text).
pub(crate) fn headers_to_json(h: &Headers) -> String {
    serde_json::to_string(h).expect("string map serialises")
}

/// Rebuilds an envelope from stored columns.
#[allow(clippy::too_many_arguments)]
pub(crate) fn envelope_from_columns(
    id: Uuid,
    name: String,
    version: i32,
    key: Option<String>,
    headers: &str,
    occurred_at: DateTime<Utc>,
    content_type: String,
    payload: Vec<u8>,
) -> Result<Envelope, String> {
    let headers: Headers =
        serde_json::from_str(headers).map_err(|e| format!("unreadable headers: {e}"))?;
    Ok(Envelope {
        id,
        name: name.into(),
        version: u32::try_from(version).map_err(|_| format!("bad version {version}"))?,
        key,
        headers,
        occurred_at,
        content_type: if content_type == crate::event::JSON_CONTENT_TYPE {
            crate::event::JSON_CONTENT_TYPE.into()
        } else {
            content_type.into()
        },
        payload: payload.into(),
    })
}

/// Milliseconds as i64 for SQL intervals.
pub(crate) fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl<DB: sqlx_db::Db> Outbox<DB> {
    pub(crate) fn from_parts(pool: sqlx_db::Pool<DB>, config: OutboxConfig) -> Self {
        Self {
            pool,
            config: Arc::new(config),
        }
    }
    pub(crate) fn table(&self) -> &TableName {
        &self.config.table
    }
}
