//! The outbox on SQLite (feature `sqlite`).
//!
//! SQLite has one writer at a time and no row locks, so `SKIP LOCKED` does
//! not exist and a transaction held open while publishing would block every
//! business write. A relay therefore *leases* rows instead: in a short
//! `BEGIN IMMEDIATE` transaction (serialised with every other writer) it
//! picks the heads of keys that nobody holds — no row of the key leased,
//! parked or waiting for a retry — and stamps those keys' rows with its id
//! and an expiry ([`RelayConfig::lease`](super::RelayConfig::lease)). After
//! publishing it deletes the rows it still holds. A killed relay's lease
//! simply expires and the rows are published again.
//!
//! Times are Unix milliseconds from the relay's clock (SQLite is local, so
//! all relays share the machine's clock).

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::{SqlitePool, SqliteRow};
use sqlx::{Row, Sqlite};
use uuid::Uuid;

use super::{
    envelope_from_columns, headers_to_json, millis, AsStore, ClaimRequest, ClaimedBatch, Failure,
    InsertEnvelopes, Outbox, OutboxConfig, OutboxError, OutboxRecord, OutboxStats, OutboxStore,
    ParkedEvent,
};
use crate::migrate::{self, Component, TableName};
use crate::Envelope;
use std::time::Duration;

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Outbox<Sqlite> {
    /// An outbox in table `eventbus_outbox` of `pool`'s database.
    pub fn sqlite(pool: SqlitePool) -> Self {
        Self::sqlite_with(pool, OutboxConfig::default())
    }

    /// An outbox configured by `config` (the table name must not be
    /// schema-qualified on SQLite).
    pub fn sqlite_with(pool: SqlitePool, config: OutboxConfig) -> Self {
        Self::from_parts(pool, config)
    }
}

#[async_trait]
impl InsertEnvelopes<Sqlite> for Outbox<Sqlite> {
    async fn insert_envelopes(
        &self,
        conn: &mut sqlx::SqliteConnection,
        envelopes: &[Envelope],
    ) -> Result<(), OutboxError> {
        let sql = format!(
            "INSERT INTO {} (id, name, version, partition_key, headers, occurred_at, content_type, payload, created_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            self.table()
        );
        let now = now_ms();
        for e in envelopes {
            sqlx::query(&sql)
                .bind(e.id)
                .bind(&e.name)
                .bind(e.version as i64)
                .bind(e.key.as_deref())
                .bind(headers_to_json(&e.headers))
                .bind(e.occurred_at)
                .bind(&e.content_type)
                .bind(e.payload.as_ref())
                .bind(now)
                .execute(&mut *conn)
                .await?;
        }
        Ok(())
    }
}

impl AsStore for Outbox<Sqlite> {
    fn as_store(&self) -> Arc<dyn OutboxStore> {
        Arc::new(SqliteOutboxStore::new(
            self.pool().clone(),
            self.table().clone(),
        ))
    }
}

/// The relay side of a SQLite outbox.
#[derive(Debug)]
pub struct SqliteOutboxStore {
    pool: SqlitePool,
    table: TableName,
    claim: String,
    rows_by_key: String,
    rows_by_seq: String,
    lease: String,
}

const COLUMNS: &str =
    "seq, id, name, version, partition_key, headers, occurred_at, content_type, payload, attempts";

impl SqliteOutboxStore {
    /// A store over `table`.
    pub fn new(pool: SqlitePool, table: TableName) -> Self {
        let t = table.as_str();
        Self {
            claim: format!(
                "WITH blocked AS ( \
                   SELECT DISTINCT partition_key FROM {t} \
                   WHERE partition_key IS NOT NULL \
                     AND (parked_at IS NOT NULL OR retry_at > ?1 OR locked_until > ?1)), \
                 win AS ( \
                   SELECT seq, partition_key FROM {t} \
                   WHERE parked_at IS NULL AND (retry_at IS NULL OR retry_at <= ?1) \
                     AND (locked_until IS NULL OR locked_until <= ?1) \
                     AND (partition_key IS NULL OR partition_key NOT IN (SELECT partition_key FROM blocked)) \
                   ORDER BY seq LIMIT ?2), \
                 heads AS ( \
                   SELECT min(seq) AS seq, partition_key FROM win WHERE partition_key IS NOT NULL GROUP BY partition_key \
                   UNION ALL SELECT seq, NULL FROM win WHERE partition_key IS NULL) \
                 SELECT seq, partition_key FROM heads ORDER BY seq LIMIT ?3"
            ),
            rows_by_key: format!(
                "SELECT {COLUMNS} FROM {t} WHERE partition_key IN (SELECT value FROM json_each(?1)) \
                 ORDER BY seq LIMIT ?2"
            ),
            rows_by_seq: format!(
                "SELECT {COLUMNS} FROM {t} WHERE seq IN (SELECT value FROM json_each(?1)) ORDER BY seq"
            ),
            lease: format!(
                "UPDATE {t} SET locked_by = ?1, locked_until = ?2 WHERE seq IN (SELECT value FROM json_each(?3))"
            ),
            pool,
            table,
        }
    }
}

fn record(row: &SqliteRow) -> Result<OutboxRecord, sqlx::Error> {
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

fn json_list<T: ToString>(items: impl IntoIterator<Item = T>) -> String {
    serde_json::to_string(&items.into_iter().map(|i| i.to_string()).collect::<Vec<_>>())
        .expect("strings serialise")
}

fn json_ints(items: impl IntoIterator<Item = i64>) -> String {
    serde_json::to_string(&items.into_iter().collect::<Vec<_>>()).expect("ints serialise")
}

struct SqliteBatch {
    pool: SqlitePool,
    table: TableName,
    relay_id: Arc<str>,
    records: Vec<OutboxRecord>,
}

#[async_trait]
impl ClaimedBatch for SqliteBatch {
    fn records(&self) -> &[OutboxRecord] {
        &self.records
    }

    async fn complete(
        self: Box<Self>,
        sent: &[i64],
        failed: &[Failure],
    ) -> Result<(), OutboxError> {
        let t = &self.table;
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        if !sent.is_empty() {
            sqlx::query(&format!(
                "DELETE FROM {t} WHERE seq IN (SELECT value FROM json_each(?1)) AND locked_by = ?2"
            ))
            .bind(json_ints(sent.iter().copied()))
            .bind(&*self.relay_id)
            .execute(&mut *tx)
            .await?;
        }
        let now = now_ms();
        for f in failed {
            let retry_at = f.retry_in.map(|d| now + millis(d));
            sqlx::query(&format!(
                "UPDATE {t} SET attempts = attempts + 1, last_error = ?2, retry_at = ?3, \
                   parked_at = CASE WHEN ?3 IS NULL THEN ?4 END \
                 WHERE seq = ?1 AND locked_by = ?5"
            ))
            .bind(f.seq)
            .bind(&f.error)
            .bind(retry_at)
            .bind(now)
            .bind(&*self.relay_id)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query(&format!(
            "UPDATE {t} SET locked_by = NULL, locked_until = NULL WHERE locked_by = ?1"
        ))
        .bind(&*self.relay_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }
}

#[async_trait]
impl OutboxStore for SqliteOutboxStore {
    async fn claim(
        &self,
        req: &ClaimRequest,
    ) -> Result<Option<Box<dyn ClaimedBatch>>, OutboxError> {
        let now = now_ms();
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let heads = sqlx::query(&self.claim)
            .bind(now)
            .bind(req.window as i64)
            .bind(req.batch_size as i64)
            .fetch_all(&mut *tx)
            .await?;
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
            for row in sqlx::query(&self.rows_by_key)
                .bind(json_list(&keys))
                .bind(req.batch_size as i64)
                .fetch_all(&mut *tx)
                .await?
            {
                records.push(record(&row)?);
            }
        }
        if !unkeyed.is_empty() {
            for row in sqlx::query(&self.rows_by_seq)
                .bind(json_ints(unkeyed))
                .fetch_all(&mut *tx)
                .await?
            {
                records.push(record(&row)?);
            }
            records.sort_by_key(|r| r.seq);
        }
        records.truncate(req.batch_size);
        // Lease every row of the batch; the keys' other rows are blocked by it.
        sqlx::query(&self.lease)
            .bind(&*req.relay_id)
            .bind(now + millis(req.lease))
            .bind(json_ints(records.iter().map(|r| r.seq)))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(Box::new(SqliteBatch {
            pool: self.pool.clone(),
            table: self.table.clone(),
            relay_id: req.relay_id.clone(),
            records,
        })))
    }

    async fn migrate(&self) -> Result<(), OutboxError> {
        migrate::sqlite(&self.pool, Component::Outbox, &self.table).await?;
        Ok(())
    }

    async fn delete_published(&self, seqs: &[i64]) -> Result<(), OutboxError> {
        sqlx::query(&format!(
            "DELETE FROM {} WHERE seq IN (SELECT value FROM json_each(?1))",
            self.table
        ))
        .bind(json_ints(seqs.iter().copied()))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn stats(&self) -> Result<OutboxStats, OutboxError> {
        let (backlog, parked, oldest_ms): (i64, i64, Option<i64>) = sqlx::query_as(&format!(
            "SELECT count(*), count(parked_at), \
             CAST(unixepoch('subsec') * 1000 AS INTEGER) - min(created_at) FROM {}",
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
             WHERE parked_at IS NOT NULL ORDER BY seq LIMIT ?1",
            self.table
        ))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let parked_ms: i64 = r.try_get(6)?;
                Ok(ParkedEvent {
                    seq: r.try_get(0)?,
                    id: r.try_get(1)?,
                    name: r.try_get(2)?,
                    key: r.try_get(3)?,
                    attempts: r.try_get(4)?,
                    last_error: r.try_get(5)?,
                    parked_at: DateTime::from_timestamp_millis(parked_ms).unwrap_or_default(),
                    // Written as `i64` from a `u32`.
                    version: r.try_get::<i64, _>(7)? as u32,
                    content_type: r.try_get(8)?,
                    payload: r.try_get::<Vec<u8>, _>(9)?.into(),
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(Into::into)
    }

    async fn retry_parked(&self, id: Uuid) -> Result<bool, OutboxError> {
        let done = sqlx::query(&format!(
            "UPDATE {} SET parked_at = NULL, retry_at = NULL, attempts = 0 WHERE id = ?1 AND parked_at IS NOT NULL",
            self.table
        ))
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn discard_parked(&self, id: Uuid) -> Result<bool, OutboxError> {
        let done = sqlx::query(&format!(
            "DELETE FROM {} WHERE id = ?1 AND parked_at IS NOT NULL",
            self.table
        ))
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }
}
