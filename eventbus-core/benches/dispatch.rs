//! In-process publish → handled throughput and latency through the bus on the
//! memory transport, beside a raw tokio-mpsc baseline of the same shape
//! (producer → router → N bounded worker queues → trivial handler).
//!
//! Run: `cargo bench -p eventbus-core --bench dispatch` (env `EVENTS=n` to
//! change the count; `ONLY=16x4` to run one keys×workers shape; `MODE=bus`,
//! `MODE=raw` or `MODE=rawjson` to run one column only, e.g. under a profiler).
//!
//! The bus's group queue is bounded at 1024 ready messages (`QUEUE=n` to
//! change) like the baseline's producer channel, so both measure the same
//! queueing; its
//! prefetch (1024) and worker queues (64) match the baseline's router and
//! worker channels. Columns:
//! - `bus`: publish → transport → receiver → worker → pipeline → handler,
//!   including the JSON encode/decode of the event and the ack;
//! - `raw`: the same shape with raw tokio channels and the typed struct;
//! - `raw+json`: `raw` plus the JSON encode/decode, to show what part of the
//!   gap is the codec (which the bus cannot skip);
//! - `cost ×raw` = raw ev/s ÷ bus ev/s (the per-event cost ratio).
//!
//! Then the cost of the handler metrics (16 keys × 4 workers, `METRICS=0`
//! skips it): the bus with no recorder (the metric handles are no-ops)
//! against the bus recording into a Prometheus recorder, alternating runs.
//! `RECORDER=prom` makes the main table's bus column record too (for
//! instruction counts: `MODE=bus ONLY=16x4 METRICS=0 RECORDER=prom` under
//! callgrind).

use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering as AtomicOrdering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use eventbus_core::{
    BoxError, Context, Event, EventBus, Handle, Handler, MemoryTransport, RunningBus,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, Notify};

#[derive(Debug, Clone, Event, Serialize, Deserialize)]
#[event(name = "bench.tick", key = "key")]
struct Tick {
    key: String,
    seq: u64,
    sent_ns: u64,
}

/// Latency histogram: 1 µs buckets up to 100 ms, plus overflow.
struct Histogram {
    buckets: Vec<AtomicU64>,
}

impl Histogram {
    fn new() -> Self {
        Self {
            buckets: (0..100_001).map(|_| AtomicU64::new(0)).collect(),
        }
    }
    fn record(&self, d: Duration) {
        let us = (d.as_micros() as usize).min(self.buckets.len() - 1);
        self.buckets[us].fetch_add(1, AtomicOrdering::Relaxed);
    }
    fn percentile(&self, p: f64) -> u64 {
        let total: u64 = self
            .buckets
            .iter()
            .map(|b| b.load(AtomicOrdering::Relaxed))
            .sum();
        let target = ((total as f64) * p).ceil() as u64;
        let mut seen = 0;
        for (us, b) in self.buckets.iter().enumerate() {
            seen += b.load(AtomicOrdering::Relaxed);
            if seen >= target.max(1) {
                return us as u64;
            }
        }
        self.buckets.len() as u64
    }
}

struct Shared {
    start: Instant,
    handled: AtomicUsize,
    target: usize,
    done: Notify,
    hist: Histogram,
}

impl Shared {
    fn new(target: usize) -> Arc<Self> {
        Arc::new(Self {
            start: Instant::now(),
            handled: AtomicUsize::new(0),
            target,
            done: Notify::new(),
            hist: Histogram::new(),
        })
    }
    fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }
    fn handled(&self, sent_ns: u64) {
        self.hist
            .record(Duration::from_nanos(self.now_ns().saturating_sub(sent_ns)));
        if self.handled.fetch_add(1, AtomicOrdering::AcqRel) + 1 == self.target {
            self.done.notify_one();
        }
    }
}

#[derive(Handler)]
#[handler(group = "bench", events(Tick), concurrency = 1, prefetch = 1024)]
struct Trivial(Arc<Shared>);

impl Handle<Tick> for Trivial {
    async fn handle(&self, e: Tick, _cx: &Context) -> Result<(), BoxError> {
        self.0.handled(e.sent_ns);
        Ok(())
    }
}

struct Result_ {
    rate: f64,
    p50: u64,
    p99: u64,
}

async fn run_bus(events: usize, keys: usize, workers: usize) -> Result_ {
    let (running, shared) = start_bus(events, keys, workers).await;
    drive_bus(running, shared, events, keys).await
}

async fn start_bus(events: usize, keys: usize, workers: usize) -> (RunningBus, Arc<Shared>) {
    let shared = Shared::new(events);
    let mut bus = EventBus::new(MemoryTransport::with_max_queue_len(queue_limit()));
    bus.register_with(Trivial(shared.clone()), |mut p| {
        p.config_mut().concurrency = workers;
        p.config_mut().group = format!("bench-{keys}-{workers}");
        p
    });
    (bus.start().await.unwrap(), shared)
}

/// `run_bus` with the group's metric handles resolved against `recorder`
/// (a Prometheus recorder, as a service would install) or none (no-ops).
fn run_bus_recorded(
    rt: &tokio::runtime::Runtime,
    recorder: Option<&metrics_exporter_prometheus::PrometheusRecorder>,
    events: usize,
    keys: usize,
    workers: usize,
) -> Result_ {
    // The handles are resolved when the bus starts, so starting it with a
    // local recorder binds them to it for every thread.
    let start = || rt.block_on(start_bus(events, keys, workers));
    let (running, shared) = match recorder {
        Some(r) => metrics::with_local_recorder(r, start),
        None => start(),
    };
    rt.block_on(drive_bus(running, shared, events, keys))
}

async fn drive_bus(
    running: RunningBus,
    shared: Arc<Shared>,
    events: usize,
    keys: usize,
) -> Result_ {
    let publisher = running.publisher();
    let key_names: Vec<String> = (0..keys).map(|k| format!("key-{k}")).collect();
    let t0 = Instant::now();
    let s = shared.clone();
    let producer = tokio::spawn(async move {
        for seq in 0..events {
            let e = Tick {
                key: key_names[seq % keys].clone(),
                seq: seq as u64,
                sent_ns: s.now_ns(),
            };
            publisher.publish(&e).await.unwrap();
            if seq % 256 == 0 {
                tokio::task::yield_now().await;
            }
        }
    });
    let done = shared.done.notified();
    if shared.handled.load(AtomicOrdering::Acquire) < events {
        done.await;
    }
    let elapsed = t0.elapsed();
    producer.await.unwrap();
    running.shutdown().await;
    Result_ {
        rate: events as f64 / elapsed.as_secs_f64(),
        p50: shared.hist.percentile(0.50),
        p99: shared.hist.percentile(0.99),
    }
}

/// The baseline: the same shape with raw channels and no framework.
async fn run_raw(events: usize, keys: usize, workers: usize) -> Result_ {
    let shared = Shared::new(events);
    let (tx, mut rx) = mpsc::channel::<Tick>(1024);
    let mut worker_tx = Vec::new();
    for _ in 0..workers {
        let (wtx, mut wrx) = mpsc::channel::<Tick>(64);
        worker_tx.push(wtx);
        let s = shared.clone();
        tokio::spawn(async move {
            while let Some(e) = wrx.recv().await {
                s.handled(e.sent_ns);
            }
        });
    }
    tokio::spawn(async move {
        while let Some(e) = rx.recv().await {
            let w = (hash_key(&e.key) % worker_tx.len() as u64) as usize;
            worker_tx[w].send(e).await.unwrap();
        }
    });
    let key_names: Vec<String> = (0..keys).map(|k| format!("key-{k}")).collect();
    let t0 = Instant::now();
    let s = shared.clone();
    let producer = tokio::spawn(async move {
        for seq in 0..events {
            let e = Tick {
                key: key_names[seq % keys].clone(),
                seq: seq as u64,
                sent_ns: s.now_ns(),
            };
            tx.send(e).await.unwrap();
        }
    });
    let done = shared.done.notified();
    if shared.handled.load(AtomicOrdering::Acquire) < events {
        done.await;
    }
    let elapsed = t0.elapsed();
    producer.await.unwrap();
    Result_ {
        rate: events as f64 / elapsed.as_secs_f64(),
        p50: shared.hist.percentile(0.50),
        p99: shared.hist.percentile(0.99),
    }
}

/// The bus's group queue limit: `QUEUE=n`, default 1024 (the baseline's
/// producer channel capacity).
fn queue_limit() -> usize {
    std::env::var("QUEUE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024)
}

fn hash_key(key: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    h.finish()
}

/// The raw baseline plus a JSON encode before sending and a decode in the
/// worker: the codec work the bus does per event, without the framework.
async fn run_raw_json(events: usize, keys: usize, workers: usize) -> Result_ {
    let shared = Shared::new(events);
    let (tx, mut rx) = mpsc::channel::<(String, Vec<u8>)>(1024);
    let mut worker_tx = Vec::new();
    for _ in 0..workers {
        let (wtx, mut wrx) = mpsc::channel::<(String, Vec<u8>)>(64);
        worker_tx.push(wtx);
        let s = shared.clone();
        tokio::spawn(async move {
            while let Some((_key, payload)) = wrx.recv().await {
                let e: Tick = serde_json::from_slice(&payload).unwrap();
                s.handled(e.sent_ns);
            }
        });
    }
    tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            let w = (hash_key(&m.0) % worker_tx.len() as u64) as usize;
            worker_tx[w].send(m).await.unwrap();
        }
    });
    let key_names: Vec<String> = (0..keys).map(|k| format!("key-{k}")).collect();
    let t0 = Instant::now();
    let s = shared.clone();
    let producer = tokio::spawn(async move {
        for seq in 0..events {
            let e = Tick {
                key: key_names[seq % keys].clone(),
                seq: seq as u64,
                sent_ns: s.now_ns(),
            };
            let payload = serde_json::to_vec(&e).unwrap();
            tx.send((e.key, payload)).await.unwrap();
        }
    });
    let done = shared.done.notified();
    if shared.handled.load(AtomicOrdering::Acquire) < events {
        done.await;
    }
    let elapsed = t0.elapsed();
    producer.await.unwrap();
    Result_ {
        rate: events as f64 / elapsed.as_secs_f64(),
        p50: shared.hist.percentile(0.50),
        p99: shared.hist.percentile(0.99),
    }
}

fn main() {
    let events: usize = std::env::var("EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(400_000);
    let only: Option<(usize, usize)> = std::env::var("ONLY").ok().and_then(|v| {
        let (k, w) = v.split_once('x')?;
        Some((k.parse().ok()?, w.parse().ok()?))
    });
    let mode = std::env::var("MODE").unwrap_or_default();
    let (do_bus, do_raw, do_raw_json) = (
        mode.is_empty() || mode == "bus",
        mode.is_empty() || mode == "raw",
        mode.is_empty() || mode == "rawjson",
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!("eventbus dispatch benchmark: {events} events, memory transport, 2 runtime threads");
    println!(
        "{:>5} {:>7} | {:>10} {:>7} {:>7} | {:>10} {:>7} {:>7} | {:>9} | {:>10} {:>9}",
        "keys",
        "workers",
        "bus ev/s",
        "p50 µs",
        "p99 µs",
        "raw ev/s",
        "p50 µs",
        "p99 µs",
        "cost ×raw",
        "raw+json",
        "×raw+json"
    );
    // Warm up allocator and runtime.
    if do_bus {
        rt.block_on(run_bus(20_000, 16, 4));
    }
    let none = || Result_ {
        rate: f64::NAN,
        p50: 0,
        p99: 0,
    };
    let metrics_runs = std::env::var("METRICS").map_or(true, |v| v != "0");
    // `RECORDER=prom`: the bus column records into a Prometheus recorder
    // (for instruction counts under callgrind).
    let main_recorder =
        (std::env::var("RECORDER").as_deref() == Ok("prom")).then(prometheus_recorder);
    for keys in [1usize, 16, 1024] {
        for workers in [1usize, 4, 16] {
            if only.is_some_and(|o| o != (keys, workers)) {
                continue;
            }
            let bus = if do_bus {
                run_bus_recorded(&rt, main_recorder.as_ref(), events, keys, workers)
            } else {
                none()
            };
            let raw = if do_raw {
                rt.block_on(run_raw(events, keys, workers))
            } else {
                none()
            };
            let raw_json = if do_raw_json {
                rt.block_on(run_raw_json(events, keys, workers))
            } else {
                none()
            };
            println!(
                "{:>5} {:>7} | {:>10.0} {:>7} {:>7} | {:>10.0} {:>7} {:>7} | {:>9.2} | {:>10.0} {:>9.2}",
                keys,
                workers,
                bus.rate,
                bus.p50,
                bus.p99,
                raw.rate,
                raw.p50,
                raw.p99,
                raw.rate / bus.rate,
                raw_json.rate,
                raw_json.rate / bus.rate
            );
        }
    }
    if metrics_runs && do_bus {
        metrics_cost(&rt, events);
    }
}

/// A Prometheus recorder as `observe::prometheus::install` configures it
/// (histograms for the `_seconds` metrics).
fn prometheus_recorder() -> metrics_exporter_prometheus::PrometheusRecorder {
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Suffix("_seconds".into()),
            &[
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
            ],
        )
        .expect("buckets")
        .build_recorder()
}

/// Handler metrics: no recorder vs. a Prometheus recorder, same shape,
/// alternating three times.
fn metrics_cost(rt: &tokio::runtime::Runtime, events: usize) {
    let (keys, workers) = (16, 4);
    println!();
    println!(
        "handler metrics, {keys} keys × {workers} workers: no recorder vs. Prometheus recorder"
    );
    println!(
        "{:>4} | {:>12} {:>7} | {:>12} {:>7} | {:>9}",
        "run", "none ev/s", "p50 µs", "prom ev/s", "p50 µs", "cost ×none"
    );
    for run in 1..=3 {
        let none = run_bus_recorded(rt, None, events, keys, workers);
        let recorder = prometheus_recorder();
        let handle = recorder.handle();
        let prom = run_bus_recorded(rt, Some(&recorder), events, keys, workers);
        let rendered = handle.render();
        let handled = rendered
            .lines()
            .find(|l| {
                l.starts_with("eventbus_handler_handled_total{")
                    && l.contains("event=\"bench.tick\"")
                    && l.contains("outcome=\"handled\"")
            })
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .unwrap_or(0.0);
        assert_eq!(
            handled as usize, events,
            "the recorder saw every event:\n{rendered}"
        );
        println!(
            "{:>4} | {:>12.0} {:>7} | {:>12.0} {:>7} | {:>9.3}",
            run,
            none.rate,
            none.p50,
            prom.rate,
            prom.p50,
            none.rate / prom.rate
        );
    }
}
