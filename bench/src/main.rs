//! `eventbus-bench`: the same lapin load generator against the built-in broker
//! and against RabbitMQ on this machine, in one run, side by side.
//!
//! Run with: `cargo run --release -p eventbus-bench` (see `--help`).
//!
//! Scenarios (issue 4):
//! - (a) persistent messages to a durable queue with publisher confirms
//!   (window 1000), 1 KiB, 1 producer → 1 consumer, manual ack, prefetch 1000;
//! - (b) the same, transient and without confirms;
//! - (c) fan-out of 1 publisher to 10 queues with 10 consumers;
//! - (d) end-to-end latency p50/p99/p99.9 at a fixed 10,000 msgs/s,
//!   persistent + confirms;
//! - (e) broker memory (RSS) with N × 1 KiB persistent messages queued and
//!   no consumer.
//!
//! Our broker runs as a child process (this binary re-executed with
//! `serve-broker`), so its RSS is its own.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use futures_util::stream::FuturesOrdered;
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use tokio::io::{AsyncBufReadExt, BufReader};

#[derive(Debug, Parser)]
#[command(
    name = "eventbus-bench",
    about = "Built-in broker vs RabbitMQ, same client, same run"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
    /// Messages per throughput scenario.
    #[arg(long, default_value_t = 200_000)]
    messages: u64,
    /// Messages queued for the memory scenario (e).
    #[arg(long, default_value_t = 1_000_000)]
    backlog: u64,
    /// Seconds of the fixed-rate latency scenario (d).
    #[arg(long, default_value_t = 10)]
    latency_secs: u64,
    /// Message size in bytes.
    #[arg(long, default_value_t = 1024)]
    size: usize,
    /// RabbitMQ URL for the comparison.
    #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    rabbitmq: String,
    /// Message store of the built-in broker: `file` (its default, like RabbitMQ's
    /// persistence) or `memory` (to see what the disk costs).
    #[arg(long, default_value = "file")]
    storage: String,
    /// Only these scenarios (letters a–e), e.g. `--only ab`.
    #[arg(long, default_value = "abcde")]
    only: String,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Internal: run the built-in broker in this process and print its address.
    ServeBroker {
        /// Data directory.
        #[arg(long)]
        data_dir: PathBuf,
        /// `file` or `memory`.
        #[arg(long, default_value = "file")]
        storage: String,
    },
}

type Error = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let cli = Cli::parse();
    if let Some(Cmd::ServeBroker { data_dir, storage }) = cli.command {
        return serve_broker(data_dir, &storage).await;
    }
    let data = tempfile::tempdir()?;
    let mut child = tokio::process::Command::new(std::env::current_exe()?)
        .arg("serve-broker")
        .arg("--data-dir")
        .arg(data.path())
        .arg("--storage")
        .arg(&cli.storage)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut lines = BufReader::new(child.stdout.take().ok_or("no stdout")?).lines();
    let addr = lines
        .next_line()
        .await?
        .and_then(|l| l.strip_prefix("LISTENING ").map(str::to_owned))
        .ok_or("broker did not start")?;
    let ours = Target {
        name: "eventbus-broker",
        url: format!("amqp://guest:guest@{addr}/%2f"),
        pid: child.id().ok_or("no pid")?,
    };
    let rabbit = Target {
        name: "RabbitMQ",
        url: cli.rabbitmq.clone(),
        pid: rabbitmq_pid().ok_or("RabbitMQ (beam.smp) is not running")?,
    };
    println!(
        "eventbus-bench: {} B messages, {} per throughput run; both brokers on 127.0.0.1, same lapin client",
        cli.size, cli.messages
    );
    let mut rows: Vec<(String, String, String, String)> = Vec::new();
    for s in cli.only.chars() {
        let (label, a, b, ratio) = match s {
            'a' | 'b' | 'c' => {
                let persistent = s == 'a';
                let fanout = if s == 'c' { 10 } else { 1 };
                let ours_rate = throughput(&ours, &cli, persistent, persistent, fanout).await?;
                let rabbit_rate = throughput(&rabbit, &cli, persistent, persistent, fanout).await?;
                let label = match s {
                    'a' => "(a) persistent + confirms, 1→1, msgs/s",
                    'b' => "(b) transient, no confirms, 1→1, msgs/s",
                    _ => "(c) fan-out 1→10 queues, deliveries/s",
                };
                (
                    label.to_owned(),
                    format!("{ours_rate:.0}"),
                    format!("{rabbit_rate:.0}"),
                    format!("{:.2}×", ours_rate / rabbit_rate),
                )
            }
            'd' => {
                let o = latency(&ours, &cli).await?;
                let r = latency(&rabbit, &cli).await?;
                rows.push((
                    "(d) latency p50 @10k/s, ms".into(),
                    fmt_ms(o.0),
                    fmt_ms(r.0),
                    format!("{:.2}×", o.0 / r.0),
                ));
                rows.push((
                    "(d) latency p99 @10k/s, ms".into(),
                    fmt_ms(o.1),
                    fmt_ms(r.1),
                    format!("{:.2}×", o.1 / r.1),
                ));
                (
                    "(d) latency p99.9 @10k/s, ms".into(),
                    fmt_ms(o.2),
                    fmt_ms(r.2),
                    format!("{:.2}×", o.2 / r.2),
                )
            }
            'e' => {
                let o = backlog_rss(&ours, &cli).await?;
                let r = backlog_rss(&rabbit, &cli).await?;
                rows.push((
                    "(e) RSS before backlog, MiB".to_owned(),
                    format!("{:.0}", o.0),
                    format!("{:.0}", r.0),
                    String::new(),
                ));
                (
                    format!("(e) RSS with {} msgs queued, MiB", cli.backlog),
                    format!("{:.0}", o.1),
                    format!("{:.0}", r.1),
                    format!("{:.2}×", o.1 / r.1),
                )
            }
            _ => continue,
        };
        rows.push((label, a, b, ratio));
    }
    println!();
    println!(
        "{:<44} {:>16} {:>12} {:>10}",
        "scenario", "eventbus-broker", "RabbitMQ", "ours/rmq"
    );
    for (l, a, b, r) in rows {
        println!("{l:<44} {a:>16} {b:>12} {r:>10}");
    }
    child.start_kill()?;
    let _ = child.wait().await;
    Ok(())
}

fn fmt_ms(v: f64) -> String {
    format!("{v:.2}")
}

async fn serve_broker(data_dir: PathBuf, storage: &str) -> Result<(), Error> {
    let storage = match storage {
        // Persistent messages go to disk and confirms wait for fsync, like RabbitMQ.
        "file" => eventbus_broker::storage::StorageType::File,
        "memory" => eventbus_broker::storage::StorageType::Memory,
        other => return Err(format!("unknown storage '{other}' (file or memory)").into()),
    };
    let config = eventbus_broker::Config {
        amqp_listen: "127.0.0.1:0".parse()?,
        data_dir,
        storage,
        ..Default::default()
    };
    let broker = eventbus_broker::Broker::start(config).await?;
    println!("LISTENING {}", broker.amqp_addr());
    tokio::signal::ctrl_c().await?;
    broker.shutdown().await;
    Ok(())
}

struct Target {
    name: &'static str,
    url: String,
    pid: u32,
}

fn rabbitmq_pid() -> Option<u32> {
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(cmd) = std::fs::read_to_string(format!("/proc/{pid}/cmdline")) {
            if cmd.contains("beam.smp") && cmd.contains("rabbit") {
                return Some(pid);
            }
        }
    }
    None
}

fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

async fn connect(t: &Target) -> Result<Connection, Error> {
    Ok(Connection::connect(&t.url, ConnectionProperties::default()).await?)
}

fn unique(prefix: &str) -> String {
    format!("bench-{prefix}-{}-{}", std::process::id(), fastrand_u64())
}

fn fastrand_u64() -> u64 {
    // Good enough for unique names without another dependency.
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    t.as_nanos() as u64
}

async fn declare_queue(ch: &Channel, name: &str, durable: bool) -> Result<(), Error> {
    ch.queue_declare(
        name.into(),
        QueueDeclareOptions {
            durable,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await?;
    Ok(())
}

/// Publishes in flight at once (see [`publish_n`]).
const PUBLISH_PIPELINE: usize = 64;
/// Acks in flight at once per consumer.
const ACK_PIPELINE: usize = 256;
/// Unconfirmed messages allowed per publisher (the confirm window).
const CONFIRM_WINDOW: usize = 1000;

/// Publishes `n` messages, with up to [`PUBLISH_PIPELINE`] publishes in flight (lapin
/// resolves a publish once its frames reached the connection's I/O thread, so awaiting each
/// in turn would measure that hand-off rather than the broker) and, with `confirms`, at most
/// [`CONFIRM_WINDOW`] messages unconfirmed; waits for the last confirm.
async fn publish_n(
    ch: &Channel,
    exchange: &str,
    routing_key: &str,
    n: u64,
    body: &[u8],
    props: &BasicProperties,
    confirms: bool,
) -> Result<(), Error> {
    let mut sends = FuturesOrdered::new();
    let mut window = VecDeque::new();
    for _ in 0..n {
        while confirms && window.len() + sends.len() >= CONFIRM_WINDOW {
            if let Some(c) = window.pop_front() {
                expect_ack(c.await?)?;
            } else if let Some(c) = sends.next().await {
                window.push_back(c?);
            }
        }
        sends.push_back(ch.basic_publish(
            exchange.into(),
            routing_key.into(),
            BasicPublishOptions::default(),
            body,
            props.clone(),
        ));
        if sends.len() >= PUBLISH_PIPELINE {
            if let Some(c) = sends.next().await {
                let c = c?;
                if confirms {
                    window.push_back(c);
                }
            }
        }
    }
    while let Some(c) = sends.next().await {
        let c = c?;
        if confirms {
            window.push_back(c);
        }
    }
    for c in window {
        expect_ack(c.await?)?;
    }
    Ok(())
}

fn expect_ack(c: lapin::Confirmation) -> Result<(), Error> {
    match c {
        lapin::Confirmation::Nack(_) => Err("broker nacked a publish".into()),
        _ => Ok(()),
    }
}

/// Publishes `cli.messages` and waits until every queue consumed them all.
/// Returns deliveries per second (summed over queues).
async fn throughput(
    t: &Target,
    cli: &Cli,
    persistent: bool,
    confirms: bool,
    queues: usize,
) -> Result<f64, Error> {
    let conn = connect(t).await?;
    let pub_ch = conn.create_channel().await?;
    let exchange = unique("x");
    pub_ch
        .exchange_declare(
            exchange.as_str().into(),
            ExchangeKind::Fanout,
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let names: Vec<String> = (0..queues).map(|i| unique(&format!("q{i}"))).collect();
    for q in &names {
        declare_queue(&pub_ch, q, persistent).await?;
        pub_ch
            .queue_bind(
                q.as_str().into(),
                exchange.as_str().into(),
                "".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }
    let total = cli.messages * queues as u64;
    let received = Arc::new(AtomicU64::new(0));
    let done = Arc::new(tokio::sync::Notify::new());
    let consumer_conn = connect(t).await?;
    for q in &names {
        let ch = consumer_conn.create_channel().await?;
        ch.basic_qos(1000, BasicQosOptions::default()).await?;
        let consumer = ch
            .basic_consume(
                q.as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let (received, done) = (received.clone(), done.clone());
        tokio::spawn(async move {
            let _ch = ch;
            // Each delivery is acked on its own (no `multiple`), with up to ACK_PIPELINE acks
            // in flight: awaiting each ack before taking the next delivery would measure
            // lapin's hand-off to its I/O thread rather than the broker.
            consumer
                .for_each_concurrent(ACK_PIPELINE, |d| {
                    let (received, done) = (received.clone(), done.clone());
                    async move {
                        let Ok(d) = d else { return };
                        let _ = d.acker.ack(BasicAckOptions::default()).await;
                        if received.fetch_add(1, Ordering::AcqRel) + 1 == total {
                            done.notify_one();
                        }
                    }
                })
                .await;
        });
    }
    if confirms {
        pub_ch
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
    }
    let body = vec![b'x'; cli.size];
    let props = if persistent {
        BasicProperties::default().with_delivery_mode(2)
    } else {
        BasicProperties::default()
    };
    let start = Instant::now();
    let notified = done.notified();
    tokio::pin!(notified);
    publish_n(
        &pub_ch,
        &exchange,
        "",
        cli.messages,
        &body,
        &props,
        confirms,
    )
    .await?;
    if received.load(Ordering::Acquire) < total {
        tokio::time::timeout(Duration::from_secs(600), notified).await?;
    }
    let rate = total as f64 / start.elapsed().as_secs_f64();
    eprintln!(
        "  {:<16} {:>10.0} deliveries/s (persistent={persistent}, queues={queues})",
        t.name, rate
    );
    for q in &names {
        let _ = pub_ch
            .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
            .await;
    }
    let _ = conn.close(200, "done".into()).await;
    let _ = consumer_conn.close(200, "done".into()).await;
    Ok(rate)
}

/// Fixed-rate persistent + confirms; returns (p50, p99, p99.9) in ms.
async fn latency(t: &Target, cli: &Cli) -> Result<(f64, f64, f64), Error> {
    const RATE: u64 = 10_000;
    let conn = connect(t).await?;
    let pub_ch = conn.create_channel().await?;
    let q = unique("lat");
    declare_queue(&pub_ch, &q, true).await?;
    pub_ch
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let total = RATE * cli.latency_secs;
    let epoch = Instant::now();
    let samples = Arc::new(std::sync::Mutex::new(Vec::with_capacity(total as usize)));
    let done = Arc::new(tokio::sync::Notify::new());
    let cch = conn.create_channel().await?;
    cch.basic_qos(1000, BasicQosOptions::default()).await?;
    let mut consumer = cch
        .basic_consume(
            q.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let (s, d) = (samples.clone(), done.clone());
    tokio::spawn(async move {
        let mut n = 0;
        while let Some(Ok(del)) = consumer.next().await {
            let sent = u64::from_le_bytes(del.data[..8].try_into().unwrap_or([0; 8]));
            let now = epoch.elapsed().as_nanos() as u64;
            s.lock().unwrap().push(now.saturating_sub(sent));
            let _ = del.acker.ack(BasicAckOptions::default()).await;
            n += 1;
            if n == total {
                d.notify_one();
                break;
            }
        }
    });
    let notified = done.notified();
    tokio::pin!(notified);
    let mut body = vec![b'x'; cli.size.max(8)];
    let props = BasicProperties::default().with_delivery_mode(2);
    let mut ticker = tokio::time::interval(Duration::from_millis(1));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut window = VecDeque::new();
    let mut sent = 0;
    while sent < total {
        ticker.tick().await;
        for _ in 0..(RATE / 1000) {
            body[..8].copy_from_slice(&(epoch.elapsed().as_nanos() as u64).to_le_bytes());
            window.push_back(
                pub_ch
                    .basic_publish(
                        "".into(),
                        q.as_str().into(),
                        BasicPublishOptions::default(),
                        &body,
                        props.clone(),
                    )
                    .await?,
            );
            sent += 1;
        }
        while window.len() > 1000 {
            if let Some(c) = window.pop_front() {
                c.await?;
            }
        }
    }
    for c in window {
        c.await?;
    }
    tokio::time::timeout(Duration::from_secs(120), notified).await?;
    let mut v = samples.lock().unwrap().clone();
    v.sort_unstable();
    let pct = |p: f64| v[((v.len() as f64 * p) as usize).min(v.len() - 1)] as f64 / 1e6;
    let r = (pct(0.50), pct(0.99), pct(0.999));
    eprintln!(
        "  {:<16} latency p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms",
        t.name, r.0, r.1, r.2
    );
    let _ = pub_ch
        .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
        .await;
    let _ = conn.close(200, "done".into()).await;
    Ok(r)
}

/// Queues `cli.backlog` persistent messages with no consumer; returns the
/// broker's RSS (MiB) before and after.
async fn backlog_rss(t: &Target, cli: &Cli) -> Result<(f64, f64), Error> {
    let conn = connect(t).await?;
    let ch = conn.create_channel().await?;
    let q = unique("backlog");
    declare_queue(&ch, &q, true).await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    let before = rss_mib(t.pid);
    let body = vec![b'x'; cli.size];
    let props = BasicProperties::default().with_delivery_mode(2);
    publish_n(&ch, "", &q, cli.backlog, &body, &props, true).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss_mib(t.pid);
    eprintln!(
        "  {:<16} RSS {before:.0} MiB → {after:.0} MiB with {} messages queued",
        t.name, cli.backlog
    );
    let _ = ch
        .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
        .await;
    let _ = conn.close(200, "done".into()).await;
    Ok((before, after))
}
