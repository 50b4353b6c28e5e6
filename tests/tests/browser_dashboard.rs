//! The framework dashboard in a real browser: a service with the dashboard
//! mounted at `/eventbus` (port 0, SQLite outbox and inbox, memory
//! transport) is seeded with unsent and parked outbox rows and dead
//! letters; `tests/browser/dashboard.mjs` (node + playwright-core +
//! /usr/bin/chromium) checks what the page shows and clicks retry,
//! discard and requeue; the service's state is checked afterwards.
//!
//! Needs node on PATH, /usr/bin/chromium and
//! `tests/browser/node_modules/playwright-core` (`npm ci` in tests/browser);
//! fails loudly without them.

#[path = "support/browser.rs"]
mod browser;

use std::collections::HashSet;

use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use eventbus::dashboard::{self, DashboardState, DeadLetterAdmin};
use eventbus::inbox::Inbox;
use eventbus::outbox::{Outbox, RelayConfig, StepOutcome};
use eventbus::sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use eventbus::{
    async_trait, BoxError, Context, Envelope, Event, EventBus, Handle, HandleError, Handler,
    MemoryTransport, Publisher, TransportError,
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Event, Serialize, Deserialize)]
#[event(name = "test.browser.order", key = "order")]
struct Order {
    order: String,
}

/// Fails the first delivery of every `poison…` order permanently; handles
/// everything else (so a requeued dead letter goes through).
#[derive(Handler)]
#[handler(group = "browser-billing", events(Order))]
struct Billing {
    seen: Arc<Mutex<HashSet<uuid::Uuid>>>,
}

impl Handle<Order> for Billing {
    async fn handle(&self, e: Order, cx: &Context) -> Result<(), BoxError> {
        let first = self.seen.lock().unwrap().insert(cx.message_id());
        if e.order.starts_with("poison") && first {
            return Err(HandleError::permanent("first delivery fails"));
        }
        Ok(())
    }
}

/// Refuses every publish (the relay parks the rows).
struct RefuseAll;

#[async_trait]
impl Publisher for RefuseAll {
    async fn publish(&self, envelope: &Envelope) -> Result<(), TransportError> {
        let order: Order = envelope
            .decode()
            .map_err(|e| TransportError::Other(e.into()))?;
        Err(TransportError::Rejected(format!("refused {}", order.order)))
    }
}

/// Polls `f` until it is true (10 s deadline).
async fn eventually<F: std::future::Future<Output = bool>>(what: &str, mut f: impl FnMut() -> F) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_in_the_browser() {
    let script = browser::script("dashboard.mjs");
    browser::require_tools(&script, &["playwright-core"]);

    let dir = tempfile::tempdir().unwrap();
    let pool = SqlitePoolOptions::new()
        .connect_with(
            SqliteConnectOptions::from_str(&format!(
                "sqlite://{}",
                dir.path().join("b.db").display()
            ))
            .unwrap()
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(Duration::from_secs(30)),
        )
        .await
        .unwrap();
    let outbox = Outbox::sqlite(pool.clone());
    outbox.migrate().await.unwrap();
    let inbox = Inbox::sqlite(pool.clone());
    inbox.migrate().await.unwrap();

    let transport = MemoryTransport::new();
    let mut bus = EventBus::new(transport.clone());
    bus.register_with(
        Billing {
            seen: Arc::default(),
        },
        |p| p.inbox(inbox.layer()),
    );
    let bus = bus.start().await.unwrap();

    // Seed: one handled order and two dead letters ...
    let add = |orders: &'static [&'static str]| {
        let (pool, outbox) = (pool.clone(), outbox.clone());
        async move {
            let mut tx = pool.begin().await.unwrap();
            for o in orders {
                outbox
                    .add(&mut tx, &Order { order: (*o).into() })
                    .await
                    .unwrap();
            }
            tx.commit().await.unwrap();
        }
    };
    add(&["ok-1", "poison-1", "poison-2"]).await;
    let relay = outbox.relay(transport.clone());
    while relay.step().await.unwrap() != StepOutcome::Idle {}
    eventually("two dead letters and one inbox row", || async {
        transport.count("browser-billing").await.unwrap() == 2 && inbox.rows().await.unwrap() == 1
    })
    .await;
    // ... two parked rows (the transport refused them) and one unsent row.
    add(&["park-1", "park-2"]).await;
    let refusing = outbox.relay(RefuseAll).with_config(RelayConfig {
        max_attempts: 1,
        ..RelayConfig::default()
    });
    refusing.step().await.unwrap();
    add(&["unsent-1"]).await;
    let stats = outbox.stats().await.unwrap();
    assert_eq!((stats.backlog, stats.parked), (3, 2));

    let app = axum::Router::new().nest(
        "/eventbus",
        dashboard::router(
            DashboardState::new()
                .outbox(&outbox)
                .inbox(&inbox)
                .dead_letters(&transport, ["browser-billing"]),
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/eventbus", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let screenshots = browser::screenshot_dir("dashboard");
    let out = browser::run_node(
        &script,
        &[
            ("BASE_URL", base.clone()),
            ("SCREENSHOT_DIR", screenshots.display().to_string()),
        ],
        Duration::from_secs(120),
    )
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("dashboard browser test passed"), "{stdout}");
    assert!(screenshots.join("dashboard.png").exists());
    assert!(screenshots.join("dashboard-after-actions.png").exists());

    // What the clicks did, seen from the service.
    let stats = outbox.stats().await.unwrap();
    assert_eq!(
        (stats.backlog, stats.parked),
        (2, 0),
        "park-1 retried (unsent again), park-2 discarded"
    );
    assert_eq!(transport.count("browser-billing").await.unwrap(), 0);
    assert_eq!(
        inbox.rows().await.unwrap(),
        2,
        "the requeued order was handled"
    );
    bus.shutdown().await;
}
