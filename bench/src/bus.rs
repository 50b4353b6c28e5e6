//! `eventbus-bench-bus`: publish → handled through an `EventBus` over AMQP,
//! the built-in broker (embedded in this process, file store, confirms after
//! fsync) against RabbitMQ on this machine, in one run, side by side.
//!
//! Run with: `cargo run --release -p eventbus-bench --bin eventbus-bench-bus`
//! (see `--help`).
//!
//! Each target gets the same load: typed events (`#[derive(Event)]`),
//! persistent and confirmed, over 16 keys, handled by a derived handler with
//! 4 key-ordered workers (prefetch 256, the default). Several publisher tasks
//! each keep a window of confirmed publishes in flight, so that the client is
//! not the only bottleneck. Two phases per target:
//!
//! - **throughput**: N events (default 100,000) as fast as they go; events/s
//!   from the first publish to the last event handled, and the
//!   publish → handled latency under that saturating load;
//! - **latency**: a fixed rate below both brokers' capacity (default 2,000
//!   events/s for 5 s); publish → handled p50/p99/p99.9.
//!
//! Latency is measured from just before `publish` to the start of the
//! handler, on one monotonic clock (the same process).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use clap::Parser;
use eventbus::embedded::EmbeddedBroker;
use eventbus::transport::amqp::{AmqpConfig, AmqpTransport};
use eventbus::{BoxError, Context, Event, EventBus, EventPublisher, Handle, Handler};
use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

#[derive(Debug, Parser)]
#[command(
    name = "eventbus-bench-bus",
    about = "EventBus over AMQP, publish → handled: built-in broker vs RabbitMQ"
)]
struct Cli {
    /// Events in the throughput phase.
    #[arg(long, default_value_t = 100_000)]
    events: u64,
    /// Distinct partition keys.
    #[arg(long, default_value_t = 16)]
    keys: u64,
    /// Handler workers (`#[handler(concurrency)]`).
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Concurrent publisher tasks.
    #[arg(long, default_value_t = 4)]
    publishers: usize,
    /// Confirmed publishes each publisher task keeps in flight.
    #[arg(long, default_value_t = 64)]
    in_flight: usize,
    /// Events/s of the fixed-rate latency phase (0 = skip it).
    #[arg(long, default_value_t = 2_000)]
    rate: u64,
    /// Seconds of the latency phase.
    #[arg(long, default_value_t = 5)]
    rate_secs: u64,
    /// Payload padding in bytes (the JSON payload is ~70 bytes without it).
    #[arg(long, default_value_t = 0)]
    pad: usize,
    /// RabbitMQ URL for the comparison.
    #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    rabbitmq: String,
}

type Error = Box<dyn std::error::Error + Send + Sync>;

/// The clock both publish and handle times are read from.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn now_ns() -> u64 {
    epoch().elapsed().as_nanos() as u64
}

#[derive(Debug, Event, Serialize, Deserialize)]
#[event(name = "bench.bus.tick", key = "key")]
struct Tick {
    key: u64,
    n: u64,
    sent_ns: u64,
    pad: String,
}

/// What the handler measures.
#[derive(Default)]
struct Stats {
    handled: AtomicU64,
    /// Stop counting at this many (and wake the waiter).
    target: AtomicU64,
    latencies_ns: Mutex<Vec<u64>>,
    done: tokio::sync::Notify,
}

#[derive(Handler)]
#[handler(group = "bench-bus", events(Tick), concurrency = 4)]
struct Measure {
    stats: Arc<Stats>,
}

impl Handle<Tick> for Measure {
    async fn handle(&self, e: Tick, _cx: &Context) -> Result<(), BoxError> {
        let latency = now_ns().saturating_sub(e.sent_ns);
        self.stats
            .latencies_ns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(latency);
        let n = self.stats.handled.fetch_add(1, Ordering::AcqRel) + 1;
        if n == self.stats.target.load(Ordering::Acquire) {
            self.stats.done.notify_one();
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy)]
struct Percentiles {
    p50: f64,
    p99: f64,
    p999: f64,
}

fn percentiles(mut v: Vec<u64>) -> Percentiles {
    v.sort_unstable();
    let pct = |p: f64| {
        if v.is_empty() {
            f64::NAN
        } else {
            v[((v.len() as f64 * p) as usize).min(v.len() - 1)] as f64 / 1e6
        }
    };
    Percentiles {
        p50: pct(0.50),
        p99: pct(0.99),
        p999: pct(0.999),
    }
}

#[derive(Debug)]
struct Measured {
    rate: f64,
    load: Percentiles,
    paced: Option<Percentiles>,
    handled_extra: u64,
}

/// Resets the stats for a phase of `n` events.
fn reset(stats: &Stats, n: u64) {
    stats.handled.store(0, Ordering::Release);
    stats.target.store(n, Ordering::Release);
    let mut l = stats.latencies_ns.lock().unwrap_or_else(|p| p.into_inner());
    l.clear();
    l.reserve(n as usize);
}

async fn wait_handled(stats: &Stats, n: u64, what: &str) -> Result<(), Error> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
    loop {
        let notified = stats.done.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if stats.handled.load(Ordering::Acquire) >= n {
            return Ok(());
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            return Err(format!(
                "{what}: only {} of {n} events handled after 600 s",
                stats.handled.load(Ordering::Acquire)
            )
            .into());
        }
    }
}

/// Publishes events `from..to` from `tasks` tasks, each with `in_flight`
/// confirmed publishes outstanding.
async fn publish_flat_out(
    publisher: &EventPublisher,
    cli: &Cli,
    from: u64,
    to: u64,
) -> Result<(), Error> {
    let tasks = cli.publishers.max(1) as u64;
    let mut handles = Vec::new();
    for t in 0..tasks {
        let publisher = publisher.clone();
        let (keys, in_flight, pad) = (cli.keys.max(1), cli.in_flight.max(1), "x".repeat(cli.pad));
        handles.push(tokio::spawn(async move {
            let mut pending = FuturesUnordered::new();
            let mut n = from + t;
            while n < to {
                while pending.len() >= in_flight {
                    if let Some(r) = pending.next().await {
                        r?;
                    }
                }
                let publisher = publisher.clone();
                let tick = Tick {
                    key: n % keys,
                    n,
                    sent_ns: 0,
                    pad: pad.clone(),
                };
                pending.push(async move {
                    let tick = Tick {
                        sent_ns: now_ns(),
                        ..tick
                    };
                    publisher.publish(&tick).await.map(drop)
                });
                n += tasks;
            }
            while let Some(r) = pending.next().await {
                r?;
            }
            Ok::<(), BoxError>(())
        }));
    }
    for h in handles {
        h.await??;
    }
    Ok(())
}

/// Publishes `rate` events/s for `secs` seconds (in 1 ms ticks), each
/// publish in its own task so that a slow confirm does not delay the next.
async fn publish_paced(publisher: &EventPublisher, cli: &Cli, total: u64) -> Result<(), Error> {
    let per_tick = (cli.rate / 1000).max(1);
    let mut ticker = tokio::time::interval(Duration::from_millis(1));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut pending = FuturesUnordered::new();
    let pad = "x".repeat(cli.pad);
    let mut n = 0;
    while n < total {
        ticker.tick().await;
        for _ in 0..per_tick.min(total - n) {
            let publisher = publisher.clone();
            let tick = Tick {
                key: n % cli.keys.max(1),
                n,
                sent_ns: now_ns(),
                pad: pad.clone(),
            };
            pending.push(tokio::spawn(async move {
                publisher.publish(&tick).await.map(drop)
            }));
            n += 1;
        }
        while let Some(r) = futures_util::FutureExt::now_or_never(pending.next()).flatten() {
            r??;
        }
    }
    while let Some(r) = pending.next().await {
        r??;
    }
    Ok(())
}

async fn run(name: &str, transport: AmqpTransport, cli: &Cli) -> Result<Measured, Error> {
    let stats = Arc::new(Stats::default());
    let group = format!("bench-bus-{}", eventbus::event::new_message_id().simple());
    let mut bus = EventBus::new(transport.clone());
    let concurrency = cli.concurrency.max(1);
    bus.register_with(
        Measure {
            stats: stats.clone(),
        },
        |mut p| {
            p.config_mut().group = group.clone();
            p.config_mut().concurrency = concurrency;
            p
        },
    );
    let bus = bus.start().await?;
    let publisher = bus.publisher();

    // Warm-up: connections, queue, JIT-free but caches and allocators.
    let warm = (cli.events / 20).clamp(1, 5_000);
    reset(&stats, warm);
    publish_flat_out(&publisher, cli, 0, warm).await?;
    wait_handled(&stats, warm, "warm-up").await?;

    reset(&stats, cli.events);
    let start = Instant::now();
    publish_flat_out(&publisher, cli, 0, cli.events).await?;
    let published = start.elapsed();
    wait_handled(&stats, cli.events, "throughput").await?;
    let elapsed = start.elapsed();
    let rate = cli.events as f64 / elapsed.as_secs_f64();
    let load = percentiles(std::mem::take(
        &mut *stats.latencies_ns.lock().unwrap_or_else(|p| p.into_inner()),
    ));
    eprintln!(
        "  {name:<16} {rate:>9.0} events/s ({} events in {:.2} s, publishing took {:.2} s); \
         latency under load p50 {:.2} ms, p99 {:.2} ms",
        cli.events,
        elapsed.as_secs_f64(),
        published.as_secs_f64(),
        load.p50,
        load.p99
    );

    let paced = if cli.rate > 0 && cli.rate_secs > 0 {
        let total = cli.rate * cli.rate_secs;
        reset(&stats, total);
        publish_paced(&publisher, cli, total).await?;
        wait_handled(&stats, total, "latency").await?;
        let p = percentiles(std::mem::take(
            &mut *stats.latencies_ns.lock().unwrap_or_else(|p| p.into_inner()),
        ));
        eprintln!(
            "  {name:<16} at {} events/s: p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms",
            cli.rate, p.p50, p.p99, p.p999
        );
        Some(p)
    } else {
        None
    };
    // Anything handled beyond the phase's events after the drain is a duplicate.
    let expected = stats.target.load(Ordering::Acquire);
    bus.shutdown().await;
    let handled_extra = stats
        .handled
        .load(Ordering::Acquire)
        .saturating_sub(expected);
    transport.close().await?;
    Ok(Measured {
        rate,
        load,
        paced,
        handled_extra,
    })
}

fn config(uri: &str) -> AmqpConfig {
    let mut c = AmqpConfig::new(uri);
    // Groups are unique per run; let the brokers remove them afterwards.
    c.queue_expires = Some(Duration::from_secs(60));
    c
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let cli = Cli::parse();
    epoch();
    let data = tempfile::tempdir()?;
    let broker = EmbeddedBroker::start(data.path()).await?;
    println!(
        "eventbus-bench-bus: EventBus over AMQP, publish → handled; persistent + confirms; \
         {} events, {} keys, {} workers, {} publishers × {} in flight",
        cli.events, cli.keys, cli.concurrency, cli.publishers, cli.in_flight
    );
    let ours = run(
        "eventbus-broker",
        broker.transport_with(config("")).await?,
        &cli,
    )
    .await?;
    let rabbit_transport = AmqpTransport::connect_with(config(&cli.rabbitmq))
        .await
        .map_err(|e| format!("RabbitMQ must be running at {}: {e}", cli.rabbitmq))?;
    let rabbit = run("RabbitMQ", rabbit_transport, &cli).await?;
    broker.shutdown().await;

    let mut rows = vec![
        (
            "events/s (publish → handled)".to_owned(),
            format!("{:.0}", ours.rate),
            format!("{:.0}", rabbit.rate),
            format!("{:.2}×", ours.rate / rabbit.rate),
        ),
        (
            "latency under load p50, ms".to_owned(),
            format!("{:.2}", ours.load.p50),
            format!("{:.2}", rabbit.load.p50),
            format!("{:.2}×", ours.load.p50 / rabbit.load.p50),
        ),
        (
            "latency under load p99, ms".to_owned(),
            format!("{:.2}", ours.load.p99),
            format!("{:.2}", rabbit.load.p99),
            format!("{:.2}×", ours.load.p99 / rabbit.load.p99),
        ),
    ];
    if let (Some(o), Some(r)) = (ours.paced, rabbit.paced) {
        for (label, a, b) in [
            ("p50", o.p50, r.p50),
            ("p99", o.p99, r.p99),
            ("p99.9", o.p999, r.p999),
        ] {
            rows.push((
                format!("latency @{}/s {label}, ms", cli.rate),
                format!("{a:.2}"),
                format!("{b:.2}"),
                format!("{:.2}×", a / b),
            ));
        }
    }
    println!();
    println!(
        "{:<34} {:>16} {:>12} {:>10}",
        "scenario", "eventbus-broker", "RabbitMQ", "ours/rmq"
    );
    for (l, a, b, r) in rows {
        println!("{l:<34} {a:>16} {b:>12} {r:>10}");
    }
    if ours.handled_extra + rabbit.handled_extra > 0 {
        println!(
            "duplicates handled: eventbus-broker {}, RabbitMQ {}",
            ours.handled_extra, rabbit.handled_extra
        );
    }
    Ok(())
}
