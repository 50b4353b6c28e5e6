//! File-store benchmark (`cargo bench -p eventbus-broker --bench storage`), printing:
//! 1. this disk's fsync latency (4 KiB write + `fdatasync`, 200 times);
//! 2. append + sync throughput with 1 KiB messages at several concurrency levels (each task
//!    appends one message and awaits `sync()`, like a publisher waiting for its confirm), and
//!    with one publisher syncing once per window of 1000 (confirm window);
//! 3. recovery time for `STORE_BENCH_RECOVERY_N` (default 1,000,000) × 1 KiB messages: the
//!    write phase stops early after ~60 s and the count actually written is printed.
//!
//! Knobs: `STORE_BENCH_DIR` (default: the system temp dir), `STORE_BENCH_SECS` (seconds per
//! throughput level, default 3), `STORE_BENCH_RECOVERY_N`.

use std::fs::File;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use eventbus_broker::storage::{
    FileStore, FileStoreConfig, MessageStore, MsgMeta, QueueKey, StoredMessage,
};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn base_dir() -> std::path::PathBuf {
    std::env::var_os("STORE_BENCH_DIR").map_or_else(std::env::temp_dir, Into::into)
}

fn msg(id: u64, body: &Bytes) -> StoredMessage {
    StoredMessage {
        id,
        exchange: String::new(),
        routing_key: "bench".into(),
        raw_properties: Bytes::from_static(&[0x10, 0x00, 0x02]),
        body: body.clone(),
        meta: MsgMeta::default(),
    }
}

fn fsync_latency() {
    let dir = tempfile::tempdir_in(base_dir()).unwrap();
    let mut f = File::create(dir.path().join("fsync.probe")).unwrap();
    let block = vec![0xabu8; 4096];
    let mut lat = Vec::new();
    for _ in 0..200 {
        f.write_all(&block).unwrap();
        let t = Instant::now();
        f.sync_data().unwrap();
        lat.push(t.elapsed());
    }
    lat.sort();
    let mean = lat.iter().sum::<Duration>() / lat.len() as u32;
    println!(
        "fsync latency (4 KiB write + fdatasync, n=200): mean {:.3} ms, p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        ms(mean),
        ms(lat[lat.len() / 2]),
        ms(lat[lat.len() * 99 / 100]),
        ms(lat[lat.len() - 1])
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn throughput(rt: &tokio::runtime::Runtime, secs: u64) {
    println!("\nappend + sync, 1 KiB messages, {secs} s per level (task = append 1, await sync):");
    println!(
        "{:>12} {:>12} {:>14} {:>14}",
        "tasks", "msgs/s", "fsync rounds/s", "msgs/round"
    );
    let body = Bytes::from(vec![b'x'; 1024]);
    for tasks in [1u64, 4, 16, 64, 256, 1024] {
        let dir = tempfile::tempdir_in(base_dir()).unwrap();
        let store = Arc::new(FileStore::open(dir.path(), FileStoreConfig::default()).unwrap());
        let stop = Arc::new(AtomicBool::new(false));
        let count = Arc::new(AtomicU64::new(0));
        let start = Instant::now();
        rt.block_on(async {
            let mut hs = Vec::new();
            for t in 0..tasks {
                let (store, stop, count, body) =
                    (store.clone(), stop.clone(), count.clone(), body.clone());
                hs.push(tokio::spawn(async move {
                    let key = QueueKey {
                        vhost: "/".into(),
                        queue: format!("q{}", t % 16),
                    };
                    let mut id = t << 32;
                    while !stop.load(Ordering::Relaxed) {
                        store.append(&key, &msg(id, &body)).unwrap();
                        id += 1;
                        store.sync().await.unwrap();
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                }));
            }
            tokio::time::sleep(Duration::from_secs(secs)).await;
            stop.store(true, Ordering::Relaxed);
            for h in hs {
                h.await.unwrap();
            }
        });
        let el = start.elapsed().as_secs_f64();
        let n = count.load(Ordering::Relaxed);
        let rounds = store.stats().sync_rounds;
        println!(
            "{:>12} {:>12.0} {:>14.0} {:>14.1}",
            tasks,
            n as f64 / el,
            rounds as f64 / el,
            n as f64 / rounds.max(1) as f64
        );
    }
    // One publisher with a confirm window of 1000: append 1000, sync once.
    let dir = tempfile::tempdir_in(base_dir()).unwrap();
    let store = FileStore::open(dir.path(), FileStoreConfig::default()).unwrap();
    let start = Instant::now();
    let key = QueueKey {
        vhost: "/".into(),
        queue: "w".into(),
    };
    let mut id = 0;
    while start.elapsed() < Duration::from_secs(secs) {
        for _ in 0..1000 {
            store.append(&key, &msg(id, &body)).unwrap();
            id += 1;
        }
        rt.block_on(store.sync()).unwrap();
    }
    let el = start.elapsed().as_secs_f64();
    println!(
        "1 publisher, window 1000 (append 1000, sync): {:.0} msgs/s ({:.0} MB/s)",
        id as f64 / el,
        id as f64 * 1024.0 / el / 1e6
    );
}

fn recovery(rt: &tokio::runtime::Runtime) {
    let target = env_u64("STORE_BENCH_RECOVERY_N", 1_000_000);
    let dir = tempfile::tempdir_in(base_dir()).unwrap();
    let body = Bytes::from(vec![b'r'; 1024]);
    let key = QueueKey {
        vhost: "/".into(),
        queue: "big".into(),
    };
    let written;
    {
        let store = FileStore::open(dir.path(), FileStoreConfig::default()).unwrap();
        let start = Instant::now();
        let mut id = 0;
        while id < target && start.elapsed() < Duration::from_secs(60) {
            for _ in 0..1000 {
                store.append(&key, &msg(id, &body)).unwrap();
                id += 1;
            }
            rt.block_on(store.sync()).unwrap();
        }
        written = id;
        println!(
            "\nrecovery: wrote {written} x 1 KiB in {:.1} s ({}), {} segments, {:.0} MB",
            start.elapsed().as_secs_f64(),
            if written < target {
                "stopped at the 60 s budget"
            } else {
                "full count"
            },
            store.stats().segments,
            store.stats().bytes as f64 / 1e6
        );
    }
    // Drop the page cache's advantage as far as we can without root tricks: nothing; report
    // warm-cache numbers (the index files are small; bodies are not read by open).
    let t = Instant::now();
    let store = FileStore::open(dir.path(), FileStoreConfig::default()).unwrap();
    let open = t.elapsed();
    let t = Instant::now();
    let idx = store.recover_index().unwrap();
    let index = t.elapsed();
    let n: usize = idx.iter().map(|(_, e)| e.len()).sum();
    assert_eq!(n as u64, written);
    println!(
        "recovery of {n} messages: open (index files + ack files) {:.0} ms, recover_index {:.0} ms, total {:.0} ms",
        ms(open),
        ms(index),
        ms(open + index)
    );
    let t = Instant::now();
    let all = store.recover().unwrap();
    let full = t.elapsed();
    let m: usize = all.iter().map(|(_, v)| v.len()).sum();
    println!(
        "full recover() with bodies ({m} messages, every body read and checksummed): {:.0} ms",
        ms(full)
    );
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap();
    let secs = env_u64("STORE_BENCH_SECS", 3);
    fsync_latency();
    throughput(&rt, secs);
    recovery(&rt);
}
