//! Crash tests on a real PostgreSQL: relays and consumers are child
//! processes (this test binary re-executed) that get killed mid-work.
//!
//! - A relay is SIGKILLed in the middle of batches, again and again, while
//!   publishing into a table-backed queue: no event is lost; duplicates
//!   appear and the per-key order of first publications holds.
//! - Consumers crash (abort) after their handler's transaction committed but
//!   before the ack: the message is redelivered and the inbox makes its
//!   effect happen once.
//!
//! A `harness = false` test on [`eventbus_core::testing::process`]: `main`
//! runs the crash test, or, when started with `EVENTBUS_CRASH_ROLE` set,
//! plays the child.

mod support;
#[path = "support/table_queue.rs"]
mod table_queue;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use eventbus_core::inbox::{self, Inbox, InboxConfig};
use eventbus_core::outbox::{Outbox, OutboxConfig, Relay, RelayConfig};
use eventbus_core::testing::envelope;
use eventbus_core::testing::process::{self, ChildProcess, ProcessTest};
use eventbus_core::{handler_fn, Context, EventBus, HandlerConfig};
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::Postgres;
use table_queue::TableQueue;
use tokio_util::sync::CancellationToken;

const EVENT: &str = "crash.test";

fn url() -> String {
    std::env::var("EVENTBUS_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

async fn pool() -> PgPool {
    PgPoolOptions::new()
        .max_connections(8)
        .connect(&url())
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {} is required for this test: {e}", url()))
}

/// The environment variable that makes this binary a child, and its role.
const ROLE: &str = "EVENTBUS_CRASH_ROLE";

fn spawn_child(role: &str, tag: &str, extra: &[(&str, String)]) -> ChildProcess {
    let mut cmd = ChildProcess::command(ROLE, role);
    cmd.env("EVENTBUS_CRASH_TAG", tag)
        .stdout(std::process::Stdio::null());
    for (k, v) in extra {
        cmd.env(k, v);
    }
    ChildProcess::spawn(cmd)
}

fn main() {
    process::main(
        ROLE,
        crash_child,
        &[ProcessTest {
            name: "killed_relays_lose_nothing_and_inbox_absorbs_duplicates",
            deadline: Duration::from_secs(600),
            run: || Box::pin(killed_relays_lose_nothing_and_inbox_absorbs_duplicates()),
        }],
    );
}

/// The child side: a relay or a consumer, per `EVENTBUS_CRASH_ROLE`. Runs
/// until killed.
fn crash_child(role: String) {
    let tag = std::env::var("EVENTBUS_CRASH_TAG").unwrap();
    process::runtime().block_on(async move {
        let pool = pool().await;
        match role.as_str() {
            "relay" => {
                let outbox = Outbox::postgres_with(
                    pool.clone(),
                    OutboxConfig::new().table(&format!("ob_{tag}")).unwrap(),
                );
                let mut queue = TableQueue::open(pool, &format!("q_{tag}"));
                queue.delay = Duration::from_millis(15);
                let config = RelayConfig {
                    batch_size: 50,
                    window: 200,
                    poll_interval: Duration::from_millis(20),
                    ..RelayConfig::default()
                };
                Relay::new(outbox.store(), Arc::new(queue))
                    .with_config(config)
                    .run(CancellationToken::new())
                    .await;
            }
            "consumer" => {
                let mut queue = TableQueue::open(pool.clone(), &format!("q_{tag}"));
                queue.abort_on_ack = std::env::var("EVENTBUS_CRASH_ABORT_ON_ACK")
                    .ok()
                    .map(|s| s.parse().unwrap());
                let inbox = Inbox::postgres_with(
                    pool.clone(),
                    InboxConfig::new().table(&format!("ib_{tag}")).unwrap(),
                );
                let fx = format!("fx_{tag}");
                let mut config = HandlerConfig::new("crash-consumers");
                config.prefetch = 4;
                let mut bus = EventBus::new(queue);
                bus.register_with(
                    handler_fn(config, vec![EVENT], move |cx: Context| {
                        let fx = fx.clone();
                        async move {
                            let mut tx = inbox::transaction::<Postgres>().await?;
                            sqlx::query(&format!("INSERT INTO {fx} (message_id) VALUES ($1)"))
                                .bind(cx.message_id())
                                .execute(&mut *tx)
                                .await?;
                            Ok(())
                        }
                    }),
                    |p| p.inbox(inbox.layer()),
                );
                let _running = bus.start().await.unwrap();
                std::future::pending::<()>().await;
            }
            other => panic!("unknown role {other}"),
        }
    });
}

async fn killed_relays_lose_nothing_and_inbox_absorbs_duplicates() {
    let pool = pool().await;
    let tag = eventbus_core::event::new_message_id().simple().to_string();
    let outbox = Outbox::postgres_with(
        pool.clone(),
        OutboxConfig::new().table(&format!("ob_{tag}")).unwrap(),
    );
    outbox.migrate().await.unwrap();
    let queue = TableQueue::create(pool.clone(), &format!("q_{tag}")).await;
    let inbox = Inbox::postgres_with(
        pool.clone(),
        InboxConfig::new().table(&format!("ib_{tag}")).unwrap(),
    );
    inbox.migrate().await.unwrap();
    sqlx::query(&format!("CREATE TABLE fx_{tag} (message_id UUID NOT NULL)"))
        .execute(&pool)
        .await
        .unwrap();

    // 3000 events over 20 keys.
    let keys = 20;
    let all: Vec<_> = (0..150u64)
        .flat_map(|n| (0..keys).map(move |k| envelope(EVENT, Some(&format!("k{k}")), n)))
        .collect();
    for chunk in all.chunks(300) {
        let mut tx = pool.begin().await.unwrap();
        outbox.add_envelopes(&mut tx, chunk).await.unwrap();
        tx.commit().await.unwrap();
    }

    // Phase 1: relays killed with SIGKILL at random moments.
    let started = Instant::now();
    let mut kills = 0;
    while outbox.backlog().await.unwrap() > 0 {
        assert!(
            started.elapsed() < Duration::from_secs(240),
            "relays made no progress"
        );
        let mut child = spawn_child("relay", &tag, &[]);
        // A random moment to crash at, not a synchronisation.
        tokio::time::sleep(Duration::from_millis(fastrand::u64(150..600))).await;
        child.kill();
        kills += 1;
    }
    let published = queue.ids().await;
    let ids: HashSet<_> = published.iter().map(|(id, ..)| *id).collect();
    for e in &all {
        assert!(ids.contains(&e.id), "event {} lost", e.id);
    }
    let duplicates = published.len() - ids.len();
    eprintln!(
        "relay phase: {kills} kills, {} publications of {} events ({duplicates} duplicates)",
        published.len(),
        all.len()
    );
    assert!(kills >= 3, "the relay was killed repeatedly");
    // First publication of each event, per key, in order.
    let mut seen = HashSet::new();
    let mut order: HashMap<Option<String>, Vec<u64>> = HashMap::new();
    for (id, key, headers) in &published {
        if seen.insert(*id) {
            let h: eventbus_core::Headers = serde_json::from_str(headers).unwrap();
            order
                .entry(key.clone())
                .or_default()
                .push(h.get("x-test-n").unwrap().parse().unwrap());
        }
    }
    for (k, ns) in order {
        assert_eq!(
            ns,
            (0..150).collect::<Vec<u64>>(),
            "first-publication order of key {k:?}"
        );
    }

    // Phase 2: consumers crash after commit, before ack.
    let started = Instant::now();
    let mut crashes = 0;
    while queue.len().await > 0 {
        assert!(
            started.elapsed() < Duration::from_secs(240),
            "consumers made no progress"
        );
        let n = fastrand::u32(1..200);
        let mut child = spawn_child(
            "consumer",
            &tag,
            &[("EVENTBUS_CRASH_ABORT_ON_ACK", n.to_string())],
        );
        // Run until it crashes itself (or a while, then kill it).
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if child.exited() || Instant::now() > deadline || queue.len().await == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if child.kill() {
            crashes += 1;
        }
    }
    eprintln!("consumer phase: {crashes} crashes between commit and ack");
    assert!(crashes >= 2, "consumers crashed between commit and ack");
    let effects: Vec<(uuid::Uuid, i64)> = sqlx::query_as(&format!(
        "SELECT message_id, count(*) FROM fx_{tag} GROUP BY message_id"
    ))
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(effects.len(), all.len(), "every event took effect");
    for (id, n) in effects {
        assert_eq!(n, 1, "effect of {id} applied once");
    }
}
