//! The inbox: effectively-once handling on top of at-least-once delivery.
//!
//! Brokers may deliver a message twice (a consumer died before its ack, a
//! relay republished after a crash). A handler whose effects live in a
//! database records `(handler group, message id)` in the inbox table **in
//! the same transaction** as its own writes: the first delivery inserts the
//! row and commits it together with the effects; a duplicate finds the row,
//! is acked and skipped. If the handler fails, its writes and the inbox row
//! roll back together and the retry starts clean.
//!
//! Two ways to use it:
//!
//! - **Explicitly**, in the handler: [`Inbox::begin`] opens the
//!   transaction and inserts the row; `None` means "already handled".
//!
//!   ```ignore
//!   let Some(mut tx) = self.inbox.begin(cx).await? else { return Ok(()) };
//!   sqlx::query("UPDATE stock SET n = n - 1 WHERE sku = $1").bind(&e.sku).execute(&mut *tx).await?;
//!   tx.commit().await?;
//!   ```
//!
//! - **As a pipeline layer** ([`InboxLayer`], switched on per handler with
//!   [`HandlerConfig::inbox`](crate::HandlerConfig::inbox)): the layer opens
//!   the transaction and inserts the row around every attempt, skips
//!   duplicates, commits when the handler returns `Ok` and rolls back when
//!   it fails, panics or times out. Inside the handler, [`transaction`]
//!   gives access to that transaction for the handler's own writes.
//!
//! A second delivery that arrives while the first is still in its
//! transaction waits on the row lock of the inbox key (PostgreSQL, MySQL) or
//! on the single writer (SQLite), then sees the committed row and skips.
//!
//! Rows older than [`InboxConfig::retention`] are deleted by
//! [`Inbox::spawn_pruner`] in small batches (short transactions, a pause
//! between batches), so pruning never holds long locks. Keep the retention
//! longer than any redelivery can take.

#[cfg(feature = "mysql")]
mod mysql;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "sqlite")]
mod sqlite;

use std::any::Any;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::future::BoxFuture;
use tokio::sync::{Mutex, OwnedMutexGuard};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tower_layer::Layer;
use tower_service::Service;
use uuid::Uuid;

use crate::migrate::{InvalidTableName, MigrateError, TableName};
use crate::outbox::sqlx_db::Db;
use crate::{Context, HandleError};

/// The default inbox table name.
pub const DEFAULT_TABLE: &str = "eventbus_inbox";

/// Where the inbox lives and how long it remembers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboxConfig {
    table: TableName,
    /// How long a handled message is remembered (default 7 days).
    pub retention: Duration,
    /// Rows deleted per pruning statement (default 1000).
    pub prune_batch: u32,
    /// Pause between pruning batches while there is more to delete (default 50 ms).
    pub prune_pause: Duration,
    /// Interval between pruning runs (default 10 min).
    pub prune_interval: Duration,
}

impl Default for InboxConfig {
    fn default() -> Self {
        Self {
            table: TableName::new(DEFAULT_TABLE).expect("valid default"),
            retention: Duration::from_secs(7 * 24 * 3600),
            prune_batch: 1000,
            prune_pause: Duration::from_millis(50),
            prune_interval: Duration::from_secs(600),
        }
    }
}

impl InboxConfig {
    /// Defaults (table `eventbus_inbox`).
    pub fn new() -> Self {
        Self::default()
    }
    /// Uses table `name` (`name` or `schema.name`).
    pub fn table(mut self, name: &str) -> Result<Self, InvalidTableName> {
        self.table = TableName::new(name)?;
        Ok(self)
    }
    /// Sets the retention window.
    pub fn retention(mut self, retention: Duration) -> Self {
        self.retention = retention;
        self
    }
    /// The table name.
    pub fn table_name(&self) -> &TableName {
        &self.table
    }
}

/// An inbox operation failed.
#[derive(Debug, thiserror::Error)]
pub enum InboxError {
    /// The database failed.
    #[error("inbox database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Migrating the table failed.
    #[error(transparent)]
    Migrate(#[from] MigrateError),
    /// [`transaction`] was called outside a handler run by an [`InboxLayer`]
    /// of that database type.
    #[error("no inbox transaction for this database here: enable the inbox for this handler (HandlerConfig::inbox) with an inbox of the same database")]
    NoTransaction,
}

/// Records handled messages in one table. Cheap to clone.
pub struct Inbox<DB: Db> {
    pool: sqlx::Pool<DB>,
    config: Arc<InboxConfig>,
}

impl<DB: Db> Clone for Inbox<DB> {
    fn clone(&self) -> Self {
        Self {
            pool: self.pool.clone(),
            config: self.config.clone(),
        }
    }
}

impl<DB: Db> std::fmt::Debug for Inbox<DB> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inbox")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// What each database's inbox implements; the layer and pruner run on it.
#[async_trait]
pub trait InboxStore: Send + Sync + 'static {
    /// Begins a transaction and inserts `(group, message_id)`; `None` if the
    /// row exists (already handled), after rolling back.
    async fn begin(
        &self,
        message_id: Uuid,
        group: &str,
    ) -> Result<Option<Box<dyn InboxTx>>, InboxError>;
    /// Deletes up to `limit` rows older than `older_than`; returns how many.
    async fn prune_batch(&self, older_than: Duration, limit: u32) -> Result<u64, InboxError>;
    /// Whether `(group, message_id)` is recorded (committed).
    async fn contains(&self, message_id: Uuid, group: &str) -> Result<bool, InboxError>;
    /// Rows in the table (the `eventbus_inbox_rows` gauge, the dashboard).
    async fn rows(&self) -> Result<u64, InboxError>;
}

/// An open inbox transaction, type-erased (a `sqlx::Transaction<'static, DB>`).
pub trait InboxTx: Send + 'static {
    /// Commits the handler's writes and the inbox row.
    fn commit(self: Box<Self>) -> BoxFuture<'static, Result<(), InboxError>>;
    /// The transaction, for downcasting.
    fn as_any(&self) -> &dyn Any;
    /// The transaction, for downcasting.
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

impl<DB: Db> InboxTx for sqlx::Transaction<'static, DB> {
    fn commit(self: Box<Self>) -> BoxFuture<'static, Result<(), InboxError>> {
        Box::pin(async move { (*self).commit().await.map_err(InboxError::from) })
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

impl<DB: Db> Inbox<DB>
where
    Self: AsInboxStore,
{
    /// The configuration.
    pub fn config(&self) -> &InboxConfig {
        &self.config
    }
    /// The pool.
    pub fn pool(&self) -> &sqlx::Pool<DB> {
        &self.pool
    }
    /// The type-erased store (for [`InboxLayer`]).
    pub fn store(&self) -> Arc<dyn InboxStore> {
        self.as_inbox_store()
    }
    /// The pipeline layer recording into this inbox. Register handlers with
    /// `bus.register_with(h, |p| p.inbox(inbox.layer()))`.
    pub fn layer(&self) -> InboxLayer {
        InboxLayer::new(self.as_inbox_store())
    }
    /// Whether `group` has handled `message_id`.
    pub async fn contains(&self, message_id: Uuid, group: &str) -> Result<bool, InboxError> {
        self.as_inbox_store().contains(message_id, group).await
    }
    /// Rows in the inbox table.
    pub async fn rows(&self) -> Result<u64, InboxError> {
        self.as_inbox_store().rows().await
    }
    /// Deletes rows older than the retention in batches of
    /// [`InboxConfig::prune_batch`], pausing between batches; returns the
    /// number deleted.
    pub async fn prune(&self) -> Result<u64, InboxError> {
        prune(&*self.as_inbox_store(), &self.config).await
    }
    /// Prunes every [`InboxConfig::prune_interval`] on a background task.
    pub fn spawn_pruner(&self) -> PrunerHandle {
        let store = self.as_inbox_store();
        let config = self.config.clone();
        let token = CancellationToken::new();
        let stop = token.clone();
        let join = tokio::spawn(async move {
            loop {
                match prune(&*store, &config).await {
                    Ok(n) if n > 0 => tracing::debug!(deleted = n, "inbox pruned"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "inbox pruning failed"),
                }
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(config.prune_interval) => {}
                }
            }
        });
        PrunerHandle { token, join }
    }

    pub(crate) fn from_parts(pool: sqlx::Pool<DB>, config: InboxConfig) -> Self {
        Self {
            pool,
            config: Arc::new(config),
        }
    }
}

/// Implemented by each database's `Inbox<DB>`.
#[doc(hidden)]
pub trait AsInboxStore {
    fn as_inbox_store(&self) -> Arc<dyn InboxStore>;
}

async fn prune(store: &dyn InboxStore, config: &InboxConfig) -> Result<u64, InboxError> {
    let mut total = 0;
    loop {
        let n = store
            .prune_batch(config.retention, config.prune_batch.max(1))
            .await?;
        total += n;
        if n < u64::from(config.prune_batch.max(1)) {
            return Ok(total);
        }
        tokio::time::sleep(config.prune_pause).await;
    }
}

/// A running pruner.
#[derive(Debug)]
pub struct PrunerHandle {
    token: CancellationToken,
    join: JoinHandle<()>,
}

impl PrunerHandle {
    /// Stops it.
    pub async fn shutdown(self) {
        self.token.cancel();
        let _ = self.join.await;
    }
}

// ===== the layer =====

type Slot = Arc<Mutex<Option<Box<dyn InboxTx>>>>;

tokio::task_local! {
    static CURRENT: Slot;
}

/// The inbox transaction of the handler being run by an [`InboxLayer`]:
/// derefs to the database connection, so `sqlx::query(..).execute(&mut *tx)`
/// works as with a `sqlx::Transaction`. Do not commit it — the layer
/// commits when the handler returns `Ok`. Drop it before returning.
pub struct InboxTransaction<DB: Db> {
    guard: OwnedMutexGuard<Option<Box<dyn InboxTx>>>,
    _db: PhantomData<fn() -> DB>,
}

impl<DB: Db> std::fmt::Debug for InboxTransaction<DB> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InboxTransaction").finish_non_exhaustive()
    }
}

impl<DB: Db> InboxTransaction<DB> {
    fn tx(&self) -> &sqlx::Transaction<'static, DB> {
        self.guard
            .as_ref()
            .and_then(|t| t.as_any().downcast_ref())
            .expect("checked in transaction()")
    }
    fn tx_mut(&mut self) -> &mut sqlx::Transaction<'static, DB> {
        self.guard
            .as_mut()
            .and_then(|t| t.as_any_mut().downcast_mut())
            .expect("checked in transaction()")
    }
}

impl<DB: Db> Deref for InboxTransaction<DB> {
    type Target = DB::Connection;
    fn deref(&self) -> &DB::Connection {
        self.tx()
    }
}

impl<DB: Db> DerefMut for InboxTransaction<DB> {
    fn deref_mut(&mut self) -> &mut DB::Connection {
        self.tx_mut()
    }
}

/// The transaction the [`InboxLayer`] opened for the current handler
/// attempt, with the inbox row already inserted. Write the handler's effects
/// through it and they commit (or roll back) together with the inbox row.
///
/// Fails with [`InboxError::NoTransaction`] outside an inbox-enabled
/// handler or when `DB` is not the inbox's database.
pub async fn transaction<DB: Db>() -> Result<InboxTransaction<DB>, InboxError> {
    let slot = CURRENT
        .try_with(Arc::clone)
        .map_err(|_| InboxError::NoTransaction)?;
    let guard = slot.lock_owned().await;
    let ok = guard
        .as_ref()
        .is_some_and(|t| t.as_any().is::<sqlx::Transaction<'static, DB>>());
    if !ok {
        return Err(InboxError::NoTransaction);
    }
    Ok(InboxTransaction {
        guard,
        _db: PhantomData,
    })
}

/// Pipeline layer: runs each attempt inside an inbox transaction (see the
/// [module docs](self)). Duplicates answer `Ok` without calling the handler.
#[derive(Clone)]
pub struct InboxLayer {
    store: Arc<dyn InboxStore>,
}

impl std::fmt::Debug for InboxLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InboxLayer").finish_non_exhaustive()
    }
}

impl InboxLayer {
    /// A layer recording into `store`.
    pub fn new(store: Arc<dyn InboxStore>) -> Self {
        Self { store }
    }
}

impl<S> Layer<S> for InboxLayer {
    type Service = InboxService<S>;
    fn layer(&self, inner: S) -> InboxService<S> {
        InboxService {
            inner,
            store: self.store.clone(),
        }
    }
}

/// See [`InboxLayer`].
#[derive(Clone)]
pub struct InboxService<S> {
    inner: S,
    store: Arc<dyn InboxStore>,
}

impl<S> std::fmt::Debug for InboxService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InboxService").finish_non_exhaustive()
    }
}

impl<S> Service<Context> for InboxService<S>
where
    S: Service<Context, Response = (), Error = HandleError> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = ();
    type Error = HandleError;
    type Future = BoxFuture<'static, Result<(), HandleError>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), HandleError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, cx: Context) -> Self::Future {
        // Use the service that was polled ready; leave a clone in its place.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let store = self.store.clone();
        Box::pin(async move {
            let tx = store
                .begin(cx.message_id(), cx.group())
                .await
                .map_err(|e| HandleError::Handler(Box::new(e)))?;
            let Some(tx) = tx else {
                tracing::debug!(message_id = %cx.message_id(), group = cx.group(), "inbox: duplicate delivery skipped");
                return Ok(());
            };
            let slot: Slot = Arc::new(Mutex::new(Some(tx)));
            CURRENT.scope(slot.clone(), inner.call(cx)).await?;
            let tx = slot.lock().await.take();
            match tx {
                Some(tx) => tx
                    .commit()
                    .await
                    .map_err(|e| HandleError::Handler(Box::new(e))),
                None => Ok(()),
            }
        })
    }
}
