//! `#[handler(inbox)]` with the bus-wide inbox (`EventBus::inbox`) on
//! SQLite: duplicates are skipped and the handler's write commits with the
//! inbox row; a bus without an inbox refuses to start such a handler.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use eventbus_core::inbox::{self, Inbox};
use eventbus_core::{
    BoxError, Context, Envelope, Event, EventBus, Handle, Handler, MemoryTransport, Publisher,
    StartError,
};
use serde::{Deserialize, Serialize};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use sqlx::Sqlite;

#[derive(Debug, Event, Serialize, Deserialize)]
#[event(name = "test.inbox-derive.stock-reserved", key = "sku")]
struct StockReserved {
    sku: String,
}

#[derive(Handler)]
#[handler(group = "inbox-derive-test", events(StockReserved), inbox)]
struct CountReservations {
    calls: Arc<AtomicU32>,
}

impl Handle<StockReserved> for CountReservations {
    async fn handle(&self, e: StockReserved, _cx: &Context) -> Result<(), BoxError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let mut tx = inbox::transaction::<Sqlite>().await?;
        sqlx::query("INSERT INTO reservations (sku) VALUES (?)")
            .bind(&e.sku)
            .execute(&mut *tx)
            .await?;
        Ok(())
    }
}

#[tokio::test]
async fn bus_without_inbox_refuses_an_inbox_handler() {
    let mut bus = EventBus::new(MemoryTransport::new());
    bus.register(CountReservations {
        calls: Arc::default(),
    });
    assert!(matches!(
        bus.start().await,
        Err(StartError::InboxNotConfigured(g)) if g == "inbox-derive-test"
    ));
}

#[tokio::test]
async fn derived_inbox_handler_applies_each_message_once() {
    let dir = tempfile::tempdir().unwrap();
    let pool = SqlitePoolOptions::new()
        .max_connections(4)
        .connect_with(
            SqliteConnectOptions::new()
                .filename(dir.path().join("app.db"))
                .create_if_missing(true),
        )
        .await
        .unwrap();
    sqlx::query("CREATE TABLE reservations (sku TEXT NOT NULL)")
        .execute(&pool)
        .await
        .unwrap();
    let inbox = Inbox::sqlite(pool.clone());
    inbox.migrate().await.unwrap();

    let transport = MemoryTransport::new();
    let calls = Arc::new(AtomicU32::new(0));
    let mut bus = EventBus::new(transport.clone());
    bus.inbox(inbox.layer()).register(CountReservations {
        calls: calls.clone(),
    });
    let running = bus.start().await.unwrap();
    let once = Envelope::from_event(&StockReserved { sku: "book".into() }).unwrap();
    // The broker delivers it three times (at-least-once).
    for _ in 0..3 {
        transport.publish(&once).await.unwrap();
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let s = transport.queue_stats("inbox-derive-test").unwrap();
        if calls.load(Ordering::SeqCst) >= 1 && s.ready == 0 && s.unacked == 0 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "not drained");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    running.shutdown().await;
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM reservations")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(rows, 1, "the effect must be applied exactly once");
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "duplicates must not reach the handler"
    );
}
