//! The management API under load: with 10,000 queues declared, time `GET /api/queues` (full
//! and paged), then measure AMQP publish→consume throughput and latency (p50/p99) without
//! and with concurrent listers hammering `/api/queues` — both in the same run, so the
//! second is read against the first (the baseline).
//!
//! Run with: `cargo bench -p eventbus-broker --bench management`
//! Env: `BENCH_QUEUES` (default 10000), `BENCH_MESSAGES` (default 100000),
//! `BENCH_LISTERS` (default 2).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use eventbus_broker::{Broker, Config};
use futures_util::StreamExt;
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};

fn env(k: &str, d: usize) -> usize {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
}

/// Mean and max of `reps` timed GETs of `url`; also the response size.
async fn time_get(http: &reqwest::Client, url: &str, reps: usize) -> (Duration, Duration, usize) {
    let mut total = Duration::ZERO;
    let mut max = Duration::ZERO;
    let mut size = 0;
    for _ in 0..reps {
        let t = Instant::now();
        let r = http
            .get(url)
            .basic_auth("guest", Some("guest"))
            .send()
            .await
            .expect("GET");
        assert!(r.status().is_success(), "{url}: {}", r.status());
        size = r.bytes().await.expect("body").len();
        let e = t.elapsed();
        total += e;
        max = max.max(e);
    }
    (total / reps as u32, max, size)
}

struct Flow {
    msgs_per_sec: f64,
    p50: Duration,
    p99: Duration,
    max: Duration,
}

/// Publish `n` transient 256-byte messages (at most `window` in flight) and consume them;
/// each body carries its send time.
async fn flow(uri: &str, queue: &str, n: usize, window: u64) -> Flow {
    let pconn = Connection::connect(uri, ConnectionProperties::default())
        .await
        .expect("connect");
    let cconn = Connection::connect(uri, ConnectionProperties::default())
        .await
        .expect("connect");
    let pch = pconn.create_channel().await.expect("channel");
    let cch = cconn.create_channel().await.expect("channel");
    let mut consumer = cch
        .basic_consume(
            queue.into(),
            "bench".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("consume");
    let origin = Instant::now();
    let received = Arc::new(AtomicU64::new(0));
    let notify = Arc::new(tokio::sync::Notify::new());
    let q = queue.to_owned();
    let (rc, nt) = (received.clone(), notify.clone());
    let publisher = tokio::spawn(async move {
        let mut body = vec![0u8; 256];
        for i in 0..n as u64 {
            while i >= rc.load(Ordering::Acquire) + window {
                let wait = nt.notified();
                if i < rc.load(Ordering::Acquire) + window {
                    break;
                }
                wait.await;
            }
            let sent = origin.elapsed().as_nanos() as u64;
            body[..8].copy_from_slice(&sent.to_le_bytes());
            pch.basic_publish(
                "".into(),
                q.as_str().into(),
                BasicPublishOptions::default(),
                &body,
                BasicProperties::default(),
            )
            .await
            .expect("publish");
        }
        pch
    });
    let mut lat = Vec::with_capacity(n);
    let start = Instant::now();
    while lat.len() < n {
        let d = tokio::time::timeout(Duration::from_secs(60), consumer.next())
            .await
            .expect("consumer stalled")
            .expect("stream ended")
            .expect("delivery");
        let sent = u64::from_le_bytes(d.data[..8].try_into().expect("8 bytes"));
        let now = origin.elapsed().as_nanos() as u64;
        lat.push(Duration::from_nanos(now.saturating_sub(sent)));
        received.fetch_add(1, Ordering::Release);
        notify.notify_one();
    }
    let elapsed = start.elapsed();
    let _ = publisher.await;
    let _ = pconn.close(200, "bye".into()).await;
    let _ = cconn.close(200, "bye".into()).await;
    lat.sort();
    Flow {
        msgs_per_sec: n as f64 / elapsed.as_secs_f64(),
        p50: lat[lat.len() / 2],
        p99: lat[lat.len() * 99 / 100],
        max: lat[lat.len() - 1],
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let queues = env("BENCH_QUEUES", 10_000);
    let n = env("BENCH_MESSAGES", 100_000);
    let listers = env("BENCH_LISTERS", 2);
    let dir = tempfile::tempdir().expect("tempdir");
    let config = Config {
        amqp_listen: "127.0.0.1:0".parse().expect("addr"),
        management_listen: Some("127.0.0.1:0".parse().expect("addr")),
        data_dir: dir.path().to_path_buf(),
        ..Config::default()
    };
    let broker = Broker::start(config).await.expect("start broker");
    let uri = format!("amqp://guest:guest@{}/%2f", broker.amqp_addr());
    let base = format!("http://{}", broker.management_addr().expect("management"));
    let http = reqwest::Client::new();

    let conn = Connection::connect(&uri, ConnectionProperties::default())
        .await
        .expect("connect");
    let ch = conn.create_channel().await.expect("channel");
    let t = Instant::now();
    for i in 0..queues {
        ch.queue_declare(
            format!("bench-q-{i:05}").as_str().into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("declare");
    }
    ch.queue_declare(
        "flow".into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .expect("declare");
    println!(
        "declared {} queues in {:.2} s",
        queues + 1,
        t.elapsed().as_secs_f64()
    );

    let (mean, max, size) = time_get(&http, &format!("{base}/api/queues"), 5).await;
    println!(
        "GET /api/queues (all {} queues, {:.1} MiB): mean {:.1} ms, max {:.1} ms",
        queues + 1,
        size as f64 / 1048576.0,
        ms(mean),
        ms(max)
    );
    let (mean, max, _) =
        time_get(&http, &format!("{base}/api/queues?page=1&page_size=100"), 5).await;
    println!(
        "GET /api/queues?page=1&page_size=100: mean {:.1} ms, max {:.1} ms",
        ms(mean),
        ms(max)
    );
    let (mean, max, _) = time_get(
        &http,
        &format!("{base}/api/queues/%2F?page=50&page_size=100&name=bench-q-0&sort=name"),
        5,
    )
    .await;
    println!(
        "GET /api/queues/%2F?page=50&page_size=100&name=…&sort=name: mean {:.1} ms, max {:.1} ms",
        ms(mean),
        ms(max)
    );

    // warm-up, then the baseline and the run under listing load
    let _ = flow(&uri, "flow", n / 10, 100).await;
    let base_flow = flow(&uri, "flow", n, 100).await;

    // the listers run on their own thread and runtime (as another process would), so the
    // load generator does not occupy the broker's runtime workers
    let stop = Arc::new(AtomicBool::new(false));
    let listed = Arc::new(AtomicU64::new(0));
    let lister_thread = {
        let (stop, listed, url) = (stop.clone(), listed.clone(), format!("{base}/api/queues"));
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let http = reqwest::Client::new();
                let one = |http: reqwest::Client| {
                    let (stop, listed, url) = (stop.clone(), listed.clone(), url.clone());
                    async move {
                        while !stop.load(Ordering::Relaxed) {
                            let r = http
                                .get(&url)
                                .basic_auth("guest", Some("guest"))
                                .send()
                                .await
                                .expect("GET");
                            let _ = r.bytes().await.expect("body");
                            listed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                };
                futures_util::future::join_all((0..listers).map(|_| one(http.clone()))).await;
            });
        })
    };
    let t = Instant::now();
    let loaded = flow(&uri, "flow", n, 100).await;
    let secs = t.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    lister_thread.join().expect("lister thread");

    println!("publish→consume, {n} × 256 B transient, ≤100 in flight (lapin):");
    println!(
        "  baseline (no lister):          {:>8.0} msg/s  p50 {:>6.2} ms  p99 {:>6.2} ms  max {:>6.2} ms",
        base_flow.msgs_per_sec,
        ms(base_flow.p50),
        ms(base_flow.p99),
        ms(base_flow.max)
    );
    println!(
        "  with {listers} listers on /api/queues: {:>8.0} msg/s  p50 {:>6.2} ms  p99 {:>6.2} ms  max {:>6.2} ms  ({} full listings, {:.1}/s)",
        loaded.msgs_per_sec,
        ms(loaded.p50),
        ms(loaded.p99),
        ms(loaded.max),
        listed.load(Ordering::Relaxed),
        listed.load(Ordering::Relaxed) as f64 / secs
    );
    println!(
        "  ratio loaded / baseline: throughput {:.2}, p99 {:.2}",
        loaded.msgs_per_sec / base_flow.msgs_per_sec,
        ms(loaded.p99) / ms(base_flow.p99)
    );
    let _ = conn.close(200, "bye".into()).await;
    broker.shutdown().await;
}
