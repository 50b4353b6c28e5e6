use crate::support::*;

#[tokio::test]
async fn passive_declare_missing_is_404_and_channel_closes() {
    let b = TestBroker::start().await;
    let (conn, ch) = b.channel().await;
    let err = ch
        .queue_declare(
            ss("missing"),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(reply_code(&err), Some(404));
    assert!(!ch.status().connected());
    // the connection survives a channel error
    let ch2 = conn.create_channel().await.unwrap();
    declare(&ch2, "fine").await;
}

#[tokio::test]
async fn inequivalent_redeclare_is_406() {
    let b = TestBroker::start().await;
    let (_c, ch) = b.channel().await;
    declare(&ch, "eq").await;
    let err = ch
        .queue_declare(
            ss("eq"),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(reply_code(&err), Some(406));
    let (_c, ch) = b.channel().await;
    ch.exchange_declare(
        ss("ex"),
        ExchangeKind::Direct,
        ExchangeDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let err = ch
        .exchange_declare(
            ss("ex"),
            ExchangeKind::Fanout,
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(reply_code(&err), Some(406));
}

#[tokio::test]
async fn publish_to_missing_exchange_is_404() {
    let b = TestBroker::start().await;
    let (_c, ch) = b.channel().await;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let res = ch
        .basic_publish(
            ss("nope"),
            ss("k"),
            BasicPublishOptions::default(),
            b"x",
            BasicProperties::default(),
        )
        .await;
    let err = match res {
        Ok(c) => c.await.unwrap_err(),
        Err(e) => e,
    };
    assert_eq!(reply_code(&err), Some(404));
}

#[tokio::test]
async fn delete_if_empty_and_if_unused() {
    let b = TestBroker::start().await;
    let (_c, ch) = b.channel().await;
    declare(&ch, "del").await;
    publish(&ch, "", "del", b"x").await;
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let err = ch
        .queue_delete(
            ss("del"),
            QueueDeleteOptions {
                if_empty: true,
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(reply_code(&err), Some(406));
    let (_c, ch) = b.channel().await;
    let _consumer = ch
        .basic_consume(
            ss("del"),
            ss("c"),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let (_c2, ch2) = b.channel().await;
    let err = ch2
        .queue_delete(
            ss("del"),
            QueueDeleteOptions {
                if_unused: true,
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(reply_code(&err), Some(406));
    let (_c3, ch3) = b.channel().await;
    ch3.queue_delete(ss("del"), QueueDeleteOptions::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn purge_returns_count() {
    let b = TestBroker::start().await;
    let (_c, ch) = b.channel().await;
    declare(&ch, "pur").await;
    for _ in 0..7 {
        publish(&ch, "", "pur", b"x").await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert_eq!(
        ch.queue_purge(ss("pur"), QueuePurgeOptions::default())
            .await
            .unwrap(),
        7
    );
}

#[tokio::test]
async fn double_ack_is_406() {
    let b = TestBroker::start().await;
    let (_c, ch) = b.channel().await;
    declare(&ch, "dbl").await;
    publish(&ch, "", "dbl", b"x").await;
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let m = ch
        .basic_get(ss("dbl"), BasicGetOptions::default())
        .await
        .unwrap()
        .unwrap();
    ch.basic_ack(m.delivery.delivery_tag, BasicAckOptions::default())
        .await
        .unwrap();
    ch.basic_ack(m.delivery.delivery_tag, BasicAckOptions::default())
        .await
        .unwrap();
    // the error arrives asynchronously as a channel close
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert!(!ch.status().connected());
}

#[tokio::test]
async fn message_size_limit_is_406() {
    let b = TestBroker::start_with(|c| c.max_message_size = 1000).await;
    let (_c, ch) = b.channel().await;
    declare(&ch, "small").await;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let res = ch
        .basic_publish(
            ss(""),
            ss("small"),
            BasicPublishOptions::default(),
            &[0u8; 2000],
            BasicProperties::default(),
        )
        .await;
    let err = match res {
        Ok(c) => c.await.unwrap_err(),
        Err(e) => e,
    };
    assert_eq!(reply_code(&err), Some(406));
}

#[tokio::test]
async fn channel_max_is_enforced() {
    let b = TestBroker::start_with(|c| c.channel_max = 3).await;
    let conn = b.connect().await;
    let mut keep = Vec::new();
    for _ in 0..3 {
        keep.push(conn.create_channel().await.unwrap());
    }
    // lapin honours the negotiated channel_max itself; the server side is covered in tests/wire
    assert!(conn.create_channel().await.is_err());
}

#[tokio::test]
async fn connection_limit_is_530() {
    let b = TestBroker::start_with(|c| c.max_connections = 2).await;
    let _a = b.connect().await;
    let _b = b.connect().await;
    let err = Connection::connect(&b.uri(), ConnectionProperties::default())
        .await
        .unwrap_err();
    assert_eq!(reply_code(&err), Some(530));
    drop(_a);
}

#[tokio::test]
async fn reserved_names_are_403() {
    let b = TestBroker::start().await;
    let (_c, ch) = b.channel().await;
    let err = ch
        .queue_declare(
            ss("amq.mine"),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(reply_code(&err), Some(403));
    let (_c, ch) = b.channel().await;
    let err = ch
        .exchange_declare(
            ss("amq.mine"),
            ExchangeKind::Direct,
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(reply_code(&err), Some(403));
    let (_c, ch) = b.channel().await;
    // redeclaring an existing amq.* exchange with the same properties is fine (as in RabbitMQ)
    ch.exchange_declare(
        ss("amq.direct"),
        ExchangeKind::Direct,
        ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
}
