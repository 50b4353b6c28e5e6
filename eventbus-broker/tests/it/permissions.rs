use crate::support::*;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Need {
    Configure,
    Write,
    Read,
    WriteAndRead,
}

async fn op(ch: &Channel, i: usize) -> Result<(), lapin::Error> {
    match i {
        0 => ch
            .queue_declare(
                ss("pq2"),
                QueueDeclareOptions::default(),
                FieldTable::default(),
            )
            .await
            .map(|_| ()),
        1 => {
            ch.exchange_declare(
                ss("pe2"),
                ExchangeKind::Fanout,
                ExchangeDeclareOptions::default(),
                FieldTable::default(),
            )
            .await
        }
        2 => ch
            .queue_delete(ss("pdel"), QueueDeleteOptions::default())
            .await
            .map(|_| ()),
        3 => {
            ch.queue_bind(
                ss("pq"),
                ss("pe"),
                ss("k2"),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
        }
        4 => {
            ch.confirm_select(ConfirmSelectOptions::default()).await?;
            ch.basic_publish(
                ss("pe"),
                ss("k"),
                BasicPublishOptions::default(),
                b"x",
                BasicProperties::default(),
            )
            .await?
            .await
            .map(|_| ())
        }
        5 => ch
            .basic_get(ss("pq"), BasicGetOptions { no_ack: true })
            .await
            .map(|_| ()),
        6 => ch
            .basic_consume(
                ss("pq"),
                ss(""),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map(|_| ()),
        7 => ch
            .queue_purge(ss("pq"), QueuePurgeOptions::default())
            .await
            .map(|_| ()),
        _ => unreachable!(),
    }
}

const NEEDS: [Need; 8] = [
    Need::Configure,
    Need::Configure,
    Need::Configure,
    Need::WriteAndRead,
    Need::Write,
    Need::Read,
    Need::Read,
    Need::Read,
];

/// For each denied permission kind, every operation that needs it is refused with 403 and
/// every other operation succeeds.
#[tokio::test]
async fn permission_matrix() {
    let b = TestBroker::start().await;
    let admin = b.broker.admin();
    admin.add_user("alice", "pw", &[]).unwrap();
    for denied in [Need::Configure, Need::Write, Need::Read] {
        // fresh fixtures for each row
        let (_gc, g) = b.channel().await;
        g.exchange_declare(
            ss("pe"),
            ExchangeKind::Direct,
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        declare(&g, "pq").await;
        declare(&g, "pdel").await;
        let (c, w, r) = match denied {
            Need::Configure => ("^$", ".*", ".*"),
            Need::Write => (".*", "^$", ".*"),
            _ => (".*", ".*", "^$"),
        };
        admin.set_permissions("alice", "/", c, w, r).unwrap();
        let conn = Connection::connect(
            &b.uri_for("alice", "pw", "/"),
            ConnectionProperties::default(),
        )
        .await
        .unwrap();
        for (i, need) in NEEDS.iter().enumerate() {
            let ch = conn.create_channel().await.unwrap();
            let res = op(&ch, i).await;
            let should_fail =
                *need == denied || (*need == Need::WriteAndRead && denied != Need::Configure);
            match res {
                Ok(()) => assert!(
                    !should_fail,
                    "op {i} should be refused when {denied:?} is denied"
                ),
                Err(e) => {
                    assert!(
                        should_fail,
                        "op {i} failed unexpectedly with {denied:?} denied: {e:?}"
                    );
                    assert_eq!(reply_code(&e), Some(403), "op {i}: {e:?}");
                }
            }
        }
        let _ = g
            .queue_delete(ss("pq2"), QueueDeleteOptions::default())
            .await;
        let _ = g
            .exchange_delete(ss("pe2"), ExchangeDeleteOptions::default())
            .await;
    }
}

#[tokio::test]
async fn no_permission_on_vhost_is_530() {
    let b = TestBroker::start().await;
    b.broker.admin().add_user("bob", "pw", &[]).unwrap();
    let err = Connection::connect(
        &b.uri_for("bob", "pw", "/"),
        ConnectionProperties::default(),
    )
    .await
    .unwrap_err();
    assert_eq!(reply_code(&err), Some(530));
}

#[tokio::test]
async fn vhosts_isolate_resources() {
    let b = TestBroker::start().await;
    let admin = b.broker.admin();
    admin.add_vhost("tenant").unwrap();
    admin.add_user("t", "pw", &["management"]).unwrap();
    admin
        .set_permissions("t", "tenant", ".*", ".*", ".*")
        .unwrap();
    let conn = Connection::connect(
        &b.uri_for("t", "pw", "tenant"),
        ConnectionProperties::default(),
    )
    .await
    .unwrap();
    let ch = conn.create_channel().await.unwrap();
    declare(&ch, "only-in-tenant").await;
    let (_c, g) = b.channel().await;
    let err = g
        .queue_declare(
            ss("only-in-tenant"),
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
async fn amqplain_mechanism() {
    let b = TestBroker::start().await;
    let uri = format!("{}?auth_mechanism=amqplain", b.uri());
    let conn = Connection::connect(&uri, ConnectionProperties::default())
        .await
        .unwrap();
    conn.create_channel().await.unwrap();
}

#[tokio::test]
async fn deleting_a_user_closes_its_connections() {
    let b = TestBroker::start().await;
    let admin = b.broker.admin();
    admin.add_user("eve", "pw", &[]).unwrap();
    admin.set_permissions("eve", "/", ".*", ".*", ".*").unwrap();
    let conn = Connection::connect(
        &b.uri_for("eve", "pw", "/"),
        ConnectionProperties::default(),
    )
    .await
    .unwrap();
    let _ch = conn.create_channel().await.unwrap();
    admin.delete_user("eve").unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(!conn.status().connected());
    let err = Connection::connect(
        &b.uri_for("eve", "pw", "/"),
        ConnectionProperties::default(),
    )
    .await
    .unwrap_err();
    assert_eq!(reply_code(&err), Some(403));
}
