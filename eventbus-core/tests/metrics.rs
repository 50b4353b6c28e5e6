//! The framework's metrics through a real Prometheus recorder, read over
//! HTTP from the `/metrics` route: handler outcomes and durations, relay
//! counters and lag, outbox and inbox gauges (SQLite).
#![cfg(all(feature = "prometheus", feature = "sqlite"))]

use std::str::FromStr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use eventbus_core::inbox::Inbox;
use eventbus_core::observe::{prometheus, GaugeSampler};
use eventbus_core::outbox::{Outbox, OutboxConfig, RelayConfig, StepOutcome};
use eventbus_core::{
    BoxError, Context, Event, EventBus, Handle, HandleError, Handler, MemoryTransport,
};
use serde::{Deserialize, Serialize};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};

#[derive(Debug, Event, Serialize, Deserialize)]
#[event(name = "test.metrics.order", key = "id")]
struct Order {
    id: String,
}

#[derive(Handler)]
#[handler(
    group = "metrics-billing",
    events(Order),
    max_attempts = 3,
    backoff_ms = 1,
    jitter = false
)]
struct Billing {
    first_tries: Arc<AtomicU32>,
}

impl Handle<Order> for Billing {
    async fn handle(&self, e: Order, cx: &Context) -> Result<(), BoxError> {
        match e.id.as_str() {
            "poison" => Err(HandleError::permanent("no such product")),
            "flaky" if cx.attempt() == 1 => {
                self.first_tries.fetch_add(1, Ordering::SeqCst);
                Err("try again".into())
            }
            _ => Ok(()),
        }
    }
}

/// The value of the sample `name{labels…}` whose labels include every one of `labels`.
fn sample(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.starts_with(name)
                && l[name.len()..].starts_with(['{', ' '])
                && labels.iter().all(|want| l.contains(want))
        })
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
}

/// Polls `/metrics` until `check` holds (10 s deadline); returns the text.
async fn metrics_until(url: &str, what: &str, check: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = reqwest::get(url).await.unwrap().text().await.unwrap();
        if check(&text) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_endpoint_reports_handlers_relay_outbox_and_inbox() {
    let handle = prometheus::install().expect("first recorder in this test binary");
    let app = prometheus::router(handle);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/metrics", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let dir = tempfile::tempdir().unwrap();
    let pool = SqlitePoolOptions::new()
        .connect_with(
            SqliteConnectOptions::from_str(&format!(
                "sqlite://{}",
                dir.path().join("m.db").display()
            ))
            .unwrap()
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(Duration::from_secs(30)),
        )
        .await
        .unwrap();
    let outbox = Outbox::sqlite_with(pool.clone(), OutboxConfig::new().table("m_outbox").unwrap());
    outbox.migrate().await.unwrap();
    let inbox = Inbox::sqlite(pool.clone());
    inbox.migrate().await.unwrap();

    let transport = MemoryTransport::new();
    let mut bus = EventBus::new(transport.clone());
    let first_tries = Arc::new(AtomicU32::new(0));
    bus.register(Billing {
        first_tries: first_tries.clone(),
    });
    let bus = bus.start().await.unwrap();

    let mut tx = pool.begin().await.unwrap();
    for id in ["ok", "flaky", "poison"] {
        outbox.add(&mut tx, &Order { id: id.into() }).await.unwrap();
    }
    tx.commit().await.unwrap();
    // A row that is not dead-lettered or handled yet: the backlog gauge sees it.
    let sampler = GaugeSampler::new()
        .interval(Duration::from_millis(20))
        .outbox(&outbox)
        .inbox(&inbox);
    sampler.sample().await;
    let text = reqwest::get(&url).await.unwrap().text().await.unwrap();
    assert_eq!(
        sample(&text, "eventbus_outbox_backlog", &[r#"table="m_outbox""#]),
        Some(3.0),
        "{text}"
    );
    assert!(
        sample(
            &text,
            "eventbus_outbox_oldest_age_seconds",
            &[r#"table="m_outbox""#]
        )
        .is_some_and(|age| age >= 0.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "eventbus_inbox_rows", &[r#"table="eventbus_inbox""#]),
        Some(0.0)
    );

    let sampler = sampler.spawn();
    let relay = outbox
        .relay(transport.clone())
        .with_config(RelayConfig {
            poll_interval: Duration::from_millis(20),
            ..RelayConfig::default()
        })
        .spawn();
    // The bus is idle until the relay has published: wait for an empty
    // outbox first, then for the handlers.
    let deadline = Instant::now() + Duration::from_secs(10);
    while outbox.stats().await.unwrap().backlog > 0 {
        assert!(
            Instant::now() < deadline,
            "the relay did not empty the outbox"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    bus.wait_idle(Duration::from_secs(10)).await.unwrap();
    assert_eq!(first_tries.load(Ordering::SeqCst), 1);

    let group = r#"group="metrics-billing""#;
    let event = r#"event="test.metrics.order""#;
    let text = metrics_until(&url, "every outcome and an empty outbox", |t| {
        sample(
            t,
            "eventbus_handler_handled_total",
            &[group, event, r#"outcome="handled""#],
        ) == Some(2.0)
            && sample(
                t,
                "eventbus_handler_handled_total",
                &[group, r#"outcome="dead_lettered""#],
            ) == Some(1.0)
            && sample(t, "eventbus_outbox_backlog", &[r#"table="m_outbox""#]) == Some(0.0)
            // Counted once the relay's batch is complete (after the rows are deleted).
            && sample(t, "eventbus_relay_published_total", &[r#"table="m_outbox""#]) == Some(3.0)
    })
    .await;
    assert_eq!(
        sample(
            &text,
            "eventbus_handler_handled_total",
            &[group, event, r#"outcome="retried""#]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "eventbus_handler_failed_total", &[group, event]),
        Some(2.0),
        "one retried and one dead-lettered attempt"
    );
    assert_eq!(
        sample(&text, "eventbus_handler_duration_seconds_count", &[group]),
        Some(4.0),
        "four attempts: ok, flaky twice, poison once"
    );
    assert!(
        text.contains("eventbus_handler_duration_seconds_bucket{"),
        "a histogram: {text}"
    );
    assert_eq!(
        sample(
            &text,
            "eventbus_relay_published_total",
            &[r#"table="m_outbox""#]
        ),
        Some(3.0)
    );
    assert_eq!(
        sample(
            &text,
            "eventbus_relay_lag_seconds_count",
            &[r#"table="m_outbox""#]
        ),
        Some(3.0)
    );
    assert_eq!(
        sample(
            &text,
            "eventbus_outbox_oldest_age_seconds",
            &[r#"table="m_outbox""#]
        ),
        Some(0.0),
        "empty outbox"
    );

    relay.shutdown().await;

    // A row the transport refuses: counted as failed, then parked (one attempt).
    let mut tx = pool.begin().await.unwrap();
    outbox
        .add(
            &mut tx,
            &Order {
                id: "refused".into(),
            },
        )
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let refusing = outbox.relay(RefuseAll).with_config(RelayConfig {
        max_attempts: 1,
        ..RelayConfig::default()
    });
    assert!(matches!(
        refusing.step().await.unwrap(),
        StepOutcome::Batch {
            sent: 0,
            failed: 1,
            ..
        }
    ));
    let text = metrics_until(&url, "a refused, parked row", |t| {
        sample(t, "eventbus_relay_failed_total", &[r#"table="m_outbox""#]) == Some(1.0)
            && sample(t, "eventbus_outbox_parked", &[r#"table="m_outbox""#]) == Some(1.0)
    })
    .await;
    assert_eq!(
        sample(&text, "eventbus_outbox_backlog", &[r#"table="m_outbox""#]),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            "eventbus_relay_published_total",
            &[r#"table="m_outbox""#]
        ),
        Some(3.0),
        "nothing more published"
    );

    sampler.shutdown().await;
    bus.shutdown().await;
}

/// Refuses every publish.
struct RefuseAll;

#[async_trait::async_trait]
impl eventbus_core::Publisher for RefuseAll {
    async fn publish(
        &self,
        _envelope: &eventbus_core::Envelope,
    ) -> Result<(), eventbus_core::TransportError> {
        Err(eventbus_core::TransportError::Rejected("not today".into()))
    }
}
