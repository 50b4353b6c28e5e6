//! Shared by the bus tests on the memory transport (`pipeline.rs`,
//! `failures.rs`): handler settings, a handler that counts its calls, and a
//! wait woken by the transport instead of a poll.
#![allow(dead_code)]

use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use eventbus_core::testing::unique;
use eventbus_core::{
    handler_fn, Backoff, BoxError, Context, EventBus, Handler, HandlerConfig, MemoryTransport,
    RetryPolicy,
};

/// Handler settings for `group`: `attempts` attempts, a fixed `backoff`
/// between them (no jitter, so that the paused clock can check it).
pub fn config(group: &str, attempts: u32, backoff: Duration) -> HandlerConfig {
    let mut c = HandlerConfig::new(group);
    c.retry = RetryPolicy {
        max_attempts: attempts,
        backoff: Backoff {
            initial: backoff,
            max: backoff,
            multiplier: 1,
            jitter: false,
        },
    };
    c
}

/// A `&'static str` for a run-time event name ([`handler_fn`] takes static
/// names); leaked on purpose.
pub fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

/// The `x-test-n` header of the message handled.
pub fn n_of(cx: &Context) -> u64 {
    cx.envelope()
        .headers
        .get("x-test-n")
        .expect("x-test-n")
        .parse()
        .expect("x-test-n is a number")
}

/// A fresh memory transport, a bus on it and unique group and event names.
pub struct Setup {
    pub t: MemoryTransport,
    pub bus: EventBus,
    pub group: String,
    pub event: &'static str,
}

pub fn setup() -> Setup {
    let t = MemoryTransport::new();
    Setup {
        bus: EventBus::new(t.clone()),
        t,
        group: unique("g"),
        event: leak(unique("ev")),
    }
}

/// `f` as the handler of `event`, counting its calls in the returned
/// counter; `f` gets the context and the number of the call (1 = first).
pub fn counted<F, Fut>(
    config: HandlerConfig,
    event: &'static str,
    f: F,
) -> (impl Handler, Arc<AtomicU32>)
where
    F: Fn(Context, u32) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), BoxError>> + Send + 'static,
{
    let calls = Arc::new(AtomicU32::new(0));
    let c = calls.clone();
    let handler = handler_fn(config, vec![event], move |cx| {
        f(cx, c.fetch_add(1, Ordering::SeqCst) + 1)
    });
    (handler, calls)
}

/// The value of a counter from [`counted`].
pub fn count(calls: &AtomicU32) -> u32 {
    calls.load(Ordering::SeqCst)
}

/// Waits (on the paused clock too) until `f` holds, woken by every publish
/// and settlement on `t` — what handlers record comes before their
/// settlement; fails after `limit` of the test's clock.
pub async fn wait_until(t: &MemoryTransport, limit: Duration, f: impl FnMut() -> bool) {
    tokio::time::timeout(limit, t.wait_until(f))
        .await
        .unwrap_or_else(|_| panic!("condition not reached in {limit:?}"));
}
