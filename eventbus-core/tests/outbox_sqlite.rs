//! Outbox, relay and inbox on SQLite, in a temporary database file.
#![cfg(feature = "sqlite")]

mod support;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use eventbus_core::inbox::{self, Inbox, InboxConfig, InboxStore};
use eventbus_core::outbox::{Outbox, OutboxConfig, OutboxStore};
use eventbus_core::{BoxError, Envelope, Event};
use serde::{Deserialize, Serialize};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use sqlx::Sqlite;
use support::{scenarios, Harness};
use uuid::Uuid;

#[derive(Debug, Event, Serialize, Deserialize)]
#[event(name = "test.lite.deposited", key = "account")]
struct Deposited {
    account: String,
    n: u64,
}

struct Lite {
    _dir: tempfile::TempDir,
    pool: SqlitePool,
    outbox: Outbox<Sqlite>,
    inbox: Inbox<Sqlite>,
    biz: String,
    fx: String,
}

impl Lite {
    async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let options = SqliteConnectOptions::from_str(&format!(
            "sqlite://{}",
            dir.path().join("test.db").display()
        ))
        .unwrap()
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .busy_timeout(Duration::from_secs(60));
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(options)
            .await
            .unwrap();
        let tag = eventbus_core::event::new_message_id().simple().to_string();
        let outbox = Outbox::sqlite_with(
            pool.clone(),
            OutboxConfig::new().table(&format!("ob_{tag}")).unwrap(),
        );
        outbox.migrate().await.unwrap();
        outbox.migrate().await.unwrap(); // idempotent
        let inbox = Inbox::sqlite_with(
            pool.clone(),
            InboxConfig::new().table(&format!("ib_{tag}")).unwrap(),
        );
        inbox.migrate().await.unwrap();
        let (biz, fx) = (format!("biz_{tag}"), format!("fx_{tag}"));
        sqlx::query(&format!(
            "CREATE TABLE {biz} (id INTEGER PRIMARY KEY, note TEXT)"
        ))
        .execute(&pool)
        .await
        .unwrap();
        sqlx::query(&format!("CREATE TABLE {fx} (message_id BLOB NOT NULL)"))
            .execute(&pool)
            .await
            .unwrap();
        Self {
            _dir: dir,
            pool,
            outbox,
            inbox,
            biz,
            fx,
        }
    }
}

#[async_trait]
impl Harness for Lite {
    fn store(&self) -> Arc<dyn OutboxStore> {
        self.outbox.store()
    }
    async fn add(&self, envs: &[Envelope], commit: bool) {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await.unwrap();
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
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await.unwrap();
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
        sqlx::query(&format!("INSERT INTO {} (message_id) VALUES (?)", self.fx))
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
        let mut tx = inbox::transaction::<Sqlite>().await?;
        sqlx::query(&format!("INSERT INTO {} (message_id) VALUES (?)", self.fx))
            .bind(id)
            .execute(&mut *tx)
            .await?;
        Ok(())
    }
    async fn effects(&self, id: Uuid) -> i64 {
        sqlx::query_scalar(&format!(
            "SELECT count(*) FROM {} WHERE message_id = ?",
            self.fx
        ))
        .bind(id)
        .fetch_one(&self.pool)
        .await
        .unwrap()
    }
    async fn age_inbox(&self, age: Duration) {
        sqlx::query(&format!(
            "UPDATE {} SET processed_at = processed_at - ?",
            self.inbox.config().table_name()
        ))
        .bind(age.as_millis() as i64)
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

support::database_scenarios!(Lite);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_relays_100_keys_20k_events_keep_per_key_order() {
    scenarios::relays_keep_per_key_order(Arc::new(Lite::new().await), 4, 100, 200, 500).await;
}
