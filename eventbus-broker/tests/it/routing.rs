use crate::support::*;

async fn xdecl(ch: &Channel, name: &str, kind: ExchangeKind) {
    ch.exchange_declare(
        ss(name),
        kind,
        ExchangeDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
}

async fn bind(ch: &Channel, q: &str, x: &str, key: &str, args: FieldTable) {
    ch.queue_bind(ss(q), ss(x), ss(key), QueueBindOptions::default(), args)
        .await
        .unwrap();
}

/// The domain topology from the issue: direct/fanout/topic/headers exchanges.
#[tokio::test]
async fn domain_topology() {
    let b = TestBroker::start().await;
    let (_c, ch) = b.channel().await;
    xdecl(&ch, "direct", ExchangeKind::Direct).await;
    xdecl(&ch, "fanout", ExchangeKind::Fanout).await;
    xdecl(&ch, "topic", ExchangeKind::Topic).await;
    xdecl(&ch, "headers", ExchangeKind::Headers).await;
    for q in [
        "direct1", "direct2", "fanout1", "fanout2", "topic1", "topic2", "hall", "hany",
    ] {
        declare(&ch, q).await;
    }
    bind(&ch, "direct1", "direct", "direct1", FieldTable::default()).await;
    bind(&ch, "direct2", "direct", "direct2", FieldTable::default()).await;
    bind(&ch, "fanout1", "fanout", "", FieldTable::default()).await;
    bind(&ch, "fanout2", "fanout", "", FieldTable::default()).await;
    bind(&ch, "topic1", "topic", "topic1.#", FieldTable::default()).await;
    bind(&ch, "topic2", "topic", "topic2.#", FieldTable::default()).await;
    bind(
        &ch,
        "hall",
        "headers",
        "",
        table(&[("x-match", lstr("all")), ("a", lstr("1")), ("b", lstr("2"))]),
    )
    .await;
    bind(
        &ch,
        "hany",
        "headers",
        "",
        table(&[("x-match", lstr("any")), ("a", lstr("1")), ("b", lstr("2"))]),
    )
    .await;

    publish(&ch, "direct", "direct1", b"d1").await;
    publish(&ch, "direct", "direct2", b"d2").await;
    publish(&ch, "direct", "other", b"none").await;
    publish(&ch, "fanout", "whatever", b"f").await;
    publish(&ch, "topic", "topic1.a.b", b"t1").await;
    publish(&ch, "topic", "topic2", b"t2").await;
    publish(&ch, "topic", "topic3.x", b"t3").await;
    let h = |pairs: &[(&str, &str)]| {
        BasicProperties::default().with_headers(table(
            &pairs.iter().map(|(k, v)| (*k, lstr(v))).collect::<Vec<_>>(),
        ))
    };
    publish_props(&ch, "headers", "", b"both", h(&[("a", "1"), ("b", "2")])).await;
    publish_props(&ch, "headers", "", b"only-a", h(&[("a", "1")])).await;

    assert_eq!(drain(&ch, "direct1").await, vec!["d1"]);
    assert_eq!(drain(&ch, "direct2").await, vec!["d2"]);
    assert_eq!(drain(&ch, "fanout1").await, vec!["f"]);
    assert_eq!(drain(&ch, "fanout2").await, vec!["f"]);
    assert_eq!(drain(&ch, "topic1").await, vec!["t1"]);
    assert_eq!(drain(&ch, "topic2").await, vec!["t2"]);
    assert_eq!(drain(&ch, "hall").await, vec!["both"]);
    assert_eq!(drain(&ch, "hany").await, vec!["both", "only-a"]);
}

#[tokio::test]
async fn topic_wildcards_and_amq_topic() {
    let b = TestBroker::start().await;
    let (_c, ch) = b.channel().await;
    for q in ["star", "hash", "all"] {
        declare(&ch, q).await;
    }
    bind(&ch, "star", "amq.topic", "a.*.c", FieldTable::default()).await;
    bind(&ch, "hash", "amq.topic", "a.#", FieldTable::default()).await;
    bind(&ch, "all", "amq.topic", "#", FieldTable::default()).await;
    for rk in ["a.b.c", "a", "a.b.b.c", "x.y"] {
        publish(&ch, "amq.topic", rk, rk.as_bytes()).await;
    }
    assert_eq!(drain(&ch, "star").await, vec!["a.b.c"]);
    assert_eq!(drain(&ch, "hash").await, vec!["a.b.c", "a", "a.b.b.c"]);
    assert_eq!(
        drain(&ch, "all").await,
        vec!["a.b.c", "a", "a.b.b.c", "x.y"]
    );
}

#[tokio::test]
async fn exchange_to_exchange_bindings() {
    let b = TestBroker::start().await;
    let (_c, ch) = b.channel().await;
    xdecl(&ch, "src", ExchangeKind::Topic).await;
    xdecl(&ch, "dst", ExchangeKind::Fanout).await;
    declare(&ch, "e2e").await;
    bind(&ch, "e2e", "dst", "", FieldTable::default()).await;
    ch.exchange_bind(
        ss("dst"),
        ss("src"),
        ss("orders.*"),
        ExchangeBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    publish(&ch, "src", "orders.created", b"1").await;
    publish(&ch, "src", "users.created", b"2").await;
    assert_eq!(drain(&ch, "e2e").await, vec!["1"]);
    ch.exchange_unbind(
        ss("dst"),
        ss("src"),
        ss("orders.*"),
        ExchangeUnbindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    publish(&ch, "src", "orders.created", b"3").await;
    assert_eq!(drain(&ch, "e2e").await, Vec::<String>::new());
}

#[tokio::test]
async fn alternate_exchange() {
    let b = TestBroker::start().await;
    let (_c, ch) = b.channel().await;
    xdecl(&ch, "ae", ExchangeKind::Fanout).await;
    ch.exchange_declare(
        ss("main"),
        ExchangeKind::Direct,
        ExchangeDeclareOptions::default(),
        table(&[("alternate-exchange", lstr("ae"))]),
    )
    .await
    .unwrap();
    declare(&ch, "unrouted").await;
    declare(&ch, "routed").await;
    bind(&ch, "unrouted", "ae", "", FieldTable::default()).await;
    bind(&ch, "routed", "main", "k", FieldTable::default()).await;
    publish(&ch, "main", "k", b"ok").await;
    publish(&ch, "main", "nope", b"alt").await;
    assert_eq!(drain(&ch, "routed").await, vec!["ok"]);
    assert_eq!(drain(&ch, "unrouted").await, vec!["alt"]);
}

#[tokio::test]
async fn consistent_hash_partitions_by_key() {
    let b = TestBroker::start().await;
    let (_c, ch) = b.channel().await;
    ch.exchange_declare(
        ss("parts"),
        ExchangeKind::Custom("x-consistent-hash".into()),
        ExchangeDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    for i in 0..4 {
        declare(&ch, &format!("p{i}")).await;
        bind(&ch, &format!("p{i}"), "parts", "10", FieldTable::default()).await;
    }
    for k in 0..400 {
        publish(
            &ch,
            "parts",
            &format!("key-{}", k % 40),
            format!("{}", k % 40).as_bytes(),
        )
        .await;
    }
    let mut total = 0;
    let mut seen = std::collections::HashMap::new();
    for i in 0..4 {
        let msgs = drain(&ch, &format!("p{i}")).await;
        assert!(!msgs.is_empty(), "partition p{i} got nothing");
        total += msgs.len();
        for m in msgs {
            // the same key always lands on the same partition
            assert_eq!(*seen.entry(m).or_insert(i), i);
        }
    }
    assert_eq!(total, 400);
}

#[tokio::test]
async fn unbind_and_delete_exchange() {
    let b = TestBroker::start().await;
    let (_c, ch) = b.channel().await;
    xdecl(&ch, "dx", ExchangeKind::Direct).await;
    declare(&ch, "dq").await;
    bind(&ch, "dq", "dx", "k", FieldTable::default()).await;
    let err = ch
        .exchange_delete(
            ss("dx"),
            ExchangeDeleteOptions {
                if_unused: true,
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(reply_code(&err), Some(406));
    let (_c, ch) = b.channel().await;
    ch.queue_unbind(ss("dq"), ss("dx"), ss("k"), FieldTable::default())
        .await
        .unwrap();
    ch.exchange_delete(
        ss("dx"),
        ExchangeDeleteOptions {
            if_unused: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let err = ch
        .exchange_declare(
            ss("dx"),
            ExchangeKind::Direct,
            ExchangeDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(reply_code(&err), Some(404));
}
