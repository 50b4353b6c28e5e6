//! The framework dashboard over real HTTP (reqwest against a server on
//! port 0): outbox backlog, parked rows with retry/discard, dead letters
//! with requeue/discard, inbox size, and bad input — on SQLite and
//! PostgreSQL with the memory transport, and dead letters on RabbitMQ.
#![cfg(all(feature = "dashboard", feature = "sqlite", feature = "postgres"))]

use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use eventbus_core::dashboard::{self, DashboardState};
use eventbus_core::inbox::{AsInboxStore, Inbox, InboxConfig};
use eventbus_core::outbox::{
    sqlx_db::Db, AsStore, InsertEnvelopes, Outbox, OutboxConfig, RelayConfig,
};
use eventbus_core::{
    BoxError, Context, Envelope, Event, EventBus, Handle, HandleError, Handler, MemoryTransport,
    Publisher, TransportError,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

#[derive(Debug, Event, Serialize, Deserialize)]
#[event(name = "test.dash.order", key = "order")]
struct Order {
    order: String,
}

/// Fails permanently for orders named `poison…` until `fixed` is set.
#[derive(Handler)]
#[handler(group = "dash-billing", events(Order))]
struct Billing {
    fixed: Arc<AtomicBool>,
    handled: Arc<AtomicU32>,
}

impl Handle<Order> for Billing {
    async fn handle(&self, e: Order, _cx: &Context) -> Result<(), BoxError> {
        if e.order.starts_with("poison") && !self.fixed.load(Ordering::SeqCst) {
            return Err(HandleError::permanent(format!("cannot bill {}", e.order)));
        }
        self.handled.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

/// The memory transport, refusing orders named `rejected…` while `refuse`
/// is set (so the relay parks them).
#[derive(Clone)]
struct Refusing {
    inner: MemoryTransport,
    refuse: Arc<AtomicBool>,
}

#[async_trait]
impl Publisher for Refusing {
    async fn publish(&self, envelope: &Envelope) -> Result<(), TransportError> {
        let order: Order = envelope
            .decode()
            .map_err(|e| TransportError::Other(e.into()))?;
        if order.order.starts_with("rejected") && self.refuse.load(Ordering::SeqCst) {
            return Err(TransportError::Rejected(format!("refused {}", order.order)));
        }
        self.inner.publish(envelope).await
    }
}

/// Serves `state`'s dashboard under `/eventbus` on a free port; returns its base URL.
async fn serve(state: DashboardState) -> String {
    let app = axum::Router::new().nest("/eventbus", dashboard::router(state));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/eventbus", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    base
}

async fn get(url: &str) -> (u16, Value) {
    let r = reqwest::get(url).await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn post(url: &str, body: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Polls `url` (10 s deadline) until `check` holds; returns the last answer.
async fn until(url: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, v) = get(url).await;
        if status == 200 && check(&v) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {status} {v}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn find<'a>(list: &'a Value, field: &str, value: &str) -> &'a Value {
    list.as_array()
        .unwrap()
        .iter()
        .find(|x| x[field] == value)
        .unwrap_or_else(|| panic!("no {field}={value} in {list}"))
}

/// The dead-letter half: list with reason and attempts, discard one,
/// requeue another once the handler is fixed. `group` has dead letters for
/// orders `poison-1` and `poison-2`.
async fn dead_letter_actions(base: &str, group: &str, fixed: &AtomicBool, handled: &AtomicU32) {
    let overview = format!("{base}/api/overview");
    until(&overview, "two dead letters", |v| {
        find(&v["groups"], "group", group)["dead_letters"] == 2
    })
    .await;
    let (status, letters) = get(&format!("{base}/api/dead-letters/{group}")).await;
    assert_eq!(status, 200, "{letters}");
    assert_eq!(letters.as_array().unwrap().len(), 2, "{letters}");
    let first = find(&letters, "key", "poison-1");
    assert_eq!(first["reason"], "permanent");
    assert_eq!(first["attempts"], 1);
    assert_eq!(first["group"], group);
    assert_eq!(first["event"], "test.dash.order");
    assert!(
        first["error"]
            .as_str()
            .unwrap()
            .contains("cannot bill poison-1"),
        "{first}"
    );
    assert_eq!(first["payload"]["order"], "poison-1");
    let second = find(&letters, "key", "poison-2");
    let (limited_status, limited) = get(&format!("{base}/api/dead-letters/{group}?limit=1")).await;
    assert_eq!(
        (limited_status, limited.as_array().unwrap().len()),
        (200, 1)
    );

    // Bad input and missing things.
    let discard = format!("{base}/api/dead-letters/{group}/discard");
    let (s, e) = post(&discard, r#"{"id": 7}"#).await;
    assert_eq!(s, 400, "{e}");
    assert!(e["error"].as_str().unwrap().contains("`id`"), "{e}");
    let (s, e) = post(&discard, &json!({ "id": uuid::Uuid::nil() }).to_string()).await;
    assert_eq!(s, 404, "{e}");
    let (s, _) = get(&format!("{base}/api/dead-letters/no-such-group")).await;
    assert_eq!(s, 404);
    assert_eq!(
        until(&overview, "the probes took nothing", |v| {
            find(&v["groups"], "group", group)["dead_letters"] == 2
        })
        .await["groups"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );

    let (s, r) = post(&discard, &json!({ "id": second["id"] }).to_string()).await;
    assert_eq!(s, 200, "{r}");
    let (s, r) = post(&discard, &json!({ "id": second["id"] }).to_string()).await;
    assert_eq!(s, 404, "discarded twice: {r}");

    fixed.store(true, Ordering::SeqCst);
    let before = handled.load(Ordering::SeqCst);
    let (s, r) = post(
        &format!("{base}/api/dead-letters/{group}/requeue"),
        &json!({ "id": first["id"] }).to_string(),
    )
    .await;
    assert_eq!(s, 200, "{r}");
    until(&overview, "no dead letters left", |v| {
        find(&v["groups"], "group", group)["dead_letters"] == 0
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while handled.load(Ordering::SeqCst) == before {
        assert!(
            Instant::now() < deadline,
            "the requeued dead letter was not handled"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(handled.load(Ordering::SeqCst), before + 1);
    let (_, letters) = get(&format!("{base}/api/dead-letters/{group}")).await;
    assert_eq!(letters, json!([]));
}

/// The whole dashboard on one database: backlog, parked rows, inbox rows,
/// dead letters, and bad input.
async fn scenario<DB: Db>(pool: sqlx::Pool<DB>, outbox: Outbox<DB>, inbox: Inbox<DB>)
where
    Outbox<DB>: AsStore + InsertEnvelopes<DB>,
    Inbox<DB>: AsInboxStore,
{
    outbox.migrate().await.unwrap();
    let table = outbox.config().table_name().to_string();
    let inbox_table = inbox.config().table_name().to_string();
    let transport = MemoryTransport::new();
    let fixed = Arc::new(AtomicBool::new(false));
    let handled = Arc::new(AtomicU32::new(0));
    let mut bus = EventBus::new(transport.clone());
    bus.register_with(
        Billing {
            fixed: fixed.clone(),
            handled: handled.clone(),
        },
        |p| p.inbox(inbox.layer()),
    );
    let bus = bus.start().await.unwrap();

    let base = serve(
        DashboardState::new()
            .outbox(&outbox)
            .inbox(&inbox)
            .dead_letters(&transport, ["dash-billing"]),
    )
    .await;
    let overview = format!("{base}/api/overview");

    // The page itself, at the mount point.
    let page = reqwest::get(&base).await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page
        .text()
        .await
        .unwrap()
        .contains("<title>eventbus dashboard</title>"));

    // First orders that reach the transport (one is billed, two are
    // dead-lettered), then two it refuses (parked). In two rounds: a wave
    // with a refused row is sent again, which would duplicate the others.
    let mut tx = pool.begin().await.unwrap();
    for order in ["ok-1", "poison-1", "poison-2"] {
        outbox
            .add(
                &mut tx,
                &Order {
                    order: order.into(),
                },
            )
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
    let v = until(&overview, "a backlog of three", |v| {
        find(&v["outboxes"], "table", &table)["backlog"] == 3
    })
    .await;
    assert!(
        find(&v["outboxes"], "table", &table)["oldest_age_seconds"]
            .as_f64()
            .unwrap()
            >= 0.0
    );
    assert_eq!(find(&v["inboxes"], "table", &inbox_table)["rows"], 0);

    let refuse = Arc::new(AtomicBool::new(true));
    let relay = outbox
        .relay(Refusing {
            inner: transport.clone(),
            refuse: refuse.clone(),
        })
        .with_config(RelayConfig {
            poll_interval: Duration::from_millis(20),
            max_attempts: 1,
            ..RelayConfig::default()
        })
        .spawn();
    until(&overview, "everything published, one billed", |v| {
        find(&v["outboxes"], "table", &table)["backlog"] == 0
            && find(&v["inboxes"], "table", &inbox_table)["rows"] == 1
            && find(&v["groups"], "group", "dash-billing")["dead_letters"] == 2
    })
    .await;
    let mut tx = pool.begin().await.unwrap();
    for order in ["rejected-1", "rejected-2"] {
        outbox
            .add(
                &mut tx,
                &Order {
                    order: order.into(),
                },
            )
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
    let v = until(&overview, "two parked rows", |v| {
        let o = find(&v["outboxes"], "table", &table);
        o["backlog"] == 2 && o["parked"] == 2
    })
    .await;
    assert!(
        find(&v["outboxes"], "table", &table)["oldest_age_seconds"]
            .as_f64()
            .unwrap()
            > 0.0
    );

    let parked_url = format!("{base}/api/outbox/{table}/parked");
    let (s, parked) = get(&parked_url).await;
    assert_eq!(s, 200, "{parked}");
    assert_eq!(parked.as_array().unwrap().len(), 2, "{parked}");
    let r1 = find(&parked, "key", "rejected-1");
    assert_eq!(r1["event"], "test.dash.order");
    assert_eq!(r1["attempts"], 1);
    assert!(
        r1["last_error"]
            .as_str()
            .unwrap()
            .contains("refused rejected-1"),
        "{r1}"
    );
    assert_eq!(r1["payload"]["order"], "rejected-1");
    let r2 = find(&parked, "key", "rejected-2");

    // Bad input: malformed JSON, missing and malformed fields, unknown ids,
    // tables and paths, a bad limit. Nothing changes.
    let retry = format!("{parked_url}/retry");
    let (s, e) = post(&retry, "{").await;
    assert_eq!(s, 400, "{e}");
    assert!(e["error"].as_str().unwrap().contains("not JSON"), "{e}");
    let (s, e) = post(&retry, "{}").await;
    assert_eq!(
        (s, e["error"].as_str().unwrap()),
        (400, "missing field `id`")
    );
    let (s, e) = post(&retry, r#"{"id": "not-a-uuid"}"#).await;
    assert_eq!(s, 400);
    assert!(
        e["error"].as_str().unwrap().starts_with("field `id`"),
        "{e}"
    );
    let (s, e) = post(&retry, &json!({ "id": uuid::Uuid::nil() }).to_string()).await;
    assert_eq!(s, 404, "{e}");
    let (s, _) = get(&format!("{base}/api/outbox/no_such_table/parked")).await;
    assert_eq!(s, 404);
    let (s, e) = get(&format!("{parked_url}?limit=lots")).await;
    assert_eq!(s, 400);
    assert!(e["error"].as_str().unwrap().contains("`limit`"), "{e}");
    let (s, _) = get(&format!("{base}/no/such/page")).await;
    assert_eq!(s, 404);

    // Discard one parked row; retry the other once the transport takes it.
    let (s, r) = post(
        &format!("{parked_url}/discard"),
        &json!({ "id": r2["id"] }).to_string(),
    )
    .await;
    assert_eq!(s, 200, "{r}");
    until(&overview, "one parked row", |v| {
        find(&v["outboxes"], "table", &table)["parked"] == 1
    })
    .await;
    refuse.store(false, Ordering::SeqCst);
    let (s, r) = post(&retry, &json!({ "id": r1["id"] }).to_string()).await;
    assert_eq!(s, 200, "{r}");
    until(&overview, "an empty outbox and two inbox rows", |v| {
        find(&v["outboxes"], "table", &table)["backlog"] == 0
            && find(&v["inboxes"], "table", &inbox_table)["rows"] == 2
    })
    .await;

    dead_letter_actions(&base, "dash-billing", &fixed, &handled).await;
    // The handler ran; its inbox transaction commits right after.
    until(&overview, "the requeued order's inbox row", |v| {
        find(&v["inboxes"], "table", &inbox_table)["rows"] == 3
    })
    .await;
    relay.shutdown().await;
    bus.shutdown().await;
}

fn tag() -> String {
    eventbus_core::event::new_message_id().simple().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_on_sqlite() {
    use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
    let dir = tempfile::tempdir().unwrap();
    let pool = SqlitePoolOptions::new()
        .connect_with(
            SqliteConnectOptions::from_str(&format!(
                "sqlite://{}",
                dir.path().join("d.db").display()
            ))
            .unwrap()
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(Duration::from_secs(30)),
        )
        .await
        .unwrap();
    let outbox = Outbox::sqlite_with(
        pool.clone(),
        OutboxConfig::new().table("dash_outbox").unwrap(),
    );
    let inbox = Inbox::sqlite_with(
        pool.clone(),
        InboxConfig::new().table("dash_inbox").unwrap(),
    );
    inbox.migrate().await.unwrap();
    scenario(pool, outbox, inbox).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_on_postgres() {
    let url = std::env::var("EVENTBUS_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let pool = sqlx::PgPool::connect(&url)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {url} is required for this test: {e}"));
    let tag = tag();
    let outbox = Outbox::postgres_with(
        pool.clone(),
        OutboxConfig::new().table(&format!("dob_{tag}")).unwrap(),
    );
    let inbox = Inbox::postgres_with(
        pool.clone(),
        InboxConfig::new().table(&format!("dib_{tag}")).unwrap(),
    );
    inbox.migrate().await.unwrap();
    scenario(pool, outbox, inbox).await;
}

/// Dead letters kept by RabbitMQ (127.0.0.1:5672): listed with `basic.get`,
/// discarded, and requeued to the group's queue.
#[cfg(feature = "amqp")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_on_rabbitmq() {
    use eventbus_core::transport::amqp::{AmqpConfig, AmqpTransport};
    let mut config = AmqpConfig::new("amqp://guest:guest@127.0.0.1:5672/%2f");
    config.queue_expires = Some(Duration::from_secs(120));
    let transport = AmqpTransport::connect_with(config)
        .await
        .expect("RabbitMQ must run on 127.0.0.1:5672 (guest/guest)");
    let fixed = Arc::new(AtomicBool::new(false));
    let handled = Arc::new(AtomicU32::new(0));
    let group = format!("dash-{}", tag());
    let mut bus = EventBus::new(transport.clone());
    bus.register_with(
        Billing {
            fixed: fixed.clone(),
            handled: handled.clone(),
        },
        |mut p| {
            p.config_mut().group = group.clone();
            p
        },
    );
    let bus = bus.start().await.unwrap();
    let base = serve(DashboardState::new().dead_letters(&transport, [group.clone()])).await;
    for order in ["poison-1", "poison-2"] {
        bus.publish(&Order {
            order: order.into(),
        })
        .await
        .unwrap();
    }
    dead_letter_actions(&base, &group, &fixed, &handled).await;
    bus.shutdown().await;
    transport.close().await.unwrap();
}
