use std::time::Duration;

use crate::support::*;

#[tokio::test]
async fn prefetch_limits_unacked_per_consumer() {
    let b = TestBroker::start().await;
    let (_c, ch) = b.channel().await;
    let q = declare(&ch, "prefetch").await;
    for i in 0..10 {
        publish(&ch, "", &q, format!("{i}").as_bytes()).await;
    }
    ch.basic_qos(3, BasicQosOptions::default()).await.unwrap();
    let mut consumer = ch
        .basic_consume(
            ss(&q),
            ss("c"),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(timeout(consumer.next()).await.unwrap().unwrap());
    }
    // a fourth must not arrive while three are unacked
    assert!(
        tokio::time::timeout(Duration::from_millis(200), consumer.next())
            .await
            .is_err()
    );
    got.remove(0).ack(BasicAckOptions::default()).await.unwrap();
    let d = timeout(consumer.next()).await.unwrap().unwrap();
    assert_eq!(d.data, b"3");
}

#[tokio::test]
async fn global_qos_shared_across_consumers() {
    let b = TestBroker::start().await;
    let (_c, ch) = b.channel().await;
    declare(&ch, "g1").await;
    declare(&ch, "g2").await;
    for i in 0..5 {
        publish(&ch, "", "g1", format!("{i}").as_bytes()).await;
        publish(&ch, "", "g2", format!("{i}").as_bytes()).await;
    }
    ch.basic_qos(2, BasicQosOptions { global: true })
        .await
        .unwrap();
    let mut c1 = ch
        .basic_consume(
            ss("g1"),
            ss("c1"),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut c2 = ch
        .basic_consume(
            ss("g2"),
            ss("c2"),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut n = 0;
    while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(50), c1.next()).await {
        n += 1;
    }
    while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(50), c2.next()).await {
        n += 1;
    }
    assert_eq!(n, 2, "global prefetch 2 across both consumers");
}

async fn next_delivery(c: &mut lapin::Consumer) -> lapin::message::Delivery {
    tokio::time::timeout(Duration::from_secs(5), c.next())
        .await
        .expect("consumer starved")
        .unwrap()
        .unwrap()
}

#[tokio::test]
async fn work_queue_round_robin() {
    let b = TestBroker::start().await;
    let (_c, ch) = b.channel().await;
    let q = declare(&ch, "rr").await;
    let (_c1, w1) = b.channel().await;
    let (_c2, w2) = b.channel().await;
    w1.basic_qos(1, BasicQosOptions::default()).await.unwrap();
    w2.basic_qos(1, BasicQosOptions::default()).await.unwrap();
    let mut a = w1
        .basic_consume(
            ss(&q),
            ss("a"),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut bb = w2
        .basic_consume(
            ss(&q),
            ss("b"),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    for i in 0..10 {
        publish(&ch, "", &q, format!("{i}").as_bytes()).await;
    }
    // Lockstep: each round both consumers hold one unacked message (prefetch 1), so the
    // queue alternates between them and each gets every other message, in order.
    let (mut got_a, mut got_b) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        let da = next_delivery(&mut a).await;
        let db = next_delivery(&mut bb).await;
        got_a.push(String::from_utf8_lossy(&da.data).into_owned());
        got_b.push(String::from_utf8_lossy(&db.data).into_owned());
        da.ack(BasicAckOptions::default()).await.unwrap();
        db.ack(BasicAckOptions::default()).await.unwrap();
    }
    assert_eq!(got_a.len() + got_b.len(), 10);
    let mut all: Vec<u32> = got_a
        .iter()
        .chain(&got_b)
        .map(|s| s.parse().unwrap())
        .collect();
    all.sort_unstable();
    assert_eq!(all, (0..10).collect::<Vec<_>>(), "each message once");
    assert!(
        tokio::time::timeout(Duration::from_millis(200), a.next())
            .await
            .is_err(),
        "nothing left for a"
    );
}

#[tokio::test]
async fn single_active_consumer() {
    let b = TestBroker::start().await;
    let (_c, ch) = b.channel().await;
    ch.queue_declare(
        ss("sac"),
        QueueDeclareOptions::default(),
        table(&[("x-single-active-consumer", AMQPValue::Boolean(true))]),
    )
    .await
    .unwrap();
    let (_c1, w1) = b.channel().await;
    let (_c2, w2) = b.channel().await;
    let mut a = w1
        .basic_consume(
            ss("sac"),
            ss("a"),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut bb = w2
        .basic_consume(
            ss("sac"),
            ss("b"),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    for i in 0..5 {
        publish(&ch, "", "sac", format!("{i}").as_bytes()).await;
    }
    for i in 0..5 {
        let d = timeout(a.next()).await.unwrap().unwrap();
        assert_eq!(d.data, format!("{i}").as_bytes());
        d.ack(BasicAckOptions::default()).await.unwrap();
    }
    assert!(tokio::time::timeout(Duration::from_millis(100), bb.next())
        .await
        .is_err());
    w1.close(200, ss("bye")).await.unwrap();
    publish(&ch, "", "sac", b"after").await;
    let d = timeout(bb.next()).await.unwrap().unwrap();
    assert_eq!(d.data, b"after");
}

#[tokio::test]
async fn priority_queue_delivers_highest_first() {
    let b = TestBroker::start().await;
    let (_c, ch) = b.channel().await;
    ch.queue_declare(
        ss("prio"),
        QueueDeclareOptions::default(),
        table(&[("x-max-priority", AMQPValue::ShortShortUInt(10))]),
    )
    .await
    .unwrap();
    for (p, body) in [(1u8, "low"), (9, "high"), (5, "mid"), (9, "high2")] {
        publish_props(
            &ch,
            "",
            "prio",
            body.as_bytes(),
            BasicProperties::default().with_priority(p),
        )
        .await;
    }
    assert_eq!(
        drain(&ch, "prio").await,
        vec!["high", "high2", "mid", "low"]
    );
}

#[tokio::test]
async fn channel_flow_pauses_deliveries() {
    let b = TestBroker::start().await;
    let (_c, ch) = b.channel().await;
    let q = declare(&ch, "flow").await;
    let (_c2, cc) = b.channel().await;
    let mut consumer = cc
        .basic_consume(
            ss(&q),
            ss("f"),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    cc.channel_flow(ChannelFlowOptions { active: false })
        .await
        .unwrap();
    publish(&ch, "", &q, b"x").await;
    assert!(
        tokio::time::timeout(Duration::from_millis(200), consumer.next())
            .await
            .is_err()
    );
    cc.channel_flow(ChannelFlowOptions { active: true })
        .await
        .unwrap();
    assert_eq!(timeout(consumer.next()).await.unwrap().unwrap().data, b"x");
}

/// Above the memory high watermark publishers are blocked (reads paused) until consumers
/// drain the queue; nothing is lost.
#[tokio::test]
async fn memory_watermark_blocks_publishers() {
    let b = TestBroker::start_with(|c| c.memory_high_watermark = 64 * 1024).await;
    let (_c, ch) = b.channel().await;
    declare(&ch, "wm").await;
    let (_pc, pch) = b.channel().await;
    pch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let publisher = tokio::spawn(async move {
        for _ in 0..300 {
            pch.basic_publish(
                ss(""),
                ss("wm"),
                BasicPublishOptions::default(),
                &[7u8; 1024],
                BasicProperties::default(),
            )
            .await
            .unwrap();
        }
        pch.wait_for_confirms().await.unwrap();
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let depth = ch
        .queue_declare(
            ss("wm"),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap()
        .message_count();
    assert!(
        depth < 200,
        "publisher should be blocked near 64 KiB, queue has {depth}"
    );
    assert!(!publisher.is_finished());
    let mut consumer = ch
        .basic_consume(
            ss("wm"),
            ss("c"),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    for _ in 0..300 {
        timeout(consumer.next()).await.unwrap().unwrap();
    }
    timeout(publisher).await.unwrap();
}
