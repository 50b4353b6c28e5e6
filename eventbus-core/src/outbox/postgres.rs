//! The outbox on PostgreSQL (feature `postgres`).
//!
//! Claiming: in one transaction a relay locks the *head* row (lowest unsent
//! `seq`) of each key it takes with `FOR UPDATE SKIP LOCKED`, reads the
//! following rows of those keys, publishes, deletes what was confirmed and
//! commits. Another relay computing the same head finds it locked and skips
//! the whole key; after the commit the key's new head is free again. Row
//! locks die with the connection, so a killed relay leaves nothing behind.
//!
//! Wake-up: an `AFTER INSERT ... FOR EACH STATEMENT` trigger calls
//! `pg_notify('<table ident>')`; PostgreSQL delivers it on commit.

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::postgres::{PgListener, PgPool, PgRow};
use sqlx::{Postgres, Row, Transaction};
use tokio::sync::watch;
use uuid::Uuid;

use super::{
    envelope_from_columns, headers_to_json, millis, AsStore, ClaimRequest, ClaimedBatch, Failure,
    InsertEnvelopes, Outbox, OutboxConfig, OutboxError, OutboxRecord, OutboxStats, OutboxStore,
    ParkedEvent,
};
use crate::migrate::{self, Component, TableName};
use crate::Envelope;

impl Outbox<Postgres> {
    /// An outbox in table `eventbus_outbox` of `pool`'s database.
    pub fn postgres(pool: PgPool) -> Self {
        Self::postgres_with(pool, OutboxConfig::default())
    }

    /// An outbox configured by `config`.
    pub fn postgres_with(pool: PgPool, config: OutboxConfig) -> Self {
        Self::from_parts(pool, config)
    }
}

#[async_trait]
impl InsertEnvelopes<Postgres> for Outbox<Postgres> {
    async fn insert_envelopes(
        &self,
        conn: &mut sqlx::PgConnection,
        envelopes: &[Envelope],
    ) -> Result<(), OutboxError> {
        let t = self.table();
        if let [e] = envelopes {
            let sql = format!(
                "INSERT INTO {t} (id, name, version, partition_key, headers, occurred_at, content_type, payload) \
                 VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7, $8)"
            );
            sqlx::query(&sql)
                .bind(e.id)
                .bind(&e.name)
                .bind(e.version as i32)
                .bind(e.key.as_deref())
                .bind(headers_to_json(&e.headers))
                .bind(e.occurred_at)
                .bind(&e.content_type)
                .bind(e.payload.as_ref())
                .execute(&mut *conn)
                .await?;
            return Ok(());
        }
        if envelopes.is_empty() {
            return Ok(());
        }
        let sql = format!(
            "INSERT INTO {t} (id, name, version, partition_key, headers, occurred_at, content_type, payload) \
             SELECT u.id, u.name, u.version, u.k, u.h::jsonb, u.o, u.c, u.p \
             FROM UNNEST($1::uuid[], $2::text[], $3::int4[], $4::text[], $5::text[], $6::timestamptz[], $7::text[], $8::bytea[]) \
             WITH ORDINALITY AS u(id, name, version, k, h, o, c, p, n) ORDER BY u.n"
        );
        sqlx::query(&sql)
            .bind(envelopes.iter().map(|e| e.id).collect::<Vec<_>>())
            .bind(envelopes.iter().map(|e| e.name.clone()).collect::<Vec<_>>())
            .bind(
                envelopes
                    .iter()
                    .map(|e| e.version as i32)
                    .collect::<Vec<_>>(),
            )
            .bind(envelopes.iter().map(|e| e.key.clone()).collect::<Vec<_>>())
            .bind(
                envelopes
                    .iter()
                    .map(|e| headers_to_json(&e.headers))
                    .collect::<Vec<_>>(),
            )
            .bind(envelopes.iter().map(|e| e.occurred_at).collect::<Vec<_>>())
            .bind(
                envelopes
                    .iter()
                    .map(|e| e.content_type.clone())
                    .collect::<Vec<_>>(),
            )
            .bind(
                envelopes
                    .iter()
                    .map(|e| e.payload.to_vec())
                    .collect::<Vec<_>>(),
            )
            .execute(&mut *conn)
            .await?;
        Ok(())
    }
}

impl AsStore for Outbox<Postgres> {
    fn as_store(&self) -> Arc<dyn OutboxStore> {
        Arc::new(PgOutboxStore::new(
            self.pool().clone(),
            self.table().clone(),
        ))
    }
}

/// The relay side of a PostgreSQL outbox.
#[derive(Debug)]
pub struct PgOutboxStore {
    pool: PgPool,
    table: TableName,
    sql: Sql,
    /// Counts notifications; started on first wait.
    notified: Mutex<Option<Arc<watch::Sender<u64>>>>,
}

#[derive(Debug)]
struct Sql {
    claim: String,
    rows_by_key: String,
    rows_by_seq: String,
    delete: String,
    fail: String,
}

const COLUMNS: &str =
    "seq, id, name, version, partition_key, headers::text, occurred_at, content_type, payload, attempts";

impl PgOutboxStore {
    /// A store over `table`.
    pub fn new(pool: PgPool, table: TableName) -> Self {
        let t = table.as_str();
        let sql = Sql {
            // Heads of the keys among the oldest `$1` claimable rows (plus
            // unkeyed rows), locked without waiting; at most `$2`.
            claim: format!(
                "WITH blocked AS ( \
                   SELECT DISTINCT partition_key FROM {t} \
                   WHERE partition_key IS NOT NULL AND (parked_at IS NOT NULL OR retry_at IS NOT NULL) \
                     AND (parked_at IS NOT NULL OR retry_at > now())), \
                 win AS ( \
                   SELECT seq, partition_key FROM {t} \
                   WHERE parked_at IS NULL AND (retry_at IS NULL OR retry_at <= now()) \
                     AND (partition_key IS NULL OR partition_key NOT IN (SELECT partition_key FROM blocked)) \
                   ORDER BY seq LIMIT $1), \
                 heads AS ( \
                   SELECT min(seq) AS seq FROM win WHERE partition_key IS NOT NULL GROUP BY partition_key \
                   UNION ALL SELECT seq FROM win WHERE partition_key IS NULL) \
                 SELECT o.seq, o.partition_key FROM {t} o WHERE o.seq IN (SELECT seq FROM heads) \
                 ORDER BY o.seq LIMIT $2 FOR UPDATE OF o SKIP LOCKED"
            ),
            rows_by_key: format!(
                "SELECT {COLUMNS} FROM {t} WHERE partition_key = ANY($1) ORDER BY seq LIMIT $2"
            ),
            rows_by_seq: format!("SELECT {COLUMNS} FROM {t} WHERE seq = ANY($1) ORDER BY seq"),
            delete: format!("DELETE FROM {t} WHERE seq = ANY($1)"),
            fail: format!(
                "UPDATE {t} SET attempts = attempts + 1, last_error = $2, \
                   retry_at = CASE WHEN $3::bigint IS NULL THEN NULL ELSE clock_timestamp() + $3::bigint * interval '1 millisecond' END, \
                   parked_at = CASE WHEN $3::bigint IS NULL THEN clock_timestamp() END \
                 WHERE seq = $1"
            ),
        };
        Self {
            pool,
            table,
            sql,
            notified: Mutex::new(None),
        }
    }

    fn notifications(&self) -> watch::Receiver<u64> {
        let mut slot = self.notified.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = slot.as_ref() {
            return tx.subscribe();
        }
        let (tx, rx) = watch::channel(0u64);
        let tx = Arc::new(tx);
        tokio::spawn(listen(
            self.pool.clone(),
            self.table.ident().to_owned(),
            Arc::downgrade(&tx),
        ));
        *slot = Some(tx);
        rx
    }
}

/// Forwards `NOTIFY`s on `channel` into `counter` until the store is gone.
async fn listen(pool: PgPool, channel: String, counter: Weak<watch::Sender<u64>>) {
    loop {
        let mut listener = match PgListener::connect_with(&pool).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "outbox relay: cannot LISTEN; polling only");
                tokio::time::sleep(Duration::from_secs(5)).await;
                if counter.strong_count() == 0 {
                    return;
                }
                continue;
            }
        };
        if let Err(e) = listener.listen(&channel).await {
            tracing::warn!(error = %e, "outbox relay: LISTEN failed");
            tokio::time::sleep(Duration::from_secs(5)).await;
            continue;
        }
        loop {
            // Wake up now and then to notice that the store was dropped.
            match tokio::time::timeout(Duration::from_secs(5), listener.recv()).await {
                Ok(Ok(_)) | Err(_) => {}
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "outbox relay: LISTEN connection lost");
                    break;
                }
            }
            let Some(tx) = counter.upgrade() else { return };
            tx.send_modify(|n| *n += 1);
        }
    }
}

fn record(row: &PgRow) -> Result<OutboxRecord, sqlx::Error> {
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

struct PgBatch {
    tx: Transaction<'static, Postgres>,
    records: Vec<OutboxRecord>,
    delete: String,
    fail: String,
}

#[async_trait]
impl ClaimedBatch for PgBatch {
    fn records(&self) -> &[OutboxRecord] {
        &self.records
    }

    async fn complete(
        mut self: Box<Self>,
        sent: &[i64],
        failed: &[Failure],
    ) -> Result<(), OutboxError> {
        if !sent.is_empty() {
            sqlx::query(&self.delete)
                .bind(sent)
                .execute(&mut *self.tx)
                .await?;
        }
        for f in failed {
            sqlx::query(&self.fail)
                .bind(f.seq)
                .bind(&f.error)
                .bind(f.retry_in.map(millis))
                .execute(&mut *self.tx)
                .await?;
        }
        self.tx.commit().await?;
        Ok(())
    }
}

#[async_trait]
impl OutboxStore for PgOutboxStore {
    async fn claim(
        &self,
        req: &ClaimRequest,
    ) -> Result<Option<Box<dyn ClaimedBatch>>, OutboxError> {
        let mut tx = self.pool.begin().await?;
        let heads = sqlx::query(&self.sql.claim)
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
            for row in sqlx::query(&self.sql.rows_by_key)
                .bind(&keys)
                .bind(req.batch_size as i64)
                .fetch_all(&mut *tx)
                .await?
            {
                records.push(record(&row)?);
            }
        }
        if !unkeyed.is_empty() {
            for row in sqlx::query(&self.sql.rows_by_seq)
                .bind(&unkeyed)
                .fetch_all(&mut *tx)
                .await?
            {
                records.push(record(&row)?);
            }
            records.sort_by_key(|r| r.seq);
        }
        records.truncate(req.batch_size);
        Ok(Some(Box::new(PgBatch {
            tx,
            records,
            delete: self.sql.delete.clone(),
            fail: self.sql.fail.clone(),
        })))
    }

    fn insert_signal(&self) -> Option<watch::Receiver<u64>> {
        Some(self.notifications())
    }

    async fn migrate(&self) -> Result<(), OutboxError> {
        migrate::postgres(&self.pool, Component::Outbox, &self.table).await?;
        Ok(())
    }

    async fn delete_published(&self, seqs: &[i64]) -> Result<(), OutboxError> {
        sqlx::query(&self.sql.delete)
            .bind(seqs)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn stats(&self) -> Result<OutboxStats, OutboxError> {
        let (backlog, parked, oldest_ms): (i64, i64, Option<i64>) = sqlx::query_as(&format!(
            "SELECT count(*), count(parked_at), \
             CAST(EXTRACT(EPOCH FROM clock_timestamp() - min(created_at)) * 1000 AS BIGINT) FROM {}",
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
             WHERE parked_at IS NOT NULL ORDER BY seq LIMIT $1",
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
            "UPDATE {} SET parked_at = NULL, retry_at = NULL, attempts = 0 WHERE id = $1 AND parked_at IS NOT NULL",
            self.table
        ))
        .bind(id)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() > 0 {
            let _ = sqlx::query("SELECT pg_notify($1, '')")
                .bind(self.table.ident())
                .execute(&self.pool)
                .await;
        }
        Ok(done.rows_affected() > 0)
    }

    async fn discard_parked(&self, id: Uuid) -> Result<bool, OutboxError> {
        let done = sqlx::query(&format!(
            "DELETE FROM {} WHERE id = $1 AND parked_at IS NOT NULL",
            self.table
        ))
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }
}
