//! Property tests for key-ordered workers: random keys, interleavings,
//! handler delays and failures. Per-key order always holds; every event is
//! handled exactly once when nothing fails; nothing is lost when handlers
//! fail and retry.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use eventbus_core::testing::{envelope, unique};
use eventbus_core::worker::{HashPartitioner, Partitioner};
use eventbus_core::{
    handler_fn, Backoff, Context, EventBus, HandlerConfig, MemoryTransport, Ordering, Publisher,
    RetryPolicy,
};
use proptest::prelude::*;

#[derive(Debug, Clone)]
struct Case {
    /// (key index, delay in µs, failures before success)
    events: Vec<(u8, u16, u8)>,
    workers: usize,
    keys: u8,
}

fn case() -> impl Strategy<Value = Case> {
    (1usize..=6, 1u8..=12).prop_flat_map(|(workers, keys)| {
        proptest::collection::vec(
            (
                0..keys,
                0u16..400,
                prop_oneof![8 => Just(0u8), 2 => 1u8..=2],
            ),
            1..150,
        )
        .prop_map(move |events| Case {
            events,
            workers,
            keys,
        })
    })
}

/// Runs `case` through a bus; returns, per key, the payload numbers in
/// the order their successful handling happened, and attempts per number.
fn run(case: &Case, max_attempts: u32) -> (HashMap<String, Vec<u64>>, HashMap<u64, u32>) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let t = MemoryTransport::new();
        let group = unique("g");
        let event: &'static str = Box::leak(unique("ev").into_boxed_str());
        let plan: Arc<HashMap<u64, (u16, u8)>> = Arc::new(
            case.events
                .iter()
                .enumerate()
                .map(|(n, &(_, delay, fails))| (n as u64, (delay, fails)))
                .collect(),
        );
        let handled: Arc<Mutex<HashMap<String, Vec<u64>>>> = Arc::default();
        let attempts: Arc<Mutex<HashMap<u64, u32>>> = Arc::default();
        let mut config = HandlerConfig::new(&group);
        config.concurrency = case.workers;
        config.ordering = Ordering::ByKey;
        config.timeout = None;
        config.retry = RetryPolicy {
            max_attempts,
            backoff: Backoff {
                initial: Duration::from_micros(100),
                max: Duration::from_millis(1),
                multiplier: 2,
                jitter: true,
            },
        };
        let (h, a) = (handled.clone(), attempts.clone());
        let mut bus = EventBus::new(t.clone());
        bus.worker_queue(4);
        bus.register(handler_fn(config, vec![event], move |cx: Context| {
            let (h, a, plan) = (h.clone(), a.clone(), plan.clone());
            async move {
                let n: u64 = cx
                    .envelope()
                    .headers
                    .get("x-test-n")
                    .unwrap()
                    .parse()
                    .unwrap();
                let (delay, fails) = plan[&n];
                tokio::time::sleep(Duration::from_micros(u64::from(delay))).await;
                let attempt = {
                    let mut a = a.lock().unwrap();
                    let e = a.entry(n).or_insert(0);
                    *e += 1;
                    *e
                };
                if attempt <= u32::from(fails) {
                    return Err("planned failure".into());
                }
                let key = cx.key().unwrap().to_owned();
                h.lock().unwrap().entry(key).or_default().push(n);
                Ok(())
            }
        }));
        let running = bus.start().await.unwrap();
        for (n, &(k, _, _)) in case.events.iter().enumerate() {
            t.publish(&envelope(event, Some(&format!("key-{k}")), n as u64))
                .await
                .unwrap();
            if n % 7 == 0 {
                tokio::task::yield_now().await;
            }
        }
        let total = case.events.len();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let done: usize = handled.lock().unwrap().values().map(Vec::len).sum();
            if done >= total {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "only {done}/{total} handled"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        running.shutdown().await;
        let stats = t.queue_stats(&group).unwrap();
        assert_eq!((stats.ready, stats.unacked), (0, 0), "queue not drained");
        let _ = case.keys;
        let h = handled.lock().unwrap().clone();
        let a = attempts.lock().unwrap().clone();
        (h, a)
    })
}

fn expected_per_key(case: &Case) -> HashMap<String, Vec<u64>> {
    let mut m: HashMap<String, Vec<u64>> = HashMap::new();
    for (n, &(k, _, _)) in case.events.iter().enumerate() {
        m.entry(format!("key-{k}")).or_default().push(n as u64);
    }
    m
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, failure_persistence: None, ..ProptestConfig::default() })]

    /// Without failures: per-key order, each event handled exactly once.
    #[test]
    fn per_key_order_and_exactly_once_without_failures(mut case in case()) {
        for e in &mut case.events { e.2 = 0; }
        let (handled, attempts) = run(&case, 1);
        prop_assert_eq!(handled, expected_per_key(&case));
        prop_assert!(attempts.values().all(|&a| a == 1));
    }

    /// With failing attempts that retries overcome: nothing lost, order kept,
    /// and each event succeeds exactly once.
    #[test]
    fn failures_are_retried_in_order_and_nothing_is_lost(case in case()) {
        let (handled, attempts) = run(&case, 3);
        prop_assert_eq!(handled, expected_per_key(&case));
        for (n, &(_, _, fails)) in case.events.iter().enumerate() {
            prop_assert_eq!(attempts[&(n as u64)], u32::from(fails) + 1);
        }
    }

    /// The partitioner is a pure function of key and worker count.
    #[test]
    fn partitioning_is_stable(key in ".{0,40}", workers in 1usize..64) {
        let p = HashPartitioner;
        let w = p.partition(&key, workers);
        prop_assert!(w < workers);
        prop_assert_eq!(w, p.partition(&key, workers));
    }
}

#[test]
fn different_keys_are_handled_in_parallel() {
    // 4 workers, 4 keys that map to distinct workers, each handler sleeps
    // 100 ms: in parallel it takes ~100 ms, serially 400 ms.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let p = HashPartitioner;
        let mut keys = Vec::new();
        let mut used = std::collections::HashSet::new();
        for i in 0.. {
            let k = format!("k{i}");
            if used.insert(p.partition(&k, 4)) {
                keys.push(k);
            }
            if keys.len() == 4 {
                break;
            }
        }
        let t = MemoryTransport::new();
        let event: &'static str = Box::leak(unique("ev").into_boxed_str());
        let mut config = HandlerConfig::new(unique("g"));
        config.concurrency = 4;
        let running_now = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let peak = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (r, pk) = (running_now.clone(), peak.clone());
        let mut bus = EventBus::new(t.clone());
        bus.register(handler_fn(config, vec![event], move |_cx| {
            let (r, pk) = (r.clone(), pk.clone());
            async move {
                let now = r.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                pk.fetch_max(now, std::sync::atomic::Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(100)).await;
                r.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                Ok(())
            }
        }));
        let running = bus.start().await.unwrap();
        for (n, k) in keys.iter().enumerate() {
            t.publish(&envelope(event, Some(k), n as u64))
                .await
                .unwrap();
        }
        tokio::time::sleep(Duration::from_millis(60)).await;
        running.shutdown().await;
        assert_eq!(
            peak.load(std::sync::atomic::Ordering::SeqCst),
            4,
            "keys on different workers must run concurrently"
        );
    });
}
