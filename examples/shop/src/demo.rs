//! The demo client: walks through the three reasons for a queue over HTTP
//! — asynchronous work, decoupling, peak shaving — checking each outcome,
//! and measures the peak-shaving burst (HTTP latency idle vs. under the
//! burst, queue depth over time, drain time).
//!
//! Every wait polls the HTTP API (or the broker's queue count) with a
//! deadline; nothing waits for a fixed time.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use eventbus::transport::amqp::AmqpTransport;
use eventbus::{BoxError, Subscriber, SubscriptionSpec};
use reqwest::StatusCode;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use tokio::time::Instant;

use crate::app::Endpoints;
use crate::email::SentMail;
use crate::events::{groups, topology};
use crate::inventory::{Decision, InventorySummary};
use crate::notifications::Notification;
use crate::orders::{Order, OrderStats};
use crate::users::User;

/// Polls `probe` every 20 ms until it returns `Some`, or fails after `limit`.
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut probe: F) -> Result<T, BoxError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>, BoxError>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = probe().await? {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            return Err(format!("timed out after {limit:?} waiting for {what}").into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An HTTP client of the sample's services.
#[derive(Debug, Clone)]
pub struct ShopClient {
    http: reqwest::Client,
    pub endpoints: Endpoints,
}

/// A response: status and JSON body.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub body: Value,
}

impl Reply {
    /// The body as `T` if the status is a success, else the status and body as the error.
    pub fn into_result<T: DeserializeOwned>(self) -> Result<T, BoxError> {
        if !self.status.is_success() {
            return Err(format!("HTTP {}: {}", self.status, self.body).into());
        }
        Ok(serde_json::from_value(self.body)?)
    }
}

impl ShopClient {
    pub fn new(endpoints: Endpoints) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(256)
            .build()
            .expect("a client without TLS builds");
        Self { http, endpoints }
    }

    async fn reply(req: reqwest::RequestBuilder) -> Result<Reply, BoxError> {
        let res = req.send().await?;
        let status = res.status();
        let bytes = res.bytes().await?;
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        Ok(Reply { status, body })
    }

    /// `POST {base}{path}` with a raw body.
    pub async fn post_raw(&self, base: &str, path: &str, body: &str) -> Result<Reply, BoxError> {
        Self::reply(
            self.http
                .post(format!("{base}{path}"))
                .header("content-type", "application/json")
                .body(body.to_owned()),
        )
        .await
    }

    /// `GET {base}{path}`.
    pub async fn get(&self, base: &str, path: &str) -> Result<Reply, BoxError> {
        Self::reply(self.http.get(format!("{base}{path}"))).await
    }

    pub async fn register(&self, email: &str, name: &str) -> Result<Reply, BoxError> {
        let body = json!({ "email": email, "name": name }).to_string();
        self.post_raw(&self.endpoints.users, "/users", &body).await
    }

    pub async fn place(&self, product: &str, quantity: i64) -> Result<Reply, BoxError> {
        let body = json!({ "product": product, "quantity": quantity }).to_string();
        self.post_raw(&self.endpoints.orders, "/orders", &body)
            .await
    }

    pub async fn user(&self, id: i64) -> Result<Reply, BoxError> {
        self.get(&self.endpoints.users, &format!("/users/{id}"))
            .await
    }

    pub async fn order(&self, id: &str) -> Result<Order, BoxError> {
        self.get(&self.endpoints.orders, &format!("/orders/{id}"))
            .await?
            .into_result()
    }

    pub async fn order_stats(&self) -> Result<OrderStats, BoxError> {
        self.get(&self.endpoints.orders, "/orders/stats")
            .await?
            .into_result()
    }

    pub async fn mails(&self, user_id: i64) -> Result<Vec<SentMail>, BoxError> {
        self.get(
            &self.endpoints.emails,
            &format!("/emails?user_id={user_id}"),
        )
        .await?
        .into_result()
    }

    pub async fn notifications(&self, user_id: i64) -> Result<Vec<Notification>, BoxError> {
        self.get(
            &self.endpoints.notifications,
            &format!("/notifications?user_id={user_id}"),
        )
        .await?
        .into_result()
    }

    pub async fn decisions(&self, order_id: &str) -> Result<Vec<Decision>, BoxError> {
        self.get(
            &self.endpoints.inventory,
            &format!("/inventory/decisions/{order_id}"),
        )
        .await?
        .into_result()
    }

    pub async fn inventory(&self) -> Result<InventorySummary, BoxError> {
        self.get(&self.endpoints.inventory, "/inventory")
            .await?
            .into_result()
    }

    /// Waits until the order is no longer `pending`.
    pub async fn decided(&self, id: &str, limit: Duration) -> Result<Order, BoxError> {
        eventually(&format!("order {id} to be decided"), limit, || async {
            let o = self.order(id).await?;
            Ok((o.status != "pending").then_some(o))
        })
        .await
    }
}

/// Reads the inventory group's queue depth from the broker.
#[derive(Debug)]
pub struct QueueProbe {
    transport: AmqpTransport,
}

impl QueueProbe {
    /// Connects to the broker and declares the sample's groups (idempotent),
    /// so that the partitioned inventory group's queues are known.
    pub async fn connect(broker_url: &str) -> Result<Self, BoxError> {
        let transport = AmqpTransport::connect(broker_url).await?;
        let specs: Vec<SubscriptionSpec> = topology();
        for spec in &specs {
            transport.declare(spec).await?;
        }
        Ok(Self { transport })
    }

    /// Messages waiting in the inventory group's partitions.
    pub async fn inventory_depth(&self) -> Result<u64, BoxError> {
        Ok(self
            .transport
            .pending(groups::INVENTORY)
            .await?
            .unwrap_or(0))
    }

    pub async fn close(self) {
        let _ = self.transport.close().await;
    }
}

/// One check of the demo.
#[derive(Debug, Clone)]
pub struct Check {
    pub name: String,
    pub passed: bool,
    pub detail: String,
}

/// Collects checks and prints them as they come.
#[derive(Debug, Default)]
pub struct Checks(pub Vec<Check>);

impl Checks {
    pub fn check(&mut self, name: &str, passed: bool, detail: impl Into<String>) {
        let detail = detail.into();
        println!(
            "  [{}] {name}: {detail}",
            if passed { "ok" } else { "FAIL" }
        );
        self.0.push(Check {
            name: name.into(),
            passed,
            detail,
        });
    }

    pub fn all_passed(&self) -> bool {
        self.0.iter().all(|c| c.passed)
    }

    pub fn failed(&self) -> Vec<&Check> {
        self.0.iter().filter(|c| !c.passed).collect()
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// Flow 1 — asynchronous work: registration answers before the mail and
/// the notification exist; both then appear once. Also the bad-input cases.
pub async fn async_work(c: &ShopClient, checks: &mut Checks) -> Result<(), BoxError> {
    println!("\n1. Asynchronous work — POST /users answers before the mail is sent");
    let email = format!("ada-{}@example.com", uuid::Uuid::now_v7().simple());
    let t0 = Instant::now();
    let reply = c.register(&email, "Ada").await?;
    let answered = t0.elapsed();
    checks.check(
        "register answers 201",
        reply.status == StatusCode::CREATED,
        format!("{} in {}", reply.status, ms(answered)),
    );
    let user: User = reply.into_result()?;
    let mails = eventually("the welcome mail", Duration::from_secs(30), || async {
        let m = c.mails(user.id).await?;
        Ok((!m.is_empty()).then_some(m))
    })
    .await?;
    let mailed = t0.elapsed();
    let notes = eventually("the notification", Duration::from_secs(30), || async {
        let n = c.notifications(user.id).await?;
        Ok((!n.is_empty()).then_some(n))
    })
    .await?;
    checks.check(
        "welcome mail sent after the reply",
        mails.len() == 1 && mails[0].to == email,
        format!(
            "reply after {}, mail after {} (\"{}\")",
            ms(answered),
            ms(mailed),
            mails[0].subject
        ),
    );
    checks.check(
        "notification posted",
        notes.len() == 1,
        format!("\"{}\"", notes[0].text),
    );
    let fetched: User = c.user(user.id).await?.into_result()?;
    checks.check("GET /users/{id}", fetched == user, format!("{fetched:?}"));

    println!("   bad input:");
    let dup = c.register(&email, "Ada again").await?;
    checks.check(
        "duplicate e-mail → 409",
        dup.status == StatusCode::CONFLICT && dup.body.get("error").is_some(),
        dup.body.to_string(),
    );
    let malformed = c
        .post_raw(&c.endpoints.users, "/users", "{\"email\": ")
        .await?;
    checks.check(
        "malformed body → 4xx JSON",
        malformed.status.is_client_error() && malformed.body.get("error").is_some(),
        format!("{} {}", malformed.status, malformed.body),
    );
    let missing = c.user(i64::MAX).await?;
    checks.check(
        "unknown user → 404",
        missing.status == StatusCode::NOT_FOUND,
        missing.body.to_string(),
    );
    Ok(())
}

/// Flow 2 — decoupling: an order is answered `pending` by the order
/// service, decided by the inventory service through events only.
pub async fn decoupling(c: &ShopClient, checks: &mut Checks) -> Result<(), BoxError> {
    println!("\n2. Decoupling — orders and inventory only exchange events");
    let placed: Order = c.place("book", 2).await?.into_result()?;
    checks.check(
        "order accepted as pending",
        placed.status == "pending",
        format!("order {}", placed.id),
    );
    let decided = c.decided(&placed.id, Duration::from_secs(30)).await?;
    checks.check(
        "book order reserved",
        decided.status == "reserved" && decided.history == ["order.placed", "stock.reserved"],
        format!("{} via {}", decided.status, decided.history.join(" → ")),
    );
    let unknown: Order = c.place("unicorn", 1).await?.into_result()?;
    let rejected = c.decided(&unknown.id, Duration::from_secs(30)).await?;
    checks.check(
        "unknown product rejected with a reason",
        rejected.status == "rejected"
            && rejected
                .reason
                .as_deref()
                .is_some_and(|r| r.contains("unknown")),
        format!(
            "{}: {}",
            rejected.status,
            rejected.reason.unwrap_or_default()
        ),
    );
    let bad = c
        .post_raw(
            &c.endpoints.orders,
            "/orders",
            "{\"product\": \"book\", \"quantity\": 0}",
        )
        .await?;
    checks.check(
        "quantity 0 → 422",
        bad.status == StatusCode::UNPROCESSABLE_ENTITY,
        bad.body.to_string(),
    );
    Ok(())
}

/// Figures of one burst.
#[derive(Debug, Clone)]
pub struct BurstReport {
    pub orders: usize,
    /// Orders per second sent (0: as fast as answered).
    pub rate: u32,
    pub concurrency: usize,
    pub idle_p50: Duration,
    pub idle_p99: Duration,
    pub burst_p50: Duration,
    pub burst_p99: Duration,
    /// From the first to the last answered order.
    pub send_time: Duration,
    /// From the first order until every order was decided.
    pub drain_time: Duration,
    pub peak_depth: u64,
    pub final_depth: u64,
    /// (seconds since the burst began, queued messages).
    pub depth_samples: Vec<(f64, u64)>,
    pub http_errors: usize,
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

/// The product of burst order `i`: mostly in stock, every 20th a `lamp`
/// (stock runs out), every 20th an unknown product.
fn burst_product(i: usize) -> &'static str {
    match i % 20 {
        0 => "lamp",
        1 => "unicorn",
        n if n % 2 == 0 => "book",
        _ => "pen",
    }
}

/// Flow 3 — peak shaving: `orders` orders over `concurrency` connections as
/// fast as they are answered, while the inventory writes at its limited
/// rate. Measures idle latency first (sequential orders on a quiet system).
pub async fn peak_shaving(
    c: &ShopClient,
    orders: usize,
    concurrency: usize,
    checks: &mut Checks,
) -> Result<BurstReport, BoxError> {
    peak_shaving_paced(c, orders, concurrency, 0, checks).await
}

/// [`peak_shaving`] with the orders sent at `rate` per second (0: as fast
/// as the connections are answered). A paced burst above the inventory's
/// rate shows the HTTP latency of the service itself rather than of the
/// client's own queue.
pub async fn peak_shaving_paced(
    c: &ShopClient,
    orders: usize,
    concurrency: usize,
    rate: u32,
    checks: &mut Checks,
) -> Result<BurstReport, BoxError> {
    let pace = match rate {
        0 => "as fast as they are answered".to_owned(),
        r => format!("paced at {r}/s"),
    };
    println!(
        "\n3. Peak shaving — {orders} orders over {concurrency} connections, {pace}; the inventory writes at its own rate"
    );
    let probe = QueueProbe::connect(&c.endpoints.broker_url).await?;
    let drain_limit = Duration::from_secs(120) + Duration::from_millis(orders as u64 * 20);

    // Idle baseline: sequential orders on a quiet system, then let them drain.
    let mut idle = Vec::new();
    for i in 0..200 {
        let t = Instant::now();
        let r = c.place(burst_product(i), 1).await?;
        idle.push(t.elapsed());
        if r.status != StatusCode::ACCEPTED {
            return Err(format!("idle order failed: {} {}", r.status, r.body).into());
        }
    }
    idle.sort();
    wait_drained(c, &probe, drain_limit).await?;
    let before = c.order_stats().await?;
    println!(
        "   idle HTTP latency (200 sequential orders): p50 {}  p99 {}",
        ms(percentile(&idle, 50)),
        ms(percentile(&idle, 99))
    );

    // The burst.
    let start = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let mut senders = Vec::new();
    for _ in 0..concurrency {
        let (c, next) = (c.clone(), Arc::clone(&next));
        senders.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0usize;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= orders {
                    break;
                }
                if rate > 0 {
                    let due = start + Duration::from_secs(1) * i as u32 / rate;
                    tokio::time::sleep_until(due).await;
                }
                let t = Instant::now();
                match c.place(burst_product(i), 1 + (i % 3) as i64).await {
                    Ok(r) if r.status == StatusCode::ACCEPTED => lat.push(t.elapsed()),
                    _ => errors += 1,
                }
            }
            (lat, errors, Instant::now())
        }));
    }
    let sent = async {
        let mut lat = Vec::new();
        let mut errors = 0;
        let mut last = start;
        for s in senders {
            let (l, e, done) = s.await.expect("sender task");
            lat.extend(l);
            errors += e;
            last = last.max(done);
        }
        (lat, errors, last)
    };
    let target_total = before.total + orders as i64;
    let sampling = sample_depth(c, &probe, start, orders as u64, target_total, drain_limit);
    let ((mut lat, http_errors, last_sent), sampled) = tokio::join!(sent, sampling);
    let (samples, drained_at) = sampled?;
    lat.sort();
    let after = c.order_stats().await?;
    let inventory = c.inventory().await?;
    let final_depth = probe.inventory_depth().await?;
    probe.close().await;

    let report = BurstReport {
        orders,
        rate,
        concurrency,
        idle_p50: percentile(&idle, 50),
        idle_p99: percentile(&idle, 99),
        burst_p50: percentile(&lat, 50),
        burst_p99: percentile(&lat, 99),
        send_time: last_sent - start,
        drain_time: drained_at - start,
        peak_depth: samples.iter().map(|s| s.1).max().unwrap_or(0),
        final_depth,
        depth_samples: samples,
        http_errors,
    };
    print_report(&report);

    let decided = (after.reserved - before.reserved) + (after.rejected - before.rejected);
    checks.check(
        "every burst order accepted",
        http_errors == 0 && lat.len() == orders,
        format!("{} accepted, {http_errors} failed", lat.len()),
    );
    checks.check(
        "every order decided exactly once",
        after.pending == 0 && decided == orders as i64 && after.anomalies == 0,
        format!(
            "+{} reserved, +{} rejected, {} pending, {} with a wrong history",
            after.reserved - before.reserved,
            after.rejected - before.rejected,
            after.pending,
            after.anomalies
        ),
    );
    let stock_consistent = inventory
        .stock
        .iter()
        .all(|(product, (initial, available))| {
            initial - available
                == inventory
                    .reserved_quantity
                    .get(product)
                    .copied()
                    .unwrap_or(0)
        });
    checks.check(
        "inventory consistent",
        inventory.decided_twice == 0
            && inventory.reserved + inventory.rejected == after.total
            && stock_consistent,
        format!(
            "{} decisions for {} orders, {} decided twice, stock = initial − reserved: {stock_consistent}",
            inventory.reserved + inventory.rejected,
            after.total,
            inventory.decided_twice
        ),
    );
    checks.check(
        "queue drained",
        report.final_depth == 0,
        format!(
            "peak {} queued, {} at the end",
            report.peak_depth, report.final_depth
        ),
    );
    Ok(report)
}

/// Waits until no order is pending and the inventory queue is empty.
async fn wait_drained(c: &ShopClient, probe: &QueueProbe, limit: Duration) -> Result<(), BoxError> {
    eventually("the orders to drain", limit, || async {
        let pending = c.order_stats().await?.pending;
        Ok((pending == 0 && probe.inventory_depth().await? == 0).then_some(()))
    })
    .await
}

/// Samples the queue depth every 250 ms, printing a bar per sample, until
/// `target_total` orders exist and none is pending. Returns the samples and
/// when the last order was decided.
async fn sample_depth(
    c: &ShopClient,
    probe: &QueueProbe,
    start: Instant,
    scale: u64,
    target_total: i64,
    limit: Duration,
) -> Result<(Vec<(f64, u64)>, Instant), BoxError> {
    println!("   queue depth (inventory-service partitions), one line per 250 ms:");
    let mut samples = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tick.tick().await;
        let depth = probe.inventory_depth().await?;
        let stats = c.order_stats().await?;
        let at = start.elapsed().as_secs_f64();
        samples.push((at, depth));
        let width = (depth * 50).div_ceil(scale.max(1)).min(50) as usize;
        println!(
            "   {at:6.2}s {depth:>7} {:<50} pending {:>6}",
            "█".repeat(width),
            stats.pending
        );
        if stats.total >= target_total && stats.pending == 0 {
            return Ok((samples, Instant::now()));
        }
        if start.elapsed() > limit {
            return Err(format!(
                "orders still pending after {limit:?}: {} of {target_total}",
                stats.pending
            )
            .into());
        }
    }
}

/// Prints the burst's figures.
pub fn print_report(r: &BurstReport) {
    println!(
        "\n   peak shaving figures ({} orders, {} connections):",
        r.orders, r.concurrency
    );
    println!(
        "     HTTP latency idle   p50 {:>9}  p99 {:>9}",
        ms(r.idle_p50),
        ms(r.idle_p99)
    );
    println!(
        "     HTTP latency burst  p50 {:>9}  p99 {:>9}",
        ms(r.burst_p50),
        ms(r.burst_p99)
    );
    println!(
        "     accepted in {:.2} s ({:.0} orders/s); all decided after {:.2} s ({:.0} orders/s)",
        r.send_time.as_secs_f64(),
        r.orders as f64 / r.send_time.as_secs_f64().max(1e-9),
        r.drain_time.as_secs_f64(),
        r.orders as f64 / r.drain_time.as_secs_f64().max(1e-9)
    );
    println!(
        "     queue depth: peak {}, at the end {}",
        r.peak_depth, r.final_depth
    );
}

/// The scripted walk through all three flows; returns the checks.
pub async fn run(
    c: &ShopClient,
    burst_orders: usize,
    concurrency: usize,
) -> Result<Checks, BoxError> {
    let mut checks = Checks::default();
    async_work(c, &mut checks).await?;
    decoupling(c, &mut checks).await?;
    if burst_orders > 0 {
        peak_shaving(c, burst_orders, concurrency, &mut checks).await?;
    }
    Ok(checks)
}
