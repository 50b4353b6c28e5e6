//! Crash safety, by killing the process: the broker runs as a child
//! process with the file store; several connections publish persistent
//! messages with confirms while a consumer acks some; the broker is
//! SIGKILLed at random moments and restarted. After every restart:
//! - every confirmed message that was not acked is back (none lost);
//! - no message whose ack was recorded (covered by a later confirm on the
//!   same connection) comes back;
//! - everything that comes back is flagged redelivered;
//! - durable definitions (exchange, queue, binding) survive.
//!
//! The last cycle also appends garbage to the newest segment (a torn write)
//! before restarting: recovery must cut it off by checksum and keep the rest.

use std::collections::HashSet;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};

const CYCLES: usize = 12;
const PUBLISHERS: usize = 3;
/// Messages one publisher sends per cycle at most (bounds the work each cycle verifies).
const MAX_PUBLISH_PER_CYCLE: usize = 10_000;
const QUEUE: &str = "crash-q";
const MARKERS: &str = "crash-markers";
const EXCHANGE: &str = "crash-x";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct BrokerProcess {
    child: Child,
    url: String,
}

fn spawn_broker(dir: &std::path::Path, port: u16) -> BrokerProcess {
    let config = dir.join("broker.toml");
    std::fs::write(
        &config,
        format!(
            "amqp_listen = \"127.0.0.1:{port}\"\ndata_dir = \"{}\"\nstorage = \"file\"\n",
            dir.join("data").display()
        ),
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_eventbus-broker"))
        .arg("--config")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn eventbus-broker");
    BrokerProcess {
        child,
        url: format!("amqp://guest:guest@127.0.0.1:{port}/%2f"),
    }
}

async fn connect(url: &str) -> Connection {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match Connection::connect(url, ConnectionProperties::default()).await {
            Ok(c) => return c,
            Err(e) if tokio::time::Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("broker did not come up: {e}"),
        }
    }
}

fn persistent() -> BasicProperties {
    BasicProperties::default().with_delivery_mode(2)
}

async fn declare(ch: &Channel) {
    ch.exchange_declare(
        EXCHANGE.into(),
        ExchangeKind::Direct,
        ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    for q in [QUEUE, MARKERS] {
        ch.queue_declare(
            q.into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    }
    ch.queue_bind(
        QUEUE.into(),
        EXCHANGE.into(),
        "k".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
}

#[derive(Default)]
struct Ledger {
    confirmed: HashSet<String>,
    acked: HashSet<String>,
    acked_recorded: HashSet<String>,
}

/// Publishes persistent messages with confirms until the connection dies.
async fn publish_until_killed(url: String, cycle: usize, p: usize, ledger: Arc<Mutex<Ledger>>) {
    let Ok(conn) = Connection::connect(&url, ConnectionProperties::default()).await else {
        return;
    };
    let Ok(ch) = conn.create_channel().await else {
        return;
    };
    if ch
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .is_err()
    {
        return;
    }
    let mut window = std::collections::VecDeque::new();
    for seq in 0..MAX_PUBLISH_PER_CYCLE {
        let body = format!("c{cycle}-p{p}-{seq}");
        let Ok(confirm) = ch
            .basic_publish(
                EXCHANGE.into(),
                "k".into(),
                BasicPublishOptions::default(),
                body.as_bytes(),
                persistent(),
            )
            .await
        else {
            return;
        };
        window.push_back((body, confirm));
        if window.len() >= 64 {
            let (body, confirm) = window.pop_front().unwrap();
            match confirm.await {
                Ok(c) if c.is_ack() => {
                    ledger.lock().unwrap().confirmed.insert(body);
                }
                _ => return,
            }
        }
    }
    for (body, confirm) in window {
        match confirm.await {
            Ok(c) if c.is_ack() => {
                ledger.lock().unwrap().confirmed.insert(body);
            }
            _ => return,
        }
    }
}

/// Consumes and acks; after every batch of acks, a confirmed marker publish
/// on the same connection proves those acks were recorded.
async fn consume_until_killed(url: String, ledger: Arc<Mutex<Ledger>>) {
    let Ok(conn) = Connection::connect(&url, ConnectionProperties::default()).await else {
        return;
    };
    let (Ok(ch), Ok(marker)) = (conn.create_channel().await, conn.create_channel().await) else {
        return;
    };
    if marker
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .is_err()
        || ch.basic_qos(50, BasicQosOptions::default()).await.is_err()
    {
        return;
    }
    let Ok(mut consumer) = ch
        .basic_consume(
            QUEUE.into(),
            "crash-consumer".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
    else {
        return;
    };
    let mut pending: Vec<String> = Vec::new();
    while let Some(Ok(d)) = consumer.next().await {
        let body = String::from_utf8_lossy(&d.data).into_owned();
        if d.acker.ack(BasicAckOptions::default()).await.is_err() {
            return;
        }
        ledger.lock().unwrap().acked.insert(body.clone());
        pending.push(body);
        if pending.len() >= 20 {
            let Ok(c) = marker
                .basic_publish(
                    "".into(),
                    MARKERS.into(),
                    BasicPublishOptions::default(),
                    b"m",
                    persistent(),
                )
                .await
            else {
                return;
            };
            match c.await {
                Ok(c) if c.is_ack() => {
                    let mut l = ledger.lock().unwrap();
                    l.acked_recorded.extend(pending.drain(..));
                }
                _ => return,
            }
        }
    }
}

/// Takes everything from the queue: (body, redelivered).
async fn drain(ch: &Channel) -> Vec<(String, bool)> {
    // Nothing publishes now: the queue holds exactly `message_count` messages. They are
    // consumed with auto-ack (one round trip for all, not one per message), which also
    // checks that auto-acked persistent messages are not recovered again next cycle.
    let n = ch
        .queue_declare(
            QUEUE.into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap()
        .message_count() as usize;
    let mut consumer = ch
        .basic_consume(
            QUEUE.into(),
            "drain".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let d = tokio::time::timeout(Duration::from_secs(60), consumer.next())
            .await
            .expect("recovered messages stopped arriving")
            .expect("consumer ended")
            .unwrap();
        out.push((String::from_utf8_lossy(&d.data).into_owned(), d.redelivered));
    }
    ch.basic_cancel("drain".into(), BasicCancelOptions::default())
        .await
        .unwrap();
    assert!(
        ch.basic_get(QUEUE.into(), BasicGetOptions::default())
            .await
            .unwrap()
            .is_none(),
        "more messages than message_count said"
    );
    out
}

fn tear_newest_segment(data: &std::path::Path) {
    let dir = data.join("messages");
    let newest = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .max()
        .unwrap_or_else(|| panic!("no segment file in {}", dir.display()));
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&newest)
        .unwrap();
    // A record header claiming 4 KiB, followed by too few bytes: a torn write.
    f.write_all(&[
        0x00, 0x00, 0x10, 0x00, 0xde, 0xad, 0xbe, 0xef, 0x01, 0x02, 0x03,
    ])
    .unwrap();
    f.sync_all().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirmed_messages_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut broker = spawn_broker(dir.path(), port);
    {
        let conn = connect(&broker.url).await;
        declare(&conn.create_channel().await.unwrap()).await;
        let _ = conn.close(200, "ok".into()).await;
    }
    for cycle in 0..CYCLES {
        let ledger = Arc::new(Mutex::new(Ledger::default()));
        let mut tasks = Vec::new();
        for p in 0..PUBLISHERS {
            tasks.push(tokio::spawn(publish_until_killed(
                broker.url.clone(),
                cycle,
                p,
                ledger.clone(),
            )));
        }
        tasks.push(tokio::spawn(consume_until_killed(
            broker.url.clone(),
            ledger.clone(),
        )));
        let run_ms = 300 + (fastrand::u64(..) % 900);
        tokio::time::sleep(Duration::from_millis(run_ms)).await;
        broker.child.kill().unwrap(); // SIGKILL
        broker.child.wait().unwrap();
        for t in tasks {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
        if cycle == CYCLES - 1 {
            tear_newest_segment(&dir.path().join("data"));
        }
        broker = spawn_broker(dir.path(), port);
        let conn = connect(&broker.url).await;
        let ch = conn.create_channel().await.unwrap();
        // Definitions survived: passive declares succeed, the binding routes.
        ch.exchange_declare(
            EXCHANGE.into(),
            ExchangeKind::Direct,
            ExchangeDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("durable exchange lost");
        ch.queue_declare(
            QUEUE.into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("durable queue lost");
        let present = drain(&ch).await;
        // Every task has ended (the broker was killed): take the ledger.
        let l = std::mem::take(&mut *ledger.lock().unwrap());
        let bodies: HashSet<&str> = present.iter().map(|(b, _)| b.as_str()).collect();
        let lost: Vec<&String> = l
            .confirmed
            .iter()
            .filter(|m| !l.acked.contains(*m) && !bodies.contains(m.as_str()))
            .collect();
        assert!(
            lost.is_empty(),
            "cycle {cycle}: {} confirmed messages lost, e.g. {:?}",
            lost.len(),
            lost.iter().take(5).collect::<Vec<_>>()
        );
        let resurrected: Vec<&str> = bodies
            .iter()
            .copied()
            .filter(|b| l.acked_recorded.contains(*b))
            .collect();
        assert!(
            resurrected.is_empty(),
            "cycle {cycle}: acked-and-recorded messages came back: {:?}",
            &resurrected[..resurrected.len().min(5)]
        );
        assert!(
            present.iter().all(|(_, r)| *r),
            "cycle {cycle}: recovered messages must be flagged redelivered"
        );
        eprintln!(
            "cycle {cycle}: killed after {run_ms} ms; confirmed {}, acked {} ({} recorded), recovered {}",
            l.confirmed.len(), l.acked.len(), l.acked_recorded.len(), present.len()
        );
        // Binding survived: a publish through the exchange lands in the queue.
        let confirm_ch = conn.create_channel().await.unwrap();
        confirm_ch
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap();
        confirm_ch
            .basic_publish(
                EXCHANGE.into(),
                "k".into(),
                BasicPublishOptions::default(),
                b"probe",
                persistent(),
            )
            .await
            .unwrap()
            .await
            .unwrap();
        let probe = drain(&ch).await;
        assert_eq!(probe.len(), 1, "binding lost after restart");
        // Clear markers, and make the acks above durable before the next cycle.
        ch.queue_purge(MARKERS.into(), QueuePurgeOptions::default())
            .await
            .unwrap();
        confirm_ch
            .basic_publish(
                "".into(),
                MARKERS.into(),
                BasicPublishOptions::default(),
                b"sync",
                persistent(),
            )
            .await
            .unwrap()
            .await
            .unwrap();
        let _ = conn.close(200, "ok".into()).await;
    }
    broker.child.kill().unwrap();
    broker.child.wait().unwrap();
}
