use std::time::Duration;

use crate::support::*;

#[tokio::test]
async fn queue_message_ttl_expires() {
    let b = TestBroker::start().await;
    let (_c, ch) = b.channel().await;
    ch.queue_declare(
        ss("ttlq"),
        QueueDeclareOptions::default(),
        table(&[("x-message-ttl", AMQPValue::LongInt(100))]),
    )
    .await
    .unwrap();
    publish(&ch, "", "ttlq", b"gone").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(get(&ch, "ttlq").await, None);
}

#[tokio::test]
async fn per_message_expiration() {
    let b = TestBroker::start().await;
    let (_c, ch) = b.channel().await;
    declare(&ch, "expq").await;
    publish_props(
        &ch,
        "",
        "expq",
        b"short",
        BasicProperties::default().with_expiration(ss("50")),
    )
    .await;
    publish_props(
        &ch,
        "",
        "expq",
        b"long",
        BasicProperties::default().with_expiration(ss("60000")),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(drain(&ch, "expq").await, vec!["long"]);
}

#[tokio::test]
async fn queue_expires_when_unused() {
    let b = TestBroker::start().await;
    let (_c, ch) = b.channel().await;
    ch.queue_declare(
        ss("idle"),
        QueueDeclareOptions::default(),
        table(&[("x-expires", AMQPValue::LongInt(100))]),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let err = ch
        .queue_declare(
            ss("idle"),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(reply_code(&err), Some(404));
}

#[tokio::test]
async fn max_length_drop_head() {
    let b = TestBroker::start().await;
    let (_c, ch) = b.channel().await;
    ch.queue_declare(
        ss("ml"),
        QueueDeclareOptions::default(),
        table(&[("x-max-length", AMQPValue::LongInt(3))]),
    )
    .await
    .unwrap();
    for i in 0..6 {
        publish(&ch, "", "ml", format!("{i}").as_bytes()).await;
    }
    assert_eq!(drain(&ch, "ml").await, vec!["3", "4", "5"]);
}

#[tokio::test]
async fn max_length_bytes() {
    let b = TestBroker::start().await;
    let (_c, ch) = b.channel().await;
    ch.queue_declare(
        ss("mlb"),
        QueueDeclareOptions::default(),
        table(&[("x-max-length-bytes", AMQPValue::LongInt(10))]),
    )
    .await
    .unwrap();
    for s in ["aaaa", "bbbb", "cccc"] {
        publish(&ch, "", "mlb", s.as_bytes()).await;
    }
    assert_eq!(drain(&ch, "mlb").await, vec!["bbbb", "cccc"]);
}
