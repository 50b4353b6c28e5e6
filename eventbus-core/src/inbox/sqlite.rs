//! The inbox on SQLite. Each check runs in a `BEGIN IMMEDIATE` transaction
//! (SQLite's single writer), so concurrent duplicates are serialised.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::{Sqlite, SqlitePool, Transaction};
use uuid::Uuid;

use super::{AsInboxStore, Inbox, InboxConfig, InboxError, InboxStore, InboxTx};
use crate::migrate::{self, Component, TableName};
use crate::outbox::millis;
use crate::outbox::sqlite::now_ms;
use crate::Context;

impl Inbox<Sqlite> {
    /// An inbox in table `eventbus_inbox` of `pool`'s database.
    pub fn sqlite(pool: SqlitePool) -> Self {
        Self::from_parts(pool, InboxConfig::default())
    }
    /// An inbox configured by `config`.
    pub fn sqlite_with(pool: SqlitePool, config: InboxConfig) -> Self {
        Self::from_parts(pool, config)
    }
    /// Begins a transaction and records `cx`'s message for `cx`'s group in
    /// it. `None`: already handled — ack and skip.
    pub async fn begin(
        &self,
        cx: &Context,
    ) -> Result<Option<Transaction<'static, Sqlite>>, InboxError> {
        self.begin_for(cx.message_id(), cx.group()).await
    }
    /// [`Inbox::begin`] for an explicit message id and group.
    pub async fn begin_for(
        &self,
        message_id: Uuid,
        group: &str,
    ) -> Result<Option<Transaction<'static, Sqlite>>, InboxError> {
        LiteInbox::new(self.pool().clone(), self.config().table_name().clone())
            .begin_typed(message_id, group)
            .await
    }
    /// Creates or upgrades the inbox table.
    pub async fn migrate(&self) -> Result<(), InboxError> {
        migrate::sqlite(self.pool(), Component::Inbox, self.config().table_name()).await?;
        Ok(())
    }
}

impl AsInboxStore for Inbox<Sqlite> {
    fn as_inbox_store(&self) -> Arc<dyn InboxStore> {
        Arc::new(LiteInbox::new(
            self.pool().clone(),
            self.config().table_name().clone(),
        ))
    }
}

struct LiteInbox {
    pool: SqlitePool,
    insert: String,
    prune: String,
    contains: String,
    count: String,
}

impl LiteInbox {
    fn new(pool: SqlitePool, table: TableName) -> Self {
        Self {
            pool,
            insert: format!(
                "INSERT OR IGNORE INTO {table} (group_name, message_id, processed_at) VALUES (?1, ?2, ?3)"
            ),
            prune: format!(
                "DELETE FROM {table} WHERE rowid IN (SELECT rowid FROM {table} WHERE processed_at < ?1 LIMIT ?2)"
            ),
            contains: format!("SELECT count(*) FROM {table} WHERE group_name = ?1 AND message_id = ?2"),
            count: format!("SELECT count(*) FROM {table}"),
        }
    }

    async fn begin_typed(
        &self,
        message_id: Uuid,
        group: &str,
    ) -> Result<Option<Transaction<'static, Sqlite>>, InboxError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let inserted = sqlx::query(&self.insert)
            .bind(group)
            .bind(message_id)
            .bind(now_ms())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if inserted == 0 {
            tx.rollback().await?;
            return Ok(None);
        }
        Ok(Some(tx))
    }
}

#[async_trait]
impl InboxStore for LiteInbox {
    async fn begin(
        &self,
        message_id: Uuid,
        group: &str,
    ) -> Result<Option<Box<dyn InboxTx>>, InboxError> {
        Ok(self
            .begin_typed(message_id, group)
            .await?
            .map(|tx| Box::new(tx) as Box<dyn InboxTx>))
    }
    async fn prune_batch(&self, older_than: Duration, limit: u32) -> Result<u64, InboxError> {
        Ok(sqlx::query(&self.prune)
            .bind(now_ms() - millis(older_than))
            .bind(i64::from(limit))
            .execute(&self.pool)
            .await?
            .rows_affected())
    }
    async fn rows(&self) -> Result<u64, InboxError> {
        let n: i64 = sqlx::query_scalar(&self.count)
            .fetch_one(&self.pool)
            .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }
    async fn contains(&self, message_id: Uuid, group: &str) -> Result<bool, InboxError> {
        let n: i64 = sqlx::query_scalar(&self.contains)
            .bind(group)
            .bind(message_id)
            .fetch_one(&self.pool)
            .await?;
        Ok(n > 0)
    }
}
