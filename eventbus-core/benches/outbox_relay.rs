//! Outbox → relay → transport on PostgreSQL (default durability).
//!
//! Run with: `cargo bench -p eventbus-core --features postgres --bench outbox_relay`
//! (`EVENTBUS_TEST_POSTGRES_URL`, default `postgres://postgres@127.0.0.1:5432/test`;
//! `BENCH_SECS` per phase, default 10; `BENCH_WRITERS`, default 16).
//!
//! Phases, in one run, each on a fresh outbox table:
//! 1. **baseline**: writers run business transactions (one business row +
//!    one outbox row, committed) as fast as they can; no relay.
//! 2. **with relay**: the same writers while one relay publishes; reports
//!    the writers' rate and the relay's sustained publish rate, and the
//!    ratio of relay rate to the baseline transaction rate (goal ≥ 80 %).
//! 3. **latency**: 1,000 events/s paced over the writers; commit-to-publish
//!    latency p50/p99 (goal p99 < 50 ms), relay woken by LISTEN/NOTIFY.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use eventbus_core::outbox::{Outbox, OutboxConfig, Relay, RelayConfig};
use eventbus_core::{Envelope, Event, Publisher, TransportError};
use serde::{Deserialize, Serialize};
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::Postgres;
use uuid::Uuid;

#[derive(Debug, Event, Serialize, Deserialize)]
#[event(name = "bench.order_placed", key = "customer")]
struct OrderPlaced {
    customer: String,
    order: u64,
    amount_cents: u64,
}

/// Counts publishes and, when asked, records when each id was published.
#[derive(Default)]
struct Probe {
    published: AtomicU64,
    record: AtomicBool,
    at: Mutex<HashMap<Uuid, Instant>>,
}

#[async_trait]
impl Publisher for Probe {
    async fn publish(&self, envelope: &Envelope) -> Result<(), TransportError> {
        self.publish_batch(std::slice::from_ref(envelope)).await
    }
    async fn publish_batch(&self, envelopes: &[Envelope]) -> Result<(), TransportError> {
        let now = Instant::now();
        if self.record.load(Ordering::Relaxed) {
            let mut at = self.at.lock().unwrap();
            for e in envelopes {
                at.insert(e.id, now);
            }
        }
        self.published
            .fetch_add(envelopes.len() as u64, Ordering::Relaxed);
        Ok(())
    }
}

struct Shared(Arc<Probe>);
#[async_trait]
impl Publisher for Shared {
    async fn publish(&self, envelope: &Envelope) -> Result<(), TransportError> {
        self.0.publish(envelope).await
    }
    async fn publish_batch(&self, envelopes: &[Envelope]) -> Result<(), TransportError> {
        self.0.publish_batch(envelopes).await
    }
}

struct Setup {
    pool: PgPool,
    outbox: Outbox<Postgres>,
    biz: String,
}

async fn setup(pool: &PgPool) -> Setup {
    let tag = eventbus_core::event::new_message_id().simple().to_string();
    let outbox = Outbox::postgres_with(
        pool.clone(),
        OutboxConfig::new()
            .table(&format!("bench_ob_{tag}"))
            .unwrap(),
    );
    outbox.migrate().await.unwrap();
    let biz = format!("bench_orders_{tag}");
    sqlx::query(&format!(
        "CREATE TABLE {biz} (id BIGSERIAL PRIMARY KEY, customer TEXT NOT NULL, amount_cents BIGINT NOT NULL)"
    ))
    .execute(pool)
    .await
    .unwrap();
    Setup {
        pool: pool.clone(),
        outbox,
        biz,
    }
}

async fn teardown(s: &Setup) {
    for t in [s.outbox.config().table_name().to_string(), s.biz.clone()] {
        let _ = sqlx::query(&format!("DROP TABLE IF EXISTS {t}"))
            .execute(&s.pool)
            .await;
    }
}

/// One business transaction: an order row and its event.
async fn place_order(s: &Setup, writer: usize, n: u64) -> (Uuid, Instant) {
    let customer = format!("c{}", (writer as u64 * 1_000_003 + n) % 500);
    let mut tx = s.pool.begin().await.unwrap();
    sqlx::query(&format!(
        "INSERT INTO {} (customer, amount_cents) VALUES ($1, $2)",
        s.biz
    ))
    .bind(&customer)
    .bind(1999i64)
    .execute(&mut *tx)
    .await
    .unwrap();
    let id = s
        .outbox
        .add(
            &mut tx,
            &OrderPlaced {
                customer,
                order: n,
                amount_cents: 1999,
            },
        )
        .await
        .unwrap();
    tx.commit().await.unwrap();
    (id, Instant::now())
}

/// Writers at full speed for `secs`; returns transactions committed.
async fn saturate(s: &Arc<Setup>, writers: usize, secs: u64) -> u64 {
    let stop = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for w in 0..writers {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < stop {
                place_order(&s, w, n).await;
                n += 1;
            }
            n
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    total
}

fn relay_config() -> RelayConfig {
    RelayConfig {
        batch_size: 1000,
        window: 4000,
        poll_interval: Duration::from_secs(1),
        ..RelayConfig::default()
    }
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let url = std::env::var("EVENTBUS_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let secs: u64 = std::env::var("BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let writers: usize = std::env::var("BENCH_WRITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(16);
    let pool = PgPoolOptions::new()
        .max_connections(writers as u32 + 8)
        .connect(&url)
        .await
        .expect("PostgreSQL is required for this benchmark");
    let sync: String = sqlx::query_scalar("SHOW synchronous_commit")
        .fetch_one(&pool)
        .await
        .unwrap();
    println!(
        "outbox_relay: PostgreSQL, synchronous_commit={sync}, {writers} writers, {secs}s per phase"
    );

    // 1. Baseline: no relay.
    let s = Arc::new(setup(&pool).await);
    let base = saturate(&s, writers, secs).await;
    let base_rate = base as f64 / secs as f64;
    println!("baseline (outbox insert, no relay): {base} tx, {base_rate:.0} tx/s");
    // The relay's own capacity: drain the baseline's backlog, no writers.
    let probe = Arc::new(Probe::default());
    let started = Instant::now();
    let relay = Relay::new(s.outbox.store(), Arc::new(Shared(probe.clone())))
        .with_config(relay_config())
        .spawn();
    while s.outbox.backlog().await.unwrap() > 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let drain = started.elapsed().as_secs_f64();
    relay.shutdown().await;
    println!(
        "relay capacity (draining that backlog, no writers): {base} events in {drain:.2}s = {:.0} ev/s ({:.0}% of baseline tx rate)",
        base as f64 / drain,
        100.0 * base as f64 / drain / base_rate
    );
    teardown(&s).await;

    // 2. Same load with a relay.
    let s = Arc::new(setup(&pool).await);
    let probe = Arc::new(Probe::default());
    let relay = Relay::new(s.outbox.store(), Arc::new(Shared(probe.clone())))
        .with_config(relay_config())
        .spawn();
    let started = Instant::now();
    let with = saturate(&s, writers, secs).await;
    let write_secs = started.elapsed().as_secs_f64();
    let published_during = probe.published.load(Ordering::Relaxed);
    // Drain what is left, to measure the relay's own rate too.
    while s.outbox.backlog().await.unwrap() > 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let drained_secs = started.elapsed().as_secs_f64();
    relay.shutdown().await;
    let with_rate = with as f64 / write_secs;
    let relay_rate_during = published_during as f64 / write_secs;
    let relay_rate_total = with as f64 / drained_secs;
    println!(
        "with relay: writers {with} tx, {with_rate:.0} tx/s ({:.0}% of baseline)",
        100.0 * with_rate / base_rate
    );
    println!(
        "relay: {published_during} published during the load ({relay_rate_during:.0} ev/s, {:.0}% of baseline tx rate); \
         all {with} published after {drained_secs:.2}s ({relay_rate_total:.0} ev/s end to end)",
        100.0 * relay_rate_during / base_rate
    );
    teardown(&s).await;

    // 3. Latency at 1,000 events/s.
    let s = Arc::new(setup(&pool).await);
    let probe = Arc::new(Probe::default());
    probe.record.store(true, Ordering::Relaxed);
    let relay = Relay::new(s.outbox.store(), Arc::new(Shared(probe.clone())))
        .with_config(relay_config())
        .spawn();
    tokio::time::sleep(Duration::from_millis(500)).await; // listener up
    let rate = 1000u64;
    let paced_writers = 8usize;
    let per_writer_interval = Duration::from_micros(1_000_000 * paced_writers as u64 / rate);
    let stop = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for w in 0..paced_writers {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let mut commits = Vec::new();
            let mut ticker = tokio::time::interval(per_writer_interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut n = 0;
            while Instant::now() < stop {
                ticker.tick().await;
                commits.push(place_order(&s, w, n).await);
                n += 1;
            }
            commits
        }));
    }
    let mut commits = Vec::new();
    for t in tasks {
        commits.extend(t.await.unwrap());
    }
    while s.outbox.backlog().await.unwrap() > 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    relay.shutdown().await;
    let at = std::mem::take(&mut *probe.at.lock().unwrap());
    let mut lat: Vec<Duration> = commits
        .iter()
        .map(|(id, committed)| at[id].saturating_duration_since(*committed))
        .collect();
    lat.sort();
    println!(
        "latency at {:.0} ev/s ({} events): commit→publish p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        commits.len() as f64 / secs as f64,
        lat.len(),
        pct(&lat, 0.50).as_secs_f64() * 1e3,
        pct(&lat, 0.99).as_secs_f64() * 1e3,
        lat.last().unwrap().as_secs_f64() * 1e3
    );
    teardown(&s).await;
}
