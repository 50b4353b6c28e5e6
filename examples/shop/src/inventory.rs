//! inventory-service: owns the `stock` and `decisions` tables. Handles
//! `OrderPlaced` in the partitioned `inventory-service` group (instances
//! share the partitions; one order's events stay in order), behind the
//! inbox, and answers through its own outbox with `StockReserved` or
//! `StockRejected` — never by calling the order service.
//!
//! Its writes go through a [`RateLimiter`]: this is the database to protect.
//! However fast orders arrive, it sees at most `rate` writes per second;
//! the broker holds the rest (peak shaving). The handler takes its permit
//! *before* it opens the inbox transaction (`Inbox::begin`, rather than the
//! inbox layer, which would open it first), so no transaction — and on
//! SQLite no write lock — is held while it waits.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use eventbus::{BoxError, Context, Handle, Handler};
use serde::{Deserialize, Serialize};

use crate::db::{sql, Database, Ddl, Dialect};
use crate::events::{OrderPlaced, StockRejected, StockReserved};
use crate::http::ApiResult;
use crate::ratelimit::RateLimiter;
use crate::with_db;

const DDL: Ddl = Ddl {
    sqlite: SQLITE,
    postgres: POSTGRES,
    mysql: MYSQL,
};
const SQLITE: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS stock (
        product TEXT PRIMARY KEY,
        initial INTEGER NOT NULL,
        available INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS decisions (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        order_id TEXT NOT NULL,
        product TEXT NOT NULL,
        quantity INTEGER NOT NULL,
        outcome TEXT NOT NULL,
        reason TEXT)",
    "CREATE INDEX IF NOT EXISTS decisions_order ON decisions (order_id)",
];
const POSTGRES: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS stock (
        product TEXT PRIMARY KEY,
        initial BIGINT NOT NULL,
        available BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS decisions (
        id BIGSERIAL PRIMARY KEY,
        order_id TEXT NOT NULL,
        product TEXT NOT NULL,
        quantity BIGINT NOT NULL,
        outcome TEXT NOT NULL,
        reason TEXT)",
    "CREATE INDEX IF NOT EXISTS decisions_order ON decisions (order_id)",
];
const MYSQL: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS stock (
        product VARCHAR(64) PRIMARY KEY,
        initial BIGINT NOT NULL,
        available BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS decisions (
        id BIGINT AUTO_INCREMENT PRIMARY KEY,
        order_id VARCHAR(36) NOT NULL,
        product VARCHAR(64) NOT NULL,
        quantity BIGINT NOT NULL,
        outcome VARCHAR(16) NOT NULL,
        reason TEXT,
        INDEX decisions_order (order_id))",
];

/// Products and their initial stock. `lamp` runs out during a burst, so
/// some orders are rejected; any other product is unknown.
pub const CATALOG: &[(&str, i64)] = &[("book", 1_000_000), ("pen", 1_000_000), ("lamp", 100)];

/// Stock per product and the decisions taken.
#[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct InventorySummary {
    /// Product → (initial, available).
    pub stock: BTreeMap<String, (i64, i64)>,
    /// Product → quantity reserved by `reserved` decisions.
    pub reserved_quantity: BTreeMap<String, i64>,
    pub reserved: i64,
    pub rejected: i64,
    /// Orders decided more than once (must be 0: the inbox absorbs redeliveries).
    pub decided_twice: i64,
}

/// One decision taken for an order.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct Decision {
    pub order_id: String,
    pub product: String,
    pub quantity: i64,
    /// `reserved` or `rejected`.
    pub outcome: String,
    pub reason: Option<String>,
}

/// Reserves stock for an order, or rejects it with a reason.
#[derive(Debug, Handler)]
#[handler(
    group = "inventory-service",
    events(OrderPlaced),
    partitions = 8,
    concurrency = 4,
    prefetch = 16,
    backoff_ms = 200
)]
pub struct ReserveStock {
    db: Database,
    limiter: Arc<RateLimiter>,
}

impl Handle<OrderPlaced> for ReserveStock {
    async fn handle(&self, e: OrderPlaced, cx: &Context) -> Result<(), BoxError> {
        self.limiter.acquire().await;
        with_db!(&self.db, |_pool, outbox, inbox, DB| {
            // `None`: this group already handled the message (a redelivery).
            let Some(mut tx) = inbox.begin(cx).await? else {
                return Ok(());
            };
            let taken = eventbus::sqlx::query(&sql::<DB>(
                "UPDATE stock SET available = available - $1 WHERE product = $2 AND available >= $3",
            ))
            .bind(e.quantity)
            .bind(&e.product)
            .bind(e.quantity)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            let reason = if taken == 1 {
                None
            } else {
                let available: Option<i64> = eventbus::sqlx::query_scalar(&sql::<DB>(
                    "SELECT available FROM stock WHERE product = $1",
                ))
                .bind(&e.product)
                .fetch_optional(&mut *tx)
                .await?;
                Some(match available {
                    None => format!("unknown product {:?}", e.product),
                    Some(n) => format!(
                        "out of stock: {n} {} left, {} wanted",
                        e.product, e.quantity
                    ),
                })
            };
            eventbus::sqlx::query(&sql::<DB>(
                "INSERT INTO decisions (order_id, product, quantity, outcome, reason) VALUES ($1, $2, $3, $4, $5)",
            ))
            .bind(&e.order_id)
            .bind(&e.product)
            .bind(e.quantity)
            .bind(if reason.is_none() { "reserved" } else { "rejected" })
            .bind(reason.as_deref())
            .execute(&mut *tx)
            .await?;
            match reason {
                None => {
                    let reply = StockReserved {
                        order_id: e.order_id,
                        product: e.product,
                        quantity: e.quantity,
                    };
                    outbox.add(&mut *tx, &reply).await?;
                }
                Some(reason) => {
                    let reply = StockRejected {
                        order_id: e.order_id,
                        product: e.product,
                        reason,
                    };
                    outbox.add(&mut *tx, &reply).await?;
                }
            }
            tx.commit().await?;
        });
        Ok(())
    }
}

/// The service: its database (stock, decisions, outbox, inbox) and the
/// write rate limit.
#[derive(Debug)]
pub struct InventoryService {
    db: Database,
    limiter: Arc<RateLimiter>,
}

impl InventoryService {
    /// Creates the service's tables and stocks the [`CATALOG`] (once).
    /// `writes_per_sec` limits the stock writes.
    pub async fn new(db: Database, writes_per_sec: u32) -> Result<Arc<Self>, BoxError> {
        db.migrate(&DDL).await?;
        with_db!(&db, |pool, _outbox, _inbox, DB| {
            let seed = DB::insert_or_ignore(
                "stock (product, initial, available)",
                "($1, $2, $3)",
                "product",
            );
            for (product, n) in CATALOG {
                eventbus::sqlx::query(&sql::<DB>(&seed))
                    .bind(product)
                    .bind(n)
                    .bind(n)
                    .execute(pool)
                    .await?;
            }
        });
        let burst = (writes_per_sec / 20).max(1);
        Ok(Arc::new(Self {
            db,
            limiter: Arc::new(RateLimiter::new(writes_per_sec, burst)),
        }))
    }

    /// The handler to register on the service's bus.
    pub fn handler(&self) -> ReserveStock {
        ReserveStock {
            db: self.db.clone(),
            limiter: Arc::clone(&self.limiter),
        }
    }

    /// `GET /inventory`, `GET /inventory/decisions/{order_id}`.
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/inventory", get(summary))
            .route("/inventory/decisions/{order_id}", get(decisions))
            .with_state(Arc::clone(self))
    }

    /// The decisions taken for `order_id`, oldest first (one, normally).
    pub async fn decisions(&self, order_id: &str) -> ApiResult<Vec<Decision>> {
        with_db!(&self.db, |pool, _outbox, _inbox, DB| {
            let rows: Vec<(String, String, i64, String, Option<String>)> =
                eventbus::sqlx::query_as(&sql::<DB>(
                    "SELECT order_id, product, quantity, outcome, reason FROM decisions WHERE order_id = $1 ORDER BY id",
                ))
                .bind(order_id)
                .fetch_all(pool)
                .await?;
            Ok(rows
                .into_iter()
                .map(|(order_id, product, quantity, outcome, reason)| Decision {
                    order_id,
                    product,
                    quantity,
                    outcome,
                    reason,
                })
                .collect())
        })
    }

    /// Stock and decisions.
    pub async fn summary(&self) -> ApiResult<InventorySummary> {
        with_db!(&self.db, |pool, _outbox, _inbox, DB| {
            let mut s = InventorySummary::default();
            let stock: Vec<(String, i64, i64)> =
                eventbus::sqlx::query_as("SELECT product, initial, available FROM stock")
                    .fetch_all(pool)
                    .await?;
            for (product, initial, available) in stock {
                s.stock.insert(product, (initial, available));
            }
            let outcomes: Vec<(String, i64)> = eventbus::sqlx::query_as(
                "SELECT outcome, COUNT(*) FROM decisions GROUP BY outcome",
            )
            .fetch_all(pool)
            .await?;
            for (outcome, n) in outcomes {
                match outcome.as_str() {
                    "reserved" => s.reserved = n,
                    _ => s.rejected += n,
                }
            }
            let reserved_sql = format!(
                "SELECT product, CAST(SUM(quantity) AS {}) FROM decisions WHERE outcome = 'reserved' GROUP BY product",
                DB::BIGINT
            );
            let reserved: Vec<(String, i64)> = eventbus::sqlx::query_as(&reserved_sql)
                .fetch_all(pool)
                .await?;
            s.reserved_quantity = reserved.into_iter().collect();
            s.decided_twice = eventbus::sqlx::query_scalar(
                "SELECT COUNT(*) FROM (SELECT order_id FROM decisions GROUP BY order_id HAVING COUNT(*) > 1) AS twice",
            )
            .fetch_one(pool)
            .await?;
            Ok(s)
        })
    }
}

async fn summary(State(svc): State<Arc<InventoryService>>) -> ApiResult<Json<InventorySummary>> {
    Ok(Json(svc.summary().await?))
}

async fn decisions(
    State(svc): State<Arc<InventoryService>>,
    order_id: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<Vec<Decision>>> {
    let Path(order_id) = order_id?;
    Ok(Json(svc.decisions(&order_id).await?))
}
