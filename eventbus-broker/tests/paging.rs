//! Backlogs larger than the memory watermark, lazy recovery and the disk free limit, against an
//! in-process broker with the file store.

use std::time::{Duration, Instant};

use eventbus_broker::{Broker, Config};
use futures_util::StreamExt;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};

const MIB: u64 = 1024 * 1024;

fn config(dir: &std::path::Path) -> Config {
    Config {
        amqp_listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.to_path_buf(),
        storage: eventbus_broker::storage::StorageType::File,
        ..Config::default()
    }
}

async fn channel(b: &Broker) -> (Connection, Channel) {
    let uri = format!("amqp://guest:guest@{}/%2f", b.amqp_addr());
    let c = Connection::connect(&uri, ConnectionProperties::default())
        .await
        .unwrap();
    let ch = c.create_channel().await.unwrap();
    (c, ch)
}

async fn declare_durable(ch: &Channel, name: &str, args: FieldTable) {
    ch.queue_declare(
        name.into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        args,
    )
    .await
    .unwrap();
}

fn persistent() -> BasicProperties {
    BasicProperties::default().with_delivery_mode(2)
}

/// Body `i` of `size` bytes: the index, then a pattern derived from it.
fn body(i: u64, size: usize) -> Vec<u8> {
    let mut b = Vec::with_capacity(size);
    b.extend_from_slice(&i.to_be_bytes());
    while b.len() < size {
        b.push((b.len() as u64 ^ i) as u8);
    }
    b
}

fn vm_rss_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Publish `n` persistent messages of `size` with confirms (window `window`).
async fn publish_confirmed(ch: &Channel, queue: &str, n: u64, size: usize, window: u64) {
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let mut pending = std::collections::VecDeque::new();
    for i in 0..n {
        let c = ch
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions::default(),
                &body(i, size),
                persistent(),
            )
            .await
            .unwrap();
        pending.push_back(c);
        if pending.len() as u64 >= window {
            let c = pending.pop_front().unwrap();
            assert!(tokio::time::timeout(Duration::from_secs(60), c)
                .await
                .expect("confirm within 60 s (publisher blocked forever?)")
                .unwrap()
                .is_ack());
        }
    }
    for c in pending {
        assert!(tokio::time::timeout(Duration::from_secs(60), c)
            .await
            .expect("confirm within 60 s")
            .unwrap()
            .is_ack());
    }
}

/// Consume `n` messages with manual ack and check bodies and order.
async fn consume_in_order(ch: &Channel, queue: &str, n: u64, size: usize, redelivered: bool) {
    ch.basic_qos(200, BasicQosOptions::default()).await.unwrap();
    let mut consumer = ch
        .basic_consume(
            queue.into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    for i in 0..n {
        let d = tokio::time::timeout(Duration::from_secs(30), consumer.next())
            .await
            .unwrap_or_else(|_| panic!("message {i} not delivered"))
            .unwrap()
            .unwrap();
        assert_eq!(d.data.len(), size, "message {i}: size");
        assert!(d.data == body(i, size), "message {i}: body differs");
        assert_eq!(d.redelivered, redelivered, "message {i}: redelivered flag");
        d.ack(BasicAckOptions::default()).await.unwrap();
    }
    ch.basic_cancel(consumer.tag(), BasicCancelOptions::default())
        .await
        .unwrap();
}

/// ~150 MiB of persistent 64 KiB messages into a durable queue with a 32 MiB memory
/// watermark: all are confirmed (bodies are paged out, so the gauge stays low and the
/// publisher is never blocked for good), the process' RSS stays bounded, and a consumer reads
/// them all back intact and in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backlog_larger_than_memory_watermark() {
    const SIZE: usize = 64 * 1024;
    const N: u64 = 2400; // 150 MiB
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(Config {
        memory_high_watermark: 32 * MIB,
        ..config(dir.path())
    })
    .await
    .unwrap();
    let (_c, ch) = channel(&b).await;
    declare_durable(&ch, "backlog", FieldTable::default()).await;
    let rss_before = vm_rss_kib();
    let t = Instant::now();
    publish_confirmed(&ch, "backlog", N, SIZE, 64).await;
    let publish_secs = t.elapsed().as_secs_f64();
    let rss_after = vm_rss_kib();
    let used = b.memory_used();
    println!(
        "backlog: {N} x {SIZE} B published+confirmed in {publish_secs:.2} s; memory gauge {} KiB; \
         VmRSS {rss_before} KiB -> {rss_after} KiB (+{} MiB)",
        used / 1024,
        rss_after.saturating_sub(rss_before) / 1024
    );
    assert!(
        used <= 32 * MIB,
        "memory gauge {used} above the watermark: bodies not paged out"
    );
    // 150 MiB went through; without paging RSS would grow by at least that much
    assert!(
        rss_after.saturating_sub(rss_before) < 100 * 1024,
        "RSS grew from {rss_before} KiB to {rss_after} KiB"
    );
    let t = Instant::now();
    consume_in_order(&ch, "backlog", N, SIZE, false).await;
    println!(
        "backlog: consumed {N} in {:.2} s; VmRSS {} KiB",
        t.elapsed().as_secs_f64(),
        vm_rss_kib()
    );
    drop(ch);
    b.shutdown().await;
}

/// Restart with lazy recovery: bodies are read on delivery; order, content and redelivered
/// flags survive; acked messages do not come back after a second restart; priority and
/// dead-letter queues (recovered eagerly) keep working; basic.get pages in too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lazy_recovery_pages_bodies_in() {
    const SIZE: usize = 1000;
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(Config {
        // page everything out at once, also while running
        memory_paging_ratio: 0.0,
        ..config(dir.path())
    })
    .await
    .unwrap();
    let (c, ch) = channel(&b).await;
    declare_durable(&ch, "lazy", FieldTable::default()).await;
    let mut prio = FieldTable::default();
    prio.insert("x-max-priority".into(), AMQPValue::ShortShortUInt(5));
    declare_durable(&ch, "prio", prio).await;
    publish_confirmed(&ch, "lazy", 500, SIZE, 100).await;
    for p in [1u8, 5, 3] {
        ch.basic_publish(
            "".into(),
            "prio".into(),
            BasicPublishOptions::default(),
            &[p],
            persistent().with_priority(p),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    }
    // while running, paged-out messages are delivered intact (get and consume)
    let g = ch
        .basic_get("lazy".into(), BasicGetOptions::default())
        .await
        .unwrap()
        .unwrap();
    assert!(g.delivery.data == body(0, SIZE));
    g.delivery
        .nack(BasicNackOptions {
            requeue: true,
            ..Default::default()
        })
        .await
        .unwrap();
    drop(c);
    b.shutdown().await;

    let t = Instant::now();
    let b = Broker::start(config(dir.path())).await.unwrap();
    println!("restart with 503 messages: {:?}", t.elapsed());
    // only the priority queue (3 one-byte bodies) is recovered eagerly
    assert_eq!(b.memory_used(), 3, "bodies must stay on disk after restart");
    let (c, ch) = channel(&b).await;
    // ack the first 200 (basic.get no-ack for the first, consumer for the rest)
    let g = ch
        .basic_get("lazy".into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .unwrap();
    assert!(g.delivery.data == body(0, SIZE));
    assert!(g.delivery.redelivered);
    ch.basic_qos(50, BasicQosOptions::default()).await.unwrap();
    let mut consumer = ch
        .basic_consume(
            "lazy".into(),
            "c".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    for i in 1..200u64 {
        let d = consumer.next().await.unwrap().unwrap();
        assert!(d.data == body(i, SIZE), "message {i} differs");
        assert!(d.redelivered);
        d.ack(BasicAckOptions::default()).await.unwrap();
    }
    ch.basic_cancel("c".into(), BasicCancelOptions::default())
        .await
        .unwrap();
    let mut got = Vec::new();
    for _ in 0..3 {
        let g = ch
            .basic_get("prio".into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
            .unwrap();
        got.push(g.delivery.data[0]);
    }
    assert_eq!(got, vec![5, 3, 1], "priorities survive the restart");
    // make the acks durable before shutdown
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    ch.basic_publish(
        "".into(),
        "nowhere".into(),
        BasicPublishOptions::default(),
        b"x",
        persistent(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    drop(ch);
    drop(c);
    b.shutdown().await;

    let b = Broker::start(config(dir.path())).await.unwrap();
    let (_c, ch) = channel(&b).await;
    let ch2 = ch.clone();
    let n = ch2
        .queue_declare(
            "lazy".into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap()
        .message_count();
    assert_eq!(n, 300, "acked messages must not come back");
    ch.basic_qos(50, BasicQosOptions::default()).await.unwrap();
    let mut consumer = ch
        .basic_consume(
            "lazy".into(),
            "c".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    for i in 200..500u64 {
        let d = consumer.next().await.unwrap().unwrap();
        assert!(d.data == body(i, SIZE), "message {i} differs");
        d.ack(BasicAckOptions::default()).await.unwrap();
    }
    drop(ch);
    b.shutdown().await;
}

/// A disk free limit above the free space blocks publishers (`connection.blocked`); lowering
/// it unblocks them, and what was published meanwhile arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_free_limit_blocks_publishers() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(Config {
        disk_check_interval_ms: 20,
        ..config(dir.path())
    })
    .await
    .unwrap();
    let free = eventbus_broker::disk_free(dir.path()).unwrap();
    let (c, ch) = channel(&b).await;
    declare_durable(&ch, "disk", FieldTable::default()).await;
    // a first publish makes this a publishing connection
    ch.basic_publish(
        "".into(),
        "disk".into(),
        BasicPublishOptions::default(),
        b"0",
        persistent(),
    )
    .await
    .unwrap();
    assert!(!c.status().blocked());
    b.set_disk_free_limit(free.saturating_mul(2).max(1 << 40));
    tokio::time::sleep(Duration::from_millis(200)).await;
    // the next publish is accepted, then the connection blocks (reads paused) and says so;
    // lapin holds further publishes while blocked, so publish from a task
    let pch = ch.clone();
    let publisher = tokio::spawn(async move {
        for p in [b"1", b"2"] {
            pch.basic_publish(
                "".into(),
                "disk".into(),
                BasicPublishOptions::default(),
                p,
                persistent(),
            )
            .await
            .unwrap();
        }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while !c.status().blocked() {
        assert!(Instant::now() < deadline, "connection.blocked not received");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    b.set_disk_free_limit(1);
    let deadline = Instant::now() + Duration::from_secs(10);
    while c.status().blocked() {
        assert!(
            Instant::now() < deadline,
            "connection.unblocked not received"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::timeout(Duration::from_secs(10), publisher)
        .await
        .expect("publishes go through once unblocked")
        .unwrap();
    let (_c2, ch2) = channel(&b).await;
    let g = ch2
        .basic_get("disk".into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(g.delivery.data, b"0");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut rest = Vec::new();
    while rest.len() < 2 {
        assert!(
            Instant::now() < deadline,
            "publishes made while blocked arrive"
        );
        match ch2
            .basic_get("disk".into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
        {
            Some(g) => rest.push(g.delivery.data.clone()),
            None => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
    assert_eq!(rest, vec![b"1".to_vec(), b"2".to_vec()]);
    drop(ch);
    b.shutdown().await;
}
