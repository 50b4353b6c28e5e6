//! Outbox, relay and inbox on a real MariaDB / MySQL
//! (`EVENTBUS_TEST_MYSQL_URL`, default `mysql://root@127.0.0.1:3306/test`).
//! Every test uses its own tables, so tests run concurrently and repeatedly.
#![cfg(feature = "mysql")]

mod support;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use eventbus_core::inbox::{self, Inbox, InboxConfig, InboxStore};
use eventbus_core::outbox::{Outbox, OutboxConfig, OutboxStore};
use eventbus_core::{BoxError, Envelope, Event};
use serde::{Deserialize, Serialize};
use sqlx::mysql::{MySqlPool, MySqlPoolOptions};
use sqlx::MySql;
use support::{scenarios, Harness};
use uuid::Uuid;

#[derive(Debug, Event, Serialize, Deserialize)]
#[event(name = "test.my.deposited", key = "account")]
struct Deposited {
    account: String,
    n: u64,
}

fn url() -> String {
    std::env::var("EVENTBUS_TEST_MYSQL_URL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".into())
}

struct My {
    pool: MySqlPool,
    outbox: Outbox<MySql>,
    inbox: Inbox<MySql>,
    biz: String,
    fx: String,
}

impl My {
    async fn new() -> Self {
        let pool = MySqlPoolOptions::new()
            .max_connections(24)
            .connect(&url())
            .await
            .unwrap_or_else(|e| {
                panic!("MariaDB/MySQL at {} is required for this test: {e}", url())
            });
        let tag = eventbus_core::event::new_message_id().simple().to_string();
        let outbox = Outbox::mysql_with(
            pool.clone(),
            OutboxConfig::new().table(&format!("ob_{tag}")).unwrap(),
        );
        outbox.migrate().await.unwrap();
        outbox.migrate().await.unwrap(); // idempotent
        let inbox = Inbox::mysql_with(
            pool.clone(),
            InboxConfig::new().table(&format!("ib_{tag}")).unwrap(),
        );
        inbox.migrate().await.unwrap();
        let (biz, fx) = (format!("biz_{tag}"), format!("fx_{tag}"));
        sqlx::query(&format!(
            "CREATE TABLE {biz} (id BIGINT AUTO_INCREMENT PRIMARY KEY, note TEXT)"
        ))
        .execute(&pool)
        .await
        .unwrap();
        sqlx::query(&format!(
            "CREATE TABLE {fx} (message_id BINARY(16) NOT NULL)"
        ))
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
impl Harness for My {
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
        let mut tx = inbox::transaction::<MySql>().await?;
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
            "UPDATE {} SET processed_at = processed_at - INTERVAL ? SECOND",
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

support::database_scenarios!(My);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_relays_100_keys_100k_events_keep_per_key_order() {
    scenarios::relays_keep_per_key_order(Arc::new(My::new().await), 4, 100, 1000, 1000).await;
}
