//! Redelivery after a consumer *process* is killed, at bus level, over AMQP
//! against the built-in broker (embedded in the parent, port 0, file store).
//!
//! The parent starts the broker and a child process (this binary
//! re-executed) running an `EventBus` that consumes group G with a slow
//! handler (4 workers, prefetch 16). The child prints one line per handled
//! event (`HANDLED <id> <redelivered>`) before its handler returns, i.e.
//! before the ack. The parent publishes the events, waits until the child
//! has handled a part of them and SIGKILLs it mid-batch, then starts a
//! second child that finishes the work and is stopped gracefully. Finally
//! the parent drains what is left in G's queue.
//!
//! Checked: every event was handled at least once; the only events handled
//! twice are from the killed child's unacked tail (handled by the first
//! child, redelivered flagged to the second, at most one prefetch window of
//! them); the killed child's unacked deliveries came back flagged
//! redelivered; nothing else is left in the queue.
//!
//! A `harness = false` test on [`eventbus::testing::process`]: `main` runs
//! the test, or, when started with `EVENTBUS_BUS_CRASH_ROLE=consumer`,
//! plays the child.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use eventbus::embedded::EmbeddedBroker;
use eventbus::testing::process::{self, ChildProcess, ProcessTest};
use eventbus::testing::{envelope, unique, DELIVERY_TIMEOUT, QUIET_PERIOD};
use eventbus::transport::amqp::{AmqpConfig, AmqpTransport};
use eventbus::{handler_fn, Context, EventBus, HandlerConfig, Publisher, Subscriber};
use eventbus::{Envelope, SubscriptionSpec};

/// The environment variable that makes this binary a child, and its role.
const ROLE: &str = "EVENTBUS_BUS_CRASH_ROLE";
/// Events published.
const EVENTS: u64 = 1_000;
/// Events the first child handles before it is killed (at least).
const KILL_AFTER: usize = 200;
/// The child's prefetch: the most deliveries it holds unacked.
const PREFETCH: u16 = 16;

fn main() {
    process::main(
        ROLE,
        consumer_child,
        &[ProcessTest {
            name: "killed_consumer_process_loses_nothing_and_duplicates_only_its_unacked_tail",
            deadline: Duration::from_secs(120),
            run: || Box::pin(killed_consumer_process()),
        }],
    );
}

/// The child: a service instance consuming the group until its stdin closes
/// (then it shuts down gracefully) or it is killed.
fn consumer_child(_role: String) {
    let url = std::env::var("EVENTBUS_BUS_CRASH_URL").unwrap();
    let group = std::env::var("EVENTBUS_BUS_CRASH_GROUP").unwrap();
    let event: &'static str = std::env::var("EVENTBUS_BUS_CRASH_EVENT").unwrap().leak();
    process::runtime().block_on(async move {
        let transport = AmqpTransport::connect_with(AmqpConfig::new(url))
            .await
            .expect("child: connect");
        let mut config = HandlerConfig::new(group);
        config.concurrency = 4;
        config.prefetch = PREFETCH;
        let mut bus = EventBus::new(transport.clone());
        bus.register(handler_fn(config, vec![event], |cx: Context| async move {
            // The handler's work: slow enough that the parent's kill lands
            // in the middle of a batch.
            tokio::time::sleep(Duration::from_millis(2)).await;
            // Recorded before the handler returns, so before the ack.
            println!("HANDLED {} {}", cx.message_id(), cx.redelivered());
            Ok(())
        }));
        let running = bus.start().await.expect("child: start bus");
        println!("READY");
        process::stdin_closed().await;
        running.shutdown().await;
        transport.close().await.expect("child: close");
        println!("STOPPED");
    });
}

#[derive(Debug)]
enum Line {
    Handled { id: String, redelivered: bool },
    Stopped,
}

/// A running child and what it printed.
struct Consumer(ChildProcess);

fn spawn_consumer(url: &str, group: &str, event: &str) -> Consumer {
    let mut cmd = ChildProcess::command(ROLE, "consumer");
    cmd.env("EVENTBUS_BUS_CRASH_URL", url)
        .env("EVENTBUS_BUS_CRASH_GROUP", group)
        .env("EVENTBUS_BUS_CRASH_EVENT", event);
    Consumer(ChildProcess::spawn(cmd))
}

impl Consumer {
    /// The next line; `None` once the child's stdout closed.
    async fn next(&mut self, what: &str) -> Option<Line> {
        let line = self.0.next_line(what, DELIVERY_TIMEOUT).await?;
        let mut words = line.split(' ');
        Some(match (words.next(), words.next(), words.next()) {
            (Some("STOPPED"), None, None) => Line::Stopped,
            (Some("HANDLED"), Some(id), Some(r)) => Line::Handled {
                id: id.to_owned(),
                redelivered: r == "true",
            },
            _ => panic!("{what}: unexpected line from the child: {line:?}"),
        })
    }

    async fn ready(&mut self) {
        self.0.expect_line("READY", DELIVERY_TIMEOUT).await;
    }
}

/// Records of one child: message id → how often handled, and redelivered flags.
#[derive(Default)]
struct Handled {
    count: HashMap<String, u32>,
    redelivered: HashSet<String>,
}

impl Handled {
    fn add(&mut self, id: String, redelivered: bool) {
        if redelivered {
            self.redelivered.insert(id.clone());
        }
        *self.count.entry(id).or_default() += 1;
    }
}

async fn killed_consumer_process() {
    let dir = tempfile::tempdir().unwrap();
    let broker = EmbeddedBroker::start(dir.path())
        .await
        .expect("start broker");
    let url = broker.amqp_url();
    let (group, event) = (unique("g-crash"), unique("ev.crash"));
    let publisher = broker.transport().await.expect("connect");

    // Child 1 declares the group's queue before anything is published.
    let mut first = spawn_consumer(&url, &group, &event);
    first.ready().await;
    let sent: Vec<Envelope> = (0..EVENTS)
        .map(|n| envelope(&event, Some(&format!("k{}", n % 16)), n))
        .collect();
    for chunk in sent.chunks(200) {
        publisher.publish_batch(chunk).await.expect("publish");
    }

    // Let it handle a part, then SIGKILL it in the middle of its work.
    let mut by_first = Handled::default();
    while by_first.count.len() < KILL_AFTER {
        match first.next("first child handling").await {
            Some(Line::Handled { id, redelivered }) => by_first.add(id, redelivered),
            other => panic!("first child: unexpected {other:?}"),
        }
    }
    assert!(
        !first.0.kill(),
        "the first child exited by itself before it was killed"
    );
    // What it printed before it died is still in the pipe.
    while let Some(line) = first.next("first child's last lines").await {
        match line {
            Line::Handled { id, redelivered } => by_first.add(id, redelivered),
            other => panic!("first child: unexpected {other:?}"),
        }
    }
    assert!(
        by_first.count.len() < sent.len(),
        "the first child finished before it was killed; nothing was mid-batch"
    );

    // Child 2 takes over until every event was handled by one of them.
    let mut second = spawn_consumer(&url, &group, &event);
    second.ready().await;
    let mut by_second = Handled::default();
    let all: HashSet<String> = sent.iter().map(|e| e.id.to_string()).collect();
    let covered = |a: &Handled, b: &Handled| {
        all.iter()
            .all(|id| a.count.contains_key(id) || b.count.contains_key(id))
    };
    while !covered(&by_first, &by_second) {
        match second.next("second child handling").await {
            Some(Line::Handled { id, redelivered }) => by_second.add(id, redelivered),
            other => panic!("second child: unexpected {other:?}"),
        }
    }
    // Stop it gracefully: it finishes what its workers hold.
    second.0.close_stdin();
    loop {
        match second.next("second child stopping").await {
            Some(Line::Handled { id, redelivered }) => by_second.add(id, redelivered),
            Some(Line::Stopped) => break,
            other => panic!("second child: unexpected {other:?}"),
        }
    }
    assert!(second.0.wait(DELIVERY_TIMEOUT).await.success());

    // Whatever is still queued can only be redeliveries of the first
    // child's unacked tail that the second child had prefetched but not run.
    let mut left = Vec::new();
    let mut sub = publisher
        .subscribe(SubscriptionSpec::new(&group, [event.as_str()]).prefetch(64))
        .await
        .expect("subscribe");
    while let Ok(Some(d)) = tokio::time::timeout(QUIET_PERIOD, sub.next()).await {
        let d = d.expect("delivery");
        left.push((d.envelope.id.to_string(), d.redelivered));
        d.ack().await.expect("ack");
    }
    drop(sub);

    for id in &all {
        assert!(
            by_first.count.contains_key(id) || by_second.count.contains_key(id),
            "event {id} never handled"
        );
    }
    for (who, h) in [("first", &by_first), ("second", &by_second)] {
        for (id, n) in &h.count {
            assert!(all.contains(id), "{who} child handled an unknown id {id}");
            assert_eq!(*n, 1, "{who} child handled {id} {n} times");
        }
    }
    assert!(
        by_first.redelivered.is_empty(),
        "nothing was redelivered to the first child"
    );
    let twice: Vec<&String> = by_first
        .count
        .keys()
        .filter(|id| by_second.count.contains_key(*id))
        .collect();
    for id in &twice {
        assert!(
            by_second.redelivered.contains(*id),
            "{id} was handled by both children but not flagged redelivered to the second: \
             a duplicate outside the killed child's unacked tail"
        );
    }
    for (id, redelivered) in &left {
        assert!(
            *redelivered,
            "{id} left in the queue without being redelivered"
        );
        assert!(
            by_first.count.contains_key(id),
            "{id} left in the queue but not handled by the first child"
        );
    }
    let tail = twice.len() + left.len();
    assert!(
        tail <= usize::from(PREFETCH),
        "{tail} events of the killed child came back after being handled; \
         its unacked window is only {PREFETCH}"
    );
    let came_back = by_second.redelivered.len() + left.len();
    assert!(
        came_back >= 1,
        "the killed child's unacked deliveries did not come back flagged redelivered"
    );
    eprintln!(
        "handled by the killed child: {}, by the second: {} ({} redelivered to it), \
         handled twice: {}, left redelivered in the queue: {}",
        by_first.count.len(),
        by_second.count.len(),
        by_second.redelivered.len(),
        twice.len(),
        left.len()
    );
    publisher.close().await.unwrap();
    broker.shutdown().await;
}
