use crate::support::*;

#[tokio::test]
async fn publisher_confirms_ack_every_message() {
    let b = TestBroker::start().await;
    let (_c, ch) = b.channel().await;
    let q = declare(&ch, "confirmed").await;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    for i in 0..500 {
        ch.basic_publish(
            ss(""),
            ss(&q),
            BasicPublishOptions::default(),
            format!("{i}").as_bytes(),
            BasicProperties::default(),
        )
        .await
        .unwrap();
    }
    let returned = timeout(ch.wait_for_confirms()).await.unwrap();
    assert!(returned.is_empty());
    let info = ch
        .queue_declare(
            ss(&q),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    assert_eq!(info.message_count(), 500);
}

#[tokio::test]
async fn reject_publish_overflow_nacks() {
    let b = TestBroker::start().await;
    let (_c, ch) = b.channel().await;
    ch.queue_declare(
        ss("bounded"),
        QueueDeclareOptions::default(),
        table(&[
            ("x-max-length", AMQPValue::LongInt(2)),
            ("x-overflow", lstr("reject-publish")),
        ]),
    )
    .await
    .unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let mut acks = Vec::new();
    for i in 0..3 {
        let c = ch
            .basic_publish(
                ss(""),
                ss("bounded"),
                BasicPublishOptions::default(),
                format!("{i}").as_bytes(),
                BasicProperties::default(),
            )
            .await
            .unwrap()
            .await
            .unwrap();
        acks.push(c.is_ack());
    }
    assert_eq!(acks, vec![true, true, false]);
    assert_eq!(drain(&ch, "bounded").await, vec!["0", "1"]);
}
