//! Failures that stall nothing: a message waiting for its retry parks only
//! its own key, permanent errors are dead-lettered at once, shutdown has a
//! deadline and returns what it holds, and what a handler publishes has
//! ids derived from its cause (so a retry republishes the same ids).
//!
//! Time is tokio's paused clock: a backoff of an hour passes only when
//! every task waits, so "handled before the backoff ran out" is checked
//! exactly, not by luck.

#[path = "support/bus.rs"]
mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use eventbus_core::testing::{envelope, expect_delivery, unique};
use eventbus_core::{
    handler_fn, header, Context, Event, EventBus, EventPublisher, HandleError, HandlerConfig,
    MemoryTransport, Publisher, Subscriber,
};
use serde::{Deserialize, Serialize};
use support::{config, count, counted, leak, n_of, setup, wait_until, Setup};
use tokio::sync::Notify;
use tokio::time::Instant;

const HOUR: Duration = Duration::from_secs(3600);

/// Waits for a handler's `notify_one` on `signal`; fails after `limit`.
async fn signalled(signal: &Notify, limit: Duration) {
    tokio::time::timeout(limit, signal.notified())
        .await
        .unwrap_or_else(|_| panic!("handler not reached in {limit:?}"));
}

#[tokio::test(start_paused = true)]
async fn a_failing_key_parks_only_itself() {
    let Setup {
        t,
        mut bus,
        group,
        event,
    } = setup();
    // (key, n, clock when handled, attempt)
    let seen = Arc::new(Mutex::new(Vec::<(String, u64, Instant, u32)>::new()));
    let s = seen.clone();
    // One worker: without parking, the bad key's backoff would hold every key.
    bus.register(handler_fn(
        config(&group, 3, HOUR),
        vec![event],
        move |cx| {
            let s = s.clone();
            async move {
                let key = cx.key().unwrap().to_owned();
                let n = n_of(&cx);
                s.lock()
                    .unwrap()
                    .push((key.clone(), n, Instant::now(), cx.attempt()));
                if key == "bad" && n == 0 {
                    Err("poison".into())
                } else {
                    Ok(())
                }
            }
        },
    ));
    let running = bus.start().await.unwrap();
    let t0 = Instant::now();
    t.publish(&envelope(event, Some("bad"), 0)).await.unwrap();
    for n in 1..=1000u64 {
        let key = format!("k{}", n % 100);
        t.publish(&envelope(event, Some(&key), n)).await.unwrap();
        if n % 250 == 0 {
            // Later events of the failing key wait behind it.
            t.publish(&envelope(event, Some("bad"), n)).await.unwrap();
        }
    }
    let healthy = |v: &Vec<(String, u64, Instant, u32)>| v.iter().filter(|e| e.0 != "bad").count();
    wait_until(&t, Duration::from_secs(60), || {
        healthy(&seen.lock().unwrap()) == 1000
    })
    .await;
    {
        let v = seen.lock().unwrap();
        assert!(
            v.iter().all(|e| e.0 == "bad" || e.2 == t0),
            "healthy keys waited for the failing key's backoff"
        );
        let bad: Vec<_> = v.iter().filter(|e| e.0 == "bad").collect();
        assert_eq!(
            bad.len(),
            1,
            "the failing key went on before its retry: {bad:?}"
        );
    }
    // The poison message is dead-lettered after 3 attempts an hour apart;
    // then the failing key's later events run, in order.
    let mut dlq = t.subscribe_dead_letters(&group, 8).await.unwrap();
    let dead = tokio::time::timeout(3 * HOUR, dlq.next())
        .await
        .expect("no dead letter within 3 h")
        .unwrap()
        .unwrap();
    assert_eq!(
        dead.envelope.headers.get(header::DEAD_LETTER_ATTEMPTS),
        Some("3")
    );
    wait_until(&t, 3 * HOUR, || {
        seen.lock().unwrap().iter().filter(|e| e.0 == "bad").count() == 7
    })
    .await;
    let v = seen.lock().unwrap().clone();
    let bad: Vec<_> = v.iter().filter(|e| e.0 == "bad").collect();
    let order: Vec<(u64, u32)> = bad.iter().map(|e| (e.1, e.3)).collect();
    assert_eq!(
        order,
        vec![
            (0, 1),
            (0, 2),
            (0, 3),
            (250, 1),
            (500, 1),
            (750, 1),
            (1000, 1)
        ]
    );
    assert!(
        bad[1].2 - t0 >= HOUR && bad[2].2 - t0 >= 2 * HOUR,
        "backoff kept"
    );
    running.shutdown().await;
    let stats = t.queue_stats(&group).unwrap();
    assert_eq!((stats.ready, stats.unacked), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn unkeyed_retries_park_alone() {
    let Setup {
        t,
        mut bus,
        group,
        event,
    } = setup();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    bus.register(handler_fn(
        config(&group, 2, HOUR),
        vec![event],
        move |cx| {
            let s = s.clone();
            async move {
                let n = n_of(&cx);
                s.lock().unwrap().push((n, cx.attempt()));
                if n == 0 && cx.attempt() == 1 {
                    Err("once".into())
                } else {
                    Ok(())
                }
            }
        },
    ));
    let running = bus.start().await.unwrap();
    for n in 0..3 {
        t.publish(&envelope(event, None, n)).await.unwrap();
    }
    wait_until(&t, 2 * HOUR, || seen.lock().unwrap().len() == 4).await;
    assert_eq!(*seen.lock().unwrap(), vec![(0, 1), (1, 1), (2, 1), (0, 2)]);
    running.shutdown().await;
}

#[tokio::test]
async fn permanent_errors_are_dead_lettered_at_once() {
    let Setup {
        t,
        mut bus,
        group,
        event,
    } = setup();
    let (handler, calls) = counted(config(&group, 5, HOUR), event, |_cx, _n| async {
        Err(HandleError::permanent("unknown product p-9"))
    });
    bus.register(handler);
    let running = bus.start().await.unwrap();
    t.publish(&envelope(event, Some("k"), 1)).await.unwrap();
    let mut dlq = t.subscribe_dead_letters(&group, 8).await.unwrap();
    let dead = expect_delivery(&mut dlq, "dead letter").await;
    running.shutdown().await;
    assert_eq!(count(&calls), 1, "retried a permanent error");
    let h = &dead.envelope.headers;
    assert_eq!(h.get(header::DEAD_LETTER_REASON), Some("permanent"));
    assert_eq!(h.get(header::DEAD_LETTER_ATTEMPTS), Some("1"));
    assert!(h
        .get(header::DEAD_LETTER_ERROR)
        .unwrap()
        .contains("unknown product p-9"));
}

#[tokio::test(start_paused = true)]
async fn shutdown_returns_parked_messages() {
    let Setup {
        t,
        mut bus,
        group,
        event,
    } = setup();
    let called = Arc::new(Notify::new());
    let n = called.clone();
    let (handler, calls) = counted(config(&group, 5, HOUR), event, move |_cx, _| {
        n.notify_one();
        async { Err("down".into()) }
    });
    bus.register(handler);
    let running = bus.start().await.unwrap();
    t.publish(&envelope(event, Some("k"), 1)).await.unwrap();
    t.publish(&envelope(event, Some("k"), 2)).await.unwrap();
    signalled(&called, Duration::from_secs(1)).await;
    let before = Instant::now();
    running.shutdown().await;
    assert!(
        Instant::now() - before < HOUR,
        "shutdown waited for the backoff"
    );
    let stats = t.queue_stats(&group).unwrap();
    assert_eq!(
        (stats.ready, stats.unacked),
        (2, 0),
        "parked messages not returned"
    );
    assert_eq!(count(&calls), 1);
}

#[tokio::test(start_paused = true)]
async fn shutdown_deadline_abandons_a_stuck_handler() {
    let Setup {
        t,
        mut bus,
        group,
        event,
    } = setup();
    let mut c = config(&group, 5, HOUR);
    c.timeout = None;
    let started = Arc::new(Notify::new());
    let s = started.clone();
    bus.shutdown_timeout(Duration::from_secs(5));
    bus.register(handler_fn(c, vec![event], move |_cx| {
        let s = s.clone();
        async move {
            s.notify_one();
            std::future::pending::<()>().await;
            Ok(())
        }
    }));
    let running = bus.start().await.unwrap();
    t.publish(&envelope(event, Some("k"), 1)).await.unwrap();
    signalled(&started, Duration::from_secs(1)).await;
    let before = Instant::now();
    running.shutdown().await;
    let took = Instant::now() - before;
    assert!(
        took >= Duration::from_secs(5) && took < Duration::from_secs(6),
        "took {took:?}"
    );
    let stats = t.queue_stats(&group).unwrap();
    assert_eq!(
        (stats.ready, stats.unacked),
        (1, 0),
        "abandoned message not returned"
    );
}

#[derive(Debug, Event, Serialize, Deserialize)]
#[event(name = "test.failures.order-placed", key = "order")]
struct OrderPlaced {
    order: String,
}

#[derive(Debug, Event, Serialize, Deserialize)]
#[event(name = "test.failures.stock-reserved", key = "order")]
struct StockReserved {
    order: String,
    line: u32,
}

#[tokio::test(start_paused = true)]
async fn a_retried_handler_republishes_the_same_ids_with_its_cause() {
    let t = MemoryTransport::new();
    let group = unique("inventory");
    let publisher = Arc::new(Mutex::new(None::<EventPublisher>));
    let p = publisher.clone();
    let mut bus = EventBus::new(t.clone());
    bus.register(handler_fn(
        config(&group, 3, Duration::from_millis(10)),
        vec![OrderPlaced::NAME],
        move |cx| {
            let p = p.lock().unwrap().clone().unwrap();
            async move {
                let e: OrderPlaced = cx.envelope().decode()?;
                for line in 0..2 {
                    p.publish(&StockReserved {
                        order: e.order.clone(),
                        line,
                    })
                    .await?;
                }
                if cx.attempt() == 1 {
                    return Err("lost the database connection after publishing".into());
                }
                Ok(())
            }
        },
    ));
    // Publications of the handler, observed downstream.
    let mut downstream = t
        .subscribe(eventbus_core::SubscriptionSpec::new(
            unique("downstream"),
            [StockReserved::NAME],
        ))
        .await
        .unwrap();
    *publisher.lock().unwrap() = Some(bus.publisher());
    let running = bus.start().await.unwrap();
    let cause = running
        .publish(&OrderPlaced {
            order: "o-1".into(),
        })
        .await
        .unwrap();
    let mut got = Vec::new();
    for _ in 0..4 {
        let d = expect_delivery(&mut downstream, "published by the handler").await;
        got.push((*d.envelope).clone());
        d.ack().await.unwrap();
    }
    running.shutdown().await;
    assert_eq!(
        got[0].id, got[2].id,
        "first publication's id changed on retry"
    );
    assert_eq!(
        got[1].id, got[3].id,
        "second publication's id changed on retry"
    );
    assert_ne!(got[0].id, got[1].id);
    assert_ne!(got[0].id, cause.id);
    for e in &got {
        assert_eq!(
            e.headers.causation_id(),
            Some(cause.id.to_string().as_str())
        );
        assert_eq!(
            e.headers.correlation_id(),
            Some(cause.id.to_string().as_str())
        );
    }
    // Outside a handler, ids are fresh.
    let a = eventbus_core::Envelope::from_event(&OrderPlaced { order: "x".into() }).unwrap();
    let b = eventbus_core::Envelope::from_event(&OrderPlaced { order: "x".into() }).unwrap();
    assert_ne!(a.id, b.id);
    assert!(a.headers.causation_id().is_none());
}

#[derive(Debug, Event, Serialize, Deserialize)]
#[event(name = "test.failures.versioned", version = 2)]
struct Versioned {
    n: u32,
}

#[tokio::test(start_paused = true)]
async fn a_newer_payload_version_is_dead_lettered_with_the_reason() {
    use eventbus_core::testing::TestBus;
    #[derive(eventbus_core::Handler)]
    #[handler(group = "versioned", events(Versioned))]
    struct H;
    impl eventbus_core::Handle<Versioned> for H {
        async fn handle(
            &self,
            _e: Versioned,
            _cx: &Context,
        ) -> Result<(), eventbus_core::BoxError> {
            Ok(())
        }
    }
    let mut t = TestBus::new();
    t.register(H);
    let t = t.start().await;
    let mut newer = eventbus_core::Envelope::from_event(&Versioned { n: 1 }).unwrap();
    newer.version = 3;
    t.publish_envelope(&newer).await;
    t.publish(&Versioned { n: 2 }).await;
    t.run_until_idle().await;
    let dead = t.dead_letters("versioned");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].id, newer.id);
    assert_eq!(
        dead[0].headers.get(header::DEAD_LETTER_REASON),
        Some("decode")
    );
    assert!(dead[0]
        .headers
        .get(header::DEAD_LETTER_ERROR)
        .unwrap()
        .contains("version 3"));
    assert_eq!(t.handled::<Versioned>("versioned").len(), 1);
    assert_eq!(
        t.attempts("versioned").len(),
        2,
        "the bad version was retried"
    );
    t.shutdown().await;
}

/// A memory transport that refuses to subscribe one group.
struct RefuseGroup {
    inner: MemoryTransport,
    refused: String,
}

#[async_trait::async_trait]
impl Publisher for RefuseGroup {
    async fn publish(
        &self,
        e: &eventbus_core::Envelope,
    ) -> Result<(), eventbus_core::TransportError> {
        self.inner.publish(e).await
    }
}

#[async_trait::async_trait]
impl Subscriber for RefuseGroup {
    async fn subscribe(
        &self,
        spec: eventbus_core::SubscriptionSpec,
    ) -> Result<eventbus_core::Subscription, eventbus_core::TransportError> {
        if spec.group == self.refused {
            return Err(eventbus_core::TransportError::Rejected(
                "ACCESS_REFUSED - no configure permission".into(),
            ));
        }
        self.inner.subscribe(spec).await
    }
    async fn subscribe_dead_letters(
        &self,
        group: &str,
        prefetch: u16,
    ) -> Result<eventbus_core::Subscription, eventbus_core::TransportError> {
        self.inner.subscribe_dead_letters(group, prefetch).await
    }
}

#[tokio::test]
async fn a_failed_start_stops_the_groups_it_started() {
    let t = MemoryTransport::new();
    let (first, second, event) = (unique("g1"), unique("g2"), leak(unique("ev")));
    let mut bus = EventBus::new(RefuseGroup {
        inner: t.clone(),
        refused: second.clone(),
    });
    bus.register(handler_fn(
        HandlerConfig::new(&first),
        vec![event],
        |_cx| async { Ok(()) },
    ));
    bus.register(handler_fn(
        HandlerConfig::new(&second),
        vec![event],
        |_cx| async { Ok(()) },
    ));
    let err = bus.start().await.expect_err("start succeeded");
    let text = err.to_string();
    assert!(
        text.contains(&second) && text.contains("ACCESS_REFUSED"),
        "{text}"
    );
    // The first group was subscribed, then released again.
    let stats = t.queue_stats(&first).expect("first group was subscribed");
    assert_eq!(
        stats.consumers, 0,
        "first group still consumed after a failed start"
    );
}

#[tokio::test(start_paused = true)]
async fn run_until_idle_waits_through_retry_backoffs() {
    use eventbus_core::testing::TestBus;
    let (group, event) = (unique("g-idle"), leak(unique("ev.idle")));
    let mut t = TestBus::new();
    t.idle_timeout(3 * HOUR);
    t.register(handler_fn(
        config(&group, 3, HOUR),
        vec![event],
        |cx: Context| async move {
            if cx.attempt() < 3 {
                Err("not yet".into())
            } else {
                Ok(())
            }
        },
    ));
    let t = t.start().await;
    let before = Instant::now();
    t.publish_envelope(&envelope(event, Some("k"), 1)).await;
    t.run_until_idle().await;
    let results: Vec<_> = t.attempts(&group).into_iter().map(|a| a.result).collect();
    assert_eq!(
        results,
        vec![
            Some(Err("handler failed: not yet".to_owned())),
            Some(Err("handler failed: not yet".to_owned())),
            Some(Ok(()))
        ]
    );
    let took = Instant::now() - before;
    assert!(
        took >= 2 * HOUR && took < 2 * HOUR + Duration::from_secs(1),
        "two backoffs of an hour on the paused clock took {took:?}"
    );
    t.shutdown().await;
}

#[tokio::test(start_paused = true)]
#[should_panic(expected = "test bus not idle after 60s: 1 message(s) unsettled")]
async fn run_until_idle_fails_when_a_handler_never_finishes() {
    use eventbus_core::testing::TestBus;
    let (group, event) = (unique("g-stuck"), leak(unique("ev.stuck")));
    let mut c = config(&group, 1, HOUR);
    c.timeout = None;
    let mut t = TestBus::new();
    t.register(handler_fn(c, vec![event], |_cx: Context| async move {
        std::future::pending::<()>().await;
        Ok(())
    }));
    let t = t.start().await;
    t.publish_envelope(&envelope(event, Some("k"), 1)).await;
    t.run_until_idle().await;
}

#[tokio::test(start_paused = true)]
async fn wait_idle_wakes_on_the_settlement_itself() {
    let Setup {
        t,
        mut bus,
        group,
        event,
    } = setup();
    const BACKOFF: Duration = Duration::from_secs(600);
    bus.register(handler_fn(
        config(&group, 2, BACKOFF),
        vec![event],
        |cx: Context| async move {
            if cx.attempt() == 1 {
                Err("later".into())
            } else {
                Ok(())
            }
        },
    ));
    let running = bus.start().await.unwrap();
    let before = Instant::now();
    t.publish(&envelope(event, Some("k"), 1)).await.unwrap();
    running.wait_idle(2 * BACKOFF).await.unwrap();
    // Woken by the ack after the retry (on the paused clock the time
    // stands still from there), not by a poll some milliseconds later.
    assert_eq!(Instant::now() - before, BACKOFF);
    assert_eq!(t.pending(), 0);
    running.shutdown().await;
}
