use eventbus_broker::{Broker, Config};

use crate::support::*;

async fn start_in(dir: &std::path::Path) -> Broker {
    let config = Config {
        amqp_listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.to_path_buf(),
        ..Config::default()
    };
    Broker::start(config).await.unwrap()
}

#[tokio::test]
async fn definitions_survive_restart() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_in(dir.path()).await;
    broker
        .admin()
        .add_user("carol", "secret", &["management"])
        .unwrap();
    broker.admin().add_vhost("v2").unwrap();
    broker
        .admin()
        .set_permissions("carol", "v2", ".*", ".*", ".*")
        .unwrap();
    {
        let conn = Connection::connect(
            &format!("amqp://guest:guest@{}/%2f", broker.amqp_addr()),
            ConnectionProperties::default(),
        )
        .await
        .unwrap();
        let ch = conn.create_channel().await.unwrap();
        ch.exchange_declare(
            ss("dur-x"),
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
        ch.exchange_declare(
            ss("transient-x"),
            ExchangeKind::Topic,
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        ch.queue_declare(
            ss("dur-q"),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            table(&[("x-max-length", AMQPValue::LongInt(5))]),
        )
        .await
        .unwrap();
        ch.queue_declare(
            ss("transient-q"),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        ch.queue_bind(
            ss("dur-q"),
            ss("dur-x"),
            ss("a.#"),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        conn.close(200, ss("bye")).await.unwrap();
    }
    broker.shutdown().await;
    let raw = std::fs::read_to_string(dir.path().join("definitions.json")).unwrap();
    assert!(
        !raw.contains("\"secret\""),
        "no plaintext passwords on disk"
    );

    let broker = start_in(dir.path()).await;
    let conn = Connection::connect(
        &format!("amqp://guest:guest@{}/%2f", broker.amqp_addr()),
        ConnectionProperties::default(),
    )
    .await
    .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    ch.queue_declare(ss("dur-q"), passive, FieldTable::default())
        .await
        .unwrap();
    ch.exchange_declare(
        ss("dur-x"),
        ExchangeKind::Topic,
        ExchangeDeclareOptions {
            passive: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    // the binding survived
    publish(&ch, "dur-x", "a.b", b"routed").await;
    assert_eq!(drain(&ch, "dur-q").await, vec!["routed"]);
    let err = ch
        .queue_declare(ss("transient-q"), passive, FieldTable::default())
        .await
        .unwrap_err();
    assert_eq!(reply_code(&err), Some(404));
    let ch = conn.create_channel().await.unwrap();
    let err = ch
        .exchange_declare(
            ss("transient-x"),
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(reply_code(&err), Some(404));
    // user + vhost + permission survived
    let c2 = Connection::connect(
        &format!("amqp://carol:secret@{}/v2", broker.amqp_addr()),
        ConnectionProperties::default(),
    )
    .await
    .unwrap();
    c2.create_channel().await.unwrap();
    broker.shutdown().await;
}

#[tokio::test]
async fn exclusive_and_auto_delete_queues_go_away() {
    let b = TestBroker::start().await;
    let (conn, ch) = b.channel().await;
    let q = ch
        .queue_declare(
            ss("excl-q"),
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    ch.queue_declare(
        ss("ad-q"),
        QueueDeclareOptions {
            auto_delete: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    let c = ch
        .basic_consume(
            ss("ad-q"),
            ss("t"),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    // another connection may not touch the exclusive queue
    let (_c2, other) = b.channel().await;
    let err = other
        .queue_declare(
            q.name().clone(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(reply_code(&err), Some(405));
    ch.basic_cancel(c.tag(), BasicCancelOptions::default())
        .await
        .unwrap();
    let (_c3, other) = b.channel().await;
    let err = other
        .queue_declare(
            ss("ad-q"),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(reply_code(&err), Some(404));
    conn.close(200, ss("bye")).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let (_c4, other) = b.channel().await;
    let err = other
        .queue_declare(
            ss("excl-q"),
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
