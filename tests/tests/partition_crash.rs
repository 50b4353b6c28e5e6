//! A partitioned group consumed by three service instances, each its own
//! *process*, one of which is SIGKILLed mid-run and replaced: nothing is
//! lost and, per key, events are first handled in publish order across the
//! instances. Runs on the built-in broker and on RabbitMQ (127.0.0.1:5672,
//! consistent-hash plugin enabled).
//!
//! The parent publishes (confirmed) and watches; the instances are this
//! binary re-executed ([`eventbus::testing::process`]), each an `EventBus`
//! with the group's handler. The built-in broker is embedded in the parent
//! (port 0): the instance processes are what gets killed, and the broker
//! sees a killed instance exactly as RabbitMQ does — its TCP connection
//! closes without anything being settled.
//!
//! Every handling is recorded before the handler returns (so before the
//! ack) as one line `instance key seq redelivered` appended to one shared
//! `O_APPEND` file: each line is a single `write(2)`, so the file's order is
//! the order in which the instances handled events, across processes, and
//! what a killed instance wrote stays written.
//!
//! Run: wave 1 (25 events for each of 1000 keys) is published to the
//! declared group; instances a, b, c join and work through it; once the
//! partitions are balanced and b has handled 200 more, b is killed (in the
//! middle of the backlog: it holds full prefetch windows) and the test
//! waits until all partitions are owned by the two survivors; wave 1
//! finishes; the replacement d joins; wave 2 (25 more per key) is published
//! while the instances run and is handled; a, c and d stop gracefully.
//!
//! Checked: every event handled; for each key the first handlings are in
//! publish order (seq 0, 1, 2, …); an event handled twice was first handled
//! by b (its unacked tail, at most its prefetch windows) and then
//! redelivered flagged; all partitions owned after the kill by the
//! survivors alone, later by the three live instances; d handled events;
//! the partition queues are empty at the end.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use eventbus::embedded::EmbeddedBroker;
use eventbus::testing::process::{self, ChildProcess, ProcessTest};
use eventbus::testing::{envelope, unique, DELIVERY_TIMEOUT};
use eventbus::transport::amqp::{AmqpConfig, AmqpTransport};
use eventbus::{
    handler_fn, Context, EventBus, HandlerConfig, Publisher, Subscriber, SubscriptionSpec,
};
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};

/// The environment variable that makes this binary an instance.
const ROLE: &str = "EVENTBUS_PARTITION_CRASH_ROLE";
const RABBITMQ: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
/// Partitions of the group.
const PARTITIONS: u16 = 8;
/// Keys; every key gets `PER_KEY` events, half in each wave.
const KEYS: u32 = 1_000;
const PER_KEY: u32 = 50;
/// Events b handles after the partitions were balanced, before it is killed.
const B_BEFORE_KILL: usize = 200;
/// Prefetch per owned partition.
const PREFETCH: u16 = 64;
/// How long one phase may take before the test fails.
const PHASE: Duration = Duration::from_secs(120);

fn main() {
    process::main(
        ROLE,
        instance,
        &[
            ProcessTest {
                name: "partition_crash_on_the_built_in_broker",
                deadline: Duration::from_secs(400),
                run: || Box::pin(on_the_built_in_broker()),
            },
            ProcessTest {
                name: "partition_crash_on_rabbitmq",
                deadline: Duration::from_secs(400),
                run: || Box::pin(on_rabbitmq()),
            },
        ],
    );
}

async fn on_the_built_in_broker() {
    let dir = tempfile::tempdir().unwrap();
    let broker = EmbeddedBroker::start(dir.path())
        .await
        .expect("start the built-in broker");
    killed_instance_loses_nothing_and_keeps_key_order(&broker.amqp_url(), "built-in broker").await;
    broker.shutdown().await;
}

async fn on_rabbitmq() {
    Connection::connect(RABBITMQ, ConnectionProperties::default())
        .await
        .unwrap_or_else(|e| panic!("RabbitMQ at {RABBITMQ} is required for this test: {e}"));
    killed_instance_loses_nothing_and_keeps_key_order(RABBITMQ, "RabbitMQ").await;
}

/// Transport settings shared by the parent and the instances: exchanges of
/// this run only (a shared RabbitMQ keeps other runs' apart), expiring
/// queues, fast rebalancing.
fn config(url: &str, exchange: &str) -> AmqpConfig {
    let mut config = AmqpConfig::new(url);
    config.exchange = exchange.to_owned();
    config.dead_letter_exchange = format!("{exchange}.dead-letter");
    config.unrouted_exchange = format!("{exchange}.unrouted");
    config.queue_expires = Some(Duration::from_secs(120));
    config.rebalance_interval = Duration::from_millis(200);
    config
}

/// Everything an instance needs, passed through its environment.
struct Setup {
    url: String,
    exchange: String,
    group: String,
    event: String,
    records: PathBuf,
}

impl Setup {
    fn spawn(&self, name: &str) -> ChildProcess {
        let mut cmd = ChildProcess::command(ROLE, "instance");
        cmd.env("EB_PC_URL", &self.url)
            .env("EB_PC_EXCHANGE", &self.exchange)
            .env("EB_PC_GROUP", &self.group)
            .env("EB_PC_EVENT", &self.event)
            .env("EB_PC_RECORDS", &self.records)
            .env("EB_PC_NAME", name);
        ChildProcess::spawn(cmd)
    }
}

/// An instance: an `EventBus` consuming the partitioned group until stdin
/// closes (then it shuts down gracefully) or it is killed.
fn instance(_role: String) {
    let var = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("instance: {k} not set"));
    let (url, exchange, group) = (var("EB_PC_URL"), var("EB_PC_EXCHANGE"), var("EB_PC_GROUP"));
    let event: &'static str = var("EB_PC_EVENT").leak();
    let name = var("EB_PC_NAME");
    let records = Arc::new(
        std::fs::OpenOptions::new()
            .append(true)
            .open(var("EB_PC_RECORDS"))
            .expect("instance: open the records"),
    );
    process::runtime().block_on(async move {
        let transport = AmqpTransport::connect_with(config(&url, &exchange))
            .await
            .expect("instance: connect");
        let mut hc = HandlerConfig::new(group);
        hc.concurrency = 4;
        hc.prefetch = PREFETCH;
        hc.partitions = PARTITIONS;
        let mut bus = EventBus::new(transport.clone());
        bus.register(handler_fn(hc, vec![event], move |cx: Context| {
            let records = records.clone();
            let name = name.clone();
            async move {
                let seq = cx.envelope().headers.get("x-test-n").unwrap_or("?");
                let line = format!(
                    "{name} {} {seq} {}\n",
                    cx.key().unwrap_or("-"),
                    u8::from(cx.redelivered())
                );
                // One write(2) on an O_APPEND file, before the ack.
                (&*records).write_all(line.as_bytes())?;
                Ok(())
            }
        }));
        let running = bus.start().await.expect("instance: start bus");
        println!("READY");
        process::stdin_closed().await;
        running.shutdown().await;
        transport.close().await.expect("instance: close");
        println!("STOPPED");
    });
}

/// One handling, as recorded.
#[derive(Debug, Clone, Copy)]
struct Record {
    instance: char,
    key: u32,
    seq: u32,
    redelivered: bool,
}

/// The records file, read incrementally in file order.
struct Records {
    file: File,
    partial: String,
    all: Vec<Record>,
    handled: HashSet<(u32, u32)>,
}

impl Records {
    fn open(path: &Path) -> Self {
        Self {
            file: File::open(path).unwrap(),
            partial: String::new(),
            all: Vec::new(),
            handled: HashSet::new(),
        }
    }

    /// Reads what was appended since the last call.
    fn refresh(&mut self) {
        self.file.read_to_string(&mut self.partial).unwrap();
        let complete = match self.partial.rfind('\n') {
            Some(i) => i + 1,
            None => return,
        };
        let text: String = self.partial.drain(..complete).collect();
        for line in text.lines() {
            let r = parse(line).unwrap_or_else(|| panic!("malformed record {line:?}"));
            self.handled.insert((r.key, r.seq));
            self.all.push(r);
        }
    }

    /// Polls until `done`, failing after [`PHASE`] with `what`.
    async fn wait_until(&mut self, what: &str, done: impl Fn(&Self) -> bool) {
        let deadline = Instant::now() + PHASE;
        loop {
            self.refresh();
            if done(self) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not within {PHASE:?} ({} handled)",
                self.handled.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn parse(line: &str) -> Option<Record> {
    let mut w = line.split(' ');
    let instance = w.next()?.chars().next()?;
    let key = w.next()?.strip_prefix('k')?.parse().ok()?;
    let seq = w.next()?.parse().ok()?;
    let redelivered = w.next()? == "1";
    w.next().is_none().then_some(Record {
        instance,
        key,
        seq,
        redelivered,
    })
}

/// Broker-side view: live members and consumers per partition queue.
struct Probe {
    connection: Connection,
    group: String,
}

impl Probe {
    async fn counts(&self) -> (u32, Vec<u32>, u32) {
        let channel = self.connection.create_channel().await.unwrap();
        let passive = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        let declare = |q: String| {
            let channel = channel.clone();
            async move {
                channel
                    .queue_declare(q.as_str().into(), passive, FieldTable::default())
                    .await
                    .unwrap_or_else(|e| panic!("inspect {q}: {e}"))
            }
        };
        let members = declare(format!("{}.members", self.group))
            .await
            .consumer_count();
        let mut consumers = Vec::new();
        let mut ready = 0;
        for i in 0..PARTITIONS {
            let q = declare(format!("{}.p{i}", self.group)).await;
            consumers.push(q.consumer_count());
            ready += q.message_count();
        }
        let _ = channel.close(200, "probed".into()).await;
        (members, consumers, ready)
    }

    /// Waits until `n` instances are members and every partition has
    /// exactly one consumer.
    async fn wait_balanced(&self, n: u32, what: &str) {
        let deadline = Instant::now() + PHASE;
        loop {
            let (members, consumers, _) = self.counts().await;
            if members == n && consumers.iter().all(|c| *c == 1) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: partitions not owned by {n} instances within {PHASE:?} \
                 (members {members}, consumers per partition {consumers:?})"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Publishes seq `seqs` of every key, confirmed, in order per key.
fn publish_wave(
    publisher: AmqpTransport,
    event: String,
    seqs: std::ops::Range<u32>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let all: Vec<_> = seqs
            .flat_map(|n| (0..KEYS).map(move |k| (k, n)))
            .map(|(k, n)| envelope(&event, Some(&format!("k{k}")), u64::from(n)))
            .collect();
        for chunk in all.chunks(500) {
            publisher.publish_batch(chunk).await.expect("publish");
        }
    })
}

fn all_of(records: &Records, seqs: std::ops::Range<u32>) -> bool {
    (0..KEYS).all(|k| seqs.clone().all(|n| records.handled.contains(&(k, n))))
}

async fn stop(mut instance: ChildProcess, name: char) {
    instance.close_stdin();
    instance.expect_line("STOPPED", PHASE).await;
    let status = instance.wait(DELIVERY_TIMEOUT).await;
    assert!(
        status.success(),
        "instance {name} did not stop cleanly: {status}"
    );
}

async fn killed_instance_loses_nothing_and_keeps_key_order(url: &str, broker: &str) {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup {
        url: url.to_owned(),
        exchange: unique("x-pcrash"),
        group: unique("g-pcrash"),
        event: unique("ev.pcrash"),
        records: dir.path().join("records"),
    };
    File::create(&setup.records).unwrap();
    let mut records = Records::open(&setup.records);
    let publisher = AmqpTransport::connect_with(config(url, &setup.exchange))
        .await
        .expect("connect the publisher");
    let probe = Probe {
        connection: Connection::connect(url, ConnectionProperties::default())
            .await
            .expect("probe connection"),
        group: setup.group.clone(),
    };

    // Wave 1 waits in the partitions before the instances start, so that
    // b dies in the middle of a backlog, holding full prefetch windows.
    let spec = SubscriptionSpec::new(&setup.group, [setup.event.as_str()]).partitions(PARTITIONS);
    publisher.declare(&spec).await.expect("declare the group");
    let half = PER_KEY / 2;
    publish_wave(publisher.clone(), setup.event.clone(), 0..half)
        .await
        .unwrap();
    let mut a = setup.spawn("a");
    let mut b = setup.spawn("b");
    let mut c = setup.spawn("c");
    for i in [&mut a, &mut b, &mut c] {
        i.expect_line("READY", DELIVERY_TIMEOUT).await;
    }
    probe.wait_balanced(3, "start").await;
    records.refresh();
    let balanced_at = records.all.len();
    records
        .wait_until("b handling after the balance", |r| {
            r.all[balanced_at..]
                .iter()
                .filter(|r| r.instance == 'b')
                .count()
                >= B_BEFORE_KILL
        })
        .await;
    let (_, _, backlog_at_kill) = probe.counts().await;
    assert!(!b.kill(), "instance b exited before it was killed");
    records.refresh();
    let killed_at = records.all.len();
    probe.wait_balanced(2, "after the kill").await;
    records
        .wait_until("wave 1 handled by the survivors", |r| all_of(r, 0..half))
        .await;

    let mut d = setup.spawn("d");
    d.expect_line("READY", DELIVERY_TIMEOUT).await;
    probe.wait_balanced(3, "after the replacement joined").await;
    let replaced_at = records.all.len();
    publish_wave(publisher.clone(), setup.event.clone(), half..PER_KEY)
        .await
        .unwrap();
    records
        .wait_until("wave 2 handled", |r| all_of(r, 0..PER_KEY))
        .await;
    probe.wait_balanced(3, "at the end").await;
    for (instance, name) in [(a, 'a'), (c, 'c'), (d, 'd')] {
        stop(instance, name).await;
    }
    records.refresh();
    let (_, _, ready) = probe.counts().await;
    assert_eq!(ready, 0, "messages left in the partition queues");

    // Nothing lost, nothing unknown.
    for r in &records.all {
        assert!(r.key < KEYS && r.seq < PER_KEY, "unknown event {r:?}");
    }
    assert_eq!(records.handled.len(), (KEYS * PER_KEY) as usize);
    // Per key, first handlings in publish order; repeats only of b's tail.
    let mut next: HashMap<u32, u32> = HashMap::new();
    let mut first_by: HashMap<(u32, u32), char> = HashMap::new();
    let mut duplicates = 0;
    for (i, r) in records.all.iter().enumerate() {
        let expected = next.entry(r.key).or_default();
        if r.seq == *expected {
            *expected += 1;
            first_by.insert((r.key, r.seq), r.instance);
            continue;
        }
        assert!(
            r.seq < *expected,
            "key k{}: seq {} handled (record {i}, by {}) before seq {}: out of order",
            r.key,
            r.seq,
            r.instance,
            expected
        );
        duplicates += 1;
        let first = first_by[&(r.key, r.seq)];
        assert_eq!(
            first, 'b',
            "key k{} seq {} handled again by {} although {} (not the killed b) had it",
            r.key, r.seq, r.instance, first
        );
        assert!(i >= killed_at, "a repeat before the kill: {r:?}");
        assert!(
            r.redelivered,
            "key k{} seq {} handled again by {} without the redelivered flag",
            r.key, r.seq, r.instance
        );
    }
    assert!(
        records.all[killed_at..].iter().all(|r| r.instance != 'b'),
        "records by b after it was killed"
    );
    let survivors_after_kill: HashSet<char> = records.all[killed_at..replaced_at]
        .iter()
        .map(|r| r.instance)
        .collect();
    assert_eq!(
        survivors_after_kill,
        HashSet::from(['a', 'c']),
        "between the kill and the replacement, handled by"
    );
    let by_d = records.all[replaced_at..]
        .iter()
        .filter(|r| r.instance == 'd')
        .count();
    assert!(by_d > 0, "the replacement d got no partitions");
    // b held at most its prefetch on each partition it owned: its share is
    // ceil(P/3), one more while it had not yet settled a partition it was
    // releasing — at most ceil(P/2).
    let window = usize::from(PREFETCH) * usize::from(PARTITIONS.div_ceil(2));
    assert!(
        duplicates <= window,
        "{duplicates} repeats; b's unacked windows hold at most {window}"
    );
    // b died with a backlog behind its partitions: its full prefetch
    // windows come back, flagged redelivered, to the survivors.
    let came_back = records.all[killed_at..replaced_at]
        .iter()
        .filter(|r| r.redelivered)
        .count();
    assert!(
        came_back >= usize::from(PREFETCH),
        "only {came_back} redelivered after b was killed holding at least one full \
         window of {PREFETCH}"
    );
    let count = |who: char| records.all.iter().filter(|r| r.instance == who).count();
    eprintln!(
        "{broker}: {} events over {KEYS} keys and {PARTITIONS} partitions in {:.1?}; \
         handled by a {}, b {} (killed after {} in total), c {}, d {}; \
         backlog in the partitions at the kill: {backlog_at_kill}; \
         redelivered after the kill: {came_back}, of which handled again: {duplicates}",
        KEYS * PER_KEY,
        started.elapsed(),
        count('a'),
        count('b'),
        killed_at,
        count('c'),
        count('d'),
    );
    publisher.close().await.unwrap();
}
