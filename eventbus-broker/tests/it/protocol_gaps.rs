//! Protocol details that outside clients rely on: the empty queue name as
//! "the queue last declared on this channel" (AMQP 0-9-1 §1.7.2.1), and
//! `basic.qos` per consumer and per channel applying together.

use crate::support::*;

/// Publishes with a confirm, so the message is routed when this returns.
async fn publish_confirmed(ch: &Channel, exchange: &str, rk: &str, body: &[u8]) {
    ch.basic_publish(
        ss(exchange),
        ss(rk),
        BasicPublishOptions::default(),
        body,
        BasicProperties::default(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
}

#[tokio::test]
async fn empty_queue_name_means_the_last_declared_queue() {
    let b = TestBroker::start().await;
    let (_c, ch) = b.channel().await;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    // a server-named queue: the client never has to learn its name
    let q = declare(&ch, "").await;
    assert!(q.starts_with("amq.gen-"), "{q}");
    ch.queue_bind(
        ss(""),
        ss("amq.direct"),
        ss("k"),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    // queue and routing key both empty: the key is the queue's name
    ch.queue_bind(
        ss(""),
        ss("amq.direct"),
        ss(""),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    publish_confirmed(&ch, "amq.direct", "k", b"by key").await;
    publish_confirmed(&ch, "amq.direct", &q, b"by name").await;
    assert_eq!(get(&ch, "").await.as_deref(), Some("by key"));
    assert_eq!(count(&ch, &q).await, 1);
    publish_confirmed(&ch, "amq.direct", "k", b"more").await;
    let purged = ch
        .queue_purge(ss(""), QueuePurgeOptions::default())
        .await
        .unwrap();
    assert_eq!(purged, 2);
    publish_confirmed(&ch, "amq.direct", "k", b"consumed").await;
    let mut consumer = ch
        .basic_consume(
            ss(""),
            ss("c"),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let d = timeout(consumer.next()).await.unwrap().unwrap();
    assert_eq!(d.data, b"consumed");
    ch.basic_cancel(ss("c"), BasicCancelOptions::default())
        .await
        .unwrap();
    ch.queue_unbind(ss(""), ss("amq.direct"), ss("k"), FieldTable::default())
        .await
        .unwrap();
    publish_confirmed(&ch, "amq.direct", "k", b"unrouted").await;
    assert_eq!(count(&ch, &q).await, 0);
    let deleted = ch
        .queue_delete(ss(""), QueueDeleteOptions::default())
        .await
        .unwrap();
    assert_eq!(deleted, 0);
    // the named queue is gone
    let e = ch
        .basic_get(ss(""), BasicGetOptions::default())
        .await
        .unwrap_err();
    assert_eq!(reply_code(&e), Some(404), "{e}");
}

#[tokio::test]
async fn empty_queue_name_without_a_declared_queue_is_404() {
    let b = TestBroker::start().await;
    let c = b.connect().await;
    let ch = c.create_channel().await.unwrap();
    let e = ch
        .basic_get(ss(""), BasicGetOptions::default())
        .await
        .unwrap_err();
    assert_eq!(reply_code(&e), Some(404), "{e}");
    assert!(
        e.to_string().contains("no previously declared queue"),
        "{e}"
    );
    // a channel error: the connection and its other channels carry on
    let other = c.create_channel().await.unwrap();
    declare(&other, "still-fine").await;
}

/// `basic.qos` per consumer (global=false) and per channel (global=true)
/// on one channel: both limits apply, as in RabbitMQ.
#[tokio::test]
async fn per_consumer_and_per_channel_prefetch_combine() {
    let b = TestBroker::start().await;
    let (_c, ch) = b.channel().await;
    let (_c2, pubch) = b.channel().await;
    pubch
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    for q in ["qa", "qb"] {
        declare(&pubch, q).await;
        for i in 0..10 {
            publish_confirmed(&pubch, "", q, format!("{i}").as_bytes()).await;
        }
    }
    ch.basic_qos(2, BasicQosOptions { global: false })
        .await
        .unwrap();
    ch.basic_qos(3, BasicQosOptions { global: true })
        .await
        .unwrap();
    let mut a = ch
        .basic_consume(
            ss("qa"),
            ss("a"),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut first = Vec::new();
    for _ in 0..2 {
        first.push(timeout(a.next()).await.unwrap().unwrap());
    }
    let mut bc = ch
        .basic_consume(
            ss("qb"),
            ss("b"),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let from_b = timeout(bc.next()).await.unwrap().unwrap();
    // a: its own limit of 2; b: what is left of the channel's 3
    assert_eq!(count(&pubch, "qa").await, 8);
    assert_eq!(count(&pubch, "qb").await, 9);
    // an ack on b frees a channel slot; a is at its own limit: b takes it
    from_b.ack(BasicAckOptions::default()).await.unwrap();
    let b2 = timeout(bc.next()).await.unwrap().unwrap();
    assert_eq!(b2.data, b"1");
    assert_eq!(count(&pubch, "qa").await, 8);
    assert_eq!(count(&pubch, "qb").await, 8);
    // an ack on a: one more delivery, to a or b (both have room)
    first
        .remove(0)
        .ack(BasicAckOptions::default())
        .await
        .unwrap();
    let next = timeout(async {
        tokio::select! {
            d = a.next() => d,
            d = bc.next() => d,
        }
    })
    .await;
    assert_eq!(next.unwrap().unwrap().data, b"2");
    assert_eq!(count(&pubch, "qa").await + count(&pubch, "qb").await, 15);
}
