use std::time::Duration;

use crate::support::*;

async fn setup_dlx(ch: &Channel, q: &str, extra: &[(&str, AMQPValue)]) {
    ch.exchange_declare(
        ss("dlx"),
        ExchangeKind::Fanout,
        ExchangeDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    declare(ch, "dead").await;
    ch.queue_bind(
        ss("dead"),
        ss("dlx"),
        ss(""),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let mut args = vec![("x-dead-letter-exchange", lstr("dlx"))];
    args.extend(extra.iter().cloned());
    ch.queue_declare(ss(q), QueueDeclareOptions::default(), table(&args))
        .await
        .unwrap();
}

fn death(props: &BasicProperties) -> FieldTable {
    let h = props.headers().clone().expect("headers");
    let arr = h
        .inner()
        .get("x-death")
        .and_then(|v| v.as_array())
        .expect("x-death")
        .clone();
    arr.as_slice()[0].as_field_table().unwrap().clone()
}

fn s(v: Option<&AMQPValue>) -> String {
    match v {
        Some(AMQPValue::LongString(s)) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        other => format!("{other:?}"),
    }
}

#[tokio::test]
async fn rejected_messages_are_dead_lettered_with_x_death() {
    let b = TestBroker::start().await;
    let (_c, ch) = b.channel().await;
    setup_dlx(&ch, "work", &[]).await;
    publish(&ch, "", "work", b"bad").await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let m = ch
        .basic_get(ss("work"), BasicGetOptions { no_ack: false })
        .await
        .unwrap()
        .unwrap();
    m.delivery
        .reject(BasicRejectOptions { requeue: false })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let d = ch
        .basic_get(ss("dead"), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .expect("dead-lettered");
    assert_eq!(d.delivery.data, b"bad");
    assert_eq!(d.delivery.exchange.as_str(), "dlx");
    assert_eq!(d.delivery.routing_key.as_str(), "work");
    let x = death(&d.delivery.properties);
    assert_eq!(s(x.inner().get("reason")), "rejected");
    assert_eq!(s(x.inner().get("queue")), "work");
    assert_eq!(s(x.inner().get("exchange")), "");
    assert_eq!(x.inner().get("count"), Some(&AMQPValue::LongLongInt(1)));
    assert!(matches!(
        x.inner().get("time"),
        Some(AMQPValue::Timestamp(_))
    ));
    let h = d.delivery.properties.headers().clone().unwrap();
    assert_eq!(s(h.inner().get("x-first-death-reason")), "rejected");
    assert_eq!(s(h.inner().get("x-first-death-queue")), "work");
}

#[tokio::test]
async fn expired_messages_are_dead_lettered_with_routing_key() {
    let b = TestBroker::start().await;
    let (_c, ch) = b.channel().await;
    setup_dlx(
        &ch,
        "delay",
        &[
            ("x-message-ttl", AMQPValue::LongInt(50)),
            ("x-dead-letter-routing-key", lstr("retry")),
        ],
    )
    .await;
    publish(&ch, "", "delay", b"later").await;
    let d = loop {
        tokio::time::sleep(Duration::from_millis(30)).await;
        if let Some(d) = ch
            .basic_get(ss("dead"), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
        {
            break d;
        }
    };
    assert_eq!(d.delivery.routing_key.as_str(), "retry");
    assert_eq!(
        s(death(&d.delivery.properties).inner().get("reason")),
        "expired"
    );
}

#[tokio::test]
async fn maxlen_drop_head_dead_letters() {
    let b = TestBroker::start().await;
    let (_c, ch) = b.channel().await;
    setup_dlx(&ch, "short", &[("x-max-length", AMQPValue::LongInt(1))]).await;
    publish(&ch, "", "short", b"first").await;
    publish(&ch, "", "short", b"second").await;
    assert_eq!(drain(&ch, "dead").await, vec!["first"]);
    assert_eq!(drain(&ch, "short").await, vec!["second"]);
}

#[tokio::test]
async fn nack_without_requeue_dead_letters() {
    let b = TestBroker::start().await;
    let (_c, ch) = b.channel().await;
    setup_dlx(&ch, "nq", &[]).await;
    publish(&ch, "", "nq", b"1").await;
    publish(&ch, "", "nq", b"2").await;
    let mut c = ch
        .basic_consume(
            ss("nq"),
            ss("c"),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    timeout(c.next()).await.unwrap().unwrap();
    let d2 = timeout(c.next()).await.unwrap().unwrap();
    d2.nack(BasicNackOptions {
        multiple: true,
        requeue: false,
    })
    .await
    .unwrap();
    assert_eq!(drain(&ch, "dead").await, vec!["1", "2"]);
}

#[tokio::test]
async fn reject_publish_dlx_overflow() {
    let b = TestBroker::start().await;
    let (_c, ch) = b.channel().await;
    setup_dlx(
        &ch,
        "rpd",
        &[
            ("x-max-length", AMQPValue::LongInt(1)),
            ("x-overflow", lstr("reject-publish-dlx")),
        ],
    )
    .await;
    publish(&ch, "", "rpd", b"kept").await;
    publish(&ch, "", "rpd", b"refused").await;
    assert_eq!(drain(&ch, "rpd").await, vec!["kept"]);
    assert_eq!(drain(&ch, "dead").await, vec!["refused"]);
}
