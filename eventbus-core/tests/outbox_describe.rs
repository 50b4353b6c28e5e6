//! Parked outbox rows described with their payloads decoded by event name
//! (`ParkedEvent::describe`), on real SQLite, PostgreSQL and MySQL rows: a linked
//! event type is decoded, another version, a payload that no longer fits,
//! an unknown name and a non-JSON payload are shown as stored, with why.
#![cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use eventbus_core::outbox::{OutboxStore, Relay, RelayConfig, StepOutcome};
use eventbus_core::testing::{envelope, unique};
use eventbus_core::{Envelope, Event, Publisher, TransportError};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

#[derive(Debug, PartialEq, Event, Serialize, Deserialize)]
#[event(name = "test.describe.deposited", version = 2, key = "account")]
struct Deposited {
    account: String,
    cents: u64,
}

/// A broker that refuses every message, so every row gets parked.
struct Refuse;

#[async_trait]
impl Publisher for Refuse {
    async fn publish(&self, _: &Envelope) -> Result<(), TransportError> {
        Err(TransportError::Rejected("refused (test)".into()))
    }
}

/// The rows the scenario writes, and what `describe` must say of each.
struct Case {
    envelope: Envelope,
    format: &'static str,
    payload: Value,
    error: Option<String>,
}

fn cases() -> Vec<Case> {
    let deposited = |account: &str| {
        Envelope::from_event(&Deposited {
            account: account.into(),
            cents: 250,
        })
        .unwrap()
    };
    let mut other_version = deposited("acct-2");
    other_version.version = 1;
    let mut misfit = deposited("acct-3");
    misfit.payload = br#"{"account":"acct-3","cents":"a lot"}"#.to_vec().into();
    let unknown = unique("test.describe.unknown");
    let mut not_json = envelope(&unknown, Some("k5"), 5);
    not_json.payload = b"\xffnot json".to_vec().into();
    vec![
        Case {
            envelope: deposited("acct-1"),
            format: "event",
            payload: json!({"account": "acct-1", "cents": 250}),
            error: None,
        },
        Case {
            envelope: other_version,
            format: "json",
            payload: json!({"account": "acct-2", "cents": 250}),
            error: Some(
                "event `test.describe.deposited` has version 1; this program knows version 2"
                    .into(),
            ),
        },
        Case {
            envelope: misfit,
            format: "json",
            payload: json!({"account": "acct-3", "cents": "a lot"}),
            error: Some("cannot decode event `test.describe.deposited`: ".into()),
        },
        Case {
            envelope: envelope(&unknown, Some("k4"), 4),
            format: "json",
            payload: json!({"n": 4}),
            error: Some(format!("unknown event `{unknown}`")),
        },
        Case {
            envelope: not_json,
            format: "text",
            payload: json!("\u{fffd}not json"),
            error: Some(format!("unknown event `{unknown}`")),
        },
    ]
}

/// Parks every row of `store` (a refusing broker, one attempt per row) and
/// checks what `describe` says of each.
async fn park_and_describe(store: Arc<dyn OutboxStore>, cases: &[Case]) {
    let relay = Relay::new(store.clone(), Arc::new(Refuse)).with_config(RelayConfig {
        max_attempts: 1,
        ..RelayConfig::default()
    });
    let mut steps = 0;
    while relay.step().await.unwrap() != StepOutcome::Idle {
        steps += 1;
        assert!(steps <= cases.len(), "the relay keeps finding work");
    }
    let parked = store.parked(100).await.unwrap();
    assert_eq!(parked.len(), cases.len(), "every row is parked");
    let by_id: HashMap<_, _> = parked.iter().map(|p| (p.id, p)).collect();

    for case in cases {
        let e = &case.envelope;
        let row = by_id[&e.id];
        assert_eq!(row.version, e.version);
        assert_eq!(row.content_type, e.content_type);
        assert_eq!(row.payload, e.payload);

        let d = row.describe();
        assert_eq!(d["id"], json!(e.id), "{d}");
        assert_eq!(d["event"], json!(e.name), "{d}");
        assert_eq!(d["version"], json!(e.version), "{d}");
        assert_eq!(d["key"], json!(e.key), "{d}");
        assert_eq!(d["attempts"], json!(1), "{d}");
        assert!(
            d["last_error"].as_str().unwrap().contains("refused (test)"),
            "{d}"
        );
        assert!(d["parked_at"].is_string(), "{d}");
        assert_eq!(d["payload_format"], json!(case.format), "{d}");
        assert_eq!(d["payload"], case.payload, "{d}");
        match &case.error {
            None => {
                assert!(d.get("decode_error").is_none(), "{d}");
                let event = row.decode().unwrap();
                assert_eq!(
                    event.downcast_ref::<Deposited>(),
                    Some(&Deposited {
                        account: "acct-1".into(),
                        cents: 250
                    })
                );
            }
            Some(error) => {
                let got = d["decode_error"].as_str().unwrap();
                assert!(got.starts_with(error.as_str()), "{got} vs {error}");
                assert!(row.decode().is_err());
            }
        }
    }
}

#[cfg(feature = "sqlite")]
#[tokio::test]
async fn sqlite_parked_rows_are_described() {
    use eventbus_core::outbox::{Outbox, OutboxConfig};
    use sqlx::sqlite::SqlitePoolOptions;

    let dir = tempfile::tempdir().unwrap();
    let pool = SqlitePoolOptions::new()
        .connect_with(
            sqlx::sqlite::SqliteConnectOptions::new()
                .filename(dir.path().join("describe.db"))
                .create_if_missing(true),
        )
        .await
        .unwrap();
    let outbox = Outbox::sqlite_with(pool.clone(), OutboxConfig::new());
    outbox.migrate().await.unwrap();
    let cases = cases();
    let envelopes: Vec<_> = cases.iter().map(|c| c.envelope.clone()).collect();
    let mut tx = pool.begin().await.unwrap();
    outbox.add_envelopes(&mut *tx, &envelopes).await.unwrap();
    tx.commit().await.unwrap();
    park_and_describe(outbox.store(), &cases).await;
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn postgres_parked_rows_are_described() {
    use eventbus_core::outbox::{Outbox, OutboxConfig};
    use sqlx::postgres::PgPoolOptions;

    let url = std::env::var("EVENTBUS_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .connect(&url)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {url} is required for this test: {e}"));
    let table = format!(
        "ob_describe_{}",
        eventbus_core::event::new_message_id().simple()
    );
    let outbox = Outbox::postgres_with(pool.clone(), OutboxConfig::new().table(&table).unwrap());
    outbox.migrate().await.unwrap();
    let cases = cases();
    let envelopes: Vec<_> = cases.iter().map(|c| c.envelope.clone()).collect();
    let mut tx = pool.begin().await.unwrap();
    outbox.add_envelopes(&mut *tx, &envelopes).await.unwrap();
    tx.commit().await.unwrap();
    park_and_describe(outbox.store(), &cases).await;
    sqlx::query(&format!("DROP TABLE {table} CASCADE"))
        .execute(&pool)
        .await
        .unwrap();
}

#[cfg(feature = "mysql")]
#[tokio::test]
async fn mysql_parked_rows_are_described() {
    use eventbus_core::outbox::{Outbox, OutboxConfig};
    use sqlx::mysql::MySqlPoolOptions;

    let url = std::env::var("EVENTBUS_TEST_MYSQL_URL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".into());
    let pool = MySqlPoolOptions::new()
        .max_connections(4)
        .connect(&url)
        .await
        .unwrap_or_else(|e| panic!("MySQL/MariaDB at {url} is required for this test: {e}"));
    let table = format!(
        "ob_describe_{}",
        eventbus_core::event::new_message_id().simple()
    );
    let outbox = Outbox::mysql_with(pool.clone(), OutboxConfig::new().table(&table).unwrap());
    outbox.migrate().await.unwrap();
    let cases = cases();
    let envelopes: Vec<_> = cases.iter().map(|c| c.envelope.clone()).collect();
    let mut tx = pool.begin().await.unwrap();
    outbox.add_envelopes(&mut *tx, &envelopes).await.unwrap();
    tx.commit().await.unwrap();
    park_and_describe(outbox.store(), &cases).await;
    sqlx::query(&format!("DROP TABLE {table}"))
        .execute(&pool)
        .await
        .unwrap();
}
