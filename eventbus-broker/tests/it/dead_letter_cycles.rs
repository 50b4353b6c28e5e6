//! Dead-lettering never drops work past a budget, and dead-letter cycles end like RabbitMQ's:
//! a message that would re-enter a queue it went through is dropped unless a rejection
//! happened in the cycle. Cycle scenarios run the same client code against RabbitMQ.

use crate::support::*;
use crate::teardown::{rabbitmq_url, unique};

/// `x-death` as (queue, reason, count), newest first.
fn deaths(props: &BasicProperties) -> Vec<(String, String, i64)> {
    let Some(h) = props.headers().clone() else {
        return Vec::new();
    };
    let Some(arr) = h.inner().get("x-death").and_then(|v| v.as_array()) else {
        return Vec::new();
    };
    let text = |t: &FieldTable, k: &str| match t.inner().get(k) {
        Some(AMQPValue::LongString(s)) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        other => format!("{other:?}"),
    };
    arr.as_slice()
        .iter()
        .map(|v| {
            let t = v.as_field_table().expect("x-death entry is a table");
            let count = match t.inner().get("count") {
                Some(AMQPValue::LongLongInt(n)) => *n,
                Some(AMQPValue::LongInt(n)) => i64::from(*n),
                other => panic!("count {other:?}"),
            };
            (text(t, "queue"), text(t, "reason"), count)
        })
        .collect()
}

fn d(q: &str, reason: &str, count: i64) -> (String, String, i64) {
    (q.to_owned(), reason.to_owned(), count)
}

async fn bind(ch: &Channel, q: &str, ex: &str, key: &str) {
    ch.queue_bind(
        ss(q),
        ss(ex),
        ss(key),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
}

async fn queue(ch: &Channel, q: &str, args: &[(&str, AMQPValue)]) {
    ch.queue_declare(ss(q), QueueDeclareOptions::default(), table(args))
        .await
        .unwrap();
}

async fn consumer(ch: &Channel, q: &str) -> lapin::Consumer {
    ch.basic_consume(
        ss(q),
        ss(""),
        BasicConsumeOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap()
}

async fn next(c: &mut lapin::Consumer) -> lapin::message::Delivery {
    timeout(c.next()).await.expect("consumer ended").unwrap()
}

async fn publish_confirmed(ch: &Channel, q: &str, body: &[u8]) {
    let confirm = ch
        .basic_publish(
            ss(""),
            ss(q),
            BasicPublishOptions::default(),
            body,
            BasicProperties::default(),
        )
        .await
        .unwrap();
    assert!(timeout(confirm).await.unwrap().is_ack());
}

#[tokio::test]
async fn nack_multiple_of_12000_dead_letters_all_of_them() {
    let b = TestBroker::start().await;
    let (_c, ch) = b.channel().await;
    ch.exchange_declare(
        ss("dlx"),
        ExchangeKind::Fanout,
        ExchangeDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    declare(&ch, "dead").await;
    bind(&ch, "dead", "dlx", "").await;
    queue(&ch, "work", &[("x-dead-letter-exchange", lstr("dlx"))]).await;
    const N: usize = 12_000;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    for i in 0..N {
        ch.basic_publish(
            ss(""),
            ss("work"),
            BasicPublishOptions::default(),
            i.to_string().as_bytes(),
            BasicProperties::default(),
        )
        .await
        .unwrap();
    }
    assert!(timeout(ch.wait_for_confirms()).await.unwrap().is_empty());
    let (_c2, cch) = b.channel().await;
    let mut c = consumer(&cch, "work").await;
    let mut last = None;
    for _ in 0..N {
        last = Some(next(&mut c).await);
    }
    last.unwrap()
        .nack(BasicNackOptions {
            multiple: true,
            requeue: false,
        })
        .await
        .unwrap();
    // a round trip on the same channel: the nack before it has been handled
    assert_eq!(count(&cch, "work").await, 0);
    assert_eq!(count(&cch, "dead").await, N as u32);
    // in order, none lost
    let (_c3, gch) = b.channel().await;
    for i in 0..N {
        let m = gch
            .basic_get(ss("dead"), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
            .expect("dead letter");
        assert_eq!(m.delivery.data, i.to_string().as_bytes());
    }
}

/// A and B dead-letter into each other on expiry; observers bound beside them see each hop.
async fn ttl_cycle_is_dropped(uri: &str) {
    let p = unique("dlcycle");
    let (dlx, a, b, obs_a, obs_b) = (
        format!("{p}-dlx"),
        format!("{p}-a"),
        format!("{p}-b"),
        format!("{p}-obs-a"),
        format!("{p}-obs-b"),
    );
    let conn = timeout(Connection::connect(uri, ConnectionProperties::default()))
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.exchange_declare(
        ss(&dlx),
        ExchangeKind::Direct,
        ExchangeDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let ttl = AMQPValue::LongInt(30);
    queue(
        &ch,
        &a,
        &[
            ("x-message-ttl", ttl.clone()),
            ("x-dead-letter-exchange", lstr(&dlx)),
            ("x-dead-letter-routing-key", lstr("to-b")),
        ],
    )
    .await;
    queue(
        &ch,
        &b,
        &[
            ("x-message-ttl", ttl),
            ("x-dead-letter-exchange", lstr(&dlx)),
            ("x-dead-letter-routing-key", lstr("to-a")),
        ],
    )
    .await;
    queue(&ch, &obs_a, &[]).await;
    queue(&ch, &obs_b, &[]).await;
    bind(&ch, &b, &dlx, "to-b").await;
    bind(&ch, &obs_b, &dlx, "to-b").await;
    bind(&ch, &a, &dlx, "to-a").await;
    bind(&ch, &obs_a, &dlx, "to-a").await;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    publish_confirmed(&ch, &a, b"m").await;

    let oc = conn.create_channel().await.unwrap();
    let mut hop1 = consumer(&oc, &obs_b).await;
    let m = next(&mut hop1).await;
    assert_eq!(deaths(&m.properties), vec![d(&a, "expired", 1)]);
    let mut hop2 = consumer(&oc, &obs_a).await;
    let m = next(&mut hop2).await;
    assert_eq!(
        deaths(&m.properties),
        vec![d(&b, "expired", 1), d(&a, "expired", 1)]
    );
    // B let it go, and A, which it already went through, did not take it back: dropped
    assert_eq!(count(&ch, &a).await, 0);
    assert_eq!(count(&ch, &b).await, 0);
    // the broker carries on
    publish_confirmed(&ch, &obs_a, b"after").await;
    assert_eq!(next(&mut hop2).await.data, b"after");
    for q in [&a, &b, &obs_a, &obs_b] {
        ch.queue_delete(ss(q), QueueDeleteOptions::default())
            .await
            .unwrap();
    }
    ch.exchange_delete(ss(&dlx), ExchangeDeleteOptions::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn ttl_dead_letter_cycle_runs_once_then_drops() {
    let b = TestBroker::start().await;
    ttl_cycle_is_dropped(&b.uri()).await;
    if let Some(url) = rabbitmq_url() {
        ttl_cycle_is_dropped(&url).await;
    }
}

/// A's consumer rejects; B holds the message for a TTL and sends it back to A: a rejection in
/// every round, so the cycle goes on.
async fn reject_cycle_keeps_going(uri: &str) {
    let p = unique("dlreject");
    let (dlx, a, b) = (format!("{p}-dlx"), format!("{p}-a"), format!("{p}-b"));
    let conn = timeout(Connection::connect(uri, ConnectionProperties::default()))
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.exchange_declare(
        ss(&dlx),
        ExchangeKind::Direct,
        ExchangeDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    queue(
        &ch,
        &a,
        &[
            ("x-dead-letter-exchange", lstr(&dlx)),
            ("x-dead-letter-routing-key", lstr("to-b")),
        ],
    )
    .await;
    queue(
        &ch,
        &b,
        &[
            ("x-message-ttl", AMQPValue::LongInt(30)),
            ("x-dead-letter-exchange", lstr(&dlx)),
            ("x-dead-letter-routing-key", lstr("to-a")),
        ],
    )
    .await;
    bind(&ch, &b, &dlx, "to-b").await;
    bind(&ch, &a, &dlx, "to-a").await;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    publish_confirmed(&ch, &a, b"m").await;
    let cch = conn.create_channel().await.unwrap();
    let mut c = consumer(&cch, &a).await;
    let mut seen = Vec::new();
    for round in 0..4 {
        let m = next(&mut c).await;
        seen.push(deaths(&m.properties));
        if round < 3 {
            m.reject(BasicRejectOptions { requeue: false })
                .await
                .unwrap();
        } else {
            m.ack(BasicAckOptions::default()).await.unwrap();
        }
    }
    assert_eq!(
        seen,
        vec![
            vec![],
            vec![d(&b, "expired", 1), d(&a, "rejected", 1)],
            vec![d(&b, "expired", 2), d(&a, "rejected", 2)],
            vec![d(&b, "expired", 3), d(&a, "rejected", 3)],
        ]
    );
    for q in [&a, &b] {
        ch.queue_delete(ss(q), QueueDeleteOptions::default())
            .await
            .unwrap();
    }
    ch.exchange_delete(ss(&dlx), ExchangeDeleteOptions::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn dead_letter_cycle_with_a_rejection_keeps_going() {
    let b = TestBroker::start().await;
    reject_cycle_keeps_going(&b.uri()).await;
    if let Some(url) = rabbitmq_url() {
        reject_cycle_keeps_going(&url).await;
    }
}

/// Two full `x-max-length` queues overflowing into each other: each overflow pushes out
/// another message, so only `x-death` ends the cascade (no budget any more). Multi-threaded
/// so that a broker stuck in a loop fails the test by timeout instead of hanging it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_length_overflow_cycle_terminates() {
    let b = TestBroker::start().await;
    let (_c, ch) = b.channel().await;
    for (q, other) in [("ovf-a", "ovf-b"), ("ovf-b", "ovf-a")] {
        queue(
            &ch,
            q,
            &[
                ("x-max-length", AMQPValue::LongInt(1)),
                ("x-dead-letter-exchange", lstr("")),
                ("x-dead-letter-routing-key", lstr(other)),
            ],
        )
        .await;
    }
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    for i in 0..20 {
        publish_confirmed(&ch, "ovf-a", i.to_string().as_bytes()).await;
    }
    // still answering, each queue at its limit
    assert_eq!(timeout(count(&ch, "ovf-a")).await, 1);
    assert_eq!(timeout(count(&ch, "ovf-b")).await, 1);
    let m = ch
        .basic_get(ss("ovf-a"), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .expect("newest message");
    assert_eq!(m.delivery.data, b"19");
}
