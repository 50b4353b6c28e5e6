//! The handler pipeline end to end on the memory transport: retry, timeout,
//! panic recovery, dead-lettering, bad input, user layers, shutdown.

#[path = "support/bus.rs"]
mod support;

use std::sync::atomic::{AtomicU32, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use eventbus_core::testing::{envelope, expect_delivery, expect_quiet, unique};
use eventbus_core::{
    handler_fn, header, Context, EventBus, HandleError, HandlerConfig, MemoryTransport, Publisher,
    Subscriber,
};
use support::{count, counted, leak, setup, Setup};

/// How long a condition may take to come true.
const WAIT: Duration = Duration::from_secs(10);

/// Fast retries (1 ms backoff) and a 200 ms per-attempt timeout.
fn config(group: &str, attempts: u32) -> HandlerConfig {
    let mut c = support::config(group, attempts, Duration::from_millis(1));
    c.timeout = Some(Duration::from_millis(200));
    c
}

#[tokio::test]
async fn failing_handler_is_retried_then_succeeds() {
    let Setup {
        t,
        mut bus,
        group,
        event,
    } = setup();
    let (handler, calls) = counted(config(&group, 5), event, |cx, n| async move {
        assert_eq!(cx.attempt(), n, "attempt number");
        if n < 3 {
            Err("transient".into())
        } else {
            Ok(())
        }
    });
    bus.register(handler);
    let running = bus.start().await.unwrap();
    t.publish(&envelope(event, Some("k"), 1)).await.unwrap();
    support::wait_until(&t, WAIT, || count(&calls) == 3).await;
    running.shutdown().await;
    let stats = t.queue_stats(&group).unwrap();
    assert_eq!((stats.ready, stats.unacked), (0, 0), "message not acked");
    let dead = t.queue_stats(&format!("{group}.dead-letter"));
    assert_eq!(dead.map_or(0, |s| s.ready), 0, "dead-lettered");
}

async fn dead_letter_of(t: &MemoryTransport, group: &str) -> eventbus_core::Envelope {
    let mut dlq = t.subscribe_dead_letters(group, 8).await.unwrap();
    let d = expect_delivery(&mut dlq, "dead letter").await;
    let env = (*d.envelope).clone();
    d.ack().await.unwrap();
    expect_quiet(&mut dlq, "one dead letter only").await;
    env
}

#[tokio::test]
async fn exhausted_retries_dead_letter_with_error_headers() {
    let Setup {
        t,
        mut bus,
        group,
        event,
    } = setup();
    let (handler, calls) = counted(config(&group, 3), event, |_cx, _n| async {
        Err("database unavailable".into())
    });
    bus.register(handler);
    let running = bus.start().await.unwrap();
    let sent = envelope(event, Some("k"), 1);
    t.publish(&sent).await.unwrap();
    let dead = dead_letter_of(&t, &group).await;
    running.shutdown().await;
    assert_eq!(count(&calls), 3);
    assert_eq!(dead.id, sent.id);
    assert_eq!(dead.payload, sent.payload);
    assert_eq!(dead.headers.get(header::DEAD_LETTER_ATTEMPTS), Some("3"));
    assert_eq!(
        dead.headers.get(header::DEAD_LETTER_REASON),
        Some("handler")
    );
    assert_eq!(
        dead.headers.get(header::DEAD_LETTER_GROUP),
        Some(group.as_str())
    );
    assert!(dead
        .headers
        .get(header::DEAD_LETTER_ERROR)
        .unwrap()
        .contains("database unavailable"));
    let stats = t.queue_stats(&group).unwrap();
    assert_eq!((stats.ready, stats.unacked), (0, 0));
}

#[tokio::test]
async fn panicking_handler_is_a_failed_attempt_not_a_dead_worker() {
    let Setup {
        t,
        mut bus,
        group,
        event,
    } = setup();
    let handled = Arc::new(Mutex::new(Vec::new()));
    let h = handled.clone();
    bus.register(handler_fn(
        config(&group, 2),
        vec![event],
        move |cx: Context| {
            let h = h.clone();
            async move {
                if cx.envelope().headers.get("x-test-n") == Some("0") {
                    panic!("handler bug");
                }
                h.lock().unwrap().push(cx.envelope().id);
                Ok(())
            }
        },
    ));
    let running = bus.start().await.unwrap();
    let bad = envelope(event, Some("k"), 0);
    let good = envelope(event, Some("k"), 1);
    t.publish(&bad).await.unwrap();
    t.publish(&good).await.unwrap();
    let dead = dead_letter_of(&t, &group).await;
    support::wait_until(&t, WAIT, || handled.lock().unwrap().len() == 1).await;
    running.shutdown().await;
    assert_eq!(dead.id, bad.id);
    assert_eq!(dead.headers.get(header::DEAD_LETTER_REASON), Some("panic"));
    assert_eq!(dead.headers.get(header::DEAD_LETTER_ATTEMPTS), Some("2"));
    assert!(dead
        .headers
        .get(header::DEAD_LETTER_ERROR)
        .unwrap()
        .contains("handler bug"));
    assert_eq!(
        *handled.lock().unwrap(),
        vec![good.id],
        "same worker kept going after the panic"
    );
}

#[tokio::test]
async fn slow_handler_times_out_and_is_dead_lettered() {
    let Setup {
        t,
        mut bus,
        group,
        event,
    } = setup();
    let mut c = config(&group, 2);
    c.timeout = Some(Duration::from_millis(20));
    bus.register(handler_fn(c, vec![event], |_cx| async {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        Ok(())
    }));
    let running = bus.start().await.unwrap();
    t.publish(&envelope(event, None, 1)).await.unwrap();
    let dead = dead_letter_of(&t, &group).await;
    running.shutdown().await;
    assert_eq!(
        dead.headers.get(header::DEAD_LETTER_REASON),
        Some("timeout")
    );
    assert_eq!(dead.headers.get(header::DEAD_LETTER_ATTEMPTS), Some("2"));
}

#[tokio::test]
async fn undecodable_and_unknown_events_are_dead_lettered_at_once() {
    #[derive(serde::Deserialize)]
    #[allow(dead_code)]
    struct Strict {
        n: u64,
        required: String,
    }
    let t = MemoryTransport::new();
    let (group, event, other) = (unique("g"), leak(unique("ev")), leak(unique("ev-other")));
    let calls = Arc::new(AtomicU32::new(0));
    let c = calls.clone();
    let mut bus = EventBus::new(t.clone());
    // Subscribed to both names, but only knows how to handle `event`.
    struct Picky<F>(F, &'static str, &'static str, String);
    impl<F> eventbus_core::Handler for Picky<F>
    where
        F: Fn() + Send + Sync + 'static,
    {
        fn config(&self) -> HandlerConfig {
            config(&self.3, 5)
        }
        fn events(&self) -> Vec<&'static str> {
            vec![self.1, self.2]
        }
        fn dispatch(
            self: Arc<Self>,
            cx: Context,
        ) -> futures_util::future::BoxFuture<'static, Result<(), HandleError>> {
            Box::pin(async move {
                (self.0)();
                if cx.envelope().name != self.1 {
                    return Err(HandleError::UnknownEvent(cx.envelope().name.to_string()));
                }
                let _: Strict = serde_json::from_slice(&cx.envelope().payload).map_err(|e| {
                    HandleError::Decode(eventbus_core::DecodeError::Payload {
                        event: cx.envelope().name.to_string(),
                        source: Box::new(e),
                    })
                })?;
                Ok(())
            })
        }
    }
    bus.register(Picky(
        move || {
            c.fetch_add(1, AtomicOrdering::SeqCst);
        },
        event,
        other,
        group.clone(),
    ));
    let running = bus.start().await.unwrap();
    let mut bad_payload = envelope(event, None, 1);
    bad_payload.payload = bytes::Bytes::from_static(b"{not json");
    t.publish(&bad_payload).await.unwrap();
    t.publish(&envelope(other, None, 2)).await.unwrap();
    let mut dlq = t.subscribe_dead_letters(&group, 8).await.unwrap();
    let mut reasons = Vec::new();
    for _ in 0..2 {
        let d = expect_delivery(&mut dlq, "dead letter").await;
        assert_eq!(
            d.envelope.headers.get(header::DEAD_LETTER_ATTEMPTS),
            Some("1")
        );
        reasons.push(
            d.envelope
                .headers
                .get(header::DEAD_LETTER_REASON)
                .unwrap()
                .to_owned(),
        );
        d.ack().await.unwrap();
    }
    running.shutdown().await;
    reasons.sort();
    assert_eq!(reasons, vec!["decode", "unknown-event"]);
    assert_eq!(
        calls.load(AtomicOrdering::SeqCst),
        2,
        "permanent failures must not be retried"
    );
}

#[tokio::test]
async fn user_layers_wrap_each_attempt() {
    let Setup {
        t,
        mut bus,
        group,
        event,
    } = setup();
    let seen = Arc::new(AtomicU32::new(0));
    let s = seen.clone();
    let (handler, done) = counted(config(&group, 3), event, |cx, _n| async move {
        if cx.attempt() == 1 {
            Err("once".into())
        } else {
            Ok(())
        }
    });
    bus.register_with(handler, move |p| {
        let s = s.clone();
        p.layer(tower::layer::layer_fn(move |inner| {
            let s = s.clone();
            tower::service_fn(move |cx: Context| {
                s.fetch_add(1, AtomicOrdering::SeqCst);
                let mut inner: eventbus_core::pipeline::HandlerService = Clone::clone(&inner);
                async move { tower::ServiceExt::oneshot(&mut inner, cx).await }
            })
        }))
    });
    let running = bus.start().await.unwrap();
    t.publish(&envelope(event, None, 1)).await.unwrap();
    support::wait_until(&t, WAIT, || count(&done) == 2).await;
    running.shutdown().await;
    assert_eq!(
        seen.load(AtomicOrdering::SeqCst),
        2,
        "user layer runs once per attempt"
    );
}

#[tokio::test]
async fn duplicate_groups_are_refused() {
    let mut bus = EventBus::new(MemoryTransport::new());
    bus.register(handler_fn(
        HandlerConfig::new("same"),
        vec!["a"],
        |_| async { Ok(()) },
    ));
    bus.register(handler_fn(
        HandlerConfig::new("same"),
        vec!["b"],
        |_| async { Ok(()) },
    ));
    let err = bus.start().await.unwrap_err();
    assert!(err.to_string().contains("registered twice"), "{err}");
}

#[tokio::test]
async fn shutdown_drains_in_flight_work() {
    let Setup {
        t,
        mut bus,
        group,
        event,
    } = setup();
    let done = Arc::new(AtomicU32::new(0));
    let d = done.clone();
    let mut c = config(&group, 1);
    c.concurrency = 4;
    c.timeout = None;
    bus.register(handler_fn(c, vec![event], move |_cx| {
        let d = d.clone();
        async move {
            // Work that takes a while: shutdown comes in the middle of it.
            tokio::time::sleep(Duration::from_millis(20)).await;
            d.fetch_add(1, AtomicOrdering::SeqCst);
            Ok(())
        }
    }));
    let running = bus.start().await.unwrap();
    for n in 0..50 {
        t.publish(&envelope(event, Some(&format!("k{}", n % 8)), n))
            .await
            .unwrap();
    }
    support::wait_until(&t, WAIT, || done.load(AtomicOrdering::SeqCst) > 0).await;
    running.shutdown().await;
    // Everything handed to a worker finished and was acked; the rest is back
    // in the queue. Nothing is lost and nothing is left unacked.
    let stats = t.queue_stats(&group).unwrap();
    let handled = done.load(AtomicOrdering::SeqCst) as usize;
    assert!(handled > 0);
    assert_eq!(stats.unacked, 0, "unsettled deliveries after shutdown");
    assert_eq!(stats.ready + handled, 50, "messages lost in shutdown");
}
