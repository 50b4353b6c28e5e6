//! A backlog far larger than memory allows (the durability issue's "backlogs larger than RAM"):
//! 2 GiB of persistent messages are published with confirms into one durable queue of an
//! in-process broker whose memory watermark is 64 MiB, then consumed.
//!
//! Checks: every message is confirmed (bodies are paged out to the store, so the publisher is
//! never blocked for good); the broker's memory gauge stays under the watermark throughout;
//! the process' resident memory grows by far less than the backlog (only a small index per
//! message stays in memory); every message is read back intact and in order. Prints the
//! publish and consume rates. The data directory is a temp dir, removed at the end (also on
//! failure); segments are deleted as they are consumed.
//!
//! Runs alone in its own test binary, so the RSS figures are this test's. Size with
//! `EVENTBUS_BACKLOG_MIB` (default 2048; the RSS bound of 256 MiB is meant for backlogs of
//! a GiB or more). A debug build takes ~15–30 s on 2 cores (publish ~400 MB/s, consume
//! ~180 MB/s, bound by lapin's frame parsing, which is compiled into this test without
//! optimisation).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use eventbus_broker::{Broker, Config};
use futures_util::StreamExt;
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};

const MIB: u64 = 1024 * 1024;
/// Message body size.
const SIZE: usize = 256 * 1024;
/// Memory high watermark of the broker (bodies in memory); paging starts at half of it.
const WATERMARK: u64 = 64 * MIB;
/// Unconfirmed publishes in flight.
const WINDOW: usize = 64;
/// Consumer prefetch.
const PREFETCH: u16 = 64;

/// The bytes every body is cut from: pseudo-random, so a misplaced or corrupted range shows.
fn pattern() -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    (0..SIZE + 4096)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Where body `i` starts in the pattern (after its 8-byte index).
fn offset(i: u64) -> usize {
    (i.wrapping_mul(61) % 4096) as usize
}

fn body(pattern: &[u8], i: u64) -> Vec<u8> {
    let mut b = Vec::with_capacity(SIZE);
    b.extend_from_slice(&i.to_be_bytes());
    b.extend_from_slice(&pattern[offset(i)..offset(i) + SIZE - 8]);
    b
}

fn intact(pattern: &[u8], i: u64, data: &[u8]) -> bool {
    data.len() == SIZE
        && data[..8] == i.to_be_bytes()
        && data[8..] == pattern[offset(i)..offset(i) + SIZE - 8]
}

/// (VmRSS, VmHWM) of this process in KiB.
fn rss_kib() -> (u64, u64) {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn mb_per_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / 1e6 / d.as_secs_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backlog_of_gigabytes_is_paged_to_disk() {
    let total_mib: u64 = std::env::var("EVENTBUS_BACKLOG_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2048);
    let n = total_mib * MIB / SIZE as u64;
    let total = n * SIZE as u64;
    let dir = tempfile::tempdir().unwrap();
    let free = eventbus_broker::disk_free(dir.path()).unwrap();
    assert!(
        free > total + total / 4 + 256 * MIB,
        "the backlog test needs {} MiB free in {} (has {} MiB)",
        (total + total / 4 + 256 * MIB) / MIB,
        dir.path().display(),
        free / MIB
    );
    let b = Arc::new(
        Broker::start(Config {
            amqp_listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: dir.path().to_path_buf(),
            storage: eventbus_broker::storage::StorageType::File,
            memory_high_watermark: WATERMARK,
            ..Config::default()
        })
        .await
        .unwrap(),
    );
    // sample the memory gauge while the test runs
    let max_gauge = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (b, max_gauge, stop) = (b.clone(), max_gauge.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                max_gauge.fetch_max(b.memory_used(), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    let uri = format!("amqp://guest:guest@{}/%2f", b.amqp_addr());
    let conn = Connection::connect(&uri, ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.queue_declare(
        "backlog".into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let pattern = pattern();
    let (rss_start, _) = rss_kib();

    let t = Instant::now();
    let mut pending = std::collections::VecDeque::with_capacity(WINDOW);
    let confirmed = |c: lapin::PublisherConfirm| async move {
        let conf = tokio::time::timeout(Duration::from_secs(60), c)
            .await
            .expect("confirm within 60 s (publisher blocked for good?)")
            .unwrap();
        assert!(conf.is_ack(), "publish nacked");
    };
    for i in 0..n {
        let c = ch
            .basic_publish(
                "".into(),
                "backlog".into(),
                BasicPublishOptions::default(),
                &body(&pattern, i),
                BasicProperties::default().with_delivery_mode(2),
            )
            .await
            .unwrap();
        pending.push_back(c);
        if pending.len() >= WINDOW {
            confirmed(pending.pop_front().unwrap()).await;
        }
    }
    for c in pending {
        confirmed(c).await;
    }
    let publish = t.elapsed();
    let (rss_published, _) = rss_kib();
    let gauge_published = max_gauge.load(Ordering::Relaxed);
    println!(
        "backlog: {n} x {} KiB = {} MiB published and confirmed in {:.1} s ({:.0} MB/s); \
         memory gauge max {} MiB (watermark {} MiB); VmRSS {} -> {} MiB",
        SIZE / 1024,
        total / MIB,
        publish.as_secs_f64(),
        mb_per_s(total, publish),
        gauge_published / MIB,
        WATERMARK / MIB,
        rss_start / 1024,
        rss_published / 1024,
    );

    let t = Instant::now();
    ch.basic_qos(PREFETCH, BasicQosOptions::default())
        .await
        .unwrap();
    let mut consumer = ch
        .basic_consume(
            "backlog".into(),
            "c".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    for i in 0..n {
        let d = tokio::time::timeout(Duration::from_secs(30), consumer.next())
            .await
            .unwrap_or_else(|_| panic!("message {i} not delivered within 30 s"))
            .unwrap()
            .unwrap();
        assert!(intact(&pattern, i, &d.data), "message {i} differs");
        assert!(!d.redelivered, "message {i} redelivered");
        d.ack(BasicAckOptions::default()).await.unwrap();
    }
    let consume = t.elapsed();
    stop.store(true, Ordering::Relaxed);
    sampler.await.unwrap();
    let (rss_end, rss_peak) = rss_kib();
    let gauge = max_gauge.load(Ordering::Relaxed);
    let growth_mib = rss_peak.saturating_sub(rss_start) / 1024;
    println!(
        "backlog: consumed {n} in {:.1} s: read rate {:.0} MB/s; memory gauge max {} MiB; \
         VmRSS {} MiB at the end, peak {} MiB (+{growth_mib} MiB for a {} MiB backlog)",
        consume.as_secs_f64(),
        mb_per_s(total, consume),
        gauge / MIB,
        rss_end / 1024,
        rss_peak / 1024,
        total / MIB,
    );
    assert!(
        gauge < WATERMARK,
        "memory gauge reached {gauge} B, watermark {WATERMARK} B: bodies not paged out"
    );
    // Growth is ~120 MiB whatever the backlog: the 32 MiB of bodies published before paging
    // set in, client and broker buffers, the allocator; the index is ~200 B per message.
    assert!(
        growth_mib < 256,
        "RSS grew by {growth_mib} MiB (from {rss_start} KiB to a peak of {rss_peak} KiB)"
    );
    drop(consumer);
    drop(ch);
    drop(conn);
    Arc::try_unwrap(b)
        .expect("no other broker handle")
        .shutdown()
        .await;
}
