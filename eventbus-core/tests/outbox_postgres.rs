//! Outbox, relay and inbox on a real PostgreSQL
//! (`EVENTBUS_TEST_POSTGRES_URL`, default `postgres://postgres@127.0.0.1:5432/test`).
//! Every test uses its own tables, so tests run concurrently and repeatedly.
#![cfg(feature = "postgres")]

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use eventbus_core::inbox::{self, Inbox, InboxConfig, InboxStore};
use eventbus_core::outbox::{Outbox, OutboxConfig, OutboxStore, Relay};
use eventbus_core::{BoxError, Envelope, Event};
use serde::{Deserialize, Serialize};
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::Postgres;
use support::{scenarios, Harness, Recorder, Shared};
use uuid::Uuid;

#[derive(Debug, Event, Serialize, Deserialize)]
#[event(name = "test.deposited", key = "account")]
struct Deposited {
    account: String,
    n: u64,
}

fn url() -> String {
    std::env::var("EVENTBUS_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

async fn pool() -> PgPool {
    PgPoolOptions::new()
        .max_connections(24)
        .connect(&url())
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {} is required for this test: {e}", url()))
}

struct Pg {
    pool: PgPool,
    outbox: Outbox<Postgres>,
    inbox: Inbox<Postgres>,
    biz: String,
    fx: String,
}

impl Pg {
    async fn new() -> Self {
        let pool = pool().await;
        let tag = eventbus_core::event::new_message_id().simple().to_string();
        let outbox = Outbox::postgres_with(
            pool.clone(),
            OutboxConfig::new().table(&format!("ob_{tag}")).unwrap(),
        );
        outbox.migrate().await.unwrap();
        outbox.migrate().await.unwrap(); // idempotent
        let inbox = Inbox::postgres_with(
            pool.clone(),
            InboxConfig::new().table(&format!("ib_{tag}")).unwrap(),
        );
        inbox.migrate().await.unwrap();
        let (biz, fx) = (format!("biz_{tag}"), format!("fx_{tag}"));
        sqlx::query(&format!(
            "CREATE TABLE {biz} (id BIGSERIAL PRIMARY KEY, note TEXT)"
        ))
        .execute(&pool)
        .await
        .unwrap();
        sqlx::query(&format!("CREATE TABLE {fx} (message_id UUID NOT NULL)"))
            .execute(&pool)
            .await
            .unwrap();
        Self {
            pool,
            outbox,
            inbox,
            biz,
            fx,
        }
    }
}

#[async_trait]
impl Harness for Pg {
    fn store(&self) -> Arc<dyn OutboxStore> {
        self.outbox.store()
    }
    async fn add(&self, envs: &[Envelope], commit: bool) {
        let mut tx = self.pool.begin().await.unwrap();
        sqlx::query(&format!("INSERT INTO {} (note) VALUES ('order')", self.biz))
            .execute(&mut *tx)
            .await
            .unwrap();
        self.outbox.add_envelopes(&mut tx, envs).await.unwrap();
        if commit {
            tx.commit().await.unwrap();
        } else {
            tx.rollback().await.unwrap();
        }
    }
    async fn add_events(&self, n: usize, key: &str) -> Vec<Uuid> {
        let mut tx = self.pool.begin().await.unwrap();
        let mut ids = vec![self
            .outbox
            .add(
                &mut tx,
                &Deposited {
                    account: key.into(),
                    n: 0,
                },
            )
            .await
            .unwrap()];
        let rest: Vec<_> = (1..n as u64)
            .map(|n| Deposited {
                account: key.into(),
                n,
            })
            .collect();
        ids.extend(self.outbox.add_all(&mut *tx, &rest).await.unwrap());
        tx.commit().await.unwrap();
        ids
    }
    async fn business_rows(&self) -> i64 {
        sqlx::query_scalar(&format!("SELECT count(*) FROM {}", self.biz))
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }
    fn inbox(&self) -> Arc<dyn InboxStore> {
        self.inbox.store()
    }
    async fn handle_explicit(&self, id: Uuid, group: &str, fail: bool) -> bool {
        let Some(mut tx) = self.inbox.begin_for(id, group).await.unwrap() else {
            return false;
        };
        sqlx::query(&format!("INSERT INTO {} (message_id) VALUES ($1)", self.fx))
            .bind(id)
            .execute(&mut *tx)
            .await
            .unwrap();
        if !fail {
            tx.commit().await.unwrap();
        }
        true
    }
    async fn write_effect_in_layer_tx(&self, id: Uuid) -> Result<(), BoxError> {
        let mut tx = inbox::transaction::<Postgres>().await?;
        sqlx::query(&format!("INSERT INTO {} (message_id) VALUES ($1)", self.fx))
            .bind(id)
            .execute(&mut *tx)
            .await?;
        Ok(())
    }
    async fn effects(&self, id: Uuid) -> i64 {
        sqlx::query_scalar(&format!(
            "SELECT count(*) FROM {} WHERE message_id = $1",
            self.fx
        ))
        .bind(id)
        .fetch_one(&self.pool)
        .await
        .unwrap()
    }
    async fn age_inbox(&self, age: Duration) {
        sqlx::query(&format!(
            "UPDATE {} SET processed_at = now() - $1::bigint * interval '1 second'",
            self.inbox.config().table_name()
        ))
        .bind(age.as_secs() as i64)
        .execute(&self.pool)
        .await
        .unwrap();
    }
    async fn inbox_rows(&self) -> i64 {
        sqlx::query_scalar(&format!(
            "SELECT count(*) FROM {}",
            self.inbox.config().table_name()
        ))
        .fetch_one(&self.pool)
        .await
        .unwrap()
    }
}

support::database_scenarios!(Pg);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_relays_100_keys_100k_events_keep_per_key_order() {
    scenarios::relays_keep_per_key_order(Arc::new(Pg::new().await), 4, 100, 1000, 1000).await;
}

/// LISTEN/NOTIFY wakes the relay right after commit: with a 60 s poll
/// interval, events still arrive within milliseconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_wakes_relay_without_polling() {
    let h = Pg::new().await;
    let rec = Recorder::new();
    let mut config = scenarios::fast_config();
    config.poll_interval = Duration::from_secs(60);
    let relay = Relay::new(h.store(), Arc::new(Shared(rec.clone())))
        .with_config(config)
        .spawn();
    // Let the relay go idle and its listener connect.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for i in 0..5 {
        let started = Instant::now();
        h.add_events(1, "k").await;
        support::eventually("published after notify", || rec.len() > i).await;
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "woken by NOTIFY, not by polling: {:?}",
            started.elapsed()
        );
    }
    relay.shutdown().await;
}

#[tokio::test]
async fn inbox_transaction_outside_a_handler_is_an_error() {
    assert!(matches!(
        inbox::transaction::<Postgres>().await,
        Err(inbox::InboxError::NoTransaction)
    ));
}
