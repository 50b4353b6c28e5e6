//! `eventbus-relay parked`: parked rows of a real SQLite / PostgreSQL outbox
//! listed as JSON lines. The binary links no application event types, so it
//! shows payloads as stored and says why they were not decoded; this test
//! links the event type, and the same rows described in-process here are
//! decoded by it.

use std::process::Command;
use std::sync::Arc;

use async_trait::async_trait;
use eventbus_core::outbox::{OutboxStore, Relay, RelayConfig, StepOutcome};
use eventbus_core::testing::{envelope, unique};
use eventbus_core::{Envelope, Event, Publisher, TransportError};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

#[derive(Debug, Event, Serialize, Deserialize)]
#[event(name = "test.cli.shipped", key = "order")]
struct Shipped {
    order: String,
    parcels: u32,
}

/// Refuses everything: every row is parked after its one attempt.
struct Refuse;

#[async_trait]
impl Publisher for Refuse {
    async fn publish(&self, _: &Envelope) -> Result<(), TransportError> {
        Err(TransportError::Rejected("refused (test)".into()))
    }
}

fn rows() -> Vec<Envelope> {
    let shipped = Envelope::from_event(&Shipped {
        order: "o-1".into(),
        parcels: 2,
    })
    .unwrap();
    let mut garbled = envelope(&unique("test.cli.garbled"), Some("g"), 0);
    garbled.payload = b"<xml/>".to_vec().into();
    vec![shipped, garbled]
}

async fn park_all(store: Arc<dyn OutboxStore>, rows: usize) {
    let relay = Relay::new(store.clone(), Arc::new(Refuse)).with_config(RelayConfig {
        max_attempts: 1,
        ..RelayConfig::default()
    });
    let mut steps = 0;
    while relay.step().await.unwrap() != StepOutcome::Idle {
        steps += 1;
        assert!(steps <= rows, "the relay keeps finding work");
    }
    assert_eq!(store.parked(100).await.unwrap().len(), rows);
}

/// Runs `eventbus-relay parked` and parses its JSON lines.
fn cli_parked(database_url: &str, table: &str) -> Vec<Value> {
    let out = Command::new(env!("CARGO_BIN_EXE_eventbus-relay"))
        .args(["parked", "--database-url", database_url, "--table", table])
        .env_remove("EVENTBUS_DATABASE_URL")
        .output()
        .expect("run eventbus-relay parked");
    assert!(
        out.status.success(),
        "eventbus-relay parked failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect()
}

/// What the binary and the in-process library say of the same rows.
async fn check(store: Arc<dyn OutboxStore>, rows: &[Envelope], database_url: &str, table: &str) {
    park_all(store.clone(), rows.len()).await;

    let listed = cli_parked(database_url, table);
    assert_eq!(listed.len(), 2, "{listed:?}");
    let (shipped, garbled) = (&listed[0], &listed[1]);

    assert_eq!(shipped["id"], json!(rows[0].id));
    assert_eq!(shipped["event"], json!("test.cli.shipped"));
    assert_eq!(shipped["key"], json!("o-1"));
    assert_eq!(shipped["attempts"], json!(1));
    assert!(shipped["last_error"]
        .as_str()
        .unwrap()
        .contains("refused (test)"));
    // Not linked into the binary: raw JSON, and the reason.
    assert_eq!(shipped["payload_format"], json!("json"), "{shipped}");
    assert_eq!(shipped["payload"], json!({"order": "o-1", "parcels": 2}));
    let why = shipped["decode_error"].as_str().unwrap();
    assert!(
        why.contains("unknown event `test.cli.shipped`")
            && why.contains("no event type of this name is linked"),
        "{why}"
    );

    assert_eq!(garbled["id"], json!(rows[1].id));
    assert_eq!(garbled["payload_format"], json!("text"), "{garbled}");
    assert_eq!(garbled["payload"], json!("<xml/>"));

    // This test program links `Shipped`: the library decodes it.
    let parked = store.parked(100).await.unwrap();
    let here = parked[0].describe();
    assert_eq!(here["payload_format"], json!("event"), "{here}");
    assert_eq!(here["payload"], shipped["payload"]);
    assert!(here.get("decode_error").is_none());
    // Everything else is the same row, described the same way.
    let mut cli_row = shipped.clone();
    let mut lib_row = here;
    for row in [&mut cli_row, &mut lib_row] {
        let row = row.as_object_mut().unwrap();
        row.remove("payload_format");
        row.remove("decode_error");
    }
    assert_eq!(cli_row, lib_row);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parked_lists_sqlite_rows() {
    use eventbus_core::outbox::{Outbox, OutboxConfig};
    use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};

    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let pool = SqlitePoolOptions::new()
        .connect_with(
            SqliteConnectOptions::new()
                .filename(&db)
                .create_if_missing(true),
        )
        .await
        .unwrap();
    let table = "app_outbox";
    let outbox = Outbox::sqlite_with(pool.clone(), OutboxConfig::new().table(table).unwrap());
    outbox.migrate().await.unwrap();
    let rows = rows();
    let mut tx = pool.begin().await.unwrap();
    outbox.add_envelopes(&mut *tx, &rows).await.unwrap();
    tx.commit().await.unwrap();
    check(
        outbox.store(),
        &rows,
        &format!("sqlite://{}", db.display()),
        table,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parked_lists_postgres_rows() {
    use eventbus_core::outbox::{Outbox, OutboxConfig};
    use sqlx::postgres::PgPoolOptions;

    let url = std::env::var("EVENTBUS_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .connect(&url)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {url} is required for this test: {e}"));
    let table = format!("ob_cli_{}", eventbus_core::event::new_message_id().simple());
    let outbox = Outbox::postgres_with(pool.clone(), OutboxConfig::new().table(&table).unwrap());
    outbox.migrate().await.unwrap();
    let rows = rows();
    let mut tx = pool.begin().await.unwrap();
    outbox.add_envelopes(&mut *tx, &rows).await.unwrap();
    tx.commit().await.unwrap();
    check(outbox.store(), &rows, &url, &table).await;
    sqlx::query(&format!("DROP TABLE {table} CASCADE"))
        .execute(&pool)
        .await
        .unwrap();
}

#[test]
fn parked_refuses_an_unknown_database_scheme() {
    let out = Command::new(env!("CARGO_BIN_EXE_eventbus-relay"))
        .args(["parked", "--database-url", "oracle://db"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unsupported database URL scheme `oracle`"),
        "{err}"
    );
}
