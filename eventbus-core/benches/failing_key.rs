//! A failing key stalls only itself: healthy keys' throughput with one
//! poison message failing forever beside them, against the same run
//! without it, in the same process.
//!
//! Run: `cargo bench -p eventbus-core --bench failing_key` (env `EVENTS=n`
//! healthy events, default 200,000 over 100 keys; `WORKERS=n`, default 1 —
//! the worst case: every key shares the poison message's worker).
//!
//! The poison message fails every attempt (`max_attempts` = u32::MAX,
//! backoff 1–20 ms), so it is retried for the whole run: before the worker
//! parked failing keys, each of its backoffs held every other key too.

use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use eventbus_core::{
    handler_fn, Backoff, Context, Envelope, EventBus, HandlerConfig, MemoryTransport, Publisher,
    RetryPolicy,
};
use tokio::sync::Notify;

const EVENT: &str = "bench.failing-key";

fn envelope(key: &str, n: u64) -> Envelope {
    eventbus_core::testing::envelope(EVENT, Some(key), n)
}

/// Publishes `events` healthy events over 100 keys (and, with `poison`, one
/// poison message first); returns healthy events/s and poison attempts.
async fn run(events: u64, workers: usize, poison: bool) -> (f64, u64) {
    let transport = MemoryTransport::new();
    let done = Arc::new(AtomicU64::new(0));
    let attempts = Arc::new(AtomicU64::new(0));
    let finished = Arc::new(Notify::new());
    let mut config = HandlerConfig::new(format!("bench-failing-key-{poison}"));
    config.concurrency = workers;
    config.prefetch = 1024;
    config.retry = RetryPolicy {
        max_attempts: u32::MAX,
        backoff: Backoff {
            initial: Duration::from_millis(1),
            max: Duration::from_millis(20),
            multiplier: 2,
            jitter: true,
        },
    };
    let (d, a, f) = (done.clone(), attempts.clone(), finished.clone());
    let mut bus = EventBus::new(transport.clone());
    bus.shutdown_timeout(Duration::from_secs(1));
    bus.register(handler_fn(config, vec![EVENT], move |cx: Context| {
        let (d, a, f) = (d.clone(), a.clone(), f.clone());
        async move {
            if cx.key() == Some("poison") {
                a.fetch_add(1, AtomicOrdering::Relaxed);
                return Err("poison".into());
            }
            if d.fetch_add(1, AtomicOrdering::Relaxed) + 1 == events {
                f.notify_one();
            }
            Ok(())
        }
    }));
    let running = bus.start().await.expect("start");
    let started = Instant::now();
    if poison {
        transport.publish(&envelope("poison", 0)).await.unwrap();
    }
    let keys: Vec<String> = (0..100).map(|k| format!("k{k}")).collect();
    for n in 0..events {
        transport
            .publish(&envelope(&keys[(n % 100) as usize], n))
            .await
            .unwrap();
    }
    tokio::time::timeout(Duration::from_secs(600), finished.notified())
        .await
        .expect("healthy events not handled in 10 min");
    let rate = events as f64 / started.elapsed().as_secs_f64();
    running.shutdown().await;
    (rate, attempts.load(AtomicOrdering::Relaxed))
}

fn main() {
    let events: u64 = std::env::var("EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let workers: usize = std::env::var("WORKERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!("failing key: {events} healthy events over 100 keys, {workers} worker(s)");
    println!(
        "{:>28} {:>14} {:>16}",
        "run", "healthy ev/s", "poison attempts"
    );
    let mut ratios = Vec::new();
    for round in 0..3 {
        let (base, _) = rt.block_on(run(events, workers, false));
        let (with, attempts) = rt.block_on(run(events, workers, true));
        println!(
            "{:>28} {:>14.0} {:>16}",
            format!("round {round}: no failing key"),
            base,
            "-"
        );
        println!(
            "{:>28} {:>14.0} {:>16}",
            format!("round {round}: one failing key"),
            with,
            attempts
        );
        ratios.push(with / base);
    }
    let mean = ratios.iter().sum::<f64>() / ratios.len() as f64;
    println!(
        "healthy throughput with a failing key: {:.1}% of the run without (rounds: {})",
        mean * 100.0,
        ratios
            .iter()
            .map(|r| format!("{:.1}%", r * 100.0))
            .collect::<Vec<_>>()
            .join(", ")
    );
}
