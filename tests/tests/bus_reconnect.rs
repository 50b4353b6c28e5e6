//! An `EventBus` over AMQP survives a restart of the built-in broker (same
//! port, same data directory): the delivery it was handling when the broker
//! went away comes back flagged redelivered, and events published after the
//! restart are handled — the bus's consumer re-opens by itself, the
//! publisher reconnects on the next publish.

mod support;

use std::time::Duration;

use eventbus::testing::{envelope, unique, DELIVERY_TIMEOUT};
use eventbus::{handler_fn, Context, EventBus, HandlerConfig};
use support::{free_port, start_broker};
use tokio::sync::{mpsc, watch};

async fn next<T>(rx: &mut mpsc::UnboundedReceiver<T>, what: &str) -> T {
    tokio::time::timeout(DELIVERY_TIMEOUT, rx.recv())
        .await
        .unwrap_or_else(|_| panic!("{what}: not handled within {DELIVERY_TIMEOUT:?}"))
        .expect("handler gone")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bus_keeps_handling_across_a_broker_restart() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let broker = start_broker(dir.path(), port).await;
    let transport = broker.transport().await.unwrap();
    let (group, event) = (unique("g-restart"), unique("ev.restart"));
    let event: &'static str = event.leak();

    // The handler reports each delivery; one marked `x-hold` is held on its
    // first delivery until the test releases it (it is in flight, unacked,
    // while the broker goes down).
    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    let (release_tx, release) = watch::channel(false);
    let mut config = HandlerConfig::new(&group);
    config.concurrency = 2;
    let mut bus = EventBus::new(transport.clone());
    bus.register(handler_fn(config, vec![event], move |cx: Context| {
        let (seen_tx, mut release) = (seen_tx.clone(), release.clone());
        async move {
            let _ = seen_tx.send((cx.message_id(), cx.redelivered()));
            if cx.envelope().headers.get("x-hold").is_some() && !cx.redelivered() {
                tokio::time::timeout(DELIVERY_TIMEOUT, release.wait_for(|r| *r))
                    .await
                    .map_err(|_| "never released")??;
            }
            Ok(())
        }
    }));
    let bus = bus.start().await.unwrap();
    let publisher = bus.publisher();

    let before = envelope(event, Some("a"), 1);
    publisher.publish_envelope(&before).await.unwrap();
    assert_eq!(
        next(&mut seen, "before the restart").await,
        (before.id, false)
    );
    let held = envelope(event, Some("b"), 2).with_header("x-hold", "1");
    publisher.publish_envelope(&held).await.unwrap();
    assert_eq!(next(&mut seen, "held delivery").await, (held.id, false));

    // The broker goes away while `held` is being handled; its ack cannot
    // reach the broker any more.
    broker.shutdown().await;
    release_tx.send(true).unwrap();
    let broker = start_broker(dir.path(), port).await;

    // Publishing reconnects on the next attempt; retry like the relay does.
    let after = envelope(event, Some("a"), 3);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        match publisher.publish_envelope(&after).await {
            Ok(()) => break,
            Err(e) if tokio::time::Instant::now() < deadline => {
                eprintln!("publish after restart: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("publisher did not reconnect: {e}"),
        }
    }
    // Both come back through the bus's re-opened consumer, in either order.
    let mut got = vec![
        next(&mut seen, "after the restart").await,
        next(&mut seen, "after the restart").await,
    ];
    got.sort();
    let mut want = vec![(held.id, true), (after.id, false)];
    want.sort();
    assert_eq!(
        got, want,
        "after the restart: the unacked delivery must come back flagged redelivered \
         and the new event must be handled"
    );
    tokio::time::timeout(Duration::from_secs(30), bus.shutdown())
        .await
        .expect("shutdown drains");
    assert!(
        seen.try_recv().is_err(),
        "an event was handled more often than expected"
    );
    transport.close().await.unwrap();
    broker.shutdown().await;
}
