//! The framework dashboard (feature `dashboard`): an axum router a service
//! mounts into its own HTTP server, with a JSON API and one HTML page.
//!
//! It shows each outbox's backlog and oldest row, parked rows (retry or
//! discard them), each group's dead letters with reason and attempt count
//! (send them back to their group, or discard them), and inbox sizes.
//!
//! ```ignore
//! let state = DashboardState::new()
//!     .outbox(&outbox)
//!     .inbox(&inbox)
//!     .dead_letters(&transport, ["billing", "shipping"]);
//! let app = axum::Router::new()
//!     .route("/orders", post(create_order))
//!     .nest("/eventbus", eventbus::dashboard::router(state));
//! ```
//!
//! API (under the mount point; errors are `{"error": "..."}` with 400 for
//! bad input, naming the field, and 404 for what does not exist):
//!
//! | method and path | what |
//! | --- | --- |
//! | `GET /` | the page |
//! | `GET /api/overview` | outboxes (backlog, parked, oldest age), inboxes (rows), dead letters per group (count) |
//! | `GET /api/outbox/{table}/parked?limit=N` | parked rows ([`ParkedEvent::describe`](crate::outbox::ParkedEvent::describe)) |
//! | `POST /api/outbox/{table}/parked/retry` `{"id": "<uuid>"}` | un-park a row |
//! | `POST /api/outbox/{table}/parked/discard` `{"id": "<uuid>"}` | delete a parked row |
//! | `GET /api/dead-letters/{group}?limit=N` | dead letters: event, key, reason, error, attempts, payload |
//! | `POST /api/dead-letters/{group}/requeue` `{"id": "<uuid>"}` | send one back to its group |
//! | `POST /api/dead-letters/{group}/discard` `{"id": "<uuid>"}` | drop one |

mod dead_letters;

pub use dead_letters::{revived, DeadLetterAdmin, SharedDeadLetterAdmin, MAX_SCAN};

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header::CONTENT_TYPE, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::{header, Envelope};

#[cfg(any(feature = "postgres", feature = "mysql", feature = "sqlite"))]
use crate::inbox::InboxStore;
#[cfg(any(feature = "postgres", feature = "mysql", feature = "sqlite"))]
use crate::outbox::OutboxStore;

/// Default and largest `limit` of the listings.
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;

/// What the dashboard shows: outboxes, inboxes and groups' dead letters.
#[derive(Clone, Default)]
pub struct DashboardState {
    #[cfg(any(feature = "postgres", feature = "mysql", feature = "sqlite"))]
    outboxes: Vec<(String, Arc<dyn OutboxStore>)>,
    #[cfg(any(feature = "postgres", feature = "mysql", feature = "sqlite"))]
    inboxes: Vec<(String, Arc<dyn InboxStore>)>,
    groups: Vec<(String, SharedDeadLetterAdmin)>,
}

impl std::fmt::Debug for DashboardState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("DashboardState");
        #[cfg(any(feature = "postgres", feature = "mysql", feature = "sqlite"))]
        d.field(
            "outboxes",
            &self.outboxes.iter().map(|(t, _)| t).collect::<Vec<_>>(),
        )
        .field(
            "inboxes",
            &self.inboxes.iter().map(|(t, _)| t).collect::<Vec<_>>(),
        );
        d.field(
            "groups",
            &self.groups.iter().map(|(g, _)| g).collect::<Vec<_>>(),
        )
        .finish()
    }
}

impl DashboardState {
    /// Shows nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Shows `outbox`'s table: backlog, oldest row, parked rows.
    #[cfg(any(feature = "postgres", feature = "mysql", feature = "sqlite"))]
    pub fn outbox<DB: crate::outbox::sqlx_db::Db>(self, outbox: &crate::outbox::Outbox<DB>) -> Self
    where
        crate::outbox::Outbox<DB>: crate::outbox::AsStore,
    {
        self.outbox_store(outbox.store())
    }

    /// Shows an outbox store.
    #[cfg(any(feature = "postgres", feature = "mysql", feature = "sqlite"))]
    pub fn outbox_store(mut self, store: Arc<dyn OutboxStore>) -> Self {
        self.outboxes.push((store.table_name(), store));
        self
    }

    /// Shows `inbox`'s size.
    #[cfg(any(feature = "postgres", feature = "mysql", feature = "sqlite"))]
    pub fn inbox<DB: crate::outbox::sqlx_db::Db>(self, inbox: &crate::inbox::Inbox<DB>) -> Self
    where
        crate::inbox::Inbox<DB>: crate::inbox::AsInboxStore,
    {
        let table = inbox.config().table_name().to_string();
        self.inbox_store(table, inbox.store())
    }

    /// Shows an inbox store whose table is `table`.
    #[cfg(any(feature = "postgres", feature = "mysql", feature = "sqlite"))]
    pub fn inbox_store(mut self, table: String, store: Arc<dyn InboxStore>) -> Self {
        self.inboxes.push((table, store));
        self
    }

    /// Shows the dead letters of `groups` on `transport` (the memory or
    /// AMQP transport).
    pub fn dead_letters<T, I, S>(mut self, transport: &T, groups: I) -> Self
    where
        T: DeadLetterAdmin + Clone,
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let admin: SharedDeadLetterAdmin = Arc::new(transport.clone());
        self.groups
            .extend(groups.into_iter().map(|g| (g.into(), admin.clone())));
        self
    }

    #[cfg(any(feature = "postgres", feature = "mysql", feature = "sqlite"))]
    fn outbox_named(&self, table: &str) -> Result<&Arc<dyn OutboxStore>, ApiError> {
        self.outboxes
            .iter()
            .find(|(t, _)| t == table)
            .map(|(_, s)| s)
            .ok_or_else(|| ApiError::NotFound(format!("no outbox table {table:.100}")))
    }

    fn group_named(&self, group: &str) -> Result<&SharedDeadLetterAdmin, ApiError> {
        self.groups
            .iter()
            .find(|(g, _)| g == group)
            .map(|(_, a)| a)
            .ok_or_else(|| ApiError::NotFound(format!("no group {group:.100}")))
    }
}

/// The dashboard's router; nest it where the service wants it
/// (`app.nest("/eventbus", router(state))`).
pub fn router<S: Clone + Send + Sync + 'static>(state: DashboardState) -> Router<S> {
    let router = Router::new()
        .route("/", get(page))
        .route("/api/overview", get(overview))
        .route("/api/dead-letters/{group}", get(list_dead_letters))
        .route(
            "/api/dead-letters/{group}/requeue",
            post(requeue_dead_letter),
        )
        .route(
            "/api/dead-letters/{group}/discard",
            post(discard_dead_letter),
        );
    #[cfg(any(feature = "postgres", feature = "mysql", feature = "sqlite"))]
    let router = router
        .route("/api/outbox/{table}/parked", get(list_parked))
        .route("/api/outbox/{table}/parked/retry", post(retry_parked))
        .route("/api/outbox/{table}/parked/discard", post(discard_parked));
    router
        .fallback(|| async { ApiError::NotFound("no such page".into()) })
        .with_state(Arc::new(state))
}

type Shared = State<Arc<DashboardState>>;

/// An API error: its status and `{"error": message}`.
#[derive(Debug)]
enum ApiError {
    BadRequest(String),
    NotFound(String),
    Internal(String),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            ApiError::BadRequest(m) => (StatusCode::BAD_REQUEST, m),
            ApiError::NotFound(m) => (StatusCode::NOT_FOUND, m),
            ApiError::Internal(m) => {
                tracing::warn!(error = %m, "dashboard request failed");
                (StatusCode::INTERNAL_SERVER_ERROR, m)
            }
        };
        (status, Json(json!({ "error": message }))).into_response()
    }
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::Internal(e.to_string())
}

/// `limit` from the query: 1..=1000, default 100.
fn limit(query: &HashMap<String, String>) -> Result<usize, ApiError> {
    match query.get("limit") {
        None => Ok(DEFAULT_LIMIT),
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
            _ => Err(ApiError::BadRequest(format!(
                "query parameter `limit`: expected a number from 1 to {MAX_LIMIT}, got {v:.40}"
            ))),
        },
    }
}

/// The `id` of an action's JSON body `{"id": "<uuid>"}`.
fn body_id(body: &Bytes) -> Result<Uuid, ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("body is not JSON: {e}")))?;
    let Some(obj) = value.as_object() else {
        return Err(ApiError::BadRequest(
            "body: expected a JSON object with field `id`".into(),
        ));
    };
    match obj.get("id") {
        None => Err(ApiError::BadRequest("missing field `id`".into())),
        Some(Value::String(s)) => Uuid::parse_str(s)
            .map_err(|_| ApiError::BadRequest(format!("field `id`: not a UUID: {s:.60}"))),
        Some(_) => Err(ApiError::BadRequest(
            "field `id`: expected a UUID string".into(),
        )),
    }
}

async fn page() -> impl IntoResponse {
    (
        [(CONTENT_TYPE, "text/html; charset=utf-8")],
        include_str!("page.html"),
    )
}

async fn overview(State(state): Shared) -> Result<Json<Value>, ApiError> {
    #[allow(unused_mut)]
    let mut outboxes: Vec<Value> = Vec::new();
    #[allow(unused_mut)]
    let mut inboxes: Vec<Value> = Vec::new();
    #[cfg(any(feature = "postgres", feature = "mysql", feature = "sqlite"))]
    {
        for (table, store) in &state.outboxes {
            let s = store.stats().await.map_err(internal)?;
            outboxes.push(json!({
                "table": table,
                "backlog": s.backlog,
                "parked": s.parked,
                "oldest_age_seconds": s.oldest_age.as_secs_f64(),
            }));
        }
        for (table, store) in &state.inboxes {
            inboxes.push(json!({
                "table": table,
                "rows": store.rows().await.map_err(internal)?,
            }));
        }
    }
    let mut groups = Vec::new();
    for (group, admin) in &state.groups {
        groups.push(json!({
            "group": group,
            "dead_letters": admin.count(group).await.map_err(internal)?,
        }));
    }
    Ok(Json(json!({
        "outboxes": outboxes,
        "inboxes": inboxes,
        "groups": groups,
    })))
}

#[cfg(any(feature = "postgres", feature = "mysql", feature = "sqlite"))]
async fn list_parked(
    State(state): Shared,
    Path(table): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let store = state.outbox_named(&table)?;
    let limit = u32::try_from(limit(&query)?).unwrap_or(u32::MAX);
    let rows = store.parked(limit).await.map_err(internal)?;
    Ok(Json(Value::Array(
        rows.iter().map(|r| r.describe()).collect(),
    )))
}

#[cfg(any(feature = "postgres", feature = "mysql", feature = "sqlite"))]
async fn retry_parked(
    State(state): Shared,
    Path(table): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let store = state.outbox_named(&table)?;
    let id = body_id(&body)?;
    match store.retry_parked(id).await.map_err(internal)? {
        true => Ok(Json(json!({ "retried": id }))),
        false => Err(ApiError::NotFound(format!("no parked row with id {id}"))),
    }
}

#[cfg(any(feature = "postgres", feature = "mysql", feature = "sqlite"))]
async fn discard_parked(
    State(state): Shared,
    Path(table): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let store = state.outbox_named(&table)?;
    let id = body_id(&body)?;
    match store.discard_parked(id).await.map_err(internal)? {
        true => Ok(Json(json!({ "discarded": id }))),
        false => Err(ApiError::NotFound(format!("no parked row with id {id}"))),
    }
}

/// A dead letter as the API shows it.
fn describe_dead_letter(e: &Envelope) -> Value {
    let payload = match serde_json::from_slice::<Value>(&e.payload) {
        Ok(v) => v,
        Err(_) => Value::String(String::from_utf8_lossy(&e.payload).into_owned()),
    };
    let headers: serde_json::Map<String, Value> = e
        .headers
        .iter()
        .map(|(k, v)| (k.to_owned(), Value::String(v.to_owned())))
        .collect();
    json!({
        "id": e.id,
        "event": e.name,
        "version": e.version,
        "key": e.key,
        "occurred_at": e.occurred_at,
        "reason": e.headers.get(header::DEAD_LETTER_REASON),
        "error": e.headers.get(header::DEAD_LETTER_ERROR),
        "attempts": e.headers.get(header::DEAD_LETTER_ATTEMPTS).and_then(|a| a.parse::<u64>().ok()),
        "group": e.headers.get(header::DEAD_LETTER_GROUP),
        "headers": headers,
        "payload": payload,
    })
}

async fn list_dead_letters(
    State(state): Shared,
    Path(group): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let admin = state.group_named(&group)?;
    let limit = limit(&query)?;
    let letters = admin.list(&group, limit).await.map_err(internal)?;
    Ok(Json(Value::Array(
        letters.iter().map(describe_dead_letter).collect(),
    )))
}

async fn requeue_dead_letter(
    State(state): Shared,
    Path(group): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let admin = state.group_named(&group)?;
    let id = body_id(&body)?;
    match admin.requeue(&group, id).await.map_err(internal)? {
        true => Ok(Json(json!({ "requeued": id }))),
        false => Err(ApiError::NotFound(format!(
            "no dead letter with id {id} in group {group:.100}"
        ))),
    }
}

async fn discard_dead_letter(
    State(state): Shared,
    Path(group): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let admin = state.group_named(&group)?;
    let id = body_id(&body)?;
    match admin.discard(&group, id).await.map_err(internal)? {
        true => Ok(Json(json!({ "discarded": id }))),
        false => Err(ApiError::NotFound(format!(
            "no dead letter with id {id} in group {group:.100}"
        ))),
    }
}
