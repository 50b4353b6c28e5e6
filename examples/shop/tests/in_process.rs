//! The whole set in one process on embedded defaults (the built-in broker
//! in-process, SQLite files in a temporary folder), driven over HTTP.

use std::time::Duration;

use eventbus::transport::amqp::AmqpTransport;
use eventbus::{Envelope, Publisher};
use reqwest::StatusCode;
use shop::app::{Shop, ShopConfig};
use shop::demo::{self, eventually, ShopClient};
use shop::events::{OrderPlaced, StockRejected, StockReserved, UserRegistered};
use shop::orders::Order;

async fn start(dir: &tempfile::TempDir) -> Shop {
    Shop::start(ShopConfig {
        data_dir: dir.path().to_owned(),
        http: "127.0.0.1:0".parse().unwrap(),
        http_fallback: false,
        inventory_rate: 500,
    })
    .await
    .expect("the shop starts on embedded defaults")
}

/// The scripted demo — asynchronous work, decoupling, a 600-order burst
/// against a 500/s inventory — passes every check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_passes_every_check() {
    let dir = tempfile::tempdir().unwrap();
    let shop = start(&dir).await;
    let client = ShopClient::new(shop.endpoints());
    let checks = demo::run(&client, 600, 32).await.expect("the demo runs");
    let failed: Vec<_> = checks.failed().into_iter().cloned().collect();
    shop.shutdown().await;
    assert!(checks.0.len() >= 15, "too few checks ran: {:?}", checks.0);
    assert!(failed.is_empty(), "failed checks: {failed:#?}");
}

/// The same `UserRegistered` delivered twice sends one mail and one
/// notification: the inbox drops the repeat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redelivered_registration_sends_one_mail() {
    let dir = tempfile::tempdir().unwrap();
    let shop = start(&dir).await;
    let client = ShopClient::new(shop.endpoints());
    let transport = AmqpTransport::connect(&shop.broker.amqp_url())
        .await
        .unwrap();

    let event = UserRegistered {
        user_id: 4242,
        email: "twice@example.com".into(),
        name: "Twice".into(),
    };
    let once = Envelope::from_event(&event).unwrap();
    transport.publish(&once).await.unwrap();
    transport.publish(&once).await.unwrap();
    // A third, distinct event of the same key: handled after both copies
    // (same key, same worker, in order), so once it shows, they were handled.
    let marker = Envelope::from_event(&UserRegistered {
        email: "marker@example.com".into(),
        ..event.clone()
    })
    .unwrap();
    transport.publish(&marker).await.unwrap();

    let mails = eventually("the marker mail", Duration::from_secs(30), || async {
        let m = client.mails(4242).await?;
        Ok(m.iter().any(|m| m.to == "marker@example.com").then_some(m))
    })
    .await
    .unwrap();
    let notes = eventually(
        "the marker notification",
        Duration::from_secs(30),
        || async {
            let n = client.notifications(4242).await?;
            Ok(n.iter().any(|n| n.text.contains("marker@")).then_some(n))
        },
    )
    .await
    .unwrap();
    let _ = transport.close().await;
    shop.shutdown().await;
    let to: Vec<_> = mails.iter().map(|m| m.to.as_str()).collect();
    assert_eq!(to, ["twice@example.com", "marker@example.com"]);
    assert_eq!(notes.len(), 2, "{notes:?}");
}

/// Malformed bodies, invalid fields and a duplicate e-mail get a 4xx with
/// a JSON error; none of them writes a user or emits an event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_registrations_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let shop = start(&dir).await;
    let client = ShopClient::new(shop.endpoints());
    let users = client.endpoints.users.clone();

    let first = client.register("grace@example.com", "Grace").await.unwrap();
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    let first_id = first.body["id"].as_i64().unwrap();

    let bad = [
        ("not json", "{\"email\": "),
        ("wrong type", "{\"email\": 7, \"name\": \"x\"}"),
        ("missing field", "{\"email\": \"x@example.com\"}"),
        ("not an address", "{\"email\": \"nobody\", \"name\": \"x\"}"),
        (
            "empty name",
            "{\"email\": \"e@example.com\", \"name\": \"  \"}",
        ),
        (
            "duplicate",
            "{\"email\": \"GRACE@example.com\", \"name\": \"Grace 2\"}",
        ),
    ];
    for (what, body) in bad {
        let r = client.post_raw(&users, "/users", body).await.unwrap();
        assert!(
            r.status.is_client_error(),
            "{what}: {} {}",
            r.status,
            r.body
        );
        assert!(
            r.body.get("error").and_then(|e| e.as_str()).is_some(),
            "{what}: no JSON error: {}",
            r.body
        );
    }
    let no_json = client.post_raw(&users, "/users", "").await.unwrap();
    assert!(no_json.status.is_client_error());

    // Nothing was written: the next user gets the next id, and exactly two
    // mails exist (one per successful registration).
    let second = client
        .register("hopper@example.com", "Hopper")
        .await
        .unwrap();
    assert_eq!(second.status, StatusCode::CREATED, "{}", second.body);
    assert_eq!(second.body["id"].as_i64().unwrap(), first_id + 1);
    for id in [first_id, first_id + 1] {
        let m = eventually("the welcome mail", Duration::from_secs(30), || async {
            let m = client.mails(id).await?;
            Ok((!m.is_empty()).then_some(m))
        })
        .await
        .unwrap();
        assert_eq!(m.len(), 1, "{m:?}");
    }
    assert_eq!(
        client.user(first_id + 2).await.unwrap().status,
        StatusCode::NOT_FOUND
    );
    let unknown_order = client.get(&users, "/orders/nope").await.unwrap();
    assert_eq!(unknown_order.status, StatusCode::NOT_FOUND);
    let bad_user_path = client.get(&users, "/users/abc").await.unwrap();
    assert_eq!(bad_user_path.status, StatusCode::BAD_REQUEST);
    assert!(bad_user_path.body.get("error").is_some());
    shop.shutdown().await;
}

/// The same `OrderPlaced` delivered twice is decided once (the inventory's
/// inbox), and the same `StockRejected` delivered twice is applied to the
/// order once (the order service's inbox).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redelivered_order_events_are_applied_once() {
    let dir = tempfile::tempdir().unwrap();
    let shop = start(&dir).await;
    let client = ShopClient::new(shop.endpoints());
    let transport = AmqpTransport::connect(&shop.broker.amqp_url())
        .await
        .unwrap();

    // Inventory: one order id, the same envelope twice, then a marker of
    // the same key (quantity 2), decided after both copies.
    let order_id = format!("dup-{}", uuid::Uuid::now_v7());
    let placed = OrderPlaced {
        order_id: order_id.clone(),
        product: "book".into(),
        quantity: 1,
    };
    let once = Envelope::from_event(&placed).unwrap();
    transport.publish(&once).await.unwrap();
    transport.publish(&once).await.unwrap();
    let marker = Envelope::from_event(&OrderPlaced {
        quantity: 2,
        ..placed
    })
    .unwrap();
    transport.publish(&marker).await.unwrap();
    let decisions = eventually("the marker's decision", Duration::from_secs(30), || async {
        let d = client.decisions(&order_id).await?;
        Ok(d.iter().any(|d| d.quantity == 2).then_some(d))
    })
    .await
    .unwrap();
    let quantities: Vec<i64> = decisions.iter().map(|d| d.quantity).collect();
    assert_eq!(quantities, [1, 2], "{decisions:?}");

    // Orders: a real order, decided; then one StockRejected twice and a
    // StockReserved marker: the history shows each message once.
    let order: Order = client.place("pen", 1).await.unwrap().into_result().unwrap();
    client
        .decided(&order.id, Duration::from_secs(30))
        .await
        .unwrap();
    let rejected = Envelope::from_event(&StockRejected {
        order_id: order.id.clone(),
        product: "pen".into(),
        reason: "test".into(),
    })
    .unwrap();
    transport.publish(&rejected).await.unwrap();
    transport.publish(&rejected).await.unwrap();
    let marker = Envelope::from_event(&StockReserved {
        order_id: order.id.clone(),
        product: "pen".into(),
        quantity: 1,
    })
    .unwrap();
    transport.publish(&marker).await.unwrap();
    let history = eventually(
        "the marker in the history",
        Duration::from_secs(30),
        || async {
            let o = client.order(&order.id).await?;
            Ok((o.history.len() >= 4
                && o.history.last().map(String::as_str) == Some("stock.reserved"))
            .then_some(o.history))
        },
    )
    .await
    .unwrap();
    let _ = transport.close().await;
    shop.shutdown().await;
    assert_eq!(
        history,
        [
            "order.placed",
            "stock.reserved",
            "stock.rejected",
            "stock.reserved"
        ]
    );
}
