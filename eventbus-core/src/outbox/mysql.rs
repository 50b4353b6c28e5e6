//! The outbox on MySQL 8 / MariaDB ≥ 10.6 (feature `mysql`).
//!
//! Same scheme as PostgreSQL: a relay reads the claimable key heads with a
//! plain (consistent) read, locks them by primary key with
//! `FOR UPDATE SKIP LOCKED` in a `READ COMMITTED` transaction (no gap locks
//! that would block inserting writers), publishes the keys' rows, deletes
//! the confirmed ones and commits. A relay that skips a locked head skips the
//! whole key. No `LISTEN/NOTIFY` exists, so relays poll.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::mysql::{MySqlPool, MySqlRow};
use sqlx::{MySql, Row, Transaction};
use uuid::Uuid;

use super::{
    envelope_from_columns, headers_to_json, millis, AsStore, ClaimRequest, ClaimedBatch, Failure,
    InsertEnvelopes, Outbox, OutboxConfig, OutboxError, OutboxRecord, OutboxStats, OutboxStore,
    ParkedEvent,
};
use crate::migrate::{self, Component, TableName};
use crate::Envelope;
use std::time::Duration;

impl Outbox<MySql> {
    /// An outbox in table `eventbus_outbox` of `pool`'s database.
    pub fn mysql(pool: MySqlPool) -> Self {
        Self::mysql_with(pool, OutboxConfig::default())
    }

    /// An outbox configured by `config`.
    pub fn mysql_with(pool: MySqlPool, config: OutboxConfig) -> Self {
        Self::from_parts(pool, config)
    }
}

#[async_trait]
impl InsertEnvelopes<MySql> for Outbox<MySql> {
    async fn insert_envelopes(
        &self,
        conn: &mut sqlx::MySqlConnection,
        envelopes: &[Envelope],
    ) -> Result<(), OutboxError> {
        for chunk in envelopes.chunks(500) {
            let values = vec!["(?, ?, ?, ?, ?, ?, ?, ?)"; chunk.len()].join(", ");
            let sql = format!(
                "INSERT INTO {} (id, name, version, partition_key, headers, occurred_at, content_type, payload) VALUES {values}",
                self.table()
            );
            let mut q = sqlx::query(&sql);
            for e in chunk {
                q = q
                    .bind(e.id)
                    .bind(&e.name)
                    .bind(e.version as i32)
                    .bind(e.key.as_deref())
                    .bind(headers_to_json(&e.headers))
                    .bind(e.occurred_at)
                    .bind(&e.content_type)
                    .bind(e.payload.as_ref());
            }
            q.execute(&mut *conn).await?;
        }
        Ok(())
    }
}

impl AsStore for Outbox<MySql> {
    fn as_store(&self) -> Arc<dyn OutboxStore> {
        Arc::new(MySqlOutboxStore::new(
            self.pool().clone(),
            self.table().clone(),
        ))
    }
}

/// The relay side of a MySQL / MariaDB outbox.
#[derive(Debug)]
pub struct MySqlOutboxStore {
    pool: MySqlPool,
    table: TableName,
    candidates: String,
}

const COLUMNS: &str =
    "seq, id, name, version, partition_key, headers, occurred_at, content_type, payload, attempts";

fn placeholders(n: usize) -> String {
    vec!["?"; n].join(", ")
}

impl MySqlOutboxStore {
    /// A store over `table`.
    pub fn new(pool: MySqlPool, table: TableName) -> Self {
        let t = table.as_str();
        Self {
            candidates: format!(
                "WITH blocked AS ( \
                   SELECT DISTINCT partition_key FROM {t} \
                   WHERE partition_key IS NOT NULL \
                     AND (parked_at IS NOT NULL OR retry_at > UTC_TIMESTAMP(6))), \
                 win AS ( \
                   SELECT seq, partition_key FROM {t} \
                   WHERE parked_at IS NULL AND (retry_at IS NULL OR retry_at <= UTC_TIMESTAMP(6)) \
                     AND (partition_key IS NULL OR partition_key NOT IN (SELECT partition_key FROM blocked)) \
                   ORDER BY seq LIMIT ?) \
                 SELECT seq FROM ( \
                   SELECT min(seq) AS seq FROM win WHERE partition_key IS NOT NULL GROUP BY partition_key \
                   UNION ALL SELECT seq FROM win WHERE partition_key IS NULL) heads \
                 ORDER BY seq LIMIT ?"
            ),
            pool,
            table,
        }
    }
}

fn record(row: &MySqlRow) -> Result<OutboxRecord, sqlx::Error> {
    let headers: String = row.try_get(5)?;
    let occurred_at: DateTime<Utc> = row.try_get(6)?;
    let key: Option<String> = row.try_get(4)?;
    Ok(OutboxRecord {
        seq: row.try_get(0)?,
        key: key.clone(),
        attempts: row.try_get(9)?,
        envelope: envelope_from_columns(
            row.try_get(1)?,
            row.try_get(2)?,
            row.try_get(3)?,
            key,
            &headers,
            occurred_at,
            row.try_get(7)?,
            row.try_get(8)?,
        ),
    })
}

struct MySqlBatch {
    tx: Transaction<'static, MySql>,
    table: TableName,
    records: Vec<OutboxRecord>,
}

#[async_trait]
impl ClaimedBatch for MySqlBatch {
    fn records(&self) -> &[OutboxRecord] {
        &self.records
    }

    async fn complete(
        mut self: Box<Self>,
        sent: &[i64],
        failed: &[Failure],
    ) -> Result<(), OutboxError> {
        let t = self.table.clone();
        for chunk in sent.chunks(500) {
            let sql = format!(
                "DELETE FROM {t} WHERE seq IN ({})",
                placeholders(chunk.len())
            );
            let mut q = sqlx::query(&sql);
            for seq in chunk {
                q = q.bind(*seq);
            }
            q.execute(&mut *self.tx).await?;
        }
        for f in failed {
            sqlx::query(&format!(
                "UPDATE {t} SET attempts = attempts + 1, last_error = ?, \
                   retry_at = CASE WHEN ? IS NULL THEN NULL ELSE UTC_TIMESTAMP(6) + INTERVAL ? MICROSECOND END, \
                   parked_at = CASE WHEN ? IS NULL THEN UTC_TIMESTAMP(6) END \
                 WHERE seq = ?"
            ))
            .bind(&f.error)
            .bind(f.retry_in.map(millis))
            .bind(f.retry_in.map(|d| millis(d).saturating_mul(1000)))
            .bind(f.retry_in.map(millis))
            .bind(f.seq)
            .execute(&mut *self.tx)
            .await?;
        }
        self.tx.commit().await?;
        Ok(())
    }
}

#[async_trait]
impl OutboxStore for MySqlOutboxStore {
    async fn claim(
        &self,
        req: &ClaimRequest,
    ) -> Result<Option<Box<dyn ClaimedBatch>>, OutboxError> {
        let t = &self.table;
        let mut tx = self
            .pool
            .begin_with("SET TRANSACTION ISOLATION LEVEL READ COMMITTED; START TRANSACTION")
            .await?;
        let candidates: Vec<i64> = sqlx::query_scalar(&self.candidates)
            .bind(req.window as i64)
            .bind(req.batch_size as i64)
            .fetch_all(&mut *tx)
            .await?;
        if candidates.is_empty() {
            tx.rollback().await?;
            return Ok(None);
        }
        let sql = format!(
            "SELECT seq, partition_key FROM {t} WHERE seq IN ({}) AND parked_at IS NULL ORDER BY seq FOR UPDATE SKIP LOCKED",
            placeholders(candidates.len())
        );
        let mut q = sqlx::query(&sql);
        for c in &candidates {
            q = q.bind(*c);
        }
        let heads = q.fetch_all(&mut *tx).await?;
        if heads.is_empty() {
            tx.rollback().await?;
            return Ok(None);
        }
        let mut keys = Vec::new();
        let mut unkeyed = Vec::new();
        for h in &heads {
            match h.try_get::<Option<String>, _>(1)? {
                Some(k) => keys.push(k),
                None => unkeyed.push(h.try_get::<i64, _>(0)?),
            }
        }
        let mut records = Vec::with_capacity(req.batch_size);
        if !keys.is_empty() {
            let sql = format!(
                "SELECT {COLUMNS} FROM {t} WHERE partition_key IN ({}) ORDER BY seq LIMIT ?",
                placeholders(keys.len())
            );
            let mut q = sqlx::query(&sql);
            for k in &keys {
                q = q.bind(k);
            }
            for row in q.bind(req.batch_size as i64).fetch_all(&mut *tx).await? {
                records.push(record(&row)?);
            }
        }
        if !unkeyed.is_empty() {
            let sql = format!(
                "SELECT {COLUMNS} FROM {t} WHERE seq IN ({}) ORDER BY seq",
                placeholders(unkeyed.len())
            );
            let mut q = sqlx::query(&sql);
            for s in &unkeyed {
                q = q.bind(*s);
            }
            for row in q.fetch_all(&mut *tx).await? {
                records.push(record(&row)?);
            }
            records.sort_by_key(|r| r.seq);
        }
        records.truncate(req.batch_size);
        Ok(Some(Box::new(MySqlBatch {
            tx,
            table: self.table.clone(),
            records,
        })))
    }

    async fn migrate(&self) -> Result<(), OutboxError> {
        migrate::mysql(&self.pool, Component::Outbox, &self.table).await?;
        Ok(())
    }

    async fn delete_published(&self, seqs: &[i64]) -> Result<(), OutboxError> {
        for chunk in seqs.chunks(500) {
            let sql = format!(
                "DELETE FROM {} WHERE seq IN ({})",
                self.table,
                placeholders(chunk.len())
            );
            let mut q = sqlx::query(&sql);
            for seq in chunk {
                q = q.bind(*seq);
            }
            q.execute(&self.pool).await?;
        }
        Ok(())
    }

    async fn stats(&self) -> Result<OutboxStats, OutboxError> {
        let (backlog, parked, oldest_ms): (i64, i64, Option<i64>) = sqlx::query_as(&format!(
            "SELECT count(*), count(parked_at), \
             CAST(TIMESTAMPDIFF(MICROSECOND, min(created_at), CURRENT_TIMESTAMP(6)) / 1000 AS SIGNED) FROM {}",
            self.table
        ))
        .fetch_one(&self.pool)
        .await?;
        Ok(OutboxStats {
            backlog: u64::try_from(backlog).unwrap_or(0),
            parked: u64::try_from(parked).unwrap_or(0),
            oldest_age: Duration::from_millis(
                oldest_ms.and_then(|ms| u64::try_from(ms).ok()).unwrap_or(0),
            ),
        })
    }

    fn table_name(&self) -> String {
        self.table.to_string()
    }

    async fn backlog(&self) -> Result<u64, OutboxError> {
        let n: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {}", self.table))
            .fetch_one(&self.pool)
            .await?;
        Ok(n as u64)
    }

    async fn parked(&self, limit: u32) -> Result<Vec<ParkedEvent>, OutboxError> {
        let rows = sqlx::query(&format!(
            "SELECT seq, id, name, partition_key, attempts, last_error, parked_at, \
             version, content_type, payload FROM {} \
             WHERE parked_at IS NOT NULL ORDER BY seq LIMIT ?",
            self.table
        ))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(ParkedEvent {
                    seq: r.try_get(0)?,
                    id: r.try_get(1)?,
                    name: r.try_get(2)?,
                    key: r.try_get(3)?,
                    attempts: r.try_get(4)?,
                    last_error: r.try_get(5)?,
                    parked_at: r.try_get(6)?,
                    // The inverse of the insert's `as i32`.
                    version: r.try_get::<i32, _>(7)? as u32,
                    content_type: r.try_get(8)?,
                    payload: r.try_get::<Vec<u8>, _>(9)?.into(),
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(Into::into)
    }

    async fn retry_parked(&self, id: Uuid) -> Result<bool, OutboxError> {
        let done = sqlx::query(&format!(
            "UPDATE {} SET parked_at = NULL, retry_at = NULL, attempts = 0 WHERE id = ? AND parked_at IS NOT NULL",
            self.table
        ))
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn discard_parked(&self, id: Uuid) -> Result<bool, OutboxError> {
        let done = sqlx::query(&format!(
            "DELETE FROM {} WHERE id = ? AND parked_at IS NOT NULL",
            self.table
        ))
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }
}
