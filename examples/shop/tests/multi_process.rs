//! The set as separate processes (`shop serve <service>`, two
//! inventory-service instances sharing its partitions): on PostgreSQL and
//! on MariaDB against a standalone built-in broker process, and on
//! PostgreSQL against RabbitMQ.
//! In the middle of a burst one inventory-service instance is SIGKILLed and
//! restarted: no order is lost, none is decided twice, every order's
//! history is `order.placed` then one decision. Also: a service started
//! against an unreachable broker says so, retries, and starts once the
//! broker is there.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use eventbus::sqlx::{Connection, MySqlConnection, PgConnection};
use eventbus::BoxError;
use shop::app::ServiceName;
use shop::demo::{self, eventually, Checks, ShopClient};
use shop::procs::{ChildProcess, ProcessSet, SetConfig};
use tokio::io::{AsyncBufReadExt, BufReader};

const PG_ADMIN: &str = "postgres://postgres@127.0.0.1:5432/test";
const MARIADB_ADMIN: &str = "mysql://root@127.0.0.1:3306/test";
const RABBITMQ_API: &str = "http://127.0.0.1:15672/api";
const BURST: usize = 1500;

fn exe() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_shop"))
}

/// A fresh PostgreSQL or MariaDB database for one test run, dropped at the end.
struct TempDatabase {
    name: String,
    mysql: bool,
}

impl TempDatabase {
    async fn postgres() -> Self {
        Self::create(false).await
    }
    async fn mariadb() -> Self {
        Self::create(true).await
    }
    async fn create(mysql: bool) -> Self {
        let db = Self {
            name: format!("shop_{}", uuid::Uuid::new_v4().simple()),
            mysql,
        };
        db.admin(&format!("CREATE DATABASE {}", db.name)).await;
        db
    }
    async fn admin(&self, statement: &str) {
        if self.mysql {
            let mut admin = MySqlConnection::connect(MARIADB_ADMIN)
                .await
                .expect("MariaDB on 127.0.0.1:3306 (db `test`, user root) is required");
            eventbus::sqlx::query(statement)
                .execute(&mut admin)
                .await
                .unwrap();
        } else {
            let mut admin = PgConnection::connect(PG_ADMIN)
                .await
                .expect("PostgreSQL on 127.0.0.1:5432 (db `test`, user postgres) is required");
            eventbus::sqlx::query(statement)
                .execute(&mut admin)
                .await
                .unwrap();
        }
    }
    fn url(&self) -> String {
        if self.mysql {
            format!("mysql://root@127.0.0.1:3306/{}", self.name)
        } else {
            format!("postgres://postgres@127.0.0.1:5432/{}", self.name)
        }
    }
    async fn drop_now(self) {
        let force = if self.mysql { "" } else { " WITH (FORCE)" };
        self.admin(&format!("DROP DATABASE IF EXISTS {}{force}", self.name))
            .await;
    }
}

/// A fresh RabbitMQ vhost (management API), deleted at the end.
struct TempVhost {
    name: String,
    http: reqwest::Client,
}

impl TempVhost {
    async fn create() -> Self {
        let name = format!("shop-{}", uuid::Uuid::new_v4().simple());
        let http = reqwest::Client::new();
        let r = http
            .put(format!("{RABBITMQ_API}/vhosts/{name}"))
            .basic_auth("guest", Some("guest"))
            .send()
            .await
            .expect("RabbitMQ's management API on 127.0.0.1:15672 is required");
        assert!(r.status().is_success(), "create vhost: {}", r.status());
        let r = http
            .put(format!("{RABBITMQ_API}/permissions/{name}/guest"))
            .basic_auth("guest", Some("guest"))
            .json(&serde_json::json!({"configure": ".*", "write": ".*", "read": ".*"}))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "set permissions: {}", r.status());
        Self { name, http }
    }
    fn amqp_url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:5672/{}", self.name)
    }
    async fn delete(self) {
        let _ = self
            .http
            .delete(format!("{RABBITMQ_API}/vhosts/{}", self.name))
            .basic_auth("guest", Some("guest"))
            .send()
            .await;
    }
}

/// Runs the demo's flows against the set, SIGKILLs `inventory-service#2`
/// once the inventory decided about a third of the burst, restarts it, and
/// returns the demo's checks.
async fn kill_inventory_mid_burst(set: &mut ProcessSet) -> Result<Checks, BoxError> {
    let client = ShopClient::new(set.endpoints());
    let mut checks = Checks::default();
    demo::async_work(&client, &mut checks).await?;
    demo::decoupling(&client, &mut checks).await?;
    let before = client.inventory().await?;
    let decided_before = before.reserved + before.rejected;

    let burst = {
        let client = client.clone();
        tokio::spawn(async move {
            let mut checks = Checks::default();
            let report = demo::peak_shaving(&client, BURST, 32, &mut checks).await;
            report.map(|r| (r, checks))
        })
    };
    // 200 idle orders come first, then the burst.
    let trigger = decided_before + 200 + (BURST as i64) / 3;
    let decided = eventually(
        "a third of the burst decided",
        Duration::from_secs(120),
        || async {
            let s = client.inventory().await?;
            let n = s.reserved + s.rejected;
            Ok((n >= trigger).then_some(n))
        },
    )
    .await?;
    let label = ProcessSet::label(ServiceName::Inventory, 2);
    let victim = set.take(&label).ok_or("no second inventory instance")?;
    println!(
        "SIGKILL {label} (pid {:?}) after {decided} decisions",
        victim.pid()
    );
    victim.kill().await?;
    let restarted = set.spawn_service(ServiceName::Inventory, 2).await?;
    println!("restarted {label} (pid {:?})", restarted.pid());
    set.services.push(restarted);

    let (report, burst_checks) = burst.await.map_err(|e| format!("burst task: {e}"))??;
    checks.0.extend(burst_checks.0);
    let after = client.inventory().await?;
    checks.check(
        "the kill happened mid-burst",
        decided < after.reserved + after.rejected,
        format!(
            "killed at {decided} of {} decisions; drained in {:.1} s",
            after.reserved + after.rejected,
            report.drain_time.as_secs_f64()
        ),
    );
    Ok(checks)
}

fn assert_passed(checks: &Checks) {
    let failed: Vec<_> = checks.failed();
    assert!(checks.0.len() >= 15, "too few checks ran: {:?}", checks.0);
    assert!(failed.is_empty(), "failed checks: {failed:#?}");
}

/// PostgreSQL + the built-in broker as a process of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_and_standalone_broker_survive_an_inventory_kill() {
    let db = TempDatabase::postgres().await;
    let data = tempfile::tempdir().unwrap();
    let result = async {
        let mut set = ProcessSet::start(SetConfig {
            exe: exe(),
            broker_url: None,
            database_url: Some(db.url()),
            data_dir: data.path().to_owned(),
            inventory_rate: 100,
            inventory_instances: 2,
        })
        .await?;
        let checks = kill_inventory_mid_burst(&mut set).await;
        set.stop().await;
        checks
    }
    .await;
    db.drop_now().await;
    assert_passed(&result.expect("the scenario runs"));
}

/// MariaDB + the built-in broker as a process of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_and_standalone_broker_survive_an_inventory_kill() {
    let db = TempDatabase::mariadb().await;
    let data = tempfile::tempdir().unwrap();
    let result = async {
        let mut set = ProcessSet::start(SetConfig {
            exe: exe(),
            broker_url: None,
            database_url: Some(db.url()),
            data_dir: data.path().to_owned(),
            inventory_rate: 100,
            inventory_instances: 2,
        })
        .await?;
        let checks = kill_inventory_mid_burst(&mut set).await;
        set.stop().await;
        checks
    }
    .await;
    db.drop_now().await;
    assert_passed(&result.expect("the scenario runs"));
}

/// PostgreSQL + RabbitMQ (a fresh vhost).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_and_rabbitmq_survive_an_inventory_kill() {
    let db = TempDatabase::postgres().await;
    let vhost = TempVhost::create().await;
    let data = tempfile::tempdir().unwrap();
    let result = async {
        let mut set = ProcessSet::start(SetConfig {
            exe: exe(),
            broker_url: Some(vhost.amqp_url()),
            database_url: Some(db.url()),
            data_dir: data.path().to_owned(),
            inventory_rate: 100,
            inventory_instances: 2,
        })
        .await?;
        let checks = kill_inventory_mid_burst(&mut set).await;
        set.stop().await;
        checks
    }
    .await;
    vhost.delete().await;
    db.drop_now().await;
    assert_passed(&result.expect("the scenario runs"));
}

/// A service whose broker is down says which dependency is unreachable,
/// keeps retrying, and starts serving once the broker is up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_waits_for_an_unreachable_broker() {
    let data = tempfile::tempdir().unwrap();
    // A port nothing listens on (bound, then released).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let broker_url = format!("amqp://guest:guest@127.0.0.1:{port}/%2f");
    let mut service = tokio::process::Command::new(exe())
        .args(["serve", "order-service", "--broker-url", &broker_url])
        .arg("--data-dir")
        .arg(data.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(service.stderr.take().unwrap()).lines();
    let complaint = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = stderr.next_line().await.unwrap() {
            if line.contains("broker") && line.contains("unreachable") {
                return line;
            }
        }
        panic!("service exited without saying the broker is unreachable");
    })
    .await
    .expect("a line about the unreachable broker within 60 s");
    assert!(
        complaint.contains(&format!("127.0.0.1:{port}")),
        "{complaint}"
    );
    assert!(
        !complaint.contains("guest:guest"),
        "password in the log: {complaint}"
    );
    assert!(
        service.try_wait().unwrap().is_none(),
        "the service must keep retrying, not exit"
    );

    // The broker comes up on that port: the service connects and serves.
    let broker = ChildProcess::spawn(
        &exe(),
        "broker",
        &[
            "broker".into(),
            "--amqp-listen".into(),
            format!("127.0.0.1:{port}"),
            "--data-dir".into(),
            data.path().display().to_string(),
        ],
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    let mut stdout = BufReader::new(service.stdout.take().unwrap()).lines();
    let ready = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = stdout.next_line().await.unwrap() {
            if line.starts_with("READY order-service ") {
                return line;
            }
        }
        panic!("service exited before it was ready");
    })
    .await
    .expect("the service is ready within 60 s of the broker");
    let url = ready.split_whitespace().nth(2).unwrap().to_owned();
    let stats = reqwest::get(format!("{url}/orders/stats")).await.unwrap();
    assert!(stats.status().is_success());
    service.start_kill().unwrap();
    let _ = service.wait().await;
    broker.stop(Duration::from_secs(30)).await;
}

/// Runs the `shop` binary with `args` (data in `dir`), at most `limit`;
/// returns whether it exited 0 and its stdout.
async fn run_shop(args: &[&str], dir: &std::path::Path, limit: Duration) -> (bool, String) {
    let child = tokio::process::Command::new(exe())
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let out = tokio::time::timeout(limit, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("shop {args:?} did not finish within {limit:?}"))
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// The README's scripted walk: `shop --demo` (one process, embedded
/// defaults) exits 0 after every check passed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_command_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, out) = run_shop(
        &["--demo", "--demo-orders", "300"],
        dir.path(),
        Duration::from_secs(300),
    )
    .await;
    assert!(ok, "shop --demo failed:\n{out}");
    assert!(
        out.contains("checks passed") && !out.contains("[FAIL]"),
        "{out}"
    );
}

/// `shop up --demo`: the set as child processes (a broker process, SQLite
/// files, two inventory instances) passes the scripted walk and stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_demo_on_sqlite_files_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, out) = run_shop(
        &["up", "--demo", "--demo-orders", "300"],
        dir.path(),
        Duration::from_secs(300),
    )
    .await;
    assert!(ok, "shop up --demo failed:\n{out}");
    assert!(out.contains("inventory-service#2"), "{out}");
    assert!(
        out.contains("checks passed") && !out.contains("[FAIL]"),
        "{out}"
    );
}
