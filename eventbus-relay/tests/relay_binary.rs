//! The `eventbus-relay` binary end to end: events committed to a SQLite
//! outbox are published, in order and confirmed, to the built-in broker
//! (started in-process here), and removed from the outbox; SIGTERM stops the
//! relay cleanly. A transport that keeps nothing (`memory:`) is refused
//! before a single row is touched.

use std::process::{Command, Stdio};
use std::time::Duration;

use eventbus_core::outbox::Outbox;
use eventbus_core::testing::{envelope, expect_delivery, unique};
use eventbus_core::transport::amqp::AmqpTransport;
use eventbus_core::{Subscriber, SubscriptionSpec};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_binary_moves_committed_events_to_the_broker() {
    let dir = tempfile::tempdir().unwrap();
    let config = eventbus_broker::Config {
        amqp_listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().join("broker"),
        ..Default::default()
    };
    let broker = eventbus_broker::Broker::start(config).await.unwrap();
    let amqp_url = format!("amqp://guest:guest@{}/%2f", broker.amqp_addr());

    // The consumer side exists first, so the group queue is bound.
    let transport = AmqpTransport::connect(&amqp_url).await.unwrap();
    let (group, event) = (unique("relay-bin"), unique("ev.relay-bin"));
    let mut sub = transport
        .subscribe(SubscriptionSpec::new(&group, [event.as_str()]))
        .await
        .unwrap();

    let db = dir.path().join("app.db");
    let pool = SqlitePoolOptions::new()
        .connect_with(
            SqliteConnectOptions::new()
                .filename(&db)
                .create_if_missing(true),
        )
        .await
        .unwrap();
    let outbox = Outbox::sqlite(pool.clone());
    outbox.migrate().await.unwrap();
    let sent: Vec<_> = (0..50)
        .map(|n| envelope(&event, Some(&format!("k{}", n % 5)), n))
        .collect();
    let mut tx = pool.begin().await.unwrap();
    outbox.add_envelopes(&mut *tx, &sent).await.unwrap();
    tx.commit().await.unwrap();
    // A rolled-back transaction's events are never published.
    let mut rolled_back = pool.begin().await.unwrap();
    outbox
        .add_envelopes(&mut *rolled_back, &[envelope(&event, None, 999)])
        .await
        .unwrap();
    rolled_back.rollback().await.unwrap();

    let mut relay = Command::new(env!("CARGO_BIN_EXE_eventbus-relay"))
        .arg("--database-url")
        .arg(format!("sqlite://{}", db.display()))
        .arg("--transport-url")
        .arg(&amqp_url)
        .arg("--poll-ms")
        .arg("100")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn eventbus-relay");

    for e in &sent {
        let d = expect_delivery(&mut sub, "relayed event").await;
        assert_eq!(d.envelope.id, e.id, "relayed out of order or changed");
        assert_eq!(
            *d.envelope, *e,
            "envelope changed on its way through the relay"
        );
        d.ack().await.unwrap();
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while outbox.backlog().await.unwrap() > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "outbox not emptied after publishing"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eventbus_core::testing::expect_quiet(&mut sub, "rolled-back event must not be published").await;

    // SIGTERM: the relay stops by itself.
    let pid = relay.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = relay.try_wait().unwrap() {
            assert!(status.success(), "relay exited with {status} on SIGTERM");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "relay ignored SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    transport.close().await.unwrap();
    broker.shutdown().await;
}

/// `--transport-url memory:` would "publish" every row into a transport that
/// nobody outside the relay's own process can consume, then delete it from
/// the outbox: the relay refuses it, says why and what to use instead,
/// exits non-zero, and leaves every row where it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_binary_refuses_the_memory_transport() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let pool = SqlitePoolOptions::new()
        .connect_with(
            SqliteConnectOptions::new()
                .filename(&db)
                .create_if_missing(true),
        )
        .await
        .unwrap();
    let outbox = Outbox::sqlite(pool.clone());
    outbox.migrate().await.unwrap();
    let event = unique("ev.relay-memory");
    let rows: Vec<_> = (0..10).map(|n| envelope(&event, Some("k"), n)).collect();
    let mut tx = pool.begin().await.unwrap();
    outbox.add_envelopes(&mut *tx, &rows).await.unwrap();
    tx.commit().await.unwrap();

    for url in ["memory:", "memory://"] {
        let child = Command::new(env!("CARGO_BIN_EXE_eventbus-relay"))
            .arg("--database-url")
            .arg(format!("sqlite://{}", db.display()))
            .arg("--transport-url")
            .arg(url)
            .arg("--poll-ms")
            .arg("10")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn eventbus-relay");
        let pid = child.id().to_string();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait_with_output());
        });
        let output = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(output) => output.unwrap(),
            Err(_) => {
                let _ = Command::new("kill").args(["-KILL", &pid]).status();
                panic!("eventbus-relay ran with --transport-url {url} instead of refusing it");
            }
        };
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(
            output.status.code(),
            Some(2),
            "exit status for {url}; stderr: {stderr}"
        );
        assert!(
            stderr.contains("memory transport") && stderr.contains("keeps nothing"),
            "the error says why: {stderr}"
        );
        assert!(
            stderr.contains("--transport-url amqp://"),
            "the error says what to use instead: {stderr}"
        );
        assert_eq!(
            outbox.backlog().await.unwrap(),
            rows.len() as u64,
            "no outbox row drained"
        );
    }
}
