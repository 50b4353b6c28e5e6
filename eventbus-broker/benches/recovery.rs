//! Broker restart time with a large persistent backlog
//! (`cargo bench -p eventbus-broker --bench recovery`).
//!
//! Starts a broker with the file store, declares a durable queue, shuts down, then writes
//! `RECOVERY_BENCH_N` (default 1,000,000) persistent messages of `RECOVERY_BENCH_SIZE`
//! (default 1024) bytes for that queue straight into `<data_dir>/messages` (as the broker
//! would have), and times `Broker::start` until listening. Then it checks the first and last
//! messages are delivered intact (bodies paged in lazily) and prints the memory gauge and
//! RSS. `RECOVERY_BENCH_DIR` picks the parent directory (default: the system temp dir).

use std::time::{Duration, Instant};

use bytes::Bytes;
use eventbus_broker::storage::{
    FileStore, FileStoreConfig, MessageStore, MsgMeta, QueueKey, StoredMessage,
};
use eventbus_broker::{Broker, Config};
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn vm_rss_mib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0)
        / 1024
}

fn body(i: u64, size: usize) -> Bytes {
    let mut b = vec![0x5a; size.max(8)];
    b[..8].copy_from_slice(&i.to_be_bytes());
    Bytes::from(b)
}

async fn get(b: &Broker) -> Vec<u8> {
    let uri = format!("amqp://guest:guest@{}/%2f", b.amqp_addr());
    let c = Connection::connect(&uri, ConnectionProperties::default())
        .await
        .unwrap();
    let ch = c.create_channel().await.unwrap();
    let g = ch
        .basic_get("recovery".into(), BasicGetOptions::default())
        .await
        .unwrap()
        .expect("a recovered message");
    g.delivery.data
}

fn main() {
    let n = env_u64("RECOVERY_BENCH_N", 1_000_000);
    let size = env_u64("RECOVERY_BENCH_SIZE", 1024) as usize;
    let parent = std::env::var_os("RECOVERY_BENCH_DIR").map_or_else(std::env::temp_dir, Into::into);
    let dir = tempfile::tempdir_in(parent).unwrap();
    let config = || Config {
        amqp_listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().to_path_buf(),
        storage: eventbus_broker::storage::StorageType::File,
        ..Config::default()
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    rt.block_on(async {
        let b = Broker::start(config()).await.unwrap();
        let uri = format!("amqp://guest:guest@{}/%2f", b.amqp_addr());
        let c = Connection::connect(&uri, ConnectionProperties::default())
            .await
            .unwrap();
        let ch = c.create_channel().await.unwrap();
        ch.queue_declare(
            "recovery".into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
        drop(c);
        b.shutdown().await;
    });

    let t = Instant::now();
    {
        let store =
            FileStore::open(dir.path().join("messages"), FileStoreConfig::default()).unwrap();
        let key = QueueKey {
            vhost: "/".into(),
            queue: "recovery".into(),
        };
        for i in 1..=n {
            let m = StoredMessage {
                id: i,
                exchange: String::new(),
                routing_key: "recovery".into(),
                // flags: delivery-mode present; delivery-mode = 2
                raw_properties: Bytes::from_static(&[0x10, 0x00, 0x02]),
                body: body(i, size),
                meta: MsgMeta::default(),
            };
            store.append(&key, &m).unwrap();
            if i % 10_000 == 0 {
                rt.block_on(store.sync()).unwrap();
            }
        }
        rt.block_on(store.sync()).unwrap();
    }
    println!(
        "wrote {n} x {size} B persistent messages in {:.2} s",
        t.elapsed().as_secs_f64()
    );

    rt.block_on(async {
        let rss0 = vm_rss_mib();
        let t = Instant::now();
        let b = Broker::start(config()).await.unwrap();
        let took = t.elapsed();
        println!(
            "restart (Broker::start until listening) with {n} x {size} B: {:.3} s \
             ({:.2} µs/message); memory gauge {} B; VmRSS {rss0} -> {} MiB",
            took.as_secs_f64(),
            took.as_secs_f64() * 1e6 / n.max(1) as f64,
            b.memory_used(),
            vm_rss_mib()
        );
        let t = Instant::now();
        let first = get(&b).await;
        assert_eq!(&first[..8], &1u64.to_be_bytes(), "first message");
        assert_eq!(first.len(), size.max(8));
        println!(
            "first delivery after restart (connect + basic.get, paged in): {:?}",
            t.elapsed()
        );
        tokio::time::timeout(Duration::from_secs(60), b.shutdown())
            .await
            .unwrap();
    });
}
