//! order-service: owns the `orders` table. `POST /orders` writes the order
//! (`pending`) and `OrderPlaced` in one transaction and answers at once;
//! the inventory's answer (`StockReserved` / `StockRejected`, handled in
//! the `order-service` group behind the inbox) sets the final status. It
//! never calls the inventory service (decoupling): only events connect them.
//!
//! Every order keeps the history of events applied to it (`order.placed,
//! stock.reserved`), so a decision applied twice or out of order is visible.

use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use eventbus::{inbox, BoxError, Context, Event, Handle, HandleError, Handler};
use serde::{Deserialize, Serialize};

use crate::db::{sql, Database, Ddl, Dialect};
use crate::events::{OrderPlaced, StockRejected, StockReserved};
use crate::http::{ApiError, ApiResult};
use crate::with_db;

const DDL: Ddl = Ddl {
    sqlite: &["CREATE TABLE IF NOT EXISTS orders (
        id TEXT PRIMARY KEY,
        product TEXT NOT NULL,
        quantity INTEGER NOT NULL,
        status TEXT NOT NULL,
        reason TEXT,
        history TEXT NOT NULL)"],
    postgres: &["CREATE TABLE IF NOT EXISTS orders (
        id TEXT PRIMARY KEY,
        product TEXT NOT NULL,
        quantity BIGINT NOT NULL,
        status TEXT NOT NULL,
        reason TEXT,
        history TEXT NOT NULL)"],
    mysql: &["CREATE TABLE IF NOT EXISTS orders (
        id VARCHAR(36) PRIMARY KEY,
        product VARCHAR(64) NOT NULL,
        quantity BIGINT NOT NULL,
        status VARCHAR(16) NOT NULL,
        reason TEXT,
        history TEXT NOT NULL)"],
};

/// An order request.
#[derive(Debug, Deserialize)]
pub struct NewOrder {
    pub product: String,
    pub quantity: i64,
}

/// A stored order.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct Order {
    pub id: String,
    pub product: String,
    pub quantity: i64,
    /// `pending`, `reserved` or `rejected`.
    pub status: String,
    pub reason: Option<String>,
    /// The events applied to the order, in order.
    pub history: Vec<String>,
}

/// Orders per status, and orders whose history is not exactly "placed,
/// then one decision".
#[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct OrderStats {
    pub total: i64,
    pub pending: i64,
    pub reserved: i64,
    pub rejected: i64,
    pub anomalies: i64,
}

/// Applies the inventory's decision to the order.
#[derive(Debug, Handler)]
#[handler(
    group = "order-service",
    events(StockReserved, StockRejected),
    inbox,
    concurrency = 4,
    backoff_ms = 200
)]
pub struct ApplyStockDecision {
    db: Database,
}

impl ApplyStockDecision {
    async fn apply(
        &self,
        order_id: &str,
        status: &str,
        reason: Option<&str>,
        event: &str,
    ) -> Result<(), BoxError> {
        let updated = with_db!(&self.db, |_pool, _outbox, _inbox, DB| {
            let mut tx = inbox::transaction::<DB>().await?;
            // `reason` before `status`: MySQL assigns left to right.
            let update = format!(
                "UPDATE orders SET
                    reason = CASE WHEN status = 'pending' THEN $1 ELSE reason END,
                    status = CASE WHEN status = 'pending' THEN $2 ELSE status END,
                    history = {}
                 WHERE id = $4",
                DB::concat("history", &DB::concat("','", "$3"))
            );
            eventbus::sqlx::query(&sql::<DB>(&update))
                .bind(reason)
                .bind(status)
                .bind(event)
                .bind(order_id)
                .execute(&mut *tx)
                .await?
                .rows_affected()
        });
        if updated == 0 {
            return Err(HandleError::permanent(format!("no order {order_id}")));
        }
        Ok(())
    }
}

impl Handle<StockReserved> for ApplyStockDecision {
    async fn handle(&self, e: StockReserved, _cx: &Context) -> Result<(), BoxError> {
        self.apply(&e.order_id, "reserved", None, StockReserved::NAME)
            .await
    }
}

impl Handle<StockRejected> for ApplyStockDecision {
    async fn handle(&self, e: StockRejected, _cx: &Context) -> Result<(), BoxError> {
        self.apply(
            &e.order_id,
            "rejected",
            Some(&e.reason),
            StockRejected::NAME,
        )
        .await
    }
}

/// The service: its database (orders, outbox, inbox).
#[derive(Debug)]
pub struct OrderService {
    db: Database,
}

impl OrderService {
    /// Creates the service's tables.
    pub async fn new(db: Database) -> Result<Arc<Self>, BoxError> {
        db.migrate(&DDL).await?;
        Ok(Arc::new(Self { db }))
    }

    /// The handler to register on the service's bus.
    pub fn handler(&self) -> ApplyStockDecision {
        ApplyStockDecision {
            db: self.db.clone(),
        }
    }

    /// `POST /orders`, `GET /orders/{id}`, `GET /orders/stats`.
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/orders", post(place))
            .route("/orders/stats", get(stats))
            .route("/orders/{id}", get(find))
            .with_state(Arc::clone(self))
    }

    /// Places an order: the `pending` row and `OrderPlaced` commit together.
    pub async fn place(&self, new: NewOrder) -> ApiResult<Order> {
        let product = new.product.trim().to_owned();
        let valid = !product.is_empty()
            && product.len() <= 64
            && product
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !valid {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "product must be 1 to 64 characters of [A-Za-z0-9_-]",
            ));
        }
        if !(1..=1000).contains(&new.quantity) {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "quantity must be 1 to 1000",
            ));
        }
        let id = uuid::Uuid::now_v7().to_string();
        with_db!(&self.db, |pool, outbox, _inbox, DB| {
            let mut tx = pool.begin().await?;
            eventbus::sqlx::query(&sql::<DB>(
                "INSERT INTO orders (id, product, quantity, status, history) VALUES ($1, $2, $3, 'pending', $4)",
            ))
            .bind(&id)
            .bind(&product)
            .bind(new.quantity)
            .bind(OrderPlaced::NAME)
            .execute(&mut *tx)
            .await?;
            let event = OrderPlaced {
                order_id: id.clone(),
                product: product.clone(),
                quantity: new.quantity,
            };
            outbox.add(&mut tx, &event).await?;
            tx.commit().await?;
        });
        Ok(Order {
            id,
            product,
            quantity: new.quantity,
            status: "pending".into(),
            reason: None,
            history: vec![OrderPlaced::NAME.into()],
        })
    }

    /// The order with `id`, if any.
    pub async fn find(&self, id: &str) -> ApiResult<Option<Order>> {
        with_db!(&self.db, |pool, _outbox, _inbox, DB| {
            let row: Option<(String, String, i64, String, Option<String>, String)> =
                eventbus::sqlx::query_as(&sql::<DB>(
                    "SELECT id, product, quantity, status, reason, history FROM orders WHERE id = $1",
                ))
                .bind(id)
                .fetch_optional(pool)
                .await?;
            Ok(
                row.map(|(id, product, quantity, status, reason, history)| Order {
                    id,
                    product,
                    quantity,
                    status,
                    reason,
                    history: history.split(',').map(str::to_owned).collect(),
                }),
            )
        })
    }

    /// Counts per status and anomalies (see [`OrderStats`]).
    pub async fn stats(&self) -> ApiResult<OrderStats> {
        let expected = [
            format!("{},{}", OrderPlaced::NAME, StockReserved::NAME),
            format!("{},{}", OrderPlaced::NAME, StockRejected::NAME),
        ];
        with_db!(&self.db, |pool, _outbox, _inbox, DB| {
            let rows: Vec<(String, i64)> =
                eventbus::sqlx::query_as("SELECT status, COUNT(*) FROM orders GROUP BY status")
                    .fetch_all(pool)
                    .await?;
            let anomalies: i64 = eventbus::sqlx::query_scalar(&sql::<DB>(
                "SELECT COUNT(*) FROM orders
                 WHERE (status = 'pending' AND history <> $1)
                    OR (status = 'reserved' AND history <> $2)
                    OR (status = 'rejected' AND history <> $3)
                    OR status NOT IN ('pending', 'reserved', 'rejected')",
            ))
            .bind(OrderPlaced::NAME)
            .bind(&expected[0])
            .bind(&expected[1])
            .fetch_one(pool)
            .await?;
            let mut stats = OrderStats {
                anomalies,
                ..OrderStats::default()
            };
            for (status, n) in rows {
                stats.total += n;
                match status.as_str() {
                    "pending" => stats.pending = n,
                    "reserved" => stats.reserved = n,
                    "rejected" => stats.rejected = n,
                    _ => {}
                }
            }
            Ok(stats)
        })
    }
}

async fn place(
    State(svc): State<Arc<OrderService>>,
    body: Result<Json<NewOrder>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<Order>)> {
    let Json(new) = body?;
    Ok((StatusCode::ACCEPTED, Json(svc.place(new).await?)))
}

async fn find(
    State(svc): State<Arc<OrderService>>,
    id: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<Order>> {
    let Path(id) = id?;
    svc.find(&id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no order {id}")))
}

async fn stats(State(svc): State<Arc<OrderService>>) -> ApiResult<Json<OrderStats>> {
    Ok(Json(svc.stats().await?))
}
