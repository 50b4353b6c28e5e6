//! The management HTTP API and `/metrics` over real HTTP (reqwest) against a real broker,
//! with real AMQP clients (lapin); definitions also round-trip through the real RabbitMQ on
//! 127.0.0.1:15672 (management plugin, guest/guest), which must be running.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use eventbus_broker::{Broker, Config};
use futures_util::StreamExt;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const DEADLINE: Duration = Duration::from_secs(10);

struct TestBroker {
    broker: Broker,
    _dir: tempfile::TempDir,
    http: reqwest::Client,
    base: String,
}

impl TestBroker {
    async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    async fn start_with(f: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config {
            amqp_listen: "127.0.0.1:0".parse().unwrap(),
            management_listen: Some("127.0.0.1:0".parse().unwrap()),
            data_dir: dir.path().to_path_buf(),
            ..Config::default()
        };
        f(&mut config);
        let broker = Broker::start(config).await.unwrap();
        let base = format!("http://{}", broker.management_addr().unwrap());
        Self {
            broker,
            _dir: dir,
            http: reqwest::Client::new(),
            base,
        }
    }

    fn amqp_uri(&self) -> String {
        format!("amqp://guest:guest@{}/%2f", self.broker.amqp_addr())
    }

    async fn amqp(&self) -> Connection {
        Connection::connect(&self.amqp_uri(), ConnectionProperties::default())
            .await
            .unwrap()
    }

    /// A request as `user:pass`, returning status and JSON (Null for empty bodies).
    async fn req_as(
        &self,
        auth: Option<(&str, &str)>,
        method: Method,
        path: &str,
        body: Option<&str>,
    ) -> (StatusCode, Value) {
        let mut r = self.http.request(method, format!("{}{path}", self.base));
        if let Some((u, p)) = auth {
            r = r.basic_auth(u, Some(p));
        }
        if let Some(b) = body {
            r = r
                .header("content-type", "application/json")
                .body(b.to_owned());
        }
        let resp = r.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        let v = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, v)
    }

    async fn req(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let b = body.map(|b| b.to_string());
        self.req_as(Some(("guest", "guest")), method, path, b.as_deref())
            .await
    }

    async fn get(&self, path: &str) -> Value {
        let (s, v) = self.req(Method::GET, path, None).await;
        assert_eq!(s, StatusCode::OK, "GET {path}: {v}");
        v
    }

    async fn ok(&self, method: Method, path: &str, body: Value) -> Value {
        let (s, v) = self.req(method.clone(), path, Some(body)).await;
        assert!(s.is_success(), "{method} {path}: {s} {v}");
        v
    }
}

/// Poll `f` until it returns `Some`, failing after [`DEADLINE`].
async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn not_found_shape(v: &Value) {
    assert_eq!(
        v,
        &json!({"error": "Object Not Found", "reason": "Not Found"})
    );
}

#[tokio::test]
async fn authentication_and_tags_decide_access() {
    let b = TestBroker::start().await;
    let admin = b.broker.admin();
    admin.add_vhost("v2").unwrap();
    admin.add_user("mgr", "pw", &["management"]).unwrap();
    admin
        .set_permissions("mgr", "v2", ".*", ".*", ".*")
        .unwrap();
    admin.add_user("mon", "pw", &["monitoring"]).unwrap();
    admin.add_user("app", "pw", &[]).unwrap();

    // no credentials / wrong password: 401 with a challenge
    let resp = b
        .http
        .get(format!("{}/api/overview", b.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(resp.headers().contains_key("www-authenticate"));
    let (s, v) = b
        .req_as(Some(("guest", "nope")), Method::GET, "/api/overview", None)
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(v["error"], "not_authorized");

    // a user without a management tag: 403
    let (s, v) = b
        .req_as(Some(("app", "pw")), Method::GET, "/api/overview", None)
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");

    // management: its own vhosts only, no user administration
    let (s, v) = b
        .req_as(Some(("mgr", "pw")), Method::GET, "/api/vhosts", None)
        .await;
    assert_eq!(s, StatusCode::OK);
    let names: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["v2"]);
    let (s, _) = b
        .req_as(Some(("mgr", "pw")), Method::GET, "/api/users", None)
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = b
        .req_as(Some(("mgr", "pw")), Method::GET, "/api/queues/%2F", None)
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, v) = b
        .req_as(
            Some(("mgr", "pw")),
            Method::PUT,
            "/api/queues/v2/work",
            Some(r#"{"durable":true}"#),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");

    // monitoring: sees everything, changes nothing it has no permission for
    let (s, v) = b
        .req_as(Some(("mon", "pw")), Method::GET, "/api/vhosts", None)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v.as_array().unwrap().len(), 2);
    let (s, _) = b
        .req_as(
            Some(("mon", "pw")),
            Method::PUT,
            "/api/vhosts/v3",
            Some("{}"),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = b
        .req_as(Some(("mon", "pw")), Method::GET, "/api/nodes", None)
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = b
        .req_as(Some(("mgr", "pw")), Method::GET, "/api/nodes", None)
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);

    // administrator
    let who = b.get("/api/whoami").await;
    assert_eq!(who, json!({"name": "guest", "tags": ["administrator"]}));
    let users = b.get("/api/users").await;
    assert_eq!(users.as_array().unwrap().len(), 4);
    assert_eq!(
        users[0]["hashing_algorithm"],
        "rabbit_password_hashing_sha256"
    );
    let ov = b.get("/api/overview").await;
    assert_eq!(ov["object_totals"]["queues"], 1);
    assert!(ov["listeners"].as_array().unwrap().len() == 2);
    let (s, _) = b
        .req(
            Method::PUT,
            "/api/users/new",
            Some(json!({"password": "x", "tags": "management"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, v) = b
        .req_as(Some(("new", "x")), Method::GET, "/api/whoami", None)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["tags"], json!(["management"]));
}

#[tokio::test]
async fn missing_objects_are_404_with_rabbitmq_error_shape() {
    let b = TestBroker::start().await;
    for path in [
        "/api/queues/%2F/missing",
        "/api/queues/no-such-vhost",
        "/api/exchanges/%2F/missing",
        "/api/vhosts/missing",
        "/api/users/missing",
        "/api/connections/missing",
        "/api/no/such/endpoint",
    ] {
        let (s, v) = b.req(Method::GET, path, None).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{path}");
        not_found_shape(&v);
    }
    let (s, v) = b
        .req(
            Method::POST,
            "/api/queues/%2F/missing/get",
            Some(json!({"count": 1, "ackmode": "ack_requeue_true", "encoding": "auto"})),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    not_found_shape(&v);
    let (s, _) = b.req(Method::DELETE, "/api/queues/nov/q", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn malformed_bodies_are_400_naming_the_field() {
    let b = TestBroker::start().await;
    let raw = |path: &'static str, body: &'static str| {
        let b = &b;
        async move {
            b.req_as(Some(("guest", "guest")), Method::PUT, path, Some(body))
                .await
        }
    };
    let (s, v) = raw("/api/queues/%2F/q", r#"{"durable": "#).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(v["error"], "bad_request");
    assert!(v["reason"].as_str().unwrap().starts_with("not_json"), "{v}");
    let (s, v) = raw("/api/queues/%2F/q", r#"{"durable": "perhaps"}"#).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(v["reason"].as_str().unwrap().starts_with("durable"), "{v}");
    let (s, v) = raw("/api/queues/%2F/q", r#"{"arguments": [1]}"#).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        v["reason"].as_str().unwrap().starts_with("arguments"),
        "{v}"
    );
    let (s, v) = raw(
        "/api/queues/%2F/q",
        r#"{"arguments": {"x-max-length": "many"}}"#,
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        v["reason"].as_str().unwrap().contains("x-max-length"),
        "{v}"
    );
    let (s, v) = raw("/api/exchanges/%2F/x", r#"{"durable": true}"#).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(v["reason"], "type: missing");
    let (s, v) = raw(
        "/api/permissions/%2F/guest",
        r#"{"configure": ".*", "write": ".*"}"#,
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(v["reason"], "read: missing");

    b.ok(Method::PUT, "/api/queues/%2F/q", json!({})).await;
    let (s, v) = b
        .req(
            Method::POST,
            "/api/exchanges/%2F/amq.default/publish",
            Some(json!({"payload": "x", "payload_encoding": "string"})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(v["reason"], "routing_key: missing");
    let (s, v) = b
        .req(
            Method::POST,
            "/api/exchanges/%2F/amq.default/publish",
            Some(
                json!({"routing_key": "q", "payload": "x", "payload_encoding": "string",
                        "properties": {"delivery_mode": 7}}),
            ),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(v["reason"]
        .as_str()
        .unwrap()
        .starts_with("properties.delivery_mode"));
    let (s, v) = b
        .req(
            Method::POST,
            "/api/queues/%2F/q/get",
            Some(json!({"count": 1, "ackmode": "eat_it", "encoding": "auto"})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(v["reason"].as_str().unwrap().starts_with("ackmode"));
    let (s, v) = b
        .req(
            Method::POST,
            "/api/definitions",
            Some(json!({"queues": [{"name": "a", "vhost": "/"}, {"vhost": "/"}]})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(v["reason"], "queues[1].name: missing");
    // axum's own rejections (undecodable path or query) get the same JSON shape
    let (s, v) = b.req(Method::GET, "/api/queues/%FF%FE/q", None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(v["error"], "bad_request", "{v}");
    let (s, v) = b.req(Method::GET, "/api/queues?page=%FF", None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(v["error"], "bad_request", "{v}");
    // an inequivalent redeclare is refused like RabbitMQ (400 with the AMQP text)
    let (s, v) = b
        .req(
            Method::PUT,
            "/api/queues/%2F/q",
            Some(json!({"durable": false})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(v["reason"]
        .as_str()
        .unwrap()
        .contains("inequivalent arg 'durable'"));
}

#[tokio::test]
async fn pagination_filtering_sorting_and_page_size_cap() {
    let b = TestBroker::start().await;
    for i in 0..12 {
        b.ok(
            Method::PUT,
            &format!("/api/queues/%2F/pq-{i:02}"),
            json!({}),
        )
        .await;
    }
    b.ok(Method::PUT, "/api/queues/%2F/other", json!({})).await;

    let p = b.get("/api/queues/%2F?page=2&page_size=5&name=pq-").await;
    assert_eq!(p["page"], 2);
    assert_eq!(p["page_size"], 5);
    assert_eq!(p["page_count"], 3);
    assert_eq!(p["item_count"], 5);
    assert_eq!(p["filtered_count"], 12);
    assert_eq!(p["total_count"], 13);
    let names: Vec<&str> = p["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["pq-05", "pq-06", "pq-07", "pq-08", "pq-09"]);

    let p = b
        .get("/api/queues?page=1&page_size=100&name=%5Epq-0%5B1-3%5D%24&use_regex=true&sort=name&sort_reverse=true")
        .await;
    let names: Vec<&str> = p["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["pq-03", "pq-02", "pq-01"]);

    // huge page sizes are capped
    let p = b.get("/api/queues?page=1&page_size=100000000000").await;
    assert_eq!(p["page_size"], 500);
    assert_eq!(p["item_count"], 13);

    for bad in [
        "/api/queues?page=0",
        "/api/queues?page=x",
        "/api/queues?page=1&page_size=-3",
        "/api/queues?page=9&page_size=5",
        "/api/queues?page=1&name=(&use_regex=true",
    ] {
        let (s, v) = b.req(Method::GET, bad, None).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}: {v}");
    }
    // columns (as rabbitmqadmin asks for them), dotted paths included
    let p = b
        .get("/api/queues/%2F?columns=name,message_stats.publish,messages&name=other")
        .await;
    assert_eq!(
        p,
        json!([{"name": "other", "messages": 0, "message_stats": {"publish": 0}}])
    );
    // unpaged: a plain array
    assert_eq!(b.get("/api/queues").await.as_array().unwrap().len(), 13);
}

#[tokio::test]
async fn queue_counts_and_rates_follow_amqp_traffic() {
    let b = TestBroker::start_with(|c| c.management_rate_interval_ms = 100).await;
    let conn = b.amqp().await;
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    ch.queue_declare(
        "counted".into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    for i in 0..5u8 {
        ch.basic_publish(
            "".into(),
            "counted".into(),
            BasicPublishOptions::default(),
            &[i],
            BasicProperties::default().with_delivery_mode(2),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    }
    let q = b.get("/api/queues/%2F/counted").await;
    assert_eq!(q["messages_ready"], 5);
    assert_eq!(q["messages"], 5);
    assert_eq!(q["message_stats"]["publish"], 5);
    assert_eq!(q["durable"], true);

    // a manual-ack consumer with prefetch 2 holds two unacked messages
    let cch = conn.create_channel().await.unwrap();
    cch.basic_qos(2, BasicQosOptions::default()).await.unwrap();
    let mut consumer = cch
        .basic_consume(
            "counted".into(),
            "c1".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let first = consumer.next().await.unwrap().unwrap();
    let q = eventually("2 unacked", || async {
        let q = b.get("/api/queues/%2F/counted").await;
        (q["messages_unacknowledged"] == 2).then_some(q)
    })
    .await;
    assert_eq!(q["messages_ready"], 3);
    assert_eq!(q["consumers"], 1);
    assert_eq!(q["consumer_details"][0]["consumer_tag"], "c1");
    assert_eq!(q["consumer_details"][0]["prefetch_count"], 2);
    let chans = b.get("/api/channels").await;
    assert_eq!(
        chans
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["messages_unacknowledged"].as_u64().unwrap())
            .sum::<u64>(),
        2
    );
    let consumers = b.get("/api/consumers/%2F").await;
    assert_eq!(consumers[0]["queue"]["name"], "counted");
    first.ack(BasicAckOptions::default()).await.unwrap();
    let q = eventually("1 ack", || async {
        let q = b.get("/api/queues/%2F/counted").await;
        (q["message_stats"]["ack"] == 1).then_some(q)
    })
    .await;
    assert_eq!(q["message_stats"]["deliver_get"], 3);

    // rates: keep publishing until the sampler reports a publish rate
    let pch = conn.create_channel().await.unwrap();
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let publisher = {
        let stop = stop.clone();
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                pch.basic_publish(
                    "".into(),
                    "rated".into(),
                    BasicPublishOptions::default(),
                    b"r",
                    BasicProperties::default(),
                )
                .await
                .unwrap();
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    b.ok(Method::PUT, "/api/queues/%2F/rated", json!({})).await;
    eventually("a publish rate", || async {
        let q = b.get("/api/queues/%2F/rated").await;
        let r = q["message_stats"]["publish_details"]["rate"].as_f64()?;
        let v = b.get("/api/vhosts/%2F").await;
        let vr = v["message_stats"]["publish_details"]["rate"].as_f64()?;
        (r > 0.0 && vr > 0.0).then_some(())
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    publisher.await.unwrap();
}

async fn get_msgs(b: &TestBroker, q: &str, count: u64, ackmode: &str) -> Vec<Value> {
    b.ok(
        Method::POST,
        &format!("/api/queues/%2F/{q}/get"),
        json!({"count": count, "ackmode": ackmode, "encoding": "auto", "truncate": 50000}),
    )
    .await
    .as_array()
    .unwrap()
    .clone()
}

#[tokio::test]
async fn publish_get_purge_and_move_round_trip() {
    let b = TestBroker::start().await;
    for q in ["src", "d1", "d2"] {
        b.ok(
            Method::PUT,
            &format!("/api/queues/%2F/{q}"),
            json!({"durable": true}),
        )
        .await;
    }
    for i in 0..6 {
        let v = b
            .ok(
                Method::POST,
                "/api/exchanges/%2F/amq.default/publish",
                json!({
                    "routing_key": "src",
                    "payload": format!("m{i}"),
                    "payload_encoding": "string",
                    "properties": {"delivery_mode": 2, "headers": {"n": i, "tag": "t"},
                                   "content_type": "text/plain", "message_id": format!("id{i}")},
                }),
            )
            .await;
        assert_eq!(v, json!({"routed": true}));
    }
    let v = b
        .ok(
            Method::POST,
            "/api/exchanges/%2F/amq.default/publish",
            json!({"routing_key": "nowhere", "payload": "AAEC", "payload_encoding": "base64"}),
        )
        .await;
    assert_eq!(v, json!({"routed": false}));

    // peek with requeue: the same message comes back, now redelivered
    let got = get_msgs(&b, "src", 1, "ack_requeue_true").await;
    assert_eq!(got[0]["payload"], "m0");
    assert_eq!(got[0]["payload_encoding"], "string");
    assert_eq!(got[0]["redelivered"], false);
    assert_eq!(got[0]["message_count"], 5);
    assert_eq!(got[0]["properties"]["headers"], json!({"n": 0, "tag": "t"}));
    assert_eq!(got[0]["properties"]["delivery_mode"], 2);
    let got = get_msgs(&b, "src", 2, "ack_requeue_true").await;
    assert_eq!(got[0]["payload"], "m0");
    assert_eq!(got[0]["redelivered"], true);
    assert_eq!(got[1]["payload"], "m1");
    assert_eq!(b.get("/api/queues/%2F/src").await["messages"], 6);

    // move 4 of them round-robin, keeping properties and persistence
    let moved = b
        .ok(
            Method::POST,
            "/api/queues/%2F/src/move",
            json!({"destinations": ["d1", "d2"], "count": 4}),
        )
        .await;
    assert_eq!(moved, json!({"moved": 4}));
    assert_eq!(b.get("/api/queues/%2F/src").await["messages"], 2);
    assert_eq!(b.get("/api/queues/%2F/d1").await["messages"], 2);
    assert_eq!(b.get("/api/queues/%2F/d2").await["messages"], 2);
    // an AMQP consumer sees them with their properties
    let conn = b.amqp().await;
    let ch = conn.create_channel().await.unwrap();
    let mut seen = Vec::new();
    for q in ["d1", "d2"] {
        for _ in 0..2 {
            let m = ch
                .basic_get(q.into(), BasicGetOptions { no_ack: true })
                .await
                .unwrap()
                .unwrap();
            let p = &m.delivery.properties;
            assert_eq!(p.delivery_mode(), &Some(2));
            assert_eq!(p.content_type().as_ref().unwrap().as_str(), "text/plain");
            let h = p.headers().as_ref().unwrap();
            assert_eq!(
                h.inner().get("tag"),
                Some(&AMQPValue::LongString("t".into()))
            );
            seen.push((q, String::from_utf8(m.delivery.data.clone()).unwrap()));
        }
    }
    assert_eq!(
        seen,
        [
            ("d1", "m0".to_owned()),
            ("d1", "m2".to_owned()),
            ("d2", "m1".to_owned()),
            ("d2", "m3".to_owned())
        ]
    );
    // move errors: unknown destination, self, empty
    let (s, _) = b
        .req(
            Method::POST,
            "/api/queues/%2F/src/move",
            Some(json!({"destinations": ["nope"]})),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = b
        .req(
            Method::POST,
            "/api/queues/%2F/src/move",
            Some(json!({"destinations": ["src"]})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, v) = b
        .req(
            Method::POST,
            "/api/queues/%2F/src/move",
            Some(json!({"destinations": []})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(v["reason"].as_str().unwrap().starts_with("destinations"));

    // get that consumes
    let got = get_msgs(&b, "src", 1, "ack_requeue_false").await;
    assert_eq!(got[0]["payload"], "m4");
    assert_eq!(b.get("/api/queues/%2F/src").await["messages"], 1);
    // purge
    let (s, _) = b
        .req(Method::DELETE, "/api/queues/%2F/src/contents", None)
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_eq!(b.get("/api/queues/%2F/src").await["messages"], 0);
    assert!(get_msgs(&b, "src", 5, "ack_requeue_true").await.is_empty());
}

#[tokio::test]
async fn moved_persistent_messages_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        amqp_listen: "127.0.0.1:0".parse().unwrap(),
        management_listen: Some("127.0.0.1:0".parse().unwrap()),
        data_dir: dir.path().to_path_buf(),
        ..Config::default()
    };
    let broker = Broker::start(config.clone()).await.unwrap();
    let b = TestBroker {
        base: format!("http://{}", broker.management_addr().unwrap()),
        broker,
        _dir: tempfile::tempdir().unwrap(),
        http: reqwest::Client::new(),
    };
    for q in ["a", "b"] {
        b.ok(
            Method::PUT,
            &format!("/api/queues/%2F/{q}"),
            json!({"durable": true}),
        )
        .await;
    }
    for i in 0..3 {
        b.ok(
            Method::POST,
            "/api/exchanges/%2F/amq.default/publish",
            json!({"routing_key": "a", "payload": format!("p{i}"), "payload_encoding": "string",
                   "properties": {"delivery_mode": 2}}),
        )
        .await;
    }
    let moved = b
        .ok(
            Method::POST,
            "/api/queues/%2F/a/move",
            json!({"destinations": ["b"]}),
        )
        .await;
    assert_eq!(moved["moved"], 3);
    b.broker.shutdown().await;
    let broker = Broker::start(config).await.unwrap();
    let b = TestBroker {
        base: format!("http://{}", broker.management_addr().unwrap()),
        broker,
        _dir: tempfile::tempdir().unwrap(),
        http: reqwest::Client::new(),
    };
    assert_eq!(b.get("/api/queues/%2F/a").await["messages"], 0);
    let got = get_msgs(&b, "b", 10, "ack_requeue_false").await;
    let payloads: Vec<&str> = got.iter().map(|m| m["payload"].as_str().unwrap()).collect();
    assert_eq!(payloads, ["p0", "p1", "p2"]);
}

#[tokio::test]
async fn deleting_a_connection_closes_the_amqp_client() {
    let b = TestBroker::start().await;
    let conn = Connection::connect(
        &b.amqp_uri(),
        ConnectionProperties::default().with_connection_name("victim".into()),
    )
    .await
    .unwrap();
    let _ch = conn.create_channel().await.unwrap();
    let mut events = conn.events_listener();
    let c = eventually("the connection listed", || async {
        let cs = b.get("/api/connections").await;
        cs.as_array()?
            .iter()
            .find(|c| c["user_provided_name"] == "victim")
            .cloned()
    })
    .await;
    assert_eq!(c["user"], "guest");
    assert_eq!(c["vhost"], "/");
    assert_eq!(c["channels"], 1);
    let name = c["name"].as_str().unwrap();
    let enc: String = name
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b == b'.' {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    let one = b.get(&format!("/api/connections/{enc}")).await;
    assert_eq!(one["name"], name);
    let chans = b.get(&format!("/api/connections/{enc}/channels")).await;
    assert_eq!(chans.as_array().unwrap().len(), 1);
    let (s, _) = b
        .req(Method::DELETE, &format!("/api/connections/{enc}"), None)
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let err = tokio::time::timeout(DEADLINE, async {
        loop {
            match events.next().await {
                Some(lapin::Event::Error(e)) => return e.to_string(),
                Some(_) => continue,
                None => return "event stream ended".to_owned(),
            }
        }
    })
    .await
    .expect("client not closed in time");
    assert!(
        err.contains("320") || err.contains("CONNECTION_FORCED"),
        "{err}"
    );
    assert!(!conn.status().connected());
    eventually("connection gone from the API", || async {
        b.get("/api/connections")
            .await
            .as_array()?
            .is_empty()
            .then_some(())
    })
    .await;
}

/// Objects that must survive an export/import, in a comparable form.
fn objects(doc: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for key in ["queues", "exchanges", "bindings"] {
        for o in doc[key].as_array().unwrap() {
            let mut o = o.clone();
            if let Some(m) = o.as_object_mut() {
                m.remove("vhost");
            }
            out.push(format!("{key}:{o}"));
        }
    }
    out.sort();
    out
}

#[tokio::test]
async fn definitions_export_import_round_trip() {
    let b = TestBroker::start().await;
    b.ok(Method::PUT, "/api/vhosts/orders", json!({})).await;
    b.ok(
        Method::PUT,
        "/api/users/ops",
        json!({"password": "s3cret", "tags": "monitoring"}),
    )
    .await;
    b.ok(
        Method::PUT,
        "/api/permissions/orders/ops",
        json!({"configure": "^$", "write": ".*", "read": "^q"}),
    )
    .await;
    b.ok(
        Method::PUT,
        "/api/exchanges/orders/events",
        json!({"type": "topic"}),
    )
    .await;
    b.ok(
        Method::PUT,
        "/api/queues/orders/q1",
        json!({"durable": true, "arguments": {"x-max-length": 100, "x-dead-letter-exchange": "events"}}),
    )
    .await;
    let (s, _) = b
        .req(
            Method::POST,
            "/api/bindings/orders/e/events/q/q1",
            Some(json!({"routing_key": "order.*", "arguments": {"k": "v"}})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let bindings = b.get("/api/bindings/orders/e/events/q/q1").await;
    let props = bindings[0]["properties_key"].as_str().unwrap().to_owned();
    let one = b
        .get(&format!(
            "/api/bindings/orders/e/events/q/q1/{}",
            props.replace('~', "%7E")
        ))
        .await;
    assert_eq!(one["routing_key"], "order.*");

    let exported = b.get("/api/definitions").await;
    assert_eq!(objects(&exported).len(), 3, "{exported}");

    let other = TestBroker::start().await;
    let (s, v) = other
        .req(Method::POST, "/api/definitions", Some(exported.clone()))
        .await;
    assert!(s.is_success(), "{v}");
    let again = other.get("/api/definitions").await;
    assert_eq!(objects(&again), objects(&exported));
    for key in ["users", "vhosts", "permissions"] {
        assert_eq!(again[key], exported[key], "{key}");
    }
    // the imported hash still checks the password
    let (s, v) = other
        .req_as(Some(("ops", "s3cret")), Method::GET, "/api/whoami", None)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["tags"], json!(["monitoring"]));

    // per-vhost export/import
    let per = b.get("/api/definitions/orders").await;
    assert!(per.get("users").is_none());
    other.ok(Method::PUT, "/api/vhosts/copy", json!({})).await;
    other
        .ok(Method::POST, "/api/definitions/copy", per.clone())
        .await;
    assert_eq!(
        objects(&other.get("/api/definitions/copy").await),
        objects(&per)
    );
}

/// The real RabbitMQ management API (must be running on 127.0.0.1:15672).
struct Rabbit {
    http: reqwest::Client,
    vhosts: Vec<String>,
}

impl Rabbit {
    async fn req(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut r = self
            .http
            .request(method, format!("http://127.0.0.1:15672{path}"))
            .basic_auth("guest", Some("guest"));
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r
            .send()
            .await
            .expect("RabbitMQ management API on 127.0.0.1:15672 is required");
        let s = resp.status();
        let t = resp.text().await.unwrap();
        (s, serde_json::from_str(&t).unwrap_or(Value::Null))
    }

    async fn ok(&self, method: Method, path: &str, body: Value) -> Value {
        let (s, v) = self.req(method.clone(), path, Some(body)).await;
        assert!(s.is_success(), "RabbitMQ {method} {path}: {s} {v}");
        v
    }

    async fn delete_vhosts(&self) {
        for v in &self.vhosts {
            let _ = self
                .req(Method::DELETE, &format!("/api/vhosts/{v}"), None)
                .await;
        }
    }
}

#[tokio::test]
async fn rabbitmq_definitions_import_into_ours_and_back() {
    let suffix = format!("{:x}", fastrand::u64(..));
    let (src, back) = (
        format!("eb-mgmt-{suffix}"),
        format!("eb-mgmt-back-{suffix}"),
    );
    let rabbit = Rabbit {
        http: reqwest::Client::new(),
        vhosts: vec![src.clone(), back.clone()],
    };
    let result = async {
        rabbit
            .ok(Method::PUT, &format!("/api/vhosts/{src}"), json!({}))
            .await;
        rabbit
            .ok(
                Method::PUT,
                &format!("/api/exchanges/{src}/ev"),
                json!({"type": "topic", "durable": true}),
            )
            .await;
        rabbit
            .ok(
                Method::PUT,
                &format!("/api/queues/{src}/work"),
                json!({"durable": true, "arguments": {"x-max-length": 50, "x-queue-type": "classic"}}),
            )
            .await;
        rabbit
            .ok(
                Method::POST,
                &format!("/api/bindings/{src}/e/ev/q/work"),
                json!({"routing_key": "a.#", "arguments": {}}),
            )
            .await;
        let (s, theirs) = rabbit
            .req(Method::GET, &format!("/api/definitions/{src}"), None)
            .await;
        assert_eq!(s, StatusCode::OK);

        let b = TestBroker::start().await;
        b.ok(Method::PUT, "/api/vhosts/imported", json!({})).await;
        b.ok(Method::POST, "/api/definitions/imported", theirs.clone())
            .await;
        let ours = b.get("/api/definitions/imported").await;
        assert_eq!(objects(&ours), objects(&theirs));

        // and back into RabbitMQ
        rabbit
            .ok(Method::PUT, &format!("/api/vhosts/{back}"), json!({}))
            .await;
        rabbit
            .ok(
                Method::POST,
                &format!("/api/definitions/{back}"),
                ours.clone(),
            )
            .await;
        let (_, again) = rabbit
            .req(Method::GET, &format!("/api/definitions/{back}"), None)
            .await;
        assert_eq!(objects(&again), objects(&theirs));

        // a whole-broker RabbitMQ export (users, vhosts, permissions) imports too
        let (s, all) = rabbit.req(Method::GET, "/api/definitions", None).await;
        assert_eq!(s, StatusCode::OK);
        let (s, v) = b.req(Method::POST, "/api/definitions", Some(all)).await;
        assert!(s.is_success(), "{v}");
        let (s, v) = b
            .req_as(Some(("guest", "guest")), Method::GET, "/api/whoami", None)
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert!(b.get(&format!("/api/queues/{src}/work")).await["durable"] == true);
    };
    // the vhosts are removed from RabbitMQ even when an assertion fails
    let r = futures_util::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(result)).await;
    rabbit.delete_vhosts().await;
    if let Err(p) = r {
        std::panic::resume_unwind(p);
    }
}

/// `name{labels} value` lines of a Prometheus text exposition.
fn parse_metrics(text: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (k, v) = l
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("bad line {l:?}"));
            (
                k.to_owned(),
                v.parse::<f64>()
                    .unwrap_or_else(|_| panic!("bad value in {l:?}")),
            )
        })
        .collect()
}

#[tokio::test]
async fn metrics_are_scraped_and_parsed() {
    let b = TestBroker::start().await;
    let conn = b.amqp().await;
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    ch.queue_declare(
        "depth".into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    for _ in 0..3 {
        ch.basic_publish(
            "".into(),
            "depth".into(),
            BasicPublishOptions::default(),
            b"x",
            BasicProperties::default().with_delivery_mode(2),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    }
    // no credentials needed
    let resp = b
        .http
        .get(format!("{}/metrics", b.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let m = parse_metrics(&resp.text().await.unwrap());
    let get = |k: &str| {
        m.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| *v)
            .unwrap_or_else(|| panic!("no {k}"))
    };
    assert_eq!(
        get(r#"rabbitmq_queue_messages_ready{vhost="/",queue="depth"}"#),
        3.0
    );
    assert_eq!(
        get(r#"rabbitmq_queue_consumers{vhost="/",queue="depth"}"#),
        0.0
    );
    assert_eq!(get("rabbitmq_global_messages_received_total"), 3.0);
    assert_eq!(get("rabbitmq_global_messages_confirmed_total"), 3.0);
    assert_eq!(get("rabbitmq_connections"), 1.0);
    assert_eq!(get("rabbitmq_channels"), 1.0);
    assert!(get("eventbus_store_bytes") > 0.0);
    assert!(get("eventbus_store_sync_seconds_count") >= 1.0);
    assert!(m
        .iter()
        .any(|(n, _)| n.starts_with("eventbus_store_sync_seconds_bucket{le=")));
}

#[tokio::test]
async fn static_ui_is_served() {
    let b = TestBroker::start().await;
    for (path, ct, needle) in [
        ("/", "text/html", "eventbus broker"),
        ("/app.js", "text/javascript", ""),
        ("/style.css", "text/css", ""),
    ] {
        let r = b
            .http
            .get(format!("{}{path}", b.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        assert!(r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with(ct));
        assert!(r.text().await.unwrap().contains(needle));
    }
}

#[tokio::test]
async fn health_checks_answer() {
    let b = TestBroker::start().await;
    assert_eq!(b.get("/api/health/checks/alarms").await["status"], "ok");
    assert_eq!(
        b.get("/api/health/checks/virtual-hosts").await["status"],
        "ok"
    );
    let port = b.broker.amqp_addr().port();
    assert_eq!(
        b.get(&format!("/api/health/checks/port-listener/{port}"))
            .await["status"],
        "ok"
    );
    let (s, v) = b
        .req(Method::GET, "/api/health/checks/port-listener/1", None)
        .await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(v["status"], "failed");
    assert_eq!(b.get("/api/aliveness-test/%2F").await["status"], "ok");
}

mod no_panics {
    use super::*;
    use proptest::prelude::*;

    static PANICKED: AtomicBool = AtomicBool::new(false);

    fn segment() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("%2F".to_owned()),
            Just("queues".to_owned()),
            Just("q".to_owned()),
            Just("amq.default".to_owned()),
            Just("%FF%FE".to_owned()),
            Just("..".to_owned()),
            "[a-z%0-9~.]{0,12}",
        ]
    }

    fn request() -> impl Strategy<Value = (u8, String, String, String)> {
        let top = prop_oneof![
            Just("overview"),
            Just("queues"),
            Just("exchanges"),
            Just("bindings"),
            Just("vhosts"),
            Just("users"),
            Just("permissions"),
            Just("connections"),
            Just("channels"),
            Just("consumers"),
            Just("definitions"),
            Just("health/checks"),
            Just("nodes"),
        ];
        let tail = prop_oneof![
            Just(""),
            Just("/get"),
            Just("/move"),
            Just("/publish"),
            Just("/contents"),
            Just("/bindings")
        ];
        let path =
            (top, proptest::collection::vec(segment(), 0..4), tail).prop_map(|(t, segs, tail)| {
                let mut p = format!("/api/{t}");
                for s in segs {
                    p.push('/');
                    p.push_str(&s);
                }
                p.push_str(tail);
                p
            });
        let query = prop_oneof![
            Just(String::new()),
            "[a-z_=&%0-9(^$*.-]{0,40}",
            (any::<i64>(), any::<u64>(), "[a-z(*]{0,5}").prop_map(|(p, s, n)| format!(
                "page={p}&page_size={s}&name={n}&use_regex=true&sort={n}"
            )),
        ];
        let body = prop_oneof![
            Just(String::new()),
            Just("{".to_owned()),
            Just("[]".to_owned()),
            Just(r#"{"routing_key":"q","payload":"x","payload_encoding":"base64","properties":{"headers":{"a":[1,{"b":null}]}}}"#.to_owned()),
            Just(r#"{"count":99999999999,"ackmode":"ack_requeue_false","encoding":"base64","truncate":-1}"#.to_owned()),
            Just(r#"{"destinations":["q",1],"count":"x"}"#.to_owned()),
            Just(r#"{"type":"x-consistent-hash","arguments":{"x-max-length":-5}}"#.to_owned()),
            Just(r#"{"queues":[{"name":"q","vhost":"/","arguments":{"x-max-priority":99999}}]}"#.to_owned()),
            "\\PC{0,60}",
        ];
        (0u8..4, path, query, body)
    }

    #[test]
    fn random_requests_never_panic_and_the_server_stays_up() {
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICKED.store(true, Ordering::SeqCst);
            prev(info);
        }));
        let rt = tokio::runtime::Runtime::new().unwrap();
        let b = rt.block_on(async {
            let b = TestBroker::start().await;
            b.ok(Method::PUT, "/api/queues/%2F/q", json!({})).await;
            b
        });
        let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
            cases: 256,
            failure_persistence: None,
            ..ProptestConfig::default()
        });
        runner
            .run(&request(), |(m, path, query, body)| {
                let method =
                    [Method::GET, Method::PUT, Method::POST, Method::DELETE][m as usize].clone();
                let url = if query.is_empty() {
                    path.clone()
                } else {
                    format!("{path}?{query}")
                };
                let (status, _) =
                    rt.block_on(b.req_as(Some(("guest", "guest")), method, &url, Some(&body)));
                prop_assert!(
                    status.as_u16() < 500 || status == StatusCode::SERVICE_UNAVAILABLE,
                    "{url} -> {status}"
                );
                prop_assert!(
                    !PANICKED.load(Ordering::SeqCst),
                    "a handler panicked on {url}"
                );
                Ok(())
            })
            .unwrap();
        let (s, _) = rt.block_on(b.req(Method::GET, "/api/overview", None));
        assert_eq!(s, StatusCode::OK);
        assert!(!PANICKED.load(Ordering::SeqCst));
    }
}

#[tokio::test]
async fn moving_a_large_backlog_goes_in_batches_and_keeps_the_round_robin() {
    let b = TestBroker::start().await;
    for q in ["big", "r1", "r2", "r3"] {
        b.ok(
            Method::PUT,
            &format!("/api/queues/%2F/{q}"),
            json!({"durable": false}),
        )
        .await;
    }
    let conn = b.amqp().await;
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    for i in 0..2500u32 {
        let c = ch
            .basic_publish(
                "".into(),
                "big".into(),
                BasicPublishOptions::default(),
                &i.to_be_bytes(),
                BasicProperties::default(),
            )
            .await
            .unwrap();
        if i == 2499 {
            c.await.unwrap();
        }
    }
    ch.wait_for_confirms().await.unwrap();
    let moved = b
        .ok(
            Method::POST,
            "/api/queues/%2F/big/move",
            json!({"destinations": ["r1", "r2", "r3"]}),
        )
        .await;
    assert_eq!(moved, json!({"moved": 2500}));
    let mut counts = Vec::new();
    for q in ["big", "r1", "r2", "r3"] {
        counts.push(
            b.get(&format!("/api/queues/%2F/{q}")).await["messages"]
                .as_u64()
                .unwrap(),
        );
    }
    assert_eq!(counts, [0, 834, 833, 833]);
    // message i went to r(i mod 3), in order, across batch boundaries too
    for (q, first) in [("r1", 0u32), ("r2", 1), ("r3", 2)] {
        let mut expect = first;
        while let Some(m) = ch
            .basic_get(q.into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
        {
            assert_eq!(m.delivery.data, expect.to_be_bytes(), "{q}");
            expect += 3;
        }
        assert!(expect >= 2500, "{q} ended at {expect}");
    }
}
