//! The bus-level conformance suite (feature `test-util`).
//!
//! Where [`run_conformance`](super::run_conformance) checks a transport's
//! contract message by message, [`run_bus_conformance`] runs whole
//! [`EventBus`]es over it, through the public API a service uses: derived
//! events and handlers with `#[handler(...)]` options, [`handler_fn`],
//! retries, dead letters, the inbox and key-ordered workers. Every transport
//! runs the same suite (memory, AMQP against the built-in broker and against
//! RabbitMQ), so they cannot drift apart.
//!
//! ```ignore
//! #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
//! async fn bus_on_memory_conforms() {
//!     let t = MemoryTransport::new();
//!     eventbus_core::testing::bus::run_bus_conformance(|| {
//!         let t = t.clone();
//!         async move { Arc::new(t) as Arc<dyn Transport> }
//!     })
//!     .await;
//! }
//! ```
//!
//! `make` is called for every bus a check starts and must return a
//! transport to the same broker: a new connection per call where the
//! transport has connections (each bus then plays a separate instance of a
//! service), the same in-process transport for the memory transport.
//!
//! Each check uses fresh group and event names, so the suite can run against
//! a shared broker repeatedly and concurrently. The typed probe event has a
//! fixed name ([`PROBE_EVENT`]); its handlers ignore probes of other runs.
//! Nothing waits by sleeping: every wait is for an event a handler reports,
//! bounded by [`DELIVERY_TIMEOUT`]. A failing check panics with a message
//! naming the guarantee that was broken (`bus conformance [<check>]: …`).

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};

use super::{envelope, expect_quiet, unique, DELIVERY_TIMEOUT};
use crate::transport::{Subscription, SubscriptionSpec, Transport};
use crate::{
    handler_fn, header, BoxError, Context, Envelope, EventBus, Handle, HandlerConfig, RetryPolicy,
    RunningBus,
};

/// How long a check waits for a bus to drain on shutdown.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

/// The wire name of the typed probe event.
pub const PROBE_EVENT: &str = "eventbus.conformance.probe";

/// The typed event the suite publishes with `#[derive(Event)]`.
#[derive(Debug, Clone, PartialEq, Eq, crate::Event, Serialize, Deserialize)]
#[event(
    name = "eventbus.conformance.probe",
    version = 2,
    key = "key",
    crate = "::eventbus_core"
)]
pub struct Probe {
    /// The run (check) this probe belongs to; handlers ignore other runs'.
    pub run: String,
    /// The partition key.
    pub key: String,
    /// A sequence number.
    pub n: u64,
    /// Free text (non-ASCII on purpose).
    pub text: String,
}

/// What a handler saw of one attempt.
#[derive(Debug, Clone)]
struct Seen {
    envelope: Arc<Envelope>,
    attempt: u32,
    group: String,
    redelivered: bool,
}

impl Seen {
    fn of(cx: &Context) -> Self {
        Self {
            envelope: cx.envelope_arc().clone(),
            attempt: cx.attempt(),
            group: cx.group().to_owned(),
            redelivered: cx.redelivered(),
        }
    }
}

/// A derived handler of [`Probe`]s with retry settings from `#[handler]`:
/// 4 attempts, 10 ms backoff without jitter. It reports every attempt at a
/// probe of its own run and fails attempts before `succeed_on`.
#[derive(crate::Handler)]
#[handler(
    group = "eventbus-conformance-probe",
    events(Probe),
    concurrency = 2,
    max_attempts = 4,
    backoff_ms = 10,
    max_backoff_ms = 40,
    jitter = false,
    timeout_ms = 10000,
    prefetch = 32,
    crate = "::eventbus_core"
)]
struct ProbeHandler {
    run: String,
    succeed_on: u32,
    seen: mpsc::UnboundedSender<(Probe, Seen)>,
}

impl Handle<Probe> for ProbeHandler {
    async fn handle(&self, e: Probe, cx: &Context) -> Result<(), BoxError> {
        if e.run != self.run {
            return Ok(()); // another run's probe on a shared broker
        }
        let _ = self.seen.send((e, Seen::of(cx)));
        if cx.attempt() < self.succeed_on {
            return Err(format!("conformance: attempt {} fails on purpose", cx.attempt()).into());
        }
        Ok(())
    }
}

/// Runs every bus-level check; `make` yields a transport per bus (see the
/// [module docs](self)). A failing check does not stop the others: the
/// suite panics at the end, listing every check that failed.
pub async fn run_bus_conformance<F, Fut>(make: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Transport>>,
{
    let mut failed = Vec::new();
    let mut run = |result: std::thread::Result<()>| {
        if let Err(panic) = result {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "panicked".to_owned());
            failed.push(msg);
        }
    };
    run(catch(publish_reaches_handler(&make)).await);
    run(catch(fans_out_to_groups(&make)).await);
    run(catch(instances_of_a_group_compete(&make)).await);
    run(catch(retries_until_success(&make)).await);
    run(catch(dead_letters_with_reason(&make)).await);
    run(catch(decode_error_is_dead_lettered_at_once(&make)).await);
    #[cfg(feature = "sqlite")]
    run(catch(inbox_absorbs_duplicates(&make)).await);
    #[cfg(not(feature = "sqlite"))]
    eprintln!("bus conformance [inbox]: skipped (eventbus-core built without `sqlite`)");
    run(catch(keeps_per_key_order(&make)).await);
    run(catch(wait_idle_returns_once_all_is_handled(&make)).await);
    if !failed.is_empty() {
        panic!(
            "{} bus conformance check(s) failed:\n  {}",
            failed.len(),
            failed.join("\n  ")
        );
    }
}

async fn catch(check: impl Future<Output = ()>) -> std::thread::Result<()> {
    use futures_util::FutureExt;
    std::panic::AssertUnwindSafe(check).catch_unwind().await
}

fn fail(check: &str, what: impl std::fmt::Display) -> ! {
    panic!("bus conformance [{check}]: {what}")
}

/// A `&'static str` for a run-time event name ([`handler_fn`] takes static
/// names); a few bytes per check, leaked on purpose.
fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

/// Handler settings for a check: fast retries (`attempts`, 10 ms backoff,
/// no jitter), a generous per-attempt timeout.
fn config(group: &str, attempts: u32) -> HandlerConfig {
    let mut c = HandlerConfig::new(group);
    c.retry = RetryPolicy {
        max_attempts: attempts,
        ..RetryPolicy::default()
    };
    c.retry.backoff.initial = Duration::from_millis(10);
    c.retry.backoff.max = Duration::from_millis(40);
    c.retry.backoff.jitter = false;
    c.timeout = Some(Duration::from_secs(10));
    c
}

async fn start(check: &str, bus: EventBus) -> RunningBus {
    bus.start()
        .await
        .unwrap_or_else(|e| fail(check, format_args!("bus did not start: {e}")))
}

async fn shutdown(check: &str, bus: RunningBus) {
    if tokio::time::timeout(SHUTDOWN_TIMEOUT, bus.shutdown())
        .await
        .is_err()
    {
        fail(
            check,
            format_args!("shutdown did not drain within {SHUTDOWN_TIMEOUT:?}"),
        );
    }
}

/// The next report from a handler, or a failure after [`DELIVERY_TIMEOUT`].
async fn next<T>(check: &str, rx: &mut mpsc::UnboundedReceiver<T>, what: &str) -> T {
    match tokio::time::timeout(DELIVERY_TIMEOUT, rx.recv()).await {
        Ok(Some(v)) => v,
        Ok(None) => fail(check, format_args!("{what}: handler gone")),
        Err(_) => fail(
            check,
            format_args!("{what}: not handled within {DELIVERY_TIMEOUT:?}"),
        ),
    }
}

async fn publish(check: &str, bus: &RunningBus, e: &Envelope) {
    bus.publisher()
        .publish_envelope(e)
        .await
        .unwrap_or_else(|err| fail(check, format_args!("publish {}: {err}", e.name)));
}

async fn dead_letters(check: &str, t: &dyn Transport, group: &str) -> Subscription {
    t.subscribe_dead_letters(group, 16)
        .await
        .unwrap_or_else(|e| fail(check, format_args!("subscribe to dead letters: {e}")))
}

/// The dead letter with id `id`, acking (and skipping) any other — a shared
/// broker may carry other runs' probes.
async fn expect_dead_letter(check: &str, sub: &mut Subscription, id: uuid::Uuid) -> Envelope {
    let deadline = tokio::time::Instant::now() + DELIVERY_TIMEOUT;
    loop {
        let d = match tokio::time::timeout_at(deadline, sub.next()).await {
            Ok(Some(Ok(d))) => d,
            Ok(Some(Err(e))) => fail(check, format_args!("dead-letter subscription: {e}")),
            Ok(None) => fail(check, "dead-letter subscription ended"),
            Err(_) => fail(
                check,
                format_args!(
                    "message {id} is not in the group's dead-letter destination \
                     {DELIVERY_TIMEOUT:?} after the bus settled it (dead letter lost)"
                ),
            ),
        };
        let env = (*d.envelope).clone();
        d.ack()
            .await
            .unwrap_or_else(|e| fail(check, format_args!("ack dead letter: {e}")));
        if env.id == id {
            return env;
        }
    }
}

fn assert_header(check: &str, env: &Envelope, name: &str, want: &str) {
    match env.headers.get(name) {
        Some(v) if v == want => {}
        other => fail(
            check,
            format_args!("dead letter header {name} is {other:?}, expected {want:?}"),
        ),
    }
}

/// A bus on a new transport from `make` with a [`ProbeHandler`] of `run`
/// in `group`, succeeding on attempt `succeed_on`; also the transport and
/// the handler's reports.
async fn probe_bus<F, Fut>(
    make: &F,
    run: &str,
    group: &str,
    succeed_on: u32,
) -> (
    EventBus,
    Arc<dyn Transport>,
    mpsc::UnboundedReceiver<(Probe, Seen)>,
)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Transport>>,
{
    let (tx, rx) = mpsc::unbounded_channel();
    let t = make().await;
    let mut bus = EventBus::from_arc(t.clone());
    let group = group.to_owned();
    bus.register_with(
        ProbeHandler {
            run: run.to_owned(),
            succeed_on,
            seen: tx,
        },
        |mut p| {
            p.config_mut().group = group;
            p
        },
    );
    (bus, t, rx)
}

/// Publishes `probe` with `RunningBus::publish`; its envelope.
async fn publish_probe(check: &str, bus: &RunningBus, probe: &Probe) -> Arc<Envelope> {
    bus.publish(probe)
        .await
        .unwrap_or_else(|e| fail(check, format_args!("publish: {e}")))
}

/// The dead letter of message `id` in `group`'s dead-letter destination,
/// its `reason`, `attempts` and group headers checked.
async fn expect_dead_letter_with(
    check: &str,
    t: &dyn Transport,
    group: &str,
    id: uuid::Uuid,
    (reason, attempts): (&str, &str),
) -> Envelope {
    let mut dlq = dead_letters(check, t, group).await;
    let dead = expect_dead_letter(check, &mut dlq, id).await;
    assert_header(check, &dead, header::DEAD_LETTER_REASON, reason);
    assert_header(check, &dead, header::DEAD_LETTER_ATTEMPTS, attempts);
    assert_header(check, &dead, header::DEAD_LETTER_GROUP, group);
    dead
}

/// A typed event published with `RunningBus::publish` (and an envelope with
/// custom headers published with `EventPublisher::publish_envelope`) reaches
/// a derived handler with payload, key, headers, id and every envelope field
/// intact, in the handler's group, on the first attempt.
pub async fn publish_reaches_handler<F, Fut>(make: &F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Transport>>,
{
    const CHECK: &str = "publish reaches handler";
    let (run, group) = (unique("run"), unique("g-bus-probe"));
    let (bus, _, mut rx) = probe_bus(make, &run, &group, 1).await;
    let bus = start(CHECK, bus).await;
    let typed = Probe {
        run: run.clone(),
        key: "user-7".into(),
        n: 1,
        text: "grüße, 世界".into(),
    };
    let sent = publish_probe(CHECK, &bus, &typed).await;
    let custom = Probe {
        run: run.clone(),
        key: "user-8".into(),
        n: 2,
        text: String::new(),
    };
    let custom_env = Envelope::from_event(&custom)
        .unwrap_or_else(|e| fail(CHECK, format_args!("encode: {e}")))
        .with_header("x-custom", "a value with spaces")
        .with_header(header::CORRELATION_ID, unique("corr"));
    publish(CHECK, &bus, &custom_env).await;

    let mut got = HashMap::new();
    while got.len() < 2 {
        let (e, seen) = next(CHECK, &mut rx, "published probe").await;
        if got.insert(e.n, (e, seen)).is_some() {
            fail(CHECK, "a probe was handled twice");
        }
    }
    shutdown(CHECK, bus).await;
    for (want, want_env) in [(&typed, &*sent), (&custom, &custom_env)] {
        let (e, seen) = &got[&want.n];
        if e != want {
            fail(
                CHECK,
                format_args!("payload changed: sent {want:?}, got {e:?}"),
            );
        }
        if *seen.envelope != *want_env {
            fail(
                CHECK,
                format_args!(
                    "envelope changed between publish and handler:\n sent {want_env:?}\n  got {:?}",
                    seen.envelope
                ),
            );
        }
        if seen.envelope.key.as_deref() != Some(want.key.as_str()) {
            fail(CHECK, "partition key lost");
        }
        if seen.group != group || seen.attempt != 1 || seen.redelivered {
            fail(
                CHECK,
                format_args!(
                    "context: group {} attempt {} redelivered {} (expected {group}, 1, false)",
                    seen.group, seen.attempt, seen.redelivered
                ),
            );
        }
    }
    if rx.try_recv().is_ok() {
        fail(CHECK, "a probe was handled more than once");
    }
}

/// Two groups subscribed to one event each handle every event once.
pub async fn fans_out_to_groups<F, Fut>(make: &F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Transport>>,
{
    const CHECK: &str = "fan-out to groups";
    let event = leak(unique("ev.bus-fanout"));
    let groups = [unique("g-bus-fan1"), unique("g-bus-fan2")];
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut bus = EventBus::from_arc(make().await);
    for g in &groups {
        let tx = tx.clone();
        bus.register(handler_fn(config(g, 1), vec![event], move |cx| {
            let _ = tx.send(Seen::of(&cx));
            async { Ok(()) }
        }));
    }
    drop(tx);
    let bus = start(CHECK, bus).await;
    let sent: Vec<Envelope> = (0..20)
        .map(|n| envelope(event, (n % 2 == 0).then_some("k"), n))
        .collect();
    for e in &sent {
        publish(CHECK, &bus, e).await;
    }
    let mut got: HashMap<String, Vec<uuid::Uuid>> = HashMap::new();
    for _ in 0..sent.len() * groups.len() {
        let s = next(CHECK, &mut rx, "fan-out delivery").await;
        got.entry(s.group).or_default().push(s.envelope.id);
    }
    shutdown(CHECK, bus).await;
    while let Ok(s) = rx.try_recv() {
        got.entry(s.group).or_default().push(s.envelope.id);
    }
    let want: Vec<uuid::Uuid> = sent.iter().map(|e| e.id).collect();
    for g in &groups {
        let mut ids = got.remove(g).unwrap_or_default();
        ids.sort();
        let mut w = want.clone();
        w.sort();
        if ids != w {
            fail(
                CHECK,
                format_args!(
                    "group {g} handled {} events ({} distinct), expected each of {} once",
                    ids.len(),
                    ids.iter().collect::<HashSet<_>>().len(),
                    w.len()
                ),
            );
        }
    }
    if !got.is_empty() {
        fail(CHECK, format_args!("unexpected groups {:?}", got.keys()));
    }
}

/// Two buses on separate transports (two instances of one service) share a
/// group: each event is handled once overall, and both instances work.
///
/// Each instance has prefetch 1 and one worker, and its handler holds its
/// first event until the other instance handled one: the transport must give
/// the next event to the other instance while the first holds its only slot.
pub async fn instances_of_a_group_compete<F, Fut>(make: &F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Transport>>,
{
    const CHECK: &str = "competing instances";
    let (group, event) = (unique("g-bus-compete"), leak(unique("ev.bus-compete")));
    let (tx, mut rx) = mpsc::unbounded_channel::<(usize, Option<uuid::Uuid>)>();
    let (counts, _) = watch::channel([0u32; 2]);
    let counts = Arc::new(counts);
    let mut buses = Vec::new();
    for instance in 0..2usize {
        let mut c = config(&group, 1);
        c.prefetch = 1;
        c.concurrency = 1;
        let (tx, counts) = (tx.clone(), counts.clone());
        let mut bus = EventBus::from_arc(make().await);
        bus.register(handler_fn(c, vec![event], move |cx| {
            let (tx, counts) = (tx.clone(), counts.clone());
            async move {
                counts.send_modify(|c| c[instance] += 1);
                let _ = tx.send((instance, Some(cx.message_id())));
                let mut other = counts.subscribe();
                let waited =
                    tokio::time::timeout(DELIVERY_TIMEOUT, other.wait_for(|c| c[1 - instance] > 0))
                        .await;
                if !matches!(waited, Ok(Ok(_))) {
                    let _ = tx.send((instance, None));
                }
                Ok(())
            }
        }));
        buses.push(start(CHECK, bus).await);
    }
    drop(tx);
    let sent: Vec<Envelope> = (0..40).map(|n| envelope(event, None, n)).collect();
    for e in &sent {
        publish(CHECK, &buses[0], e).await;
    }
    let mut handled: HashMap<uuid::Uuid, Vec<usize>> = HashMap::new();
    fn record(
        handled: &mut HashMap<uuid::Uuid, Vec<usize>>,
        (instance, id): (usize, Option<uuid::Uuid>),
    ) {
        match id {
            Some(id) => handled.entry(id).or_default().push(instance),
            None => fail(
                CHECK,
                format_args!(
                    "instance {} got no event while instance {instance} held its only \
                     prefetch slot (consumers of a group must compete)",
                    1 - instance
                ),
            ),
        }
    }
    while handled.len() < sent.len() {
        let r = next(CHECK, &mut rx, "event of the shared group").await;
        record(&mut handled, r);
    }
    for bus in buses {
        shutdown(CHECK, bus).await;
    }
    while let Ok(r) = rx.try_recv() {
        record(&mut handled, r);
    }
    for e in &sent {
        match handled.get(&e.id).map(Vec::as_slice) {
            Some([_]) => {}
            Some(by) => fail(
                CHECK,
                format_args!("event {} handled {} times (by {by:?})", e.id, by.len()),
            ),
            None => fail(CHECK, format_args!("event {} never handled", e.id)),
        }
    }
    if handled.len() != sent.len() {
        fail(CHECK, "an event that was not published was handled");
    }
    let per = counts.borrow();
    if per[0] == 0 || per[1] == 0 {
        fail(
            CHECK,
            format_args!("one instance did all the work: {per:?}"),
        );
    }
}

/// A handler that fails twice is retried, with `cx.attempt()` counting
/// 1, 2, 3, using the backoff from `#[handler(...)]`; it succeeds on attempt
/// 3 and is neither retried again nor dead-lettered.
pub async fn retries_until_success<F, Fut>(make: &F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Transport>>,
{
    const CHECK: &str = "retry";
    let (run, group) = (unique("run"), unique("g-bus-retry"));
    let (bus, t, mut rx) = probe_bus(make, &run, &group, 3).await;
    let bus = start(CHECK, bus).await;
    let probe = Probe {
        run,
        key: "k-retry".into(),
        n: 1,
        text: "retry me".into(),
    };
    let sent = publish_probe(CHECK, &bus, &probe).await;
    for want in 1..=3 {
        let (e, seen) = next(CHECK, &mut rx, &format!("attempt {want}")).await;
        if seen.envelope.id != sent.id || e != probe {
            fail(
                CHECK,
                format_args!("attempt {want} got another event: {e:?}"),
            );
        }
        if seen.attempt != want {
            fail(
                CHECK,
                format_args!("cx.attempt() is {} on attempt {want}", seen.attempt),
            );
        }
    }
    shutdown(CHECK, bus).await;
    if let Ok((_, seen)) = rx.try_recv() {
        fail(
            CHECK,
            format_args!(
                "handled again (attempt {}) after it succeeded",
                seen.attempt
            ),
        );
    }
    let mut dlq = dead_letters(CHECK, &*t, &group).await;
    expect_quiet(
        &mut dlq,
        "bus conformance [retry]: succeeded event dead-lettered",
    )
    .await;
}

/// A handler that always fails: after `max_attempts` the event is in the
/// group's dead-letter destination — found there by a subscriber that comes
/// *after* the failure — with `x-eventbus-reason: handler`,
/// `x-eventbus-attempts`, `x-eventbus-group`, `x-eventbus-error` and its own
/// headers, and it is gone from the group's queue.
pub async fn dead_letters_with_reason<F, Fut>(make: &F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Transport>>,
{
    const CHECK: &str = "dead-letter with reason";
    let (group, event) = (unique("g-bus-dlq"), leak(unique("ev.bus-dlq")));
    let (tx, mut rx) = mpsc::unbounded_channel();
    let t = make().await;
    let mut bus = EventBus::from_arc(t.clone());
    bus.register(handler_fn(config(&group, 3), vec![event], move |cx| {
        let _ = tx.send(Seen::of(&cx));
        async { Err::<(), BoxError>("conformance: always fails".into()) }
    }));
    let bus = start(CHECK, bus).await;
    let e = envelope(event, Some("k-dead"), 1).with_header("x-custom", "kept");
    publish(CHECK, &bus, &e).await;
    for want in 1..=3 {
        let seen = next(CHECK, &mut rx, &format!("attempt {want}")).await;
        if seen.envelope.id != e.id || seen.attempt != want {
            fail(
                CHECK,
                format_args!(
                    "attempt {want}: got message {} attempt {}",
                    seen.envelope.id, seen.attempt
                ),
            );
        }
    }
    // Shutdown drains the workers: the dead-letter step has completed.
    shutdown(CHECK, bus).await;
    if let Ok(seen) = rx.try_recv() {
        fail(
            CHECK,
            format_args!("attempt {} beyond max_attempts = 3", seen.attempt),
        );
    }
    let dead = expect_dead_letter_with(CHECK, &*t, &group, e.id, ("handler", "3")).await;
    assert_header(CHECK, &dead, "x-custom", "kept");
    match dead.headers.get(header::DEAD_LETTER_ERROR) {
        Some(err) if err.contains("always fails") => {}
        other => fail(CHECK, format_args!("x-eventbus-error is {other:?}")),
    }
    if (&dead.name, &dead.key, &dead.payload) != (&e.name, &e.key, &e.payload) {
        fail(CHECK, "dead letter differs from the original");
    }
    let mut again = t
        .subscribe(SubscriptionSpec::new(&group, [event]).prefetch(16))
        .await
        .unwrap_or_else(|e| fail(CHECK, format_args!("resubscribe: {e}")));
    expect_quiet(
        &mut again,
        "bus conformance [dead-letter with reason]: dead-lettered original is still queued",
    )
    .await;
}

/// A payload the derived handler cannot decode is dead-lettered at once
/// (`x-eventbus-reason: decode`, one attempt), never reaches the handler,
/// and does not hold up the next event of its key.
pub async fn decode_error_is_dead_lettered_at_once<F, Fut>(make: &F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Transport>>,
{
    const CHECK: &str = "decode error dead-lettered at once";
    let (run, group) = (unique("run"), unique("g-bus-decode"));
    let (bus, t, mut rx) = probe_bus(make, &run, &group, 1).await;
    let bus = start(CHECK, bus).await;
    let mut bad = envelope(PROBE_EVENT, Some("k-bad"), 1);
    bad.version = 2;
    bad.payload = bytes::Bytes::from_static(b"{\"run\": 12, not json");
    publish(CHECK, &bus, &bad).await;
    let good = Probe {
        run,
        key: "k-bad".into(),
        n: 2,
        text: "after the bad one".into(),
    };
    let good_env = publish_probe(CHECK, &bus, &good).await;
    let (e, seen) = next(CHECK, &mut rx, "the good event after the bad one").await;
    if e != good || seen.envelope.id != good_env.id || seen.attempt != 1 {
        fail(
            CHECK,
            format_args!("expected the good probe on attempt 1, got {e:?}"),
        );
    }
    shutdown(CHECK, bus).await;
    if rx.try_recv().is_ok() {
        fail(CHECK, "the handler saw more than the good probe");
    }
    let dead = expect_dead_letter_with(CHECK, &*t, &group, bad.id, ("decode", "1")).await;
    if dead.payload != bad.payload {
        fail(CHECK, "dead letter's payload differs from the bad original");
    }
}

/// The same envelope delivered twice to a handler behind the inbox takes
/// effect once: the duplicate never reaches the handler, and the effect row
/// committed with the inbox row (SQLite, in memory).
#[cfg(feature = "sqlite")]
pub async fn inbox_absorbs_duplicates<F, Fut>(make: &F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Transport>>,
{
    use sqlx::sqlite::SqlitePoolOptions;
    const CHECK: &str = "inbox dedup";
    // One connection that never expires: it *is* the in-memory database.
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .idle_timeout(None)
        .max_lifetime(None)
        .connect("sqlite::memory:")
        .await
        .unwrap_or_else(|e| fail(CHECK, format_args!("open SQLite: {e}")));
    sqlx::query("CREATE TABLE effects (message_id TEXT NOT NULL)")
        .execute(&pool)
        .await
        .unwrap_or_else(|e| fail(CHECK, format_args!("create table: {e}")));
    let inbox = crate::inbox::Inbox::sqlite(pool.clone());
    inbox
        .migrate()
        .await
        .unwrap_or_else(|e| fail(CHECK, format_args!("migrate inbox: {e}")));

    let (group, event) = (unique("g-bus-inbox"), leak(unique("ev.bus-inbox")));
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut c = config(&group, 3);
    c.inbox = true;
    let mut bus = EventBus::from_arc(make().await);
    bus.inbox(inbox.layer())
        .register(handler_fn(c, vec![event], move |cx| {
            let tx = tx.clone();
            async move {
                let mut db = crate::inbox::transaction::<sqlx::Sqlite>().await?;
                sqlx::query("INSERT INTO effects (message_id) VALUES (?)")
                    .bind(cx.message_id().to_string())
                    .execute(&mut *db)
                    .await?;
                drop(db);
                let _ = tx.send(cx.message_id());
                Ok(())
            }
        }));
    let bus = start(CHECK, bus).await;
    let once = envelope(event, Some("k-inbox"), 1);
    let marker = envelope(event, Some("k-inbox"), 2);
    // The broker delivers `once` twice (at-least-once); `marker` comes after
    // both on the same key, so once it is handled both were.
    for e in [&once, &once, &marker] {
        publish(CHECK, &bus, e).await;
    }
    let mut calls = Vec::new();
    while calls.last() != Some(&marker.id) {
        calls.push(next(CHECK, &mut rx, "inbox handler").await);
    }
    shutdown(CHECK, bus).await;
    while let Ok(id) = rx.try_recv() {
        calls.push(id);
    }
    if calls != [once.id, marker.id] {
        fail(
            CHECK,
            format_args!(
                "handler calls {calls:?}, expected [{}, {}]: the duplicate must be skipped",
                once.id, marker.id
            ),
        );
    }
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT message_id, COUNT(*) FROM effects GROUP BY message_id ORDER BY message_id",
    )
    .fetch_all(&pool)
    .await
    .unwrap_or_else(|e| fail(CHECK, format_args!("read effects: {e}")));
    let mut want = vec![(once.id.to_string(), 1), (marker.id.to_string(), 1)];
    want.sort();
    if rows != want {
        fail(
            CHECK,
            format_args!("effects {rows:?}, expected each message once: {want:?}"),
        );
    }
    for id in [once.id, marker.id] {
        let recorded = inbox
            .contains(id, &group)
            .await
            .unwrap_or_else(|e| fail(CHECK, format_args!("inbox lookup: {e}")));
        if !recorded {
            fail(CHECK, format_args!("message {id} missing from the inbox"));
        }
    }
    pool.close().await;
}

/// Hundreds of events over 16 keys, four workers: each key's events are
/// handled in publish order, each once — also when some of them fail their
/// first attempt and are retried.
pub async fn keeps_per_key_order<F, Fut>(make: &F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Transport>>,
{
    const CHECK: &str = "per-key order";
    const KEYS: u64 = 16;
    const PER_KEY: u64 = 25;
    const RUN: u64 = 3;
    let (group, event) = (unique("g-bus-order"), leak(unique("ev.bus-order")));
    let (tx, mut rx) = mpsc::unbounded_channel();
    let t = make().await;
    let mut c = config(&group, 3);
    c.concurrency = 4;
    c.prefetch = 64;
    let mut bus = EventBus::from_arc(t.clone());
    bus.register(handler_fn(c, vec![event], move |cx| {
        let tx = tx.clone();
        async move {
            let n: u64 = cx
                .envelope()
                .headers
                .get("x-test-n")
                .and_then(|n| n.parse().ok())
                .ok_or("x-test-n missing")?;
            // Shuffle the interleaving of workers a little.
            for _ in 0..fastrand::u8(0..4) {
                tokio::task::yield_now().await;
            }
            if n % 7 == 3 && cx.attempt() == 1 {
                return Err("conformance: first attempt fails".into());
            }
            let _ = tx.send((cx.key().map(str::to_owned), n, cx.attempt()));
            Ok(())
        }
    }));
    let bus = start(CHECK, bus).await;
    // In publish order, n counting up: runs of RUN events of one key, the
    // keys interleaved (adjacent events of a key would overtake each other
    // on different workers).
    let key_of = |n: u64| (n / RUN) % KEYS;
    let sent: Vec<Envelope> = (0..KEYS * PER_KEY)
        .map(|n| envelope(event, Some(&format!("key-{}", key_of(n))), n))
        .collect();
    for chunk in sent.chunks(100) {
        t.publish_batch(chunk)
            .await
            .unwrap_or_else(|e| fail(CHECK, format_args!("publish_batch: {e}")));
    }
    let mut order: HashMap<Option<String>, Vec<u64>> = HashMap::new();
    for _ in 0..sent.len() {
        let (key, n, attempt) = next(CHECK, &mut rx, "ordered event").await;
        if n % 7 == 3 && attempt != 2 {
            fail(
                CHECK,
                format_args!("event {n} succeeded on attempt {attempt}, expected 2"),
            );
        }
        order.entry(key).or_default().push(n);
    }
    shutdown(CHECK, bus).await;
    while let Ok((key, n, _)) = rx.try_recv() {
        order.entry(key).or_default().push(n);
    }
    if order.len() != KEYS as usize {
        fail(
            CHECK,
            format_args!("{} keys handled, expected {KEYS}", order.len()),
        );
    }
    for (key, ns) in &order {
        let k: u64 = key
            .as_deref()
            .and_then(|k| k.strip_prefix("key-"))
            .and_then(|k| k.parse().ok())
            .unwrap_or_else(|| fail(CHECK, format_args!("unexpected key {key:?}")));
        let want: Vec<u64> = (0..KEYS * PER_KEY).filter(|n| key_of(*n) == k).collect();
        if *ns != want {
            fail(
                CHECK,
                format_args!("key {key:?} handled as {ns:?}, published as {want:?}"),
            );
        }
    }
}

/// `RunningBus::wait_idle` returns once every published event was handled,
/// retries included, and not before: the handler has seen them all by then.
pub async fn wait_idle_returns_once_all_is_handled<F, Fut>(make: &F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Transport>>,
{
    const CHECK: &str = "wait_idle";
    const EVENTS: u64 = 50;
    let (group, event) = (unique("g-bus-idle"), leak(unique("ev.bus-idle")));
    let handled = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let h = handled.clone();
    let mut bus = EventBus::from_arc(make().await);
    bus.register(handler_fn(config(&group, 3), vec![event], move |cx| {
        let h = h.clone();
        async move {
            if cx.attempt() == 1 && cx.key() == Some("k-retry") {
                return Err("conformance: first attempt fails".into());
            }
            h.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok(())
        }
    }));
    let bus = start(CHECK, bus).await;
    for n in 0..EVENTS {
        let key = if n % 5 == 0 { "k-retry" } else { "k" };
        publish(CHECK, &bus, &envelope(event, Some(key), n)).await;
    }
    if let Err(e) = bus.wait_idle(DELIVERY_TIMEOUT).await {
        fail(CHECK, format_args!("not idle: {e}"));
    }
    let seen = handled.load(std::sync::atomic::Ordering::SeqCst);
    if seen != EVENTS {
        fail(
            CHECK,
            format_args!("wait_idle returned with {seen} of {EVENTS} events handled"),
        );
    }
    shutdown(CHECK, bus).await;
}
