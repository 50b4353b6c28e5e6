//! A connection's teardown runs whatever ends its task (a `Drop` guard): a panicking task
//! still gives back its connection slot, its exclusive queues and its unacked messages; and a
//! dying consumer's unacked tail goes back to the front of its queue, in order, before the next
//! single-active consumer is served.

use eventbus_broker::fault::PANIC_QUEUE;

use crate::support::*;

/// RabbitMQ for side-by-side runs (`EVENTBUS_RABBITMQ_URL=off` skips it).
pub fn rabbitmq_url() -> Option<String> {
    let url = std::env::var("EVENTBUS_RABBITMQ_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned());
    (url != "off").then_some(url)
}

/// A queue name unique to this run (RabbitMQ is shared with other tests).
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}-{}", std::process::id(), fastrand::u64(..))
}

async fn connect(uri: &str) -> Connection {
    timeout(Connection::connect(uri, ConnectionProperties::default()))
        .await
        .unwrap()
}

async fn publish_confirmed(ch: &Channel, q: &str, bodies: impl IntoIterator<Item = String>) {
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    for b in bodies {
        ch.basic_publish(
            ss(""),
            ss(q),
            BasicPublishOptions::default(),
            b.as_bytes(),
            BasicProperties::default(),
        )
        .await
        .unwrap();
    }
    assert!(timeout(ch.wait_for_confirms()).await.unwrap().is_empty());
}

async fn consume(ch: &Channel, q: &str, tag: &str) -> lapin::Consumer {
    ch.basic_consume(
        ss(q),
        ss(tag),
        BasicConsumeOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap()
}

async fn next(c: &mut lapin::Consumer) -> lapin::message::Delivery {
    timeout(c.next()).await.expect("consumer ended").unwrap()
}

#[tokio::test]
async fn panicking_connection_task_is_still_torn_down() {
    let b = TestBroker::start_with(|c| c.max_connections = 2).await;
    let a = b.connect().await;
    let ach = a.create_channel().await.unwrap();
    ach.queue_declare(
        ss("mine"),
        QueueDeclareOptions {
            exclusive: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    declare(&ach, "work").await;
    publish_confirmed(&ach, "work", (0..5).map(|i| i.to_string())).await;
    let mut ac = consume(&ach, "work", "a").await;
    for i in 0..5 {
        assert_eq!(next(&mut ac).await.data, i.to_string().as_bytes());
    }
    // the second slot: a watcher, consuming the same queue
    let (_w, wch) = b.channel().await;
    let mut wc = consume(&wch, "work", "w").await;

    // a bug panics A's connection task
    let ach2 = a.create_channel().await.unwrap();
    let r = timeout(ach2.queue_declare(
        ss(PANIC_QUEUE),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    ))
    .await;
    assert!(r.is_err(), "the task was meant to panic");

    // its unacked messages come back, in order, flagged redelivered
    for i in 0..5 {
        let d = next(&mut wc).await;
        assert_eq!(d.data, i.to_string().as_bytes());
        assert!(d.redelivered);
        d.ack(BasicAckOptions::default()).await.unwrap();
    }
    // its connection slot is free (max_connections = 2) and its exclusive queue is gone
    let (_c, ch) = b.channel().await;
    ch.queue_declare(
        ss("mine"),
        QueueDeclareOptions {
            exclusive: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .expect("A's exclusive queue was released");
}

/// The active consumer of a single-active-consumer queue dies holding an unacked tail: the
/// next consumer gets that tail first, in order, then the rest.
async fn sac_handover_keeps_order(uri: &str, die: impl AsyncFnOnce(Connection)) {
    let q = unique("sac-handover");
    let c = connect(uri).await;
    let ch = c.create_channel().await.unwrap();
    ch.queue_declare(
        ss(&q),
        QueueDeclareOptions {
            auto_delete: false,
            ..Default::default()
        },
        table(&[("x-single-active-consumer", AMQPValue::Boolean(true))]),
    )
    .await
    .unwrap();
    publish_confirmed(&ch, &q, (0..10).map(|i| i.to_string())).await;

    let a = connect(uri).await;
    let ach = a.create_channel().await.unwrap();
    ach.basic_qos(3, BasicQosOptions::default()).await.unwrap();
    let mut ac = consume(&ach, &q, "a").await;
    let first = next(&mut ac).await;
    assert_eq!(first.data, b"0");
    first.ack(BasicAckOptions::default()).await.unwrap();
    // A holds 1, 2, 3 unacked
    for i in 1..4 {
        assert_eq!(next(&mut ac).await.data, i.to_string().as_bytes());
    }
    let w = connect(uri).await;
    let wch = w.create_channel().await.unwrap();
    let mut wc = consume(&wch, &q, "w").await;

    die(a).await;

    let mut got = Vec::new();
    for _ in 1..10 {
        let d = next(&mut wc).await;
        got.push((String::from_utf8(d.data.clone()).unwrap(), d.redelivered));
        d.ack(BasicAckOptions::default()).await.unwrap();
    }
    let want: Vec<(String, bool)> = (1..10).map(|i| (i.to_string(), i < 4)).collect();
    assert_eq!(got, want);
    ch.queue_delete(ss(&q), QueueDeleteOptions::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn sac_handover_after_connection_close_keeps_order() {
    let b = TestBroker::start().await;
    let close = async |a: Connection| a.close(200, ss("bye")).await.unwrap();
    sac_handover_keeps_order(&b.uri(), close).await;
    if let Some(url) = rabbitmq_url() {
        sac_handover_keeps_order(&url, close).await;
    }
}

#[tokio::test]
async fn sac_handover_after_connection_task_panic_keeps_order() {
    let b = TestBroker::start().await;
    sac_handover_keeps_order(&b.uri(), async |a: Connection| {
        let ch = a.create_channel().await.unwrap();
        let r = timeout(ch.queue_declare(
            ss(PANIC_QUEUE),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        ))
        .await;
        assert!(r.is_err(), "the task was meant to panic");
    })
    .await;
}
