use crate::support::*;

#[tokio::test]
async fn publish_get_roundtrip() {
    let b = TestBroker::start().await;
    let (_c, ch) = b.channel().await;
    let q = declare(&ch, "hello").await;
    assert_eq!(get(&ch, &q).await, None);
    publish(&ch, "", &q, b"world").await;
    assert_eq!(get_wait(&ch, &q).await.as_deref(), Some("world"));
}

#[tokio::test]
async fn consume_and_ack() {
    let b = TestBroker::start().await;
    let (_c, ch) = b.channel().await;
    let q = declare(&ch, "work").await;
    for i in 0..100 {
        publish(&ch, "", &q, format!("m{i}").as_bytes()).await;
    }
    let mut consumer = ch
        .basic_consume(
            ss(&q),
            ss(""),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    for i in 0..100 {
        let d = timeout(consumer.next()).await.unwrap().unwrap();
        assert_eq!(d.data, format!("m{i}").as_bytes());
        assert!(!d.redelivered);
        d.ack(BasicAckOptions::default()).await.unwrap();
    }
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
    assert_eq!(info.message_count(), 0);
}

#[tokio::test]
async fn large_body_is_split_into_frames() {
    let b = TestBroker::start().await;
    let (_c, ch) = b.channel().await;
    let q = declare(&ch, "big").await;
    let body: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    publish(&ch, "", &q, &body).await;
    let m = ch
        .basic_get(ss(&q), BasicGetOptions { no_ack: true })
        .await
        .unwrap();
    let m = match m {
        Some(m) => m,
        None => {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            ch.basic_get(ss(&q), BasicGetOptions { no_ack: true })
                .await
                .unwrap()
                .unwrap()
        }
    };
    assert_eq!(m.delivery.data, body);
}

#[tokio::test]
async fn properties_roundtrip() {
    let b = TestBroker::start().await;
    let (_c, ch) = b.channel().await;
    let q = declare(&ch, "props").await;
    let props = BasicProperties::default()
        .with_content_type(ss("application/json"))
        .with_correlation_id(ss("abc"))
        .with_reply_to(ss("replies"))
        .with_headers(table(&[("k", lstr("v")), ("n", AMQPValue::LongInt(5))]))
        .with_delivery_mode(2);
    publish_props(&ch, "", &q, b"{}", props.clone()).await;
    let m = loop {
        if let Some(m) = ch
            .basic_get(ss(&q), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
        {
            break m;
        }
    };
    assert_eq!(m.delivery.properties, props);
}

#[tokio::test]
async fn nack_requeue_sets_redelivered_and_keeps_order() {
    let b = TestBroker::start().await;
    let (_c, ch) = b.channel().await;
    let q = declare(&ch, "rq").await;
    for i in 0..3 {
        publish(&ch, "", &q, format!("{i}").as_bytes()).await;
    }
    let mut consumer = ch
        .basic_consume(
            ss(&q),
            ss("c1"),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut ds = Vec::new();
    for _ in 0..3 {
        ds.push(timeout(consumer.next()).await.unwrap().unwrap());
    }
    // nack all (multiple) with requeue
    ds[2]
        .nack(BasicNackOptions {
            multiple: true,
            requeue: true,
        })
        .await
        .unwrap();
    for i in 0..3 {
        let d = timeout(consumer.next()).await.unwrap().unwrap();
        assert_eq!(d.data, format!("{i}").as_bytes());
        assert!(d.redelivered);
        d.ack(BasicAckOptions::default()).await.unwrap();
    }
}

#[tokio::test]
async fn unacked_requeued_on_channel_close() {
    let b = TestBroker::start().await;
    let (conn, ch) = b.channel().await;
    let q = declare(&ch, "requeue-close").await;
    for i in 0..5 {
        publish(&ch, "", &q, format!("{i}").as_bytes()).await;
    }
    let ch2 = conn.create_channel().await.unwrap();
    let mut consumer = ch2
        .basic_consume(
            ss(&q),
            ss("c"),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    for _ in 0..5 {
        timeout(consumer.next()).await.unwrap().unwrap();
    }
    ch2.close(200, ss("bye")).await.unwrap();
    let got = drain(&ch, &q).await;
    assert_eq!(got, vec!["0", "1", "2", "3", "4"]);
}

#[tokio::test]
async fn basic_get_with_ack_and_reject() {
    let b = TestBroker::start().await;
    let (_c, ch) = b.channel().await;
    let q = declare(&ch, "getq").await;
    publish(&ch, "", &q, b"a").await;
    publish(&ch, "", &q, b"b").await;
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let m = ch
        .basic_get(ss(&q), BasicGetOptions { no_ack: false })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(m.delivery.data, b"a");
    assert_eq!(m.message_count, 1);
    m.delivery
        .reject(BasicRejectOptions { requeue: true })
        .await
        .unwrap();
    let m = ch
        .basic_get(ss(&q), BasicGetOptions { no_ack: false })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(m.delivery.data, b"a");
    assert!(m.delivery.redelivered);
    m.delivery.ack(BasicAckOptions::default()).await.unwrap();
}

#[tokio::test]
async fn mandatory_unroutable_is_returned() {
    let b = TestBroker::start().await;
    let (_c, ch) = b.channel().await;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let confirm = ch
        .basic_publish(
            ss(""),
            ss("no-such-queue"),
            BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            b"x",
            BasicProperties::default(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(confirm.is_ack());
    let ret = confirm.take_message().expect("returned message");
    assert_eq!(ret.reply_code, 312);
    assert_eq!(ret.delivery.data, b"x");
}

#[tokio::test]
async fn consumer_cancel_and_exclusive_consume() {
    let b = TestBroker::start().await;
    let (_c, ch) = b.channel().await;
    let q = declare(&ch, "excl").await;
    let c1 = ch
        .basic_consume(
            ss(&q),
            ss("one"),
            BasicConsumeOptions {
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let (_c2, ch2) = b.channel().await;
    let err = ch2
        .basic_consume(
            ss(&q),
            ss("two"),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(reply_code(&err), Some(403));
    ch.basic_cancel(c1.tag(), BasicCancelOptions::default())
        .await
        .unwrap();
    let (_c3, ch3) = b.channel().await;
    ch3.basic_consume(
        ss(&q),
        ss("three"),
        BasicConsumeOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn server_named_queue_and_generated_tag() {
    let b = TestBroker::start().await;
    let (_c, ch) = b.channel().await;
    let q = ch
        .queue_declare(
            ss(""),
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    assert!(q.name().as_str().starts_with("amq.gen-"));
    let c = ch
        .basic_consume(
            q.name().clone(),
            ss(""),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    assert!(c.tag().as_str().starts_with("amq.ctag-"));
}

#[tokio::test]
async fn no_ack_consumer_gets_everything() {
    let b = TestBroker::start().await;
    let (_c, ch) = b.channel().await;
    let q = declare(&ch, "noack").await;
    let mut consumer = ch
        .basic_consume(
            ss(&q),
            ss(""),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let (_c2, pubch) = b.channel().await;
    for i in 0..5000 {
        publish(&pubch, "", &q, format!("{i}").as_bytes()).await;
    }
    for i in 0..5000 {
        let d = timeout(consumer.next()).await.unwrap().unwrap();
        assert_eq!(d.data, format!("{i}").as_bytes());
    }
}

#[tokio::test]
async fn direct_reply_to_rpc() {
    let b = TestBroker::start().await;
    let (_c, client) = b.channel().await;
    let (_s, server) = b.channel().await;
    declare(&server, "rpc").await;
    let mut replies = client
        .basic_consume(
            ss("amq.rabbitmq.reply-to"),
            ss(""),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut requests = server
        .basic_consume(
            ss("rpc"),
            ss(""),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    publish_props(
        &client,
        "",
        "rpc",
        b"ping",
        BasicProperties::default()
            .with_reply_to(ss("amq.rabbitmq.reply-to"))
            .with_correlation_id(ss("c1")),
    )
    .await;
    let req = timeout(requests.next()).await.unwrap().unwrap();
    let reply_to = req.properties.reply_to().clone().unwrap();
    assert!(
        reply_to.as_str().starts_with("amq.rabbitmq.reply-to."),
        "{reply_to}"
    );
    publish_props(
        &server,
        "",
        reply_to.as_str(),
        b"pong",
        BasicProperties::default().with_correlation_id(ss("c1")),
    )
    .await;
    req.ack(BasicAckOptions::default()).await.unwrap();
    let rep = timeout(replies.next()).await.unwrap().unwrap();
    assert_eq!(rep.data, b"pong");
    assert_eq!(
        rep.properties.correlation_id().as_ref().map(|s| s.as_str()),
        Some("c1")
    );
}

#[tokio::test]
async fn queue_deletion_cancels_consumers() {
    let b = TestBroker::start().await;
    let (_c, ch) = b.channel().await;
    declare(&ch, "doomed").await;
    let mut consumer = ch
        .basic_consume(
            ss("doomed"),
            ss("c"),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let (_c2, other) = b.channel().await;
    other
        .queue_delete(ss("doomed"), QueueDeleteOptions::default())
        .await
        .unwrap();
    // lapin ends the stream when the server cancels the consumer
    let next = timeout(consumer.next()).await;
    assert!(next.is_none(), "{next:?}");
}

#[tokio::test]
async fn consumer_priorities() {
    let b = TestBroker::start().await;
    let (_c, ch) = b.channel().await;
    declare(&ch, "cp").await;
    let (_c1, lo) = b.channel().await;
    let (_c2, hi) = b.channel().await;
    let prio = |p: i32| table(&[("x-priority", AMQPValue::LongInt(p))]);
    let mut low = lo
        .basic_consume(
            ss("cp"),
            ss("lo"),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            prio(1),
        )
        .await
        .unwrap();
    let mut high = hi
        .basic_consume(
            ss("cp"),
            ss("hi"),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            prio(10),
        )
        .await
        .unwrap();
    for _ in 0..20 {
        publish(&ch, "", "cp", b"x").await;
    }
    for _ in 0..20 {
        timeout(high.next()).await.unwrap().unwrap();
    }
    assert!(
        tokio::time::timeout(std::time::Duration::from_millis(100), low.next())
            .await
            .is_err()
    );
}

#[tokio::test]
async fn basic_recover_redelivers_unacked() {
    let b = TestBroker::start().await;
    let (_c, ch) = b.channel().await;
    declare(&ch, "rec").await;
    publish(&ch, "", "rec", b"r").await;
    let mut consumer = ch
        .basic_consume(
            ss("rec"),
            ss("c"),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let d = timeout(consumer.next()).await.unwrap().unwrap();
    assert!(!d.redelivered);
    ch.basic_recover(BasicRecoverOptions { requeue: true })
        .await
        .unwrap();
    let d = timeout(consumer.next()).await.unwrap().unwrap();
    assert!(d.redelivered);
    d.ack(BasicAckOptions::default()).await.unwrap();
}
