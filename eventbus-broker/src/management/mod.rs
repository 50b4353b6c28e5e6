//! The management HTTP API (RabbitMQ-compatible), Prometheus `/metrics` and the static UI,
//! on their own listener (`Config::management_listen`).
//!
//! Owns: the axum router, HTTP basic authentication and tag checks, request parsing,
//! pagination, the JSON shapes, the rate sampler and the metrics rendering. Everything that
//! changes broker state goes through the same model operations the AMQP channels use
//! ([`crate::model::VHost`] / [`Core`] methods), with RabbitMQ's permission checks.
//!
//! # Design choices
//! - **Never render under the lock.** A handler copies what it needs into plain structs
//!   ([`snapshot`]) while holding the state lock (a walk over the queues, no JSON, no
//!   allocation beyond the copies), drops it, then filters, sorts, paginates and serialises.
//!   Listing 10,000 queues holds the lock for the copy only (see `benches/management.rs`).
//! - **Rates by sampling.** Queues and vhosts keep monotonic atomic counters (publish,
//!   deliver, get, ack, redeliver, confirm...). A background sampler reads them every
//!   `management_rate_interval_ms` (5 s by default) and keeps the rate between the last two
//!   samples; responses show them as RabbitMQ's `*_details: {"rate": r}`.
//! - **Tags as RabbitMQ**: any of `management`, `policymaker`, `monitoring`,
//!   `administrator` may log in; `management` sees (and acts on) the vhosts it has
//!   permissions on and its own connections; `monitoring` sees everything read-only;
//!   `administrator` may also manage users, vhosts and permissions and import definitions.
//!   Differences: a user without the needed tag gets 403 (RabbitMQ answers 401), and
//!   `/metrics` needs no credentials (like RabbitMQ's prometheus plugin on its own port).
//! - **Bad input** gets RabbitMQ's error JSON `{"error": ..., "reason": ...}`: 400 naming the
//!   field, 401, 403, 404 `{"error":"Object Not Found","reason":"Not Found"}`; page sizes
//!   are capped at [`MAX_PAGE_SIZE`]. Handlers never panic on input (property-tested).
//! - **Metrics**: at scrape time a fresh `metrics-exporter-prometheus` recorder receives
//!   gauges and counters from a snapshot and renders them; the store-sync latency histogram
//!   is recorded on the hot path into a long-lived recorder owned by the core.

mod api;
mod definitions;
pub mod metrics;
mod render;
mod snapshot;

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::Config;
use crate::model::Core;

pub use snapshot::Rates;

/// Largest `page_size` served; larger requests are capped to it (RabbitMQ's limit).
pub const MAX_PAGE_SIZE: usize = 500;
/// Largest request body accepted (definitions imports included).
const MAX_BODY: usize = 64 * 1024 * 1024;

/// Shared by every handler.
#[derive(Debug)]
pub struct Mgmt {
    core: Arc<Core>,
    config: Arc<Config>,
    amqp_addr: SocketAddr,
    http_addr: SocketAddr,
    started: Instant,
    rates: RwLock<Arc<Rates>>,
    /// Heavy work (snapshots and rendering of large lists, metrics) runs on the blocking
    /// pool, one job at a time: listers never take more than one core from AMQP traffic.
    heavy: tokio::sync::Semaphore,
}

type AppState = Arc<Mgmt>;

/// Bind nothing; serve `listener` until `shutdown` flips. Also runs the rate sampler.
pub async fn serve(
    listener: TcpListener,
    core: Arc<Core>,
    config: Arc<Config>,
    amqp_addr: SocketAddr,
    mut shutdown: watch::Receiver<bool>,
) {
    let http_addr = listener
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)));
    let state = Arc::new(Mgmt {
        core,
        config: config.clone(),
        amqp_addr,
        http_addr,
        started: Instant::now(),
        rates: RwLock::new(Arc::default()),
        heavy: tokio::sync::Semaphore::new(1),
    });
    let sampler = tokio::spawn(sample_rates(
        state.clone(),
        Duration::from_millis(config.management_rate_interval_ms),
    ));
    let app = router(state);
    let stop = async move {
        while !*shutdown.borrow() {
            if shutdown.changed().await.is_err() {
                break;
            }
        }
    };
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(stop)
        .await
    {
        tracing::error!(error = %e, "management listener failed");
    }
    sampler.abort();
}

/// Sample counters every `every` and publish the rates since the previous sample.
async fn sample_rates(state: AppState, every: Duration) {
    let mut prev = snapshot::sample(&state.core);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let cur = snapshot::sample(&state.core);
        let rates = Arc::new(Rates::between(&prev, &cur));
        *state.rates.write().unwrap_or_else(|p| p.into_inner()) = rates;
        prev = cur;
    }
}

impl Mgmt {
    fn rates(&self) -> Arc<Rates> {
        self.rates.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Run `f` (snapshot + render) on the blocking pool, one heavy job at a time, so that
/// neither the lock wait nor the rendering occupies the runtime's workers.
async fn offload<R: Send + 'static>(
    state: &AppState,
    f: impl FnOnce() -> R + Send + 'static,
) -> Result<R, ApiError> {
    let _permit = state
        .heavy
        .acquire()
        .await
        .map_err(|_| ApiError::internal("shutting down"))?;
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(format!("render task failed: {e}")))
}

fn router(state: AppState) -> Router {
    api::routes()
        .route("/metrics", axum::routing::get(metrics::scrape))
        .route("/", axum::routing::get(ui_index))
        .route("/index.html", axum::routing::get(ui_index))
        .route("/app.js", axum::routing::get(ui_js))
        .route("/style.css", axum::routing::get(ui_css))
        .fallback(not_found)
        .layer(axum::middleware::map_response(json_rejections))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

const UI_INDEX: &str = include_str!("../../ui/index.html");
const UI_JS: &str = include_str!("../../ui/app.js");
const UI_CSS: &str = include_str!("../../ui/style.css");

async fn ui_index() -> Response {
    static_file(UI_INDEX, "text/html; charset=utf-8")
}
async fn ui_js() -> Response {
    static_file(UI_JS, "text/javascript; charset=utf-8")
}
async fn ui_css() -> Response {
    static_file(UI_CSS, "text/css; charset=utf-8")
}

fn static_file(body: &'static str, content_type: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

/// axum's own rejections (a path or query that does not decode, a body over the limit)
/// are plain text: give them RabbitMQ's error JSON shape too.
async fn json_rejections(resp: Response) -> Response {
    let status = resp.status();
    let plain = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("text/plain"));
    if !status.is_client_error() || !plain {
        return resp;
    }
    let body = axum::body::to_bytes(resp.into_body(), 64 * 1024)
        .await
        .unwrap_or_default();
    let reason = String::from_utf8_lossy(&body).into_owned();
    let error = match status {
        StatusCode::NOT_FOUND => "Object Not Found",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        _ => "bad_request",
    };
    (
        status,
        axum::Json(json!({"error": error, "reason": reason})),
    )
        .into_response()
}

async fn not_found(_req: Request) -> Response {
    ApiError::not_found().into_response()
}

// ===== errors =====

/// An error answered with RabbitMQ's JSON shape `{"error": ..., "reason": ...}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    error: &'static str,
    reason: String,
}

impl ApiError {
    fn new(status: StatusCode, error: &'static str, reason: impl Into<String>) -> Self {
        Self {
            status,
            error,
            reason: reason.into(),
        }
    }
    /// 404 as RabbitMQ: `{"error":"Object Not Found","reason":"Not Found"}`.
    fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "Object Not Found", "Not Found")
    }
    /// 400 `bad_request`.
    fn bad_request(reason: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", reason)
    }
    /// 403 `not_authorised`.
    fn forbidden(reason: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "not_authorised", reason)
    }
    fn internal(reason: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal_error", reason)
    }
    /// Map a model (AMQP) error as RabbitMQ's management API does.
    fn amqp(e: crate::error::AmqpError) -> Self {
        match e.code.code() {
            404 => Self::not_found(),
            403 => Self::forbidden(e.text),
            405 | 406 => Self::bad_request(e.text),
            _ => Self::internal(e.text),
        }
    }
    fn admin(e: crate::error::Error) -> Self {
        match e {
            crate::error::Error::Admin(m) if m.starts_with("no such") => Self::not_found(),
            crate::error::Error::Admin(m) => Self::bad_request(m),
            other => Self::internal(other.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (
            self.status,
            axum::Json(json!({"error": self.error, "reason": self.reason})),
        )
            .into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"RabbitMQ Management\""),
            );
        }
        r
    }
}

type ApiResult = Result<Response, ApiError>;

// ===== authentication =====

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    /// User name.
    pub name: String,
    /// The user's tags.
    pub tags: Vec<String>,
}

impl Caller {
    fn has(&self, tag: &str) -> bool {
        self.tags.iter().any(|t| t == tag)
    }
    /// May see every vhost, connection and channel.
    fn sees_all(&self) -> bool {
        self.has("administrator") || self.has("monitoring")
    }
    fn is_admin(&self) -> bool {
        self.has("administrator")
    }
    fn require_admin(&self) -> Result<(), ApiError> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(ApiError::forbidden("Not administrator user"))
        }
    }
    fn require_monitor(&self) -> Result<(), ApiError> {
        if self.sees_all() {
            Ok(())
        } else {
            Err(ApiError::forbidden("Not monitor user"))
        }
    }
}

/// Tags that may use the management API at all.
const MANAGEMENT_TAGS: [&str; 4] = ["management", "policymaker", "monitoring", "administrator"];

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let unauthorized =
            || ApiError::new(StatusCode::UNAUTHORIZED, "not_authorized", "Login failed");
        let (user, pass) = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_basic_auth)
            .ok_or_else(unauthorized)?;
        let u = state
            .core
            .authenticate(&user, &pass)
            .ok_or_else(unauthorized)?;
        let caller = Caller {
            name: u.name,
            tags: u.tags,
        };
        if !MANAGEMENT_TAGS.iter().any(|t| caller.has(t)) {
            return Err(ApiError::forbidden("Not management user"));
        }
        Ok(caller)
    }
}

/// `Basic base64(user:password)` → (user, password).
pub fn parse_basic_auth(h: &str) -> Option<(String, String)> {
    let b64 = h
        .strip_prefix("Basic ")
        .or_else(|| h.strip_prefix("basic "))?;
    let raw = crate::auth::users::base64_decode(b64.trim())?;
    let s = String::from_utf8(raw).ok()?;
    let (u, p) = s.split_once(':')?;
    Some((u.to_owned(), p.to_owned()))
}

// ===== pagination, filtering, sorting =====

/// The query parameters RabbitMQ's list endpoints take.
#[derive(Debug, Default, Clone, serde::Deserialize)]
#[serde(default)]
struct ListQuery {
    page: Option<String>,
    page_size: Option<String>,
    name: Option<String>,
    use_regex: Option<String>,
    sort: Option<String>,
    sort_reverse: Option<String>,
    columns: Option<String>,
}

/// Keep only `columns` (dotted paths, comma-separated) of `v`, as RabbitMQ's `columns`.
fn project(v: Value, columns: &[&str]) -> Value {
    let mut out = Value::Object(Default::default());
    for c in columns {
        let Some(x) = lookup(&v, c) else { continue };
        let mut at = &mut out;
        let parts: Vec<&str> = c.split('.').collect();
        for (i, k) in parts.iter().enumerate() {
            let Value::Object(m) = at else { break };
            if i + 1 == parts.len() {
                m.insert((*k).to_owned(), x.clone());
                break;
            }
            at = m
                .entry((*k).to_owned())
                .or_insert_with(|| Value::Object(Default::default()));
        }
    }
    out
}

fn truthy(s: &Option<String>) -> bool {
    matches!(s.as_deref(), Some("true" | "1" | "yes"))
}

/// A dotted path (`message_stats.publish_details.rate`) into a JSON value.
fn lookup<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(v, |v, k| v.get(k))
}

fn cmp_json(a: Option<&Value>, b: Option<&Value>) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    match (a, b) {
        (Some(Value::Number(x)), Some(Value::Number(y))) => x
            .as_f64()
            .unwrap_or(0.0)
            .partial_cmp(&y.as_f64().unwrap_or(0.0))
            .unwrap_or(Ordering::Equal),
        (Some(Value::String(x)), Some(Value::String(y))) => x.cmp(y),
        (Some(Value::Bool(x)), Some(Value::Bool(y))) => x.cmp(y),
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (Some(x), Some(y)) => x.to_string().cmp(&y.to_string()),
    }
}

/// [`list_lazy`] over already rendered items.
fn list_response(items: Vec<Value>, q: &ListQuery) -> ApiResult {
    list_lazy(
        items,
        |v| v.get("name").and_then(Value::as_str).unwrap_or(""),
        |v| v,
        q,
    )
}

/// Filter by `name` (substring, or regex with `use_regex=true`), sort by `sort`
/// (`sort_reverse`), and paginate when `page` is given (RabbitMQ's paged object) —
/// otherwise a plain array. `items` come in their default order (by vhost and name);
/// only the items shown are rendered, unless the sort key is a rendered field.
fn list_lazy<T, R: serde::Serialize>(
    items: Vec<T>,
    name_of: impl Fn(&T) -> &str,
    render: impl Fn(T) -> R,
    q: &ListQuery,
) -> ApiResult {
    let total = items.len();
    let mut items = match q.name.as_deref().filter(|n| !n.is_empty()) {
        None => items,
        Some(pat) => {
            let matcher: Box<dyn Fn(&str) -> bool> = if truthy(&q.use_regex) {
                let re = regex::RegexBuilder::new(pat)
                    .size_limit(1 << 20)
                    .build()
                    .map_err(|e| ApiError::bad_request(format!("name: invalid regex: {e}")))?;
                Box::new(move |s| re.is_match(s))
            } else {
                let pat = pat.to_lowercase();
                Box::new(move |s| s.to_lowercase().contains(&pat))
            };
            items.into_iter().filter(|v| matcher(name_of(v))).collect()
        }
    };
    let paging = Paging::parse(q)?;
    let columns: Vec<&str> = q
        .columns
        .as_deref()
        .map(|c| {
            c.split(',')
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let render = |t: T| {
        let v = render(t);
        if columns.is_empty() {
            Item::Typed(v)
        } else {
            Item::Value(project(
                serde_json::to_value(v).unwrap_or(Value::Null),
                &columns,
            ))
        }
    };
    match q.sort.as_deref().filter(|s| !s.is_empty()) {
        None => {}
        Some("name") => items.sort_by(|a, b| name_of(a).cmp(name_of(b))),
        Some(key) => {
            let mut rendered: Vec<Value> = items
                .into_iter()
                .map(|t| serde_json::to_value(render(t)).unwrap_or(Value::Null))
                .collect();
            rendered.sort_by(|a, b| cmp_json(lookup(a, key), lookup(b, key)));
            if truthy(&q.sort_reverse) {
                rendered.reverse();
            }
            return paging.respond(rendered, total, |v| v);
        }
    }
    if truthy(&q.sort_reverse) {
        items.reverse();
    }
    paging.respond(items, total, render)
}

/// A rendered list item: typed, or a JSON value (projected or sorted ones).
#[derive(Debug, serde::Serialize)]
#[serde(untagged)]
enum Item<R> {
    Typed(R),
    Value(Value),
}

/// RabbitMQ's paged list object.
#[derive(Debug, serde::Serialize)]
struct Page<R> {
    filtered_count: usize,
    item_count: usize,
    items: Vec<R>,
    page: usize,
    page_count: usize,
    page_size: usize,
    total_count: usize,
}

/// `page` / `page_size` of a list request.
#[derive(Debug)]
struct Paging {
    /// `None`: answer a plain array.
    page: Option<(usize, usize)>,
}

impl Paging {
    fn parse(q: &ListQuery) -> Result<Paging, ApiError> {
        let Some(page) = &q.page else {
            if q.page_size.is_some() {
                return Err(ApiError::bad_request(
                    "page_size: only allowed together with page",
                ));
            }
            return Ok(Paging { page: None });
        };
        let page: usize = page
            .parse()
            .ok()
            .filter(|p| *p >= 1)
            .ok_or_else(|| ApiError::bad_request("page: must be a positive integer"))?;
        let page_size: usize = match &q.page_size {
            None => 100,
            Some(s) => s
                .parse::<u64>()
                .ok()
                .filter(|p| *p >= 1)
                .map(|p| usize::try_from(p).unwrap_or(usize::MAX).min(MAX_PAGE_SIZE))
                .ok_or_else(|| ApiError::bad_request("page_size: must be a positive integer"))?,
        };
        Ok(Paging {
            page: Some((page, page_size)),
        })
    }

    fn respond<T, R: serde::Serialize>(
        self,
        items: Vec<T>,
        total: usize,
        render: impl Fn(T) -> R,
    ) -> ApiResult {
        let Some((page, page_size)) = self.page else {
            let all: Vec<R> = items.into_iter().map(render).collect();
            return Ok(axum::Json(all).into_response());
        };
        let filtered = items.len();
        let page_count = filtered.div_ceil(page_size).max(1);
        if page > page_count {
            return Err(ApiError::bad_request(format!(
                "page: page out of range ({page} > {page_count})"
            )));
        }
        let start = (page - 1) * page_size;
        let slice: Vec<R> = items
            .into_iter()
            .skip(start)
            .take(page_size)
            .map(render)
            .collect();
        Ok(axum::Json(Page {
            filtered_count: filtered,
            item_count: slice.len(),
            items: slice,
            page,
            page_count,
            page_size,
            total_count: total,
        })
        .into_response())
    }
}
