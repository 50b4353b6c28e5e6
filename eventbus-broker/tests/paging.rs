//! Paging bodies out to the store (also for queues with a dead-letter exchange), lazy
//! recovery, message TTLs across a restart, messages shared by several durable queues, and
//! the disk free limit, against an in-process broker with the file store. The multi-GiB
//! backlog test is `tests/backlog.rs`.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;
use std::time::{Duration, Instant};

use eventbus_broker::{Broker, Config};
use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};

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

/// A consumer with manual acks on `queue`.
async fn consume(ch: &Channel, queue: &str, tag: &str) -> lapin::Consumer {
    ch.basic_consume(
        queue.into(),
        tag.into(),
        BasicConsumeOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap()
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

/// Publish `n` persistent messages of `size` with confirms (window `window`).
async fn publish_confirmed(ch: &Channel, queue: &str, n: u64, size: usize, window: u64) {
    publish_confirmed_to(ch, "", queue, 0..n, size, window).await;
}

/// Publish persistent messages `ids` (bodies [`body`]) of `size` to `exchange` with
/// `routing_key`, with confirms (window `window`).
async fn publish_confirmed_to(
    ch: &Channel,
    exchange: &str,
    routing_key: &str,
    ids: Range<u64>,
    size: usize,
    window: u64,
) {
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let mut pending = std::collections::VecDeque::new();
    for i in ids {
        let c = ch
            .basic_publish(
                exchange.into(),
                routing_key.into(),
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

/// Consume messages `ids` (in order) with manual ack and check bodies and order. Messages the
/// consumer prefetched beyond `ids` stay unacked until the channel closes.
async fn consume_in_order(
    ch: &Channel,
    queue: &str,
    ids: Range<u64>,
    size: usize,
    redelivered: bool,
) {
    ch.basic_qos(200, BasicQosOptions::default()).await.unwrap();
    let mut consumer = consume(ch, queue, "").await;
    for i in ids {
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
    let mut consumer = consume(&ch, "lazy", "c").await;
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
    let mut consumer = consume(&ch, "lazy", "c").await;
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

fn lstr(s: &str) -> AMQPValue {
    AMQPValue::LongString(s.into())
}

fn args(pairs: &[(&str, AMQPValue)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in pairs {
        t.insert((*k).into(), v.clone());
    }
    t
}

/// A durable fanout exchange `dlx` with durable queue `dead` bound to it.
async fn declare_dlx(ch: &Channel) {
    ch.exchange_declare(
        "dlx".into(),
        ExchangeKind::Fanout,
        ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    declare_durable(ch, "dead", FieldTable::default()).await;
    ch.queue_bind(
        "dead".into(),
        "dlx".into(),
        "".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
}

/// Publish one message and wait for its confirm (the channel is in confirm mode).
async fn publish_one(ch: &Channel, exchange: &str, rk: &str, body: &[u8], p: BasicProperties) {
    let c = ch
        .basic_publish(
            exchange.into(),
            rk.into(),
            BasicPublishOptions::default(),
            body,
            p,
        )
        .await
        .unwrap();
    assert!(c.await.unwrap().is_ack());
}

async fn message_count(ch: &Channel, queue: &str) -> u32 {
    ch.queue_declare(
        queue.into(),
        QueueDeclareOptions {
            passive: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap()
    .message_count()
}

fn long_str(v: Option<&AMQPValue>) -> String {
    match v {
        Some(AMQPValue::LongString(s)) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        other => format!("{other:?}"),
    }
}

/// The newest `x-death` entry of a dead-lettered message: (reason, queue, original
/// expiration if any).
fn x_death(d: &Delivery) -> (String, String, Option<String>) {
    let h = d.properties.headers().clone().expect("headers");
    let deaths = h
        .inner()
        .get("x-death")
        .and_then(|v| v.as_array())
        .expect("x-death")
        .clone();
    let t = deaths.as_slice()[0].as_field_table().unwrap().clone();
    let t = t.inner();
    (
        long_str(t.get("reason")),
        long_str(t.get("queue")),
        t.get("original-expiration").map(|v| long_str(Some(v))),
    )
}

/// Bytes of segment files in the data directory's message store.
fn segment_bytes(data_dir: &Path) -> u64 {
    std::fs::read_dir(data_dir.join("messages"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum()
}

/// Message TTLs survive a restart and count from the original enqueue, not from the restart
/// (RabbitMQ's semantics): queue `x-message-ttl` and per-message `expiration` that ran out
/// while the broker was down expire at once after the restart, later ones on time; expired
/// messages are dead-lettered with reason `expired`; messages without TTL survive; the
/// expired originals stay gone after another restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_ttl_is_reapplied_after_restart() {
    const SHORT_MS: i64 = 1000; // runs out while the broker is down
    const LONG_MS: i64 = 3500; // runs out after the restart
    const DOWN_UNTIL: Duration = Duration::from_millis(2500);
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(config(dir.path())).await.unwrap();
    let (c, ch) = channel(&b).await;
    declare_dlx(&ch).await;
    let dlx_ttl = |ttl: Option<i64>| {
        let mut t = args(&[("x-dead-letter-exchange", lstr("dlx"))]);
        if let Some(ms) = ttl {
            t.insert("x-message-ttl".into(), AMQPValue::LongLongInt(ms));
        }
        t
    };
    declare_durable(&ch, "ttl-short", dlx_ttl(Some(SHORT_MS))).await;
    declare_durable(&ch, "ttl-long", dlx_ttl(Some(LONG_MS))).await;
    declare_durable(&ch, "per-message", dlx_ttl(None)).await;
    declare_durable(&ch, "no-ttl", FieldTable::default()).await;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let t0 = Instant::now();
    for i in 0..3 {
        let b = format!("short{i}");
        publish_one(&ch, "", "ttl-short", b.as_bytes(), persistent()).await;
        let b = format!("long{i}");
        publish_one(&ch, "", "ttl-long", b.as_bytes(), persistent()).await;
        let b = format!("keep{i}");
        publish_one(&ch, "", "no-ttl", b.as_bytes(), persistent()).await;
    }
    for (body, exp) in [
        ("exp-short", Some(SHORT_MS)),
        ("exp-long", Some(LONG_MS)),
        ("exp-none", None),
    ] {
        let mut p = persistent();
        if let Some(ms) = exp {
            p = p.with_expiration(ms.to_string().into());
        }
        publish_one(&ch, "", "per-message", body.as_bytes(), p).await;
    }
    drop(ch);
    drop(c);
    b.shutdown().await;
    tokio::time::sleep(DOWN_UNTIL.saturating_sub(t0.elapsed())).await;

    let b = Broker::start(config(dir.path())).await.unwrap();
    let restarted = t0.elapsed();
    let (c, ch) = channel(&b).await;
    // not expired by the restart itself
    assert_eq!(message_count(&ch, "ttl-long").await, 3);
    ch.basic_qos(100, BasicQosOptions::default()).await.unwrap();
    let mut dead = consume(&ch, "dead", "dead").await;
    let mut got: BTreeMap<String, (String, String, Option<String>, Duration)> = BTreeMap::new();
    while got.len() < 8 {
        let d = tokio::time::timeout(Duration::from_secs(10), dead.next())
            .await
            .unwrap_or_else(|_| panic!("only {got:?} dead-lettered"))
            .unwrap()
            .unwrap();
        let at = t0.elapsed();
        let (reason, queue, orig) = x_death(&d);
        assert_eq!(d.properties.expiration(), &None, "expiration removed");
        d.ack(BasicAckOptions::default()).await.unwrap();
        let body = String::from_utf8(d.data).unwrap();
        got.insert(body, (reason, queue, orig, at));
    }
    println!("restarted after {restarted:?}; dead-lettered: {got:?}");
    for (body, (reason, queue, orig, at)) in &got {
        assert_eq!(reason, "expired", "{body}");
        let want_queue = match body.as_str() {
            b if b.starts_with("short") => "ttl-short",
            b if b.starts_with("long") => "ttl-long",
            _ => "per-message",
        };
        assert_eq!(queue, want_queue, "{body}");
        let want_orig = match body.as_str() {
            "exp-short" => Some(SHORT_MS.to_string()),
            "exp-long" => Some(LONG_MS.to_string()),
            _ => None,
        };
        assert_eq!(orig, &want_orig, "{body}: original-expiration");
        if body.contains("long") {
            // due at t0 + 3.5 s; counted from the restart it would be >= t0 + 6 s
            let due = Duration::from_millis(LONG_MS as u64);
            assert!(
                *at + Duration::from_millis(100) >= due && *at < due + Duration::from_millis(1500),
                "{body} expired at {at:?}, due at {due:?} after publishing"
            );
        }
    }
    let short: Vec<&String> = got.keys().filter(|b| b.contains("short")).collect();
    assert_eq!(short.len(), 4, "{got:?}");
    // messages without TTL survive; the one behind the expired heads too
    assert_eq!(message_count(&ch, "no-ttl").await, 3);
    let g = ch
        .basic_get("per-message".into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(g.delivery.data, b"exp-none");
    assert!(g.delivery.redelivered);
    for q in ["ttl-short", "ttl-long", "per-message"] {
        assert_eq!(message_count(&ch, q).await, 0, "{q}");
    }
    drop(dead);
    drop(ch);
    drop(c);
    b.shutdown().await;

    // the expired originals were settled in the store: they do not come back
    let b = Broker::start(config(dir.path())).await.unwrap();
    let (_c, ch) = channel(&b).await;
    for (q, n) in [
        ("ttl-short", 0),
        ("ttl-long", 0),
        ("per-message", 0),
        ("dead", 0),
        ("no-ttl", 3),
    ] {
        assert_eq!(
            message_count(&ch, q).await,
            n,
            "{q} after the second restart"
        );
    }
    let mut keep = Vec::new();
    for _ in 0..3 {
        let g = ch
            .basic_get("no-ttl".into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
            .unwrap();
        keep.push(String::from_utf8(g.delivery.data).unwrap());
    }
    assert_eq!(keep, ["keep0", "keep1", "keep2"]);
    drop(ch);
    b.shutdown().await;
}

/// Queues with a dead-letter exchange page bodies out like any durable queue, and
/// dead-lettering a paged-out message reads its body back from the store: max-length
/// overflow, rejection and TTL expiry, also after a restart (which recovers such queues
/// lazily: no bodies in memory).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letter_queues_page_out() {
    const SIZE: usize = 64 * 1024;
    let dir = tempfile::tempdir().unwrap();
    let paging = |dir: &Path| Config {
        // page every persistent body of a durable queue out at once
        memory_paging_ratio: 0.0,
        ..config(dir)
    };
    let b = Broker::start(paging(dir.path())).await.unwrap();
    let (c, ch) = channel(&b).await;
    declare_dlx(&ch).await;
    let dl = ("x-dead-letter-exchange", lstr("dlx"));
    let max = ("x-max-length", AMQPValue::LongLongInt(150));
    declare_durable(&ch, "src", args(&[dl.clone(), max])).await;
    let ttl = ("x-message-ttl", AMQPValue::LongLongInt(300));
    declare_durable(&ch, "src-ttl", args(&[dl, ttl])).await;
    // 200 into a queue of at most 150: the 50 oldest are dead-lettered (maxlen)
    publish_confirmed(&ch, "src", 200, SIZE, 50).await;
    let used = b.memory_used();
    assert!(
        used < MIB,
        "memory gauge {used} B: bodies of the dead-letter queue were not paged out"
    );
    assert_eq!(message_count(&ch, "dead").await, 50);
    // reject 50..60 (a channel of its own: its prefetched, unacked rest is requeued on close)
    let rch = c.create_channel().await.unwrap();
    rch.basic_qos(10, BasicQosOptions::default()).await.unwrap();
    let mut consumer = consume(&rch, "src", "r").await;
    for i in 50..60u64 {
        let d = consumer.next().await.unwrap().unwrap();
        assert!(d.data == body(i, SIZE), "message {i} differs");
        d.nack(BasicNackOptions {
            requeue: false,
            ..Default::default()
        })
        .await
        .unwrap();
    }
    rch.close(200, "bye".into()).await.unwrap();
    // 20 paged-out messages expire
    publish_confirmed_to(&ch, "", "src-ttl", 1000..1020, SIZE, 20).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while message_count(&ch, "dead").await < 80 {
        assert!(
            Instant::now() < deadline,
            "expired messages not dead-lettered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(b.memory_used() < MIB);
    drop(ch);
    drop(c);
    b.shutdown().await;

    let b = Broker::start(paging(dir.path())).await.unwrap();
    assert_eq!(
        b.memory_used(),
        0,
        "dead-letter queues are recovered lazily"
    );
    let (_c, ch) = channel(&b).await;
    assert_eq!(message_count(&ch, "src").await, 140);
    for i in 60..65u64 {
        let g = ch
            .basic_get("src".into(), BasicGetOptions::default())
            .await
            .unwrap()
            .unwrap();
        assert!(g.delivery.data == body(i, SIZE), "message {i} differs");
        g.delivery
            .reject(BasicRejectOptions { requeue: false })
            .await
            .unwrap();
    }
    let expected: Vec<(u64, &str, &str)> = (0..50)
        .map(|i| (i, "maxlen", "src"))
        .chain((50..60).map(|i| (i, "rejected", "src")))
        .chain((1000..1020).map(|i| (i, "expired", "src-ttl")))
        .chain((60..65).map(|i| (i, "rejected", "src")))
        .collect();
    ch.basic_qos(50, BasicQosOptions::default()).await.unwrap();
    let mut dead = consume(&ch, "dead", "dead").await;
    for (i, reason, queue) in expected {
        let d = tokio::time::timeout(Duration::from_secs(10), dead.next())
            .await
            .unwrap_or_else(|_| panic!("dead-lettered message {i} missing"))
            .unwrap()
            .unwrap();
        assert!(d.data == body(i, SIZE), "dead-lettered message {i} differs");
        let (r, q, _) = x_death(&d);
        assert_eq!((r.as_str(), q.as_str()), (reason, queue), "message {i}");
        d.ack(BasicAckOptions::default()).await.unwrap();
    }
    assert!(b.memory_used() < MIB);
    drop(ch);
    b.shutdown().await;
}

/// A persistent message a fanout exchange routes to several durable queues is stored once
/// (the store grows by one copy per message), each queue acks its own reference, and the
/// record is deleted only when every queue has acked it: after a restart, queues that acked
/// get nothing back and the others get all their messages, intact and in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_to_durable_queues_is_stored_once() {
    const SIZE: usize = 16 * 1024;
    const N: u64 = 200;
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(config(dir.path())).await.unwrap();
    let (c, ch) = channel(&b).await;
    ch.exchange_declare(
        "fan".into(),
        ExchangeKind::Fanout,
        ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    for q in ["q1", "q2", "q3"] {
        declare_durable(&ch, q, FieldTable::default()).await;
        ch.queue_bind(
            q.into(),
            "fan".into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    }
    // a transient queue on the same exchange holds its copy in memory only
    ch.queue_declare(
        "mem".into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.queue_bind(
        "mem".into(),
        "fan".into(),
        "".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let before = segment_bytes(dir.path());
    publish_confirmed_to(&ch, "fan", "", 0..N, SIZE, 50).await;
    let grown = segment_bytes(dir.path()) - before;
    let payload = N * SIZE as u64;
    println!("{N} x {SIZE} B to 3 durable queues: store grew by {grown} B");
    assert!(
        grown >= payload && grown < payload + payload / 10,
        "store grew by {grown} B for {payload} B of bodies: not stored once"
    );
    // q1 acks everything, q2 the first half, q3 nothing
    consume_in_order(&ch, "q1", 0..N, SIZE, false).await;
    let ch2 = c.create_channel().await.unwrap();
    consume_in_order(&ch2, "q2", 0..N / 2, SIZE, false).await;
    ch2.close(200, "bye".into()).await.unwrap();
    // a confirmed publish makes the acks before it durable
    publish_one(&ch, "", "nowhere", b"x", persistent()).await;
    drop(ch);
    drop(c);
    b.shutdown().await;

    let b = Broker::start(config(dir.path())).await.unwrap();
    let (_c, ch) = channel(&b).await;
    assert_eq!(message_count(&ch, "q1").await, 0);
    assert_eq!(message_count(&ch, "q2").await, (N / 2) as u32);
    assert_eq!(message_count(&ch, "q3").await, N as u32);
    consume_in_order(&ch, "q2", N / 2..N, SIZE, true).await;
    consume_in_order(&ch, "q3", 0..N, SIZE, true).await;
    drop(ch);
    b.shutdown().await;

    // every reference acked: the records (and their segments) are gone
    let b = Broker::start(config(dir.path())).await.unwrap();
    let (_c, ch) = channel(&b).await;
    for q in ["q1", "q2", "q3"] {
        assert_eq!(message_count(&ch, q).await, 0, "{q}");
    }
    let left = segment_bytes(dir.path());
    assert!(left < 4096, "{left} B of segments left");
    drop(ch);
    b.shutdown().await;
}
