//! A broker stand-in for crash tests that works across processes: a queue in
//! a PostgreSQL table. Publishing inserts and commits (that is the confirm);
//! consumers lease rows (visibility timeout, like SQS); ack deletes the row,
//! nack or a dead consumer lets the lease run out and the message is
//! delivered again. At-least-once, exactly the contract the inbox is for.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use eventbus_core::transport::{Acker, Delivery, Subscription, SubscriptionSpec, TransportFuture};
use eventbus_core::{Envelope, Headers, Publisher, Subscriber, TransportError};
use sqlx::{PgPool, Row};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

#[derive(Clone)]
pub struct TableQueue {
    pub pool: PgPool,
    pub table: String,
    pub lease: Duration,
    /// Abort the process (crash) in the n-th ack, before it reaches the queue.
    pub abort_on_ack: Option<u32>,
    /// A slow broker: sleeps this long before and after committing a publish
    /// (so a kill lands mid-batch on both sides of the confirm).
    pub delay: Duration,
    acks: Arc<AtomicU32>,
}

impl TableQueue {
    pub async fn create(pool: PgPool, table: &str) -> Self {
        sqlx::query(&format!(
            "CREATE TABLE IF NOT EXISTS {table} (qseq BIGSERIAL PRIMARY KEY, id UUID NOT NULL, name TEXT NOT NULL, \
             version INT NOT NULL, key TEXT, headers TEXT NOT NULL, occurred_at TIMESTAMPTZ NOT NULL, \
             content_type TEXT NOT NULL, payload BYTEA NOT NULL, leased_until TIMESTAMPTZ, deliveries INT NOT NULL DEFAULT 0)"
        ))
        .execute(&pool)
        .await
        .unwrap();
        Self::open(pool, table)
    }
    pub fn open(pool: PgPool, table: &str) -> Self {
        Self {
            pool,
            table: table.to_owned(),
            lease: Duration::from_secs(2),
            abort_on_ack: None,
            delay: Duration::ZERO,
            acks: Arc::default(),
        }
    }
    /// All message ids ever published and still queued, in queue order.
    pub async fn ids(&self) -> Vec<(uuid::Uuid, Option<String>, String)> {
        sqlx::query(&format!(
            "SELECT id, key, headers FROM {} ORDER BY qseq",
            self.table
        ))
        .fetch_all(&self.pool)
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
    }
    pub async fn len(&self) -> i64 {
        sqlx::query_scalar(&format!("SELECT count(*) FROM {}", self.table))
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }
}

#[async_trait]
impl Publisher for TableQueue {
    async fn publish(&self, envelope: &Envelope) -> Result<(), TransportError> {
        self.publish_batch(std::slice::from_ref(envelope)).await
    }
    async fn publish_batch(&self, envelopes: &[Envelope]) -> Result<(), TransportError> {
        let down = |e: sqlx::Error| TransportError::Unavailable(Box::new(e));
        let mut tx = self.pool.begin().await.map_err(down)?;
        for e in envelopes {
            sqlx::query(&format!(
                "INSERT INTO {} (id, name, version, key, headers, occurred_at, content_type, payload) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                self.table
            ))
            .bind(e.id)
            .bind(&e.name)
            .bind(e.version as i32)
            .bind(e.key.as_deref())
            .bind(serde_json::to_string(&e.headers).unwrap())
            .bind(e.occurred_at)
            .bind(&e.content_type)
            .bind(e.payload.as_ref())
            .execute(&mut *tx)
            .await
            .map_err(down)?;
        }
        tokio::time::sleep(self.delay).await;
        tx.commit().await.map_err(down)?;
        tokio::time::sleep(self.delay).await;
        Ok(())
    }
}

struct QueueAcker {
    queue: TableQueue,
    qseq: i64,
    _permit: OwnedSemaphorePermit,
}

impl Acker for QueueAcker {
    fn ack(self: Box<Self>) -> TransportFuture<'static> {
        TransportFuture::new(async move {
            let n = self.queue.acks.fetch_add(1, Ordering::SeqCst) + 1;
            if self.queue.abort_on_ack == Some(n) {
                // The handler's transaction has committed; the ack never arrives.
                eprintln!("crash child: aborting before ack #{n}");
                std::process::abort();
            }
            sqlx::query(&format!("DELETE FROM {} WHERE qseq = $1", self.queue.table))
                .bind(self.qseq)
                .execute(&self.queue.pool)
                .await
                .map_err(|e| TransportError::Unavailable(Box::new(e)))?;
            Ok(())
        })
    }
    fn nack(self: Box<Self>, _requeue: bool) -> TransportFuture<'static> {
        TransportFuture::new(async move {
            sqlx::query(&format!(
                "UPDATE {} SET leased_until = NULL WHERE qseq = $1",
                self.queue.table
            ))
            .bind(self.qseq)
            .execute(&self.queue.pool)
            .await
            .map_err(|e| TransportError::Unavailable(Box::new(e)))?;
            Ok(())
        })
    }
    fn dead_letter(self: Box<Self>, _envelope: Envelope) -> TransportFuture<'static> {
        panic!("crash test handler must not dead-letter");
    }
}

#[async_trait]
impl Subscriber for TableQueue {
    async fn subscribe(&self, spec: SubscriptionSpec) -> Result<Subscription, TransportError> {
        let permits = Arc::new(Semaphore::new(spec.prefetch.max(1) as usize));
        let queue = self.clone();
        let claim = format!(
            "UPDATE {t} SET leased_until = clock_timestamp() + $1::bigint * interval '1 millisecond', deliveries = deliveries + 1 \
             WHERE qseq = (SELECT qseq FROM {t} WHERE leased_until IS NULL OR leased_until < clock_timestamp() \
                           ORDER BY qseq LIMIT 1 FOR UPDATE SKIP LOCKED) \
             RETURNING qseq, deliveries, id, name, version, key, headers, occurred_at, content_type, payload",
            t = self.table
        );
        let stream = futures_util::stream::unfold((), move |()| {
            let (queue, permits, claim) = (queue.clone(), permits.clone(), claim.clone());
            async move {
                let permit = permits.acquire_owned().await.unwrap();
                loop {
                    let row = sqlx::query(&claim)
                        .bind(queue.lease.as_millis() as i64)
                        .fetch_optional(&queue.pool)
                        .await;
                    match row {
                        Ok(Some(r)) => {
                            let headers: String = r.get(6);
                            let occurred_at: DateTime<Utc> = r.get(7);
                            let payload: Vec<u8> = r.get(9);
                            let envelope = Envelope {
                                id: r.get(2),
                                name: r.get::<String, _>(3).into(),
                                version: r.get::<i32, _>(4) as u32,
                                key: r.get(5),
                                headers: serde_json::from_str::<Headers>(&headers).unwrap(),
                                occurred_at,
                                content_type: r.get::<String, _>(8).into(),
                                payload: payload.into(),
                            };
                            let deliveries: i32 = r.get(1);
                            let acker = QueueAcker {
                                queue: queue.clone(),
                                qseq: r.get(0),
                                _permit: permit,
                            };
                            let d =
                                Delivery::new(Arc::new(envelope), deliveries > 1, Box::new(acker));
                            return Some((Ok(d), ()));
                        }
                        Ok(None) => tokio::time::sleep(Duration::from_millis(20)).await,
                        Err(e) => return Some((Err(TransportError::Unavailable(Box::new(e))), ())),
                    }
                }
            }
        });
        Ok(Subscription::new(stream))
    }
    async fn subscribe_dead_letters(
        &self,
        _group: &str,
        _prefetch: u16,
    ) -> Result<Subscription, TransportError> {
        Err(TransportError::Rejected(
            "no dead letters in the table queue".into(),
        ))
    }
}
