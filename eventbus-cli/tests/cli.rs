//! End-to-end tests of the `eventbus-admin` binary against a real
//! management HTTP API over TCP.
//!
//! Every scenario is a function of a [`Target`] (base URL and credentials)
//! and works in a vhost of its own, created and deleted by [`TestVhost`], so
//! the same bodies run against any server: [`suite!`] instantiates them as
//! `#[test]`s for one target. Here that is RabbitMQ's management API
//! (`EVENTBUS_TEST_RABBITMQ_MGMT_URL`, default `http://127.0.0.1:15672`,
//! guest/guest); a server that is not reachable fails the tests.

use std::any::Any;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

/// A management API to test against.
pub struct Target {
    pub url: String,
    pub user: String,
    pub password: String,
    /// The server's AMQP listener, `amqp://user:password@host:port` (no vhost), for a client
    /// whose connection, channel and consumer are listed and closed.
    pub amqp_url: String,
    /// Whether the server implements `POST /api/queues/{vhost}/{name}/move` (eventbus-broker)
    /// or must be reported as lacking it (RabbitMQ).
    pub has_move_extension: bool,
    /// Keeps whatever serves `url` alive (a broker process, a temp dir) for the target's life.
    pub keep_alive: Option<Box<dyn Any + Send>>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("url", &self.url)
            .field("user", &self.user)
            .field("has_move_extension", &self.has_move_extension)
            .finish_non_exhaustive()
    }
}

impl Target {
    /// RabbitMQ's management API; panics with a hint when it is not reachable.
    pub fn rabbitmq() -> Self {
        let url = std::env::var("EVENTBUS_TEST_RABBITMQ_MGMT_URL")
            .unwrap_or_else(|_| "http://127.0.0.1:15672".to_owned());
        let amqp_url = std::env::var("EVENTBUS_TEST_RABBITMQ_AMQP_URL")
            .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672".to_owned());
        let target = Target {
            url,
            user: "guest".into(),
            password: "guest".into(),
            amqp_url,
            has_move_extension: false,
            keep_alive: None,
        };
        // The management plugin starts listening a moment after `rabbitmq-plugins enable`:
        // wait (with a deadline) while nothing listens; any other failure fails at once.
        let deadline = Instant::now() + Duration::from_secs(30);
        let out = loop {
            let out = target.run(&["overview"]);
            if out.status.code() != Some(2) || Instant::now() > deadline {
                break out;
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        assert!(
            out.status.success(),
            "RabbitMQ's management API is not reachable at {} (enable it with \
             `rabbitmq-plugins enable rabbitmq_management`): {}",
            target.url,
            String::from_utf8_lossy(&out.stderr)
        );
        target
    }

    /// Our broker (`eventbus-broker`), started in this process on free ports with its data in a
    /// temporary folder; it lives as long as the target.
    pub fn ours() -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let dir = tempfile::tempdir().expect("temp dir");
        let config = eventbus_broker::Config {
            amqp_listen: ([127, 0, 0, 1], 0).into(),
            management_listen: Some(([127, 0, 0, 1], 0).into()),
            data_dir: dir.path().to_owned(),
            ..eventbus_broker::Config::default()
        };
        let broker = runtime
            .block_on(eventbus_broker::Broker::start(config))
            .expect("start eventbus-broker");
        let url = format!(
            "http://{}",
            broker.management_addr().expect("management listener")
        );
        let amqp_url = format!("amqp://guest:guest@{}", broker.amqp_addr());
        Target {
            url,
            user: "guest".into(),
            password: "guest".into(),
            amqp_url,
            has_move_extension: true,
            // Dropped in this order: the broker's handle, its runtime (which stops it), the data.
            keep_alive: Some(Box::new((broker, runtime, dir))),
        }
    }

    /// Runs `eventbus-admin --url … --user … --password … <args>`, environment defaults removed.
    pub fn run(&self, args: &[&str]) -> Output {
        self.run_as(&self.user, &self.password, args)
    }

    fn run_as(&self, user: &str, password: &str, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_eventbus-admin"))
            .env_remove("EVENTBUS_ADMIN_URL")
            .env_remove("EVENTBUS_ADMIN_USER")
            .env_remove("EVENTBUS_ADMIN_PASSWORD")
            .env_remove("EVENTBUS_ADMIN_VHOST")
            .args(["--url", &self.url, "--user", user, "--password", password])
            .args(args)
            .output()
            .expect("run eventbus-admin")
    }

    /// Runs and asserts exit code 0; standard output.
    pub fn ok(&self, args: &[&str]) -> String {
        succeeded(args, self.run(args))
    }

    /// Runs with `--format json` and asserts success; the parsed output.
    pub fn json(&self, args: &[&str]) -> Value {
        let args: Vec<&str> = ["--format", "json"].iter().chain(args).copied().collect();
        let text = self.ok(&args);
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{args:?} printed no JSON ({e}): {text}"))
    }

    /// Runs and asserts exit code `code`; standard error.
    pub fn fails(&self, code: i32, args: &[&str]) -> String {
        failed(code, args, self.run(args))
    }
}

fn succeeded(args: &[&str], out: Output) -> String {
    assert!(
        out.status.success(),
        "{args:?} failed with {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

fn failed(code: i32, args: &[&str], out: Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(code), "{args:?}: stderr {stderr}");
    assert!(!stderr.contains("panicked"), "{args:?} panicked: {stderr}");
    stderr
}

/// A vhost of one test, granted to the target's user; deleted on drop.
#[derive(Debug)]
pub struct TestVhost<'a> {
    pub target: &'a Target,
    pub name: String,
}

impl<'a> TestVhost<'a> {
    pub fn create(target: &'a Target, test: &str) -> Self {
        let name = unique(&format!("eventbus-cli-{test}"));
        target.ok(&[
            "declare",
            "vhost",
            "--name",
            &name,
            "--description",
            "eventbus-cli test",
        ]);
        let vhost = TestVhost { target, name };
        target.ok(&[
            "--vhost",
            &vhost.name,
            "declare",
            "permission",
            "--for-user",
            &target.user,
        ]);
        vhost
    }

    fn args<'b>(&'b self, args: &[&'b str]) -> Vec<&'b str> {
        ["--vhost", self.name.as_str()]
            .iter()
            .chain(args)
            .copied()
            .collect()
    }

    pub fn ok(&self, args: &[&str]) -> String {
        self.target.ok(&self.args(args))
    }

    pub fn json(&self, args: &[&str]) -> Value {
        self.target.json(&self.args(args))
    }

    pub fn fails(&self, code: i32, args: &[&str]) -> String {
        self.target.fails(code, &self.args(args))
    }
}

impl Drop for TestVhost<'_> {
    fn drop(&mut self) {
        let out = self.target.run(&["delete", "vhost", "--name", &self.name]);
        if !out.status.success() && !std::thread::panicking() {
            panic!(
                "cannot delete vhost {}: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// Deletes a test's user when the test ends, passed or failed (a user the test deleted
/// itself is already gone: that 404 is ignored).
#[derive(Debug)]
struct UserCleanup<'a>(&'a Target, String);

impl Drop for UserCleanup<'_> {
    fn drop(&mut self) {
        let _ = self.0.run(&["delete", "user", "--name", &self.1]);
    }
}

/// `prefix-<pid>-<time>-<n>`: unique per run and per call.
fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!(
        "{prefix}-{}-{}-{}",
        std::process::id(),
        nanos % 1_000_000_000,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Polls `probe` until it returns `Some`, for at most 10 s.
fn eventually<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The rows of `rows` (a JSON array) whose `field` is `value`.
fn with<'v>(rows: &'v Value, field: &str, value: &str) -> Vec<&'v Value> {
    rows.as_array()
        .expect("a JSON array")
        .iter()
        .filter(|row| row[field] == value)
        .collect()
}

/// The lines of a table whose first cells include `cells` in that order.
fn table_has_row(table: &str, cells: &[&str]) -> bool {
    table.lines().any(|line| {
        let words: Vec<&str> = line.split_whitespace().collect();
        words.windows(cells.len()).any(|w| w == cells)
    })
}

fn payloads(messages: &Value) -> Vec<&str> {
    messages
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["payload"].as_str().expect("payload"))
        .collect()
}

/// The scenarios, each a function of the target.
pub mod scenarios {
    use super::*;

    /// Declare exchange, queue and binding; list them (table and JSON, filtered); publish
    /// with properties and headers; get (requeue, then ack); purge; delete everything.
    pub fn declare_publish_get_purge_delete(t: &Target) {
        let vh = TestVhost::create(t, "objects");
        vh.ok(&["declare", "exchange", "--name", "orders", "--type", "topic"]);
        vh.ok(&[
            "declare",
            "queue",
            "--name",
            "invoices",
            "--argument",
            "x-max-length=100",
        ]);
        vh.ok(&["declare", "queue", "--name", "audit"]);
        vh.ok(&[
            "declare",
            "binding",
            "--source",
            "orders",
            "--destination",
            "invoices",
            "--routing-key",
            "order.*",
        ]);

        let table = vh.ok(&["list", "exchanges"]);
        assert!(
            table_has_row(&table, &[&vh.name, "orders", "topic", "true"]),
            "{table}"
        );
        let exchanges = vh.json(&["list", "exchanges"]);
        assert_eq!(with(&exchanges, "name", "orders")[0]["type"], "topic");

        let table = vh.ok(&["list", "queues"]);
        assert!(
            table_has_row(&table, &[&vh.name, "invoices", "true", "false"]),
            "{table}"
        );
        assert!(
            table.lines().next().unwrap().starts_with("vhost"),
            "{table}"
        );
        let queues = vh.json(&["list", "queues"]);
        assert_eq!(
            with(&queues, "name", "invoices")[0]["arguments"]["x-max-length"],
            100
        );
        let filtered = vh.json(&["list", "queues", "--filter", "voic"]);
        assert_eq!(filtered.as_array().unwrap().len(), 1, "{filtered}");
        assert_eq!(filtered[0]["name"], "invoices");

        let bindings = vh.json(&["list", "bindings"]);
        let bound = with(&bindings, "source", "orders");
        assert_eq!(bound.len(), 1, "{bindings}");
        assert_eq!(bound[0]["destination"], "invoices");
        assert_eq!(bound[0]["routing_key"], "order.*");
        let table = vh.ok(&["list", "bindings"]);
        assert!(
            table_has_row(&table, &["orders", "invoices", "queue", "order.*"]),
            "{table}"
        );

        for n in 0..3 {
            let payload = format!("m{n}");
            let out = vh.ok(&[
                "publish",
                "--exchange",
                "orders",
                "--routing-key",
                "order.placed",
                "--payload",
                &payload,
                "--property",
                "delivery_mode=2",
                "--property",
                "content_type=text/plain",
                "--header",
                "n=1",
            ]);
            assert!(out.contains("routed"), "{out}");
            assert!(!out.contains("NOT routed"), "{out}");
        }
        let out = vh.ok(&[
            "publish",
            "--exchange",
            "orders",
            "--routing-key",
            "nobody.listens",
            "--payload",
            "x",
        ]);
        assert!(out.contains("NOT routed"), "{out}");
        let answer = vh.json(&[
            "publish",
            "--exchange",
            "orders",
            "--routing-key",
            "x",
            "--payload",
            "x",
        ]);
        assert_eq!(answer["routed"], false);

        let all = eventually("3 messages in invoices", || {
            let got = vh.json(&["get", "--queue", "invoices", "--count", "10"]);
            (got.as_array().unwrap().len() == 3).then_some(got)
        });
        assert_eq!(payloads(&all), ["m0", "m1", "m2"]);
        assert_eq!(all[0]["routing_key"], "order.placed");
        assert_eq!(all[0]["exchange"], "orders");
        assert_eq!(all[0]["properties"]["delivery_mode"], 2);
        assert_eq!(all[0]["properties"]["content_type"], "text/plain");
        assert_eq!(all[0]["properties"]["headers"]["n"], "1");

        let acked = vh.json(&["get", "--queue", "invoices", "--ackmode", "ack"]);
        assert_eq!(payloads(&acked), ["m0"]);
        assert_eq!(acked[0]["redelivered"], true, "requeued by the first get");
        let table = vh.ok(&["get", "--queue", "invoices"]);
        assert!(
            table_has_row(&table, &["order.placed", "orders", "true", "1"]),
            "{table}"
        );
        assert!(table.contains("m1"), "{table}");

        vh.ok(&["purge", "--queue", "invoices"]);
        let empty = vh.json(&["get", "--queue", "invoices", "--count", "5"]);
        assert_eq!(empty, Value::Array(vec![]), "purged");

        vh.ok(&[
            "delete",
            "binding",
            "--source",
            "orders",
            "--destination",
            "invoices",
            "--routing-key",
            "order.*",
        ]);
        assert!(with(&vh.json(&["list", "bindings"]), "source", "orders").is_empty());
        vh.ok(&["delete", "queue", "--name", "invoices"]);
        vh.ok(&["delete", "exchange", "--name", "orders"]);
        assert!(with(&vh.json(&["list", "queues"]), "name", "invoices").is_empty());
        assert!(with(&vh.json(&["list", "exchanges"]), "name", "orders").is_empty());
    }

    /// Users, vhosts and permissions: a declared user can log in with its password
    /// and sees its permissions; deleting it locks it out.
    pub fn users_vhosts_permissions(t: &Target) {
        let vh = TestVhost::create(t, "users");
        let vhosts = t.json(&["list", "vhosts"]);
        assert_eq!(with(&vhosts, "name", &vh.name).len(), 1, "{vhosts}");
        assert!(table_has_row(
            &t.ok(&["list", "vhosts", "--filter", &vh.name]),
            &[&vh.name]
        ));

        let user = unique("eventbus-cli-user");
        let _cleanup = UserCleanup(t, user.clone());
        t.ok(&[
            "declare",
            "user",
            "--name",
            &user,
            "--user-password",
            "s3cret",
            "--tags",
            "management,monitoring",
        ]);
        let users = t.json(&["list", "users", "--filter", &user]);
        let tags = &with(&users, "name", &user)[0]["tags"];
        let tags = match tags {
            Value::Array(items) => items
                .iter()
                .map(|t| t.as_str().unwrap().to_owned())
                .collect::<Vec<_>>(),
            Value::String(text) => text.split(',').map(str::to_owned).collect(),
            other => panic!("tags {other}"),
        };
        assert!(
            tags.contains(&"management".into()) && tags.contains(&"monitoring".into()),
            "{tags:?}"
        );

        vh.ok(&[
            "declare",
            "permission",
            "--for-user",
            &user,
            "--configure",
            "^app\\.",
            "--read",
            "^app\\.",
        ]);
        let permissions = vh.json(&["list", "permissions"]);
        let granted = with(&permissions, "user", &user);
        assert_eq!(granted.len(), 1, "{permissions}");
        assert_eq!(granted[0]["configure"], "^app\\.");
        assert_eq!(granted[0]["write"], ".*");
        assert_eq!(granted[0]["vhost"], vh.name.as_str());

        let as_user = t.run_as(&user, "s3cret", &["--format", "json", "list", "vhosts"]);
        let visible: Value =
            serde_json::from_str(&succeeded(&["list", "vhosts"], as_user)).unwrap();
        assert_eq!(
            with(&visible, "name", &vh.name).len(),
            1,
            "the user sees its vhost: {visible}"
        );

        vh.ok(&["delete", "permission", "--for-user", &user]);
        assert!(with(&vh.json(&["list", "permissions"]), "user", &user).is_empty());
        t.ok(&["delete", "user", "--name", &user]);
        assert!(with(&t.json(&["list", "users"]), "name", &user).is_empty());
        let stderr = failed(1, &["overview"], t.run_as(&user, "s3cret", &["overview"]));
        assert!(stderr.contains("401"), "{stderr}");
    }

    /// `export` a vhost's definitions, delete its objects, `import` them back.
    pub fn export_import_round_trip(t: &Target) {
        let vh = TestVhost::create(t, "defs");
        vh.ok(&[
            "declare", "exchange", "--name", "events", "--type", "fanout",
        ]);
        vh.ok(&[
            "declare",
            "queue",
            "--name",
            "store",
            "--argument",
            "x-message-ttl=60000",
        ]);
        vh.ok(&[
            "declare",
            "binding",
            "--source",
            "events",
            "--destination",
            "store",
        ]);

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("defs.json");
        let file = file.to_str().unwrap();
        vh.ok(&["export", file]);
        let exported: Value = serde_json::from_slice(&std::fs::read(file).unwrap()).unwrap();
        assert_eq!(
            with(&exported["queues"], "name", "store")[0]["arguments"]["x-message-ttl"],
            60000
        );
        assert_eq!(
            with(&exported["exchanges"], "name", "events")[0]["type"],
            "fanout"
        );
        assert_eq!(
            with(&exported["bindings"], "source", "events")[0]["destination"],
            "store"
        );
        let to_stdout: Value = serde_json::from_str(&vh.ok(&["export", "-"])).unwrap();
        assert_eq!(to_stdout["queues"], exported["queues"]);

        vh.ok(&["delete", "queue", "--name", "store"]);
        vh.ok(&["delete", "exchange", "--name", "events"]);
        assert!(with(&vh.json(&["list", "queues"]), "name", "store").is_empty());

        vh.ok(&["import", file]);
        let queues = vh.json(&["list", "queues"]);
        assert_eq!(
            with(&queues, "name", "store")[0]["arguments"]["x-message-ttl"],
            60000,
            "{queues}"
        );
        assert_eq!(
            with(&vh.json(&["list", "exchanges"]), "name", "events")[0]["type"],
            "fanout"
        );
        let bindings = vh.json(&["list", "bindings"]);
        assert_eq!(
            with(&bindings, "source", "events")[0]["destination"],
            "store",
            "{bindings}"
        );

        std::fs::write(dir.path().join("bad.json"), "{ not json").unwrap();
        let bad = dir.path().join("bad.json");
        let stderr = vh.fails(1, &["import", bad.to_str().unwrap()]);
        assert!(stderr.contains("not valid JSON"), "{stderr}");
    }

    /// Wrong credentials: exit code 1 and the 401 shown as such.
    pub fn wrong_password_is_401(t: &Target) {
        let out = t.run_as(&t.user, "definitely-wrong", &["list", "queues"]);
        let stderr = failed(1, &["list", "queues"], out);
        assert!(stderr.contains("401"), "{stderr}");
        assert!(stderr.contains("--password"), "{stderr}");
    }

    /// A missing object: exit code 1, the 404 and the server's own `reason`.
    pub fn missing_object_is_404_with_reason(t: &Target) {
        let vh = TestVhost::create(t, "missing");
        let reason = server_reason(
            t,
            &format!("/api/queues/{}/no-such-queue", encode(&vh.name)),
        );
        let stderr = vh.fails(1, &["delete", "queue", "--name", "no-such-queue"]);
        assert!(stderr.contains("404"), "{stderr}");
        assert!(
            stderr.contains(&reason),
            "server reason {reason:?} missing: {stderr}"
        );
        let stderr = vh.fails(1, &["get", "--queue", "no-such-queue"]);
        assert!(stderr.contains("404"), "{stderr}");
        let stderr = t.fails(
            1,
            &["--vhost", "no-such-vhost-eventbus-cli", "list", "queues"],
        );
        assert!(stderr.contains("404"), "{stderr}");
    }

    /// `move`: the extension moves messages (round-robin over several destinations);
    /// a server without it is named as such.
    pub fn move_messages(t: &Target) {
        let vh = TestVhost::create(t, "move");
        for q in ["src", "dst", "dst2"] {
            vh.ok(&["declare", "queue", "--name", q]);
        }
        for n in 0..4 {
            vh.ok(&[
                "publish",
                "--routing-key",
                "src",
                "--payload",
                &format!("m{n}"),
            ]);
        }
        let stderr = vh.fails(1, &["move", "--queue", "no-such-queue", "--to", "dst"]);
        assert!(
            stderr.contains("404") && !stderr.contains("not supported"),
            "{stderr}"
        );
        let stderr = vh.fails(1, &["move", "--queue", "src", "--to", "dst,no-such-queue"]);
        assert!(
            stderr.contains("404") && stderr.contains("no-such-queue"),
            "{stderr}"
        );

        let args = ["move", "--queue", "src", "--to", "dst", "--count", "2"];
        if !t.has_move_extension {
            let stderr = vh.fails(1, &args);
            assert!(stderr.contains("not supported by this server"), "{stderr}");
            // Nothing was emulated: the messages are still in the source queue.
            let left = vh.json(&["get", "--queue", "src", "--count", "10"]);
            assert_eq!(payloads(&left), ["m0", "m1", "m2", "m3"]);
            return;
        }
        assert_eq!(vh.json(&args)["moved"], 2);
        let out = vh.ok(&["move", "--queue", "src", "--to", "dst,dst2"]);
        assert!(out.contains("moved 2 message"), "{out}");
        let dst = vh.json(&["get", "--queue", "dst", "--count", "10", "--ackmode", "ack"]);
        assert_eq!(payloads(&dst), ["m0", "m1", "m2"]);
        let dst2 = vh.json(&[
            "get",
            "--queue",
            "dst2",
            "--count",
            "10",
            "--ackmode",
            "ack",
        ]);
        assert_eq!(payloads(&dst2), ["m3"]);
        let left = vh.json(&["get", "--queue", "src", "--count", "10"]);
        assert_eq!(left, Value::Array(vec![]));
    }

    /// `publish --payload-file`: UTF-8 goes as a string, other bytes as base64; both come
    /// back intact from `get`.
    pub fn publish_payload_files(t: &Target) {
        let vh = TestVhost::create(t, "payload");
        vh.ok(&["declare", "queue", "--name", "files"]);
        let dir = tempfile::tempdir().unwrap();
        let text = dir.path().join("text.json");
        std::fs::write(&text, "{\"línea\": 1}\n").unwrap();
        let binary = dir.path().join("blob.bin");
        std::fs::write(&binary, [0xff, 0xfe, 0x00, 0x01, 0x80]).unwrap();
        for file in [&text, &binary] {
            let file = file.to_str().unwrap();
            vh.ok(&["publish", "--routing-key", "files", "--payload-file", file]);
        }
        let got = vh.json(&[
            "get",
            "--queue",
            "files",
            "--count",
            "2",
            "--ackmode",
            "ack",
        ]);
        assert_eq!(got[0]["payload_encoding"], "string", "{got}");
        assert_eq!(got[0]["payload"], "{\"línea\": 1}\n");
        assert_eq!(got[1]["payload_encoding"], "base64", "{got}");
        assert_eq!(got[1]["payload"], "//4AAYA=");
        assert_eq!(got[1]["payload_bytes"], 5);
        let missing = dir.path().join("missing.bin");
        let stderr = vh.fails(
            1,
            &[
                "publish",
                "--routing-key",
                "files",
                "--payload-file",
                missing.to_str().unwrap(),
            ],
        );
        assert!(stderr.contains("cannot read"), "{stderr}");
    }

    /// A real AMQP client's connection, channel and consumer are listed; `close connection`
    /// closes that connection.
    pub fn connections_channels_consumers_close(t: &Target) {
        use lapin::options::{BasicConsumeOptions, BasicQosOptions, QueueDeclareOptions};
        use lapin::types::FieldTable;

        let vh = TestVhost::create(t, "conns");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let uri = format!("{}/{}", t.amqp_url, encode(&vh.name));
        let (connection, _channel, _consumer) = runtime.block_on(async {
            let connection = lapin::Connection::connect(&uri, Default::default())
                .await
                .unwrap_or_else(|e| panic!("AMQP connect to {uri}: {e}"));
            let channel = connection.create_channel().await.unwrap();
            channel
                .basic_qos(7, BasicQosOptions::default())
                .await
                .unwrap();
            let queue_options = QueueDeclareOptions {
                durable: true,
                ..Default::default()
            };
            channel
                .queue_declare("work".into(), queue_options, FieldTable::default())
                .await
                .unwrap();
            let consumer = channel
                .basic_consume(
                    "work".into(),
                    "cli-test-consumer".into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await
                .unwrap();
            (connection, channel, consumer)
        });

        let connections = eventually("the connection listed", || {
            let rows = vh.json(&["list", "connections"]);
            (rows.as_array().unwrap().len() == 1).then_some(rows)
        });
        assert_eq!(connections[0]["user"], t.user.as_str());
        assert_eq!(connections[0]["vhost"], vh.name.as_str());
        let name = connections[0]["name"]
            .as_str()
            .expect("connection name")
            .to_owned();
        let table = vh.ok(&["list", "connections"]);
        assert!(table.contains(&name), "{table}");

        let channels = eventually("the channel listed", || {
            let rows = vh.json(&["list", "channels"]);
            (rows.as_array().unwrap().len() == 1).then_some(rows)
        });
        assert_eq!(
            channels[0]["connection_details"]["name"],
            name.as_str(),
            "{channels}"
        );
        let consumers = eventually("the consumer listed", || {
            let rows = vh.json(&["list", "consumers"]);
            (rows.as_array().unwrap().len() == 1).then_some(rows)
        });
        assert_eq!(consumers[0]["consumer_tag"], "cli-test-consumer");
        assert_eq!(consumers[0]["queue"]["name"], "work");
        let table = vh.ok(&["list", "consumers"]);
        assert!(
            table_has_row(&table, &[&vh.name, "work", "cli-test-consumer"]),
            "{table}"
        );

        let out = t.ok(&[
            "close",
            "connection",
            &name,
            "--reason",
            "closed by the cli test",
        ]);
        assert!(out.contains("closed connection"), "{out}");
        eventually("the client sees its connection closed", || {
            (!connection.status().connected()).then_some(())
        });
        eventually("the connection gone from the list", || {
            vh.json(&["list", "connections"])
                .as_array()
                .unwrap()
                .is_empty()
                .then_some(())
        });
        let stderr = t.fails(1, &["close", "connection", &name]);
        assert!(stderr.contains("404"), "{stderr}");
    }

    /// `overview` as a table and as JSON.
    pub fn overview(t: &Target) {
        let table = t.ok(&["overview"]);
        assert!(table.starts_with("key"), "{table}");
        assert!(table.contains("management_version"), "{table}");
        let json = t.json(&["overview"]);
        assert!(json["management_version"].is_string(), "{json}");
    }
}

/// The `reason` of the server's error answer to `GET path`.
fn server_reason(t: &Target, path: &str) -> String {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let body: Value = runtime.block_on(async {
        let response = reqwest::Client::new()
            .get(format!("{}{path}", t.url))
            .basic_auth(&t.user, Some(&t.password))
            .send()
            .await
            .expect("GET");
        assert_eq!(response.status(), 404);
        response.json().await.expect("JSON error body")
    });
    body["reason"].as_str().expect("reason").to_owned()
}

fn encode(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `#[test]`s running every scenario against the target `$target` builds.
macro_rules! suite {
    ($module:ident, $target:expr) => {
        mod $module {
            use super::*;

            fn target() -> Target {
                $target
            }

            #[test]
            fn declare_publish_get_purge_delete() {
                scenarios::declare_publish_get_purge_delete(&target());
            }

            #[test]
            fn users_vhosts_permissions() {
                scenarios::users_vhosts_permissions(&target());
            }

            #[test]
            fn export_import_round_trip() {
                scenarios::export_import_round_trip(&target());
            }

            #[test]
            fn wrong_password_is_401() {
                scenarios::wrong_password_is_401(&target());
            }

            #[test]
            fn missing_object_is_404_with_reason() {
                scenarios::missing_object_is_404_with_reason(&target());
            }

            #[test]
            fn move_messages() {
                scenarios::move_messages(&target());
            }

            #[test]
            fn connections_channels_consumers_close() {
                scenarios::connections_channels_consumers_close(&target());
            }

            #[test]
            fn publish_payload_files() {
                scenarios::publish_payload_files(&target());
            }

            #[test]
            fn overview() {
                scenarios::overview(&target());
            }
        }
    };
}

suite!(rabbitmq, Target::rabbitmq());
suite!(ours, Target::ours());

/// Nothing listens: exit code 2 and the URL named.
#[test]
fn unreachable_server_exits_2_naming_the_url() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let target = Target {
        url: format!("http://127.0.0.1:{port}"),
        user: "guest".into(),
        password: "guest".into(),
        amqp_url: String::new(),
        has_move_extension: false,
        keep_alive: None,
    };
    let stderr = target.fails(2, &["list", "queues"]);
    assert!(
        stderr.contains(&format!("cannot connect to http://127.0.0.1:{port}")),
        "{stderr}"
    );
}

/// Usage errors exit 1 (2 means "cannot connect"); `--help` exits 0.
#[test]
fn usage_errors_exit_1() {
    let target = Target {
        url: "http://127.0.0.1:9".into(),
        user: "guest".into(),
        password: "guest".into(),
        amqp_url: String::new(),
        has_move_extension: false,
        keep_alive: None,
    };
    let stderr = target.fails(1, &["list", "everything"]);
    assert!(stderr.contains("possible values"), "{stderr}");
    target.fails(1, &["publish", "--routing-key", "q"]);
    target.fails(
        1,
        &["declare", "queue", "--name", "q", "--argument", "novalue"],
    );
    let stderr = target.fails(1, &["delete", "queue", "--name", ".."]);
    assert!(stderr.contains("cannot be addressed"), "{stderr}");
    let help = target.ok(&["--help"]);
    assert!(help.contains("Exit codes"), "{help}");
}
