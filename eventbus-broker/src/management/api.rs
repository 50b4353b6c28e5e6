//! The `/api/...` handlers.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use super::render::{self, NODE};
use super::snapshot::{self, Vhosts};
use super::{list_lazy, list_response, offload, ApiError, ApiResult, AppState, Caller, ListQuery};
use crate::auth::{Access, Permission};
use crate::model::exchange::Dest;
use crate::model::Message;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/overview", get(overview))
        .route("/api/whoami", get(whoami))
        .route("/api/nodes", get(nodes))
        .route("/api/nodes/{node}", get(node))
        .route("/api/extensions", get(empty_list))
        .route("/api/parameters", get(empty_list))
        .route("/api/policies", get(empty_list))
        .route("/api/policies/{vhost}", get(empty_list))
        .route("/api/vhosts", get(list_vhosts))
        .route(
            "/api/vhosts/{vhost}",
            get(get_vhost).put(put_vhost).delete(delete_vhost),
        )
        .route("/api/vhosts/{vhost}/permissions", get(vhost_permissions))
        .route("/api/vhosts/{vhost}/connections", get(vhost_connections))
        .route("/api/vhosts/{vhost}/channels", get(vhost_channels))
        .route("/api/users", get(list_users))
        .route(
            "/api/users/{user}",
            get(get_user).put(put_user).delete(delete_user),
        )
        .route("/api/users/{user}/permissions", get(user_permissions))
        .route("/api/permissions", get(list_permissions))
        .route(
            "/api/permissions/{vhost}/{user}",
            get(get_permission)
                .put(put_permission)
                .delete(delete_permission),
        )
        .route("/api/exchanges", get(list_exchanges))
        .route("/api/exchanges/{vhost}", get(list_exchanges_vhost))
        .route(
            "/api/exchanges/{vhost}/{name}",
            get(get_exchange).put(put_exchange).delete(delete_exchange),
        )
        .route("/api/exchanges/{vhost}/{name}/publish", post(publish))
        .route(
            "/api/exchanges/{vhost}/{name}/bindings/source",
            get(exchange_bindings_source),
        )
        .route(
            "/api/exchanges/{vhost}/{name}/bindings/destination",
            get(exchange_bindings_destination),
        )
        .route("/api/queues", get(list_queues))
        .route("/api/queues/{vhost}", get(list_queues_vhost))
        .route(
            "/api/queues/{vhost}/{name}",
            get(get_queue).put(put_queue).delete(delete_queue),
        )
        .route(
            "/api/queues/{vhost}/{name}/contents",
            axum::routing::delete(purge_queue),
        )
        .route("/api/queues/{vhost}/{name}/get", post(get_messages))
        .route("/api/queues/{vhost}/{name}/move", post(move_messages))
        .route("/api/queues/{vhost}/{name}/bindings", get(queue_bindings))
        .route("/api/bindings", get(list_bindings))
        .route("/api/bindings/{vhost}", get(list_bindings_vhost))
        .route(
            "/api/bindings/{vhost}/e/{source}/{kind}/{dest}",
            get(list_binding_pair).post(create_binding),
        )
        .route(
            "/api/bindings/{vhost}/e/{source}/{kind}/{dest}/{props}",
            get(get_binding).delete(delete_binding),
        )
        .route("/api/connections", get(list_connections))
        .route(
            "/api/connections/{name}",
            get(get_connection).delete(close_connection),
        )
        .route("/api/connections/{name}/channels", get(connection_channels))
        .route("/api/channels", get(list_channels))
        .route("/api/channels/{name}", get(get_channel))
        .route("/api/consumers", get(list_consumers))
        .route("/api/consumers/{vhost}", get(list_consumers_vhost))
        .route(
            "/api/definitions",
            get(super::definitions::export_all).post(super::definitions::import_all),
        )
        .route(
            "/api/definitions/{vhost}",
            get(super::definitions::export_vhost).post(super::definitions::import_vhost),
        )
        .route("/api/aliveness-test/{vhost}", get(aliveness))
        .route("/api/health/checks/alarms", get(health_alarms))
        .route("/api/health/checks/local-alarms", get(health_alarms))
        .route("/api/health/checks/virtual-hosts", get(health_ok))
        .route("/api/health/checks/node-is-quorum-critical", get(health_ok))
        .route(
            "/api/health/checks/node-is-mirror-sync-critical",
            get(health_ok),
        )
        .route("/api/health/checks/port-listener/{port}", get(health_port))
        .route(
            "/api/health/checks/protocol-listener/{protocol}",
            get(health_protocol),
        )
        .route(
            "/api/health/checks/certificate-expiration/{within}/{unit}",
            get(health_ok),
        )
}

// ===== helpers =====

fn ok_json(v: Value) -> ApiResult {
    Ok(Json(v).into_response())
}

fn no_content() -> ApiResult {
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn created() -> ApiResult {
    Ok(StatusCode::CREATED.into_response())
}

/// Parse a JSON body; an empty body is `{}`.
pub(super) fn parse_body(b: &Bytes) -> Result<Value, ApiError> {
    if b.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    let v: Value =
        serde_json::from_slice(b).map_err(|e| ApiError::bad_request(format!("not_json: {e}")))?;
    if !v.is_object() {
        return Err(ApiError::bad_request("body: expected a JSON object"));
    }
    Ok(v)
}

/// An optional boolean field (RabbitMQ also accepts "true"/"false" strings).
pub(super) fn opt_bool(v: &Value, field: &str, default: bool) -> Result<bool, ApiError> {
    match v.get(field) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::String(s)) if s == "true" => Ok(true),
        Some(Value::String(s)) if s == "false" => Ok(false),
        Some(_) => Err(ApiError::bad_request(format!(
            "{field}: expected a boolean"
        ))),
    }
}

/// An optional string field.
pub(super) fn opt_str<'a>(v: &'a Value, field: &str) -> Result<Option<&'a str>, ApiError> {
    match v.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(ApiError::bad_request(format!("{field}: expected a string"))),
    }
}

/// A required string field.
pub(super) fn req_str<'a>(v: &'a Value, field: &str) -> Result<&'a str, ApiError> {
    opt_str(v, field)?.ok_or_else(|| ApiError::bad_request(format!("{field}: missing")))
}

/// An optional non-negative integer field (numbers or numeric strings).
fn opt_u64(v: &Value, field: &str) -> Result<Option<u64>, ApiError> {
    match v.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(x) => x
            .as_u64()
            .or_else(|| x.as_str().and_then(|s| s.parse().ok()))
            .map(Some)
            .ok_or_else(|| {
                ApiError::bad_request(format!("{field}: expected a non-negative integer"))
            }),
    }
}

/// Which vhosts the caller may list.
fn scope(state: &AppState, caller: &Caller) -> Vhosts {
    if caller.sees_all() {
        Vhosts::All
    } else {
        Vhosts::Only(snapshot::permitted_vhosts(&state.core.lock(), &caller.name))
    }
}

/// Scope to one vhost: 404 if it does not exist, 403 if the caller may not see it.
fn scope_one(state: &AppState, caller: &Caller, vhost: &str) -> Result<Vhosts, ApiError> {
    let st = state.core.lock();
    if !st.vhosts.contains_key(vhost) {
        return Err(ApiError::not_found());
    }
    if !caller.sees_all()
        && !st
            .permissions
            .contains_key(&(caller.name.clone(), vhost.into()))
    {
        return Err(ApiError::forbidden(format!(
            "access to vhost '{vhost}' refused for user '{}'",
            caller.name
        )));
    }
    Ok(Vhosts::Only(BTreeSet::from([vhost.to_owned()])))
}

/// The caller's permission on `vhost` for an action (RabbitMQ requires one even for
/// administrators): 404 for a missing vhost, 403 without one.
fn action_perm(state: &AppState, caller: &Caller, vhost: &str) -> Result<Permission, ApiError> {
    if !state.core.vhost_exists(vhost) {
        return Err(ApiError::not_found());
    }
    state.core.permission(&caller.name, vhost).ok_or_else(|| {
        ApiError::forbidden(format!(
            "access to vhost '{vhost}' refused for user '{}'",
            caller.name
        ))
    })
}

fn check(
    p: &Permission,
    access: Access,
    kind: &str,
    name: &str,
    caller: &Caller,
) -> Result<(), ApiError> {
    let res = if name.is_empty() && kind == "exchange" {
        "amq.default"
    } else {
        name
    };
    if p.allows(access, res) {
        Ok(())
    } else {
        Err(ApiError::forbidden(format!(
            "{} access to {kind} '{res}' in vhost '{}' refused for user '{}'",
            access.name(),
            p.vhost,
            caller.name
        )))
    }
}

/// Connections the caller may see.
fn visible_connections(state: &AppState, caller: &Caller) -> Vec<snapshot::ConnSnap> {
    let all = snapshot::connections(&state.core);
    if caller.sees_all() {
        all
    } else {
        all.into_iter().filter(|c| c.user == caller.name).collect()
    }
}

/// `/api/exchanges/{vhost}/amq.default` names the default exchange.
fn exchange_name(n: &str) -> &str {
    if n == "amq.default" {
        ""
    } else {
        n
    }
}

async fn empty_list(_c: Caller) -> ApiResult {
    ok_json(json!([]))
}

// ===== overview, whoami, nodes =====

async fn overview(State(state): State<AppState>, caller: Caller) -> ApiResult {
    let sc = scope(&state, &caller);
    let vhosts = snapshot::vhosts(&state.core, &sc);
    let mut vals = [0u64; snapshot::FIELDS.len()];
    let (mut queues, mut exchanges, mut consumers) = (0, 0, 0);
    for v in &vhosts {
        for (a, b) in vals.iter_mut().zip(snapshot::vhost_values(v)) {
            *a += b;
        }
        queues += v.queues;
        exchanges += v.exchanges;
        consumers += v.consumers;
    }
    let rates = state.rates();
    let r = match &sc {
        Vhosts::All => rates.total(),
        Vhosts::Only(s) => {
            let mut t = [0.0; snapshot::FIELDS.len()];
            for v in s {
                for (a, b) in t.iter_mut().zip(rates.vhost(v)) {
                    *a += b;
                }
            }
            t
        }
    };
    let conns = visible_connections(&state, &caller);
    let channels: usize = conns.iter().map(|c| c.info.channels().len()).sum();
    ok_json(json!({
        "cluster_name": NODE,
        "contexts": [{"description": "eventbus management", "node": NODE, "path": "/", "port": state.http_addr.port().to_string()}],
        "disable_stats": false,
        "enable_queue_totals": true,
        "exchange_types": exchange_types(),
        "listeners": [
            {"node": NODE, "protocol": "amqp", "ip_address": state.amqp_addr.ip().to_string(), "port": state.amqp_addr.port()},
            {"node": NODE, "protocol": "http", "ip_address": state.http_addr.ip().to_string(), "port": state.http_addr.port()},
        ],
        "management_version": env!("CARGO_PKG_VERSION"),
        "message_stats": render::message_stats(&vals, &r, &render::VHOST_STATS),
        "node": NODE,
        "object_totals": {
            "channels": channels,
            "connections": conns.len(),
            "consumers": consumers,
            "exchanges": exchanges,
            "queues": queues,
        },
        "product_name": "eventbus-broker",
        "product_version": env!("CARGO_PKG_VERSION"),
        "queue_totals": {
            "messages": vals[12], "messages_details": {"rate": r[12]},
            "messages_ready": vals[13], "messages_ready_details": {"rate": r[13]},
            "messages_unacknowledged": vals[14], "messages_unacknowledged_details": {"rate": r[14]},
        },
        "rabbitmq_version": RABBITMQ_API_VERSION,
        "rates_mode": "basic",
        "sample_retention_policies": {"global": [600], "basic": [600], "detailed": [600]},
        "statistics_db_event_queue": 0,
    }))
}

/// The RabbitMQ version whose management API (and definitions format) we follow.
pub(super) const RABBITMQ_API_VERSION: &str = "3.13.0";

fn exchange_types() -> Value {
    json!([
        {"name": "direct", "description": "AMQP direct exchange, as per the AMQP specification", "enabled": true},
        {"name": "fanout", "description": "AMQP fanout exchange, as per the AMQP specification", "enabled": true},
        {"name": "headers", "description": "AMQP headers exchange, as per the AMQP specification", "enabled": true},
        {"name": "topic", "description": "AMQP topic exchange, as per the AMQP specification", "enabled": true},
        {"name": "x-consistent-hash", "description": "Consistent Hashing Exchange", "enabled": true},
    ])
}

async fn whoami(caller: Caller) -> ApiResult {
    ok_json(json!({"name": caller.name, "tags": caller.tags}))
}

fn node_json(state: &AppState) -> Value {
    let core = &state.core;
    let limit = state.config.memory_high_watermark;
    let disk_free = crate::disk_free(&state.config.data_dir).unwrap_or(0);
    json!({
        "name": NODE,
        "type": "disc",
        "running": true,
        "being_drained": false,
        "mem_used": core.memory.used(),
        "mem_limit": limit,
        "mem_alarm": limit != 0 && core.memory.used() > limit,
        "disk_free": disk_free,
        "disk_free_limit": core.disk_free_limit(),
        "disk_free_alarm": core.disk_alarm(),
        "uptime": state.started.elapsed().as_millis() as u64,
        "processors": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "exchange_types": exchange_types(),
        "rates_mode": "basic",
        "partitions": [],
        "os_pid": std::process::id().to_string(),
    })
}

async fn nodes(State(state): State<AppState>, caller: Caller) -> ApiResult {
    caller.require_monitor()?;
    ok_json(json!([node_json(&state)]))
}

async fn node(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult {
    caller.require_monitor()?;
    if name != NODE {
        return Err(ApiError::not_found());
    }
    ok_json(node_json(&state))
}

// ===== vhosts =====

async fn list_vhosts(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<ListQuery>,
) -> ApiResult {
    let sc = scope(&state, &caller);
    let rates = state.rates();
    let items = snapshot::vhosts(&state.core, &sc)
        .iter()
        .map(|v| render::vhost(v, &rates.vhost(&v.name)))
        .collect();
    list_response(items, &q)
}

async fn get_vhost(
    State(state): State<AppState>,
    caller: Caller,
    Path(vhost): Path<String>,
) -> ApiResult {
    let sc = scope_one(&state, &caller, &vhost)?;
    let rates = state.rates();
    let v = snapshot::vhosts(&state.core, &sc);
    let v = v.first().ok_or_else(ApiError::not_found)?;
    ok_json(render::vhost(v, &rates.vhost(&v.name)))
}

async fn put_vhost(
    State(state): State<AppState>,
    caller: Caller,
    Path(vhost): Path<String>,
    body: Bytes,
) -> ApiResult {
    caller.require_admin()?;
    let b = parse_body(&body)?;
    opt_str(&b, "description")?;
    validate_name("vhost", &vhost)?;
    let existed = state.core.vhost_exists(&vhost);
    state.core.add_vhost(&vhost).map_err(ApiError::admin)?;
    if existed {
        return no_content();
    }
    // like RabbitMQ: the creator gets full permissions on the new vhost
    state
        .core
        .set_permissions(&caller.name, &vhost, ".*", ".*", ".*")
        .map_err(ApiError::admin)?;
    created()
}

fn validate_name(field: &str, n: &str) -> Result<(), ApiError> {
    if n.is_empty() || n.len() > 255 {
        return Err(ApiError::bad_request(format!(
            "{field}: name must be 1 to 255 bytes"
        )));
    }
    Ok(())
}

async fn delete_vhost(
    State(state): State<AppState>,
    caller: Caller,
    Path(vhost): Path<String>,
) -> ApiResult {
    caller.require_admin()?;
    if !state.core.vhost_exists(&vhost) {
        return Err(ApiError::not_found());
    }
    state.core.delete_vhost(&vhost).map_err(ApiError::admin)?;
    no_content()
}

async fn vhost_permissions(
    State(state): State<AppState>,
    caller: Caller,
    Path(vhost): Path<String>,
) -> ApiResult {
    caller.require_admin()?;
    let st = state.core.lock();
    if !st.vhosts.contains_key(&vhost) {
        return Err(ApiError::not_found());
    }
    let v: Vec<Value> = st
        .permissions
        .values()
        .filter(|p| p.vhost == vhost)
        .map(permission_json)
        .collect();
    ok_json(Value::Array(v))
}

// ===== users and permissions =====

fn user_json(u: &crate::auth::User) -> Value {
    json!({
        "name": u.name,
        "password_hash": u.password_hash,
        "hashing_algorithm": u.hashing_algorithm,
        "tags": u.tags,
        "limits": {},
    })
}

fn permission_json(p: &Permission) -> Value {
    json!({
        "user": p.user,
        "vhost": p.vhost,
        "configure": p.configure,
        "write": p.write,
        "read": p.read,
    })
}

async fn list_users(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<ListQuery>,
) -> ApiResult {
    caller.require_admin()?;
    let users: Vec<Value> = state.core.lock().users.values().map(user_json).collect();
    list_response(users, &q)
}

async fn get_user(
    State(state): State<AppState>,
    caller: Caller,
    Path(user): Path<String>,
) -> ApiResult {
    caller.require_admin()?;
    let st = state.core.lock();
    let u = st.users.get(&user).ok_or_else(ApiError::not_found)?;
    ok_json(user_json(u))
}

/// `tags` as a comma-separated string (RabbitMQ) or an array.
pub(super) fn parse_tags(v: &Value) -> Result<Vec<String>, ApiError> {
    match v.get("tags") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(s
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .collect()),
        Some(Value::Array(a)) => a
            .iter()
            .map(|t| {
                t.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| ApiError::bad_request("tags: expected strings"))
            })
            .collect(),
        Some(_) => Err(ApiError::bad_request(
            "tags: expected a comma-separated string or an array",
        )),
    }
}

async fn put_user(
    State(state): State<AppState>,
    caller: Caller,
    Path(user): Path<String>,
    body: Bytes,
) -> ApiResult {
    caller.require_admin()?;
    let b = parse_body(&body)?;
    validate_name("user", &user)?;
    let tags = parse_tags(&b)?;
    let existed = state.core.lock().users.contains_key(&user);
    if let Some(pw) = opt_str(&b, "password")? {
        state
            .core
            .put_user(&user, pw, tags)
            .map_err(ApiError::admin)?;
    } else if let Some(hash) = opt_str(&b, "password_hash")? {
        let algo =
            opt_str(&b, "hashing_algorithm")?.unwrap_or(crate::auth::users::HASHING_ALGORITHM);
        super::definitions::check_hash(hash, algo)?;
        state
            .core
            .put_user_record(crate::auth::User {
                name: user.clone(),
                password_hash: hash.to_owned(),
                hashing_algorithm: algo.to_owned(),
                tags,
            })
            .map_err(ApiError::admin)?;
    } else if existed {
        state
            .core
            .set_user_tags(&user, tags)
            .map_err(ApiError::admin)?;
    } else {
        return Err(ApiError::bad_request(
            "password: missing (or password_hash)",
        ));
    }
    if existed {
        no_content()
    } else {
        created()
    }
}

async fn delete_user(
    State(state): State<AppState>,
    caller: Caller,
    Path(user): Path<String>,
) -> ApiResult {
    caller.require_admin()?;
    state.core.delete_user(&user).map_err(ApiError::admin)?;
    no_content()
}

async fn user_permissions(
    State(state): State<AppState>,
    caller: Caller,
    Path(user): Path<String>,
) -> ApiResult {
    caller.require_admin()?;
    let st = state.core.lock();
    if !st.users.contains_key(&user) {
        return Err(ApiError::not_found());
    }
    ok_json(Value::Array(
        st.permissions
            .values()
            .filter(|p| p.user == user)
            .map(permission_json)
            .collect(),
    ))
}

async fn list_permissions(State(state): State<AppState>, caller: Caller) -> ApiResult {
    caller.require_admin()?;
    ok_json(Value::Array(
        state
            .core
            .lock()
            .permissions
            .values()
            .map(permission_json)
            .collect(),
    ))
}

async fn get_permission(
    State(state): State<AppState>,
    caller: Caller,
    Path((vhost, user)): Path<(String, String)>,
) -> ApiResult {
    caller.require_admin()?;
    let p = state
        .core
        .permission(&user, &vhost)
        .ok_or_else(ApiError::not_found)?;
    ok_json(permission_json(&p))
}

async fn put_permission(
    State(state): State<AppState>,
    caller: Caller,
    Path((vhost, user)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult {
    caller.require_admin()?;
    let b = parse_body(&body)?;
    let configure = req_str(&b, "configure")?;
    let write = req_str(&b, "write")?;
    let read = req_str(&b, "read")?;
    {
        let st = state.core.lock();
        if !st.vhosts.contains_key(&vhost) || !st.users.contains_key(&user) {
            return Err(ApiError::not_found());
        }
    }
    let existed = state.core.permission(&user, &vhost).is_some();
    state
        .core
        .set_permissions(&user, &vhost, configure, write, read)
        .map_err(ApiError::admin)?;
    if existed {
        no_content()
    } else {
        created()
    }
}

async fn delete_permission(
    State(state): State<AppState>,
    caller: Caller,
    Path((vhost, user)): Path<(String, String)>,
) -> ApiResult {
    caller.require_admin()?;
    if state.core.permission(&user, &vhost).is_none() {
        return Err(ApiError::not_found());
    }
    state
        .core
        .clear_permissions(&user, &vhost)
        .map_err(ApiError::admin)?;
    no_content()
}

// ===== exchanges =====

async fn list_exchanges(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<ListQuery>,
) -> ApiResult {
    let sc = scope(&state, &caller);
    let st = state.clone();
    offload(&state, move || {
        let xs = snapshot::exchanges(&st.core, &sc, None);
        list_lazy(xs, |x| x.name.as_str(), |x| render::exchange(&x), &q)
    })
    .await?
}

async fn list_exchanges_vhost(
    State(state): State<AppState>,
    caller: Caller,
    Path(vhost): Path<String>,
    Query(q): Query<ListQuery>,
) -> ApiResult {
    let sc = scope_one(&state, &caller, &vhost)?;
    let st = state.clone();
    offload(&state, move || {
        let xs = snapshot::exchanges(&st.core, &sc, None);
        list_lazy(xs, |x| x.name.as_str(), |x| render::exchange(&x), &q)
    })
    .await?
}

async fn get_exchange(
    State(state): State<AppState>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
) -> ApiResult {
    let sc = scope_one(&state, &caller, &vhost)?;
    let x = snapshot::exchanges(&state.core, &sc, Some(exchange_name(&name)));
    let x = x.first().ok_or_else(ApiError::not_found)?;
    ok_json(render::exchange(x))
}

async fn put_exchange(
    State(state): State<AppState>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult {
    let b = parse_body(&body)?;
    let p = action_perm(&state, &caller, &vhost)?;
    let kind = req_str(&b, "type")?.to_owned();
    let durable = opt_bool(&b, "durable", true)?;
    let auto_delete = opt_bool(&b, "auto_delete", false)?;
    let internal = opt_bool(&b, "internal", false)?;
    let args = render::json_to_table(b.get("arguments").unwrap_or(&Value::Null), "arguments")?;
    validate_name("name", &name)?;
    check(&p, Access::Configure, "exchange", &name, &caller)?;
    let existed = state
        .core
        .with_vhost(&vhost, |vh, _| vh.exchanges.contains_key(&name))
        .ok_or_else(ApiError::not_found)?;
    state
        .core
        .with_vhost(&vhost, |vh, _| {
            vh.declare_exchange(&name, &kind, false, durable, auto_delete, internal, args)
        })
        .ok_or_else(ApiError::not_found)?
        .map_err(ApiError::amqp)?;
    if existed {
        no_content()
    } else {
        created()
    }
}

async fn delete_exchange(
    State(state): State<AppState>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> ApiResult {
    let p = action_perm(&state, &caller, &vhost)?;
    let name = exchange_name(&name).to_owned();
    check(&p, Access::Configure, "exchange", &name, &caller)?;
    let if_unused = q.get("if-unused").is_some_and(|v| v == "true");
    state
        .core
        .with_vhost(&vhost, |vh, _| {
            if !vh.exchanges.contains_key(&name) {
                return Err(ApiError::not_found());
            }
            vh.delete_exchange(&name, if_unused).map_err(ApiError::amqp)
        })
        .ok_or_else(ApiError::not_found)??;
    no_content()
}

async fn publish(
    State(state): State<AppState>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult {
    let b = parse_body(&body)?;
    let p = action_perm(&state, &caller, &vhost)?;
    let exchange = exchange_name(&name).to_owned();
    let routing_key = req_str(&b, "routing_key")?.to_owned();
    if routing_key.len() > 255 {
        return Err(ApiError::bad_request("routing_key: longer than 255 bytes"));
    }
    let payload = req_str(&b, "payload")?;
    let body = match req_str(&b, "payload_encoding")? {
        "string" => payload.as_bytes().to_vec(),
        "base64" => crate::auth::users::base64_decode(payload)
            .ok_or_else(|| ApiError::bad_request("payload: invalid base64"))?,
        other => {
            return Err(ApiError::bad_request(format!(
                "payload_encoding: expected \"string\" or \"base64\", got {other:?}"
            )))
        }
    };
    if body.len() as u64 > state.config.max_message_size {
        return Err(ApiError::bad_request(format!(
            "payload: larger than max_message_size ({})",
            state.config.max_message_size
        )));
    }
    let properties = render::json_to_properties(b.get("properties").unwrap_or(&Value::Null))?;
    if properties
        .user_id()
        .as_ref()
        .is_some_and(|u| u.as_str() != caller.name)
    {
        return Err(ApiError::bad_request(
            "properties.user_id: must be the authenticated user",
        ));
    }
    check(&p, Access::Write, "exchange", &exchange, &caller)?;
    let raw = crate::protocol::frame::encode_properties(&properties);
    let msg = Arc::new(Message {
        exchange: exchange.clone(),
        routing_key,
        properties,
        raw_properties: raw,
        mem: Some(crate::model::message::MemTicket::new(
            &state.core.memory,
            body.len() as u64,
        )),
        body: body.into(),
    });
    let outcome = state
        .core
        .with_vhost(&vhost, |vh, ctx| {
            match vh.exchanges.get(&exchange) {
                None => return Err(ApiError::not_found()),
                Some(x) if x.internal => {
                    return Err(ApiError::forbidden(format!(
                        "cannot publish to internal exchange '{exchange}'"
                    )))
                }
                Some(_) => {}
            }
            let o = vh.publish(&exchange, msg, ctx);
            if !o.routed {
                crate::model::stats::bump(&vh.stats.drop_unroutable, 1);
            }
            Ok(o)
        })
        .ok_or_else(ApiError::not_found)??;
    // persistent messages are on disk before we answer (as a confirm would be)
    if let Err(e) = state.core.store.sync().await {
        return Err(ApiError::internal(format!(
            "message store sync failed: {e}"
        )));
    }
    ok_json(json!({"routed": outcome.routed}))
}

fn bindings_where(
    state: &AppState,
    sc: &Vhosts,
    pred: impl Fn(&snapshot::BindingSnap) -> bool,
) -> Vec<Value> {
    snapshot::bindings(&state.core, sc)
        .iter()
        .filter(|b| pred(b))
        .map(render::binding)
        .collect()
}

async fn exchange_bindings_source(
    State(state): State<AppState>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
) -> ApiResult {
    let sc = scope_one(&state, &caller, &vhost)?;
    let name = exchange_name(&name).to_owned();
    if snapshot::exchanges(&state.core, &sc, Some(&name)).is_empty() {
        return Err(ApiError::not_found());
    }
    ok_json(Value::Array(bindings_where(&state, &sc, |b| {
        b.source == name
    })))
}

async fn exchange_bindings_destination(
    State(state): State<AppState>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
) -> ApiResult {
    let sc = scope_one(&state, &caller, &vhost)?;
    if snapshot::exchanges(&state.core, &sc, Some(&name)).is_empty() {
        return Err(ApiError::not_found());
    }
    ok_json(Value::Array(bindings_where(&state, &sc, |b| {
        !b.destination_is_queue && b.destination == name
    })))
}

// ===== queues =====

fn render_queues(state: &AppState, qs: &[snapshot::QueueSnap], details: bool) -> Vec<Value> {
    let rates = state.rates();
    let conns = if qs
        .iter()
        .any(|q| q.owner.is_some() || (details && !q.consumers.is_empty()))
    {
        snapshot::connections(&state.core)
    } else {
        Vec::new()
    };
    qs.iter()
        .map(|q| render::queue(q, &rates.queue(&q.vhost, &q.name), &conns, details))
        .collect()
}

/// Snapshot the queues of `sc`, then filter, sort and render (only the page shown).
fn queue_list(state: &AppState, sc: &Vhosts, q: &ListQuery) -> ApiResult {
    let qs = snapshot::queues(&state.core, sc, None);
    let rates = state.rates();
    let conns = if qs.iter().any(|q| q.owner.is_some()) {
        snapshot::connections(&state.core)
    } else {
        Vec::new()
    };
    list_lazy(
        qs,
        |q| &q.name,
        |q| render::queue_item(&q, &rates.queue(&q.vhost, &q.name), &conns),
        q,
    )
}

async fn list_queues(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<ListQuery>,
) -> ApiResult {
    let sc = scope(&state, &caller);
    let st = state.clone();
    offload(&state, move || queue_list(&st, &sc, &q)).await?
}

async fn list_queues_vhost(
    State(state): State<AppState>,
    caller: Caller,
    Path(vhost): Path<String>,
    Query(q): Query<ListQuery>,
) -> ApiResult {
    let sc = scope_one(&state, &caller, &vhost)?;
    let st = state.clone();
    offload(&state, move || queue_list(&st, &sc, &q)).await?
}

async fn get_queue(
    State(state): State<AppState>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
) -> ApiResult {
    let sc = scope_one(&state, &caller, &vhost)?;
    let qs = snapshot::queues(&state.core, &sc, Some(&name));
    if qs.is_empty() {
        return Err(ApiError::not_found());
    }
    let mut v = render_queues(&state, &qs, true);
    ok_json(v.swap_remove(0))
}

async fn put_queue(
    State(state): State<AppState>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult {
    let b = parse_body(&body)?;
    let p = action_perm(&state, &caller, &vhost)?;
    let durable = opt_bool(&b, "durable", true)?;
    let auto_delete = opt_bool(&b, "auto_delete", false)?;
    if opt_bool(&b, "exclusive", false)? {
        return Err(ApiError::bad_request(
            "exclusive: queues declared over HTTP cannot be exclusive",
        ));
    }
    let args = render::json_to_table(b.get("arguments").unwrap_or(&Value::Null), "arguments")?;
    validate_name("name", &name)?;
    check(&p, Access::Configure, "queue", &name, &caller)?;
    let existed = state
        .core
        .with_vhost(&vhost, |vh, ctx| {
            let existed = vh.queues.contains_key(&name);
            vh.declare_queue(
                &name,
                false,
                false,
                durable,
                false,
                auto_delete,
                args,
                0,
                ctx.now,
            )
            .map(|_| existed)
        })
        .ok_or_else(ApiError::not_found)?
        .map_err(ApiError::amqp)?;
    if existed {
        no_content()
    } else {
        created()
    }
}

async fn delete_queue(
    State(state): State<AppState>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> ApiResult {
    let p = action_perm(&state, &caller, &vhost)?;
    check(&p, Access::Configure, "queue", &name, &caller)?;
    let if_unused = q.get("if-unused").is_some_and(|v| v == "true");
    let if_empty = q.get("if-empty").is_some_and(|v| v == "true");
    state
        .core
        .with_vhost(&vhost, |vh, ctx| {
            if !vh.queues.contains_key(&name) {
                return Err(ApiError::not_found());
            }
            vh.delete_queue(&name, if_unused, if_empty, 0, ctx)
                .map_err(ApiError::amqp)
        })
        .ok_or_else(ApiError::not_found)??;
    no_content()
}

async fn purge_queue(
    State(state): State<AppState>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
) -> ApiResult {
    let p = action_perm(&state, &caller, &vhost)?;
    check(&p, Access::Read, "queue", &name, &caller)?;
    state
        .core
        .with_vhost(&vhost, |vh, ctx| vh.purge_queue(&name, 0, ctx))
        .ok_or_else(ApiError::not_found)?
        .map_err(ApiError::amqp)?;
    no_content()
}

/// `ackmode` of a get: (requeue, counts as an ack).
fn parse_ackmode(b: &Value) -> Result<bool, ApiError> {
    if let Some(m) = opt_str(b, "ackmode")? {
        return match m {
            "ack_requeue_true" | "reject_requeue_true" => Ok(true),
            "ack_requeue_false" | "reject_requeue_false" => Ok(false),
            other => Err(ApiError::bad_request(format!(
                "ackmode: expected ack_requeue_true, ack_requeue_false, reject_requeue_true or reject_requeue_false, got {other:?}"
            ))),
        };
    }
    // rabbitmqadmin v1 and older clients send `requeue`
    if b.get("requeue").is_some() {
        return opt_bool(b, "requeue", true);
    }
    Err(ApiError::bad_request("ackmode: missing"))
}

async fn get_messages(
    State(state): State<AppState>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult {
    let b = parse_body(&body)?;
    let p = action_perm(&state, &caller, &vhost)?;
    let requeue = parse_ackmode(&b)?;
    let reject = matches!(
        opt_str(&b, "ackmode")?,
        Some("reject_requeue_false" | "reject_requeue_true")
    );
    let count = opt_u64(&b, "count")?.unwrap_or(1).min(10_000) as usize;
    let encoding = opt_str(&b, "encoding")?.unwrap_or("auto");
    if encoding != "auto" && encoding != "base64" {
        return Err(ApiError::bad_request(format!(
            "encoding: expected \"auto\" or \"base64\", got {encoding:?}"
        )));
    }
    let truncate = opt_u64(&b, "truncate")?.map(|t| t as usize);
    check(&p, Access::Read, "queue", &name, &caller)?;
    // take the messages, read paged-out bodies back, then settle, all in one lock hold
    let got = state
        .core
        .with_vhost(&vhost, |vh, ctx| {
            let mut taken = Vec::new();
            let key = crate::storage::QueueKey {
                vhost: vhost.clone(),
                queue: name.clone(),
            };
            for _ in 0..count {
                match vh.get(&name, false, 0, ctx) {
                    Err(e) => return Err(ApiError::amqp(e)),
                    Ok(None) => break,
                    Ok(Some((qm, remaining))) => {
                        let full = if qm.paged.is_some() {
                            ctx.store
                                .read(&key, qm.id)
                                .ok()
                                .flatten()
                                .and_then(Message::from_stored)
                                .map(Arc::new)
                        } else {
                            Some(qm.msg.clone())
                        };
                        taken.push((qm, full, remaining));
                    }
                }
            }
            let msgs = taken.iter().map(|(qm, _, _)| qm.clone()).collect();
            vh.settle(&name, msgs, requeue, reject && !requeue, ctx);
            Ok(taken)
        })
        .ok_or_else(ApiError::not_found)??;
    let out: Vec<Value> = got
        .into_iter()
        .map(|(qm, full, remaining)| {
            let Some(m) = full else {
                return json!({"payload": null, "error": "message body could not be read from the store"});
            };
            let body = &m.body[..];
            let shown = truncate.map_or(body, |t| &body[..t.min(body.len())]);
            let (payload, enc) = match (encoding, std::str::from_utf8(shown)) {
                ("auto", Ok(s)) => (s.to_owned(), "string"),
                _ => (crate::auth::users::base64_encode(shown), "base64"),
            };
            json!({
                "exchange": m.exchange,
                "message_count": remaining,
                "payload": payload,
                "payload_bytes": body.len(),
                "payload_encoding": enc,
                "properties": render::properties_to_json(&m.properties),
                "redelivered": qm.redelivered,
                "routing_key": m.routing_key,
            })
        })
        .collect();
    if !requeue {
        let _ = state.core.store.sync().await;
    }
    ok_json(Value::Array(out))
}

async fn move_messages(
    State(state): State<AppState>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult {
    if !(caller.has("management") || caller.is_admin() || caller.has("policymaker")) {
        return Err(ApiError::forbidden("Not management user"));
    }
    let b = parse_body(&body)?;
    let p = action_perm(&state, &caller, &vhost)?;
    let dests: Vec<String> = match b.get("destinations") {
        Some(Value::Array(a)) if !a.is_empty() => a
            .iter()
            .map(|d| {
                d.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| ApiError::bad_request("destinations: expected queue names"))
            })
            .collect::<Result<_, _>>()?,
        Some(Value::Array(_)) => {
            return Err(ApiError::bad_request("destinations: must not be empty"))
        }
        None | Some(Value::Null) => return Err(ApiError::bad_request("destinations: missing")),
        Some(_) => {
            return Err(ApiError::bad_request(
                "destinations: expected an array of queue names",
            ))
        }
    };
    let count = opt_u64(&b, "count")?;
    check(&p, Access::Read, "queue", &name, &caller)?;
    for d in &dests {
        check(&p, Access::Write, "queue", d, &caller)?;
    }
    // in batches, releasing the state lock in between: a large backlog never holds
    // AMQP traffic up for long (each message still moves atomically)
    const BATCH: u64 = 1000;
    let mut moved = 0u64;
    loop {
        let want = count.map_or(BATCH, |c| (c - moved).min(BATCH));
        if want == 0 {
            break;
        }
        let first = usize::try_from(moved % dests.len() as u64).unwrap_or(0);
        let n = state
            .core
            .with_vhost(&vhost, |vh, ctx| {
                vh.move_messages(&name, &dests, Some(want), first, 0, ctx)
            })
            .ok_or_else(ApiError::not_found)?
            .map_err(ApiError::amqp)?;
        moved += n;
        if n < want {
            break;
        }
        tokio::task::yield_now().await;
    }
    // moved persistent messages are on disk in their new queues before we answer
    if let Err(e) = state.core.store.sync().await {
        return Err(ApiError::internal(format!(
            "message store sync failed: {e}"
        )));
    }
    ok_json(json!({"moved": moved}))
}

async fn queue_bindings(
    State(state): State<AppState>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
) -> ApiResult {
    let sc = scope_one(&state, &caller, &vhost)?;
    if snapshot::queues(&state.core, &sc, Some(&name)).is_empty() {
        return Err(ApiError::not_found());
    }
    ok_json(Value::Array(bindings_where(&state, &sc, |b| {
        b.destination_is_queue && b.destination == name
    })))
}

// ===== bindings =====

async fn list_bindings(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<ListQuery>,
) -> ApiResult {
    let sc = scope(&state, &caller);
    let st = state.clone();
    offload(&state, move || {
        list_response(bindings_where(&st, &sc, |_| true), &q)
    })
    .await?
}

async fn list_bindings_vhost(
    State(state): State<AppState>,
    caller: Caller,
    Path(vhost): Path<String>,
    Query(q): Query<ListQuery>,
) -> ApiResult {
    let sc = scope_one(&state, &caller, &vhost)?;
    let st = state.clone();
    offload(&state, move || {
        list_response(bindings_where(&st, &sc, |_| true), &q)
    })
    .await?
}

fn dest_kind(kind: &str) -> Result<bool, ApiError> {
    match kind {
        "q" => Ok(true),
        "e" => Ok(false),
        _ => Err(ApiError::not_found()),
    }
}

async fn list_binding_pair(
    State(state): State<AppState>,
    caller: Caller,
    Path((vhost, source, kind, dest)): Path<(String, String, String, String)>,
) -> ApiResult {
    let is_queue = dest_kind(&kind)?;
    let sc = scope_one(&state, &caller, &vhost)?;
    let source = exchange_name(&source).to_owned();
    ok_json(Value::Array(bindings_where(&state, &sc, |b| {
        b.source == source && b.destination == dest && b.destination_is_queue == is_queue
    })))
}

async fn create_binding(
    State(state): State<AppState>,
    caller: Caller,
    Path((vhost, source, kind, dest)): Path<(String, String, String, String)>,
    body: Bytes,
) -> ApiResult {
    let is_queue = dest_kind(&kind)?;
    let b = parse_body(&body)?;
    let p = action_perm(&state, &caller, &vhost)?;
    let key = opt_str(&b, "routing_key")?.unwrap_or("").to_owned();
    let args = render::json_to_table(b.get("arguments").unwrap_or(&Value::Null), "arguments")?;
    check(
        &p,
        Access::Write,
        if is_queue { "queue" } else { "exchange" },
        &dest,
        &caller,
    )?;
    check(&p, Access::Read, "exchange", &source, &caller)?;
    let props = render::properties_key(&key, &args);
    let d = if is_queue {
        Dest::Queue(dest.clone())
    } else {
        Dest::Exchange(dest.clone())
    };
    state
        .core
        .with_vhost(&vhost, |vh, _| vh.bind(&source, d, &key, args, 0))
        .ok_or_else(ApiError::not_found)?
        .map_err(ApiError::amqp)?;
    let location = percent_encode(&props);
    Ok((
        StatusCode::CREATED,
        [(axum::http::header::LOCATION, location)],
    )
        .into_response())
}

fn percent_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn find_binding(
    state: &AppState,
    sc: &Vhosts,
    source: &str,
    dest: &str,
    is_queue: bool,
    props: &str,
) -> Option<snapshot::BindingSnap> {
    snapshot::bindings(&state.core, sc).into_iter().find(|b| {
        b.source == source
            && b.destination == dest
            && b.destination_is_queue == is_queue
            && render::properties_key(&b.routing_key, &b.arguments) == props
    })
}

async fn get_binding(
    State(state): State<AppState>,
    caller: Caller,
    Path((vhost, source, kind, dest, props)): Path<(String, String, String, String, String)>,
) -> ApiResult {
    let is_queue = dest_kind(&kind)?;
    let sc = scope_one(&state, &caller, &vhost)?;
    let b = find_binding(&state, &sc, exchange_name(&source), &dest, is_queue, &props)
        .ok_or_else(ApiError::not_found)?;
    ok_json(render::binding(&b))
}

async fn delete_binding(
    State(state): State<AppState>,
    caller: Caller,
    Path((vhost, source, kind, dest, props)): Path<(String, String, String, String, String)>,
) -> ApiResult {
    let is_queue = dest_kind(&kind)?;
    let p = action_perm(&state, &caller, &vhost)?;
    let sc = Vhosts::Only(BTreeSet::from([vhost.clone()]));
    let b = find_binding(&state, &sc, &source, &dest, is_queue, &props)
        .ok_or_else(ApiError::not_found)?;
    check(
        &p,
        Access::Write,
        if is_queue { "queue" } else { "exchange" },
        &dest,
        &caller,
    )?;
    check(&p, Access::Read, "exchange", &source, &caller)?;
    let d = if is_queue {
        Dest::Queue(dest.clone())
    } else {
        Dest::Exchange(dest.clone())
    };
    state
        .core
        .with_vhost(&vhost, |vh, _| {
            vh.unbind(&source, d, &b.routing_key, &b.arguments, 0)
        })
        .ok_or_else(ApiError::not_found)?
        .map_err(ApiError::amqp)?;
    no_content()
}

// ===== connections, channels, consumers =====

async fn list_connections(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<ListQuery>,
) -> ApiResult {
    let items = visible_connections(&state, &caller)
        .iter()
        .map(render::connection)
        .collect();
    list_response(items, &q)
}

async fn vhost_connections(
    State(state): State<AppState>,
    caller: Caller,
    Path(vhost): Path<String>,
    Query(q): Query<ListQuery>,
) -> ApiResult {
    scope_one(&state, &caller, &vhost)?;
    let items = visible_connections(&state, &caller)
        .iter()
        .filter(|c| c.vhost == vhost)
        .map(render::connection)
        .collect();
    list_response(items, &q)
}

fn find_connection(
    state: &AppState,
    caller: &Caller,
    name: &str,
) -> Result<snapshot::ConnSnap, ApiError> {
    visible_connections(state, caller)
        .into_iter()
        .find(|c| c.info.name == name)
        .ok_or_else(ApiError::not_found)
}

async fn get_connection(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult {
    ok_json(render::connection(&find_connection(
        &state, &caller, &name,
    )?))
}

async fn close_connection(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    headers: axum::http::HeaderMap,
) -> ApiResult {
    let c = find_connection(&state, &caller, &name)?;
    if !caller.is_admin() && c.user != caller.name {
        return Err(ApiError::forbidden("Not administrator user"));
    }
    let reason = headers
        .get("x-reason")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("Closed via management plugin");
    let reason: String = reason.chars().take(200).collect();
    state
        .core
        .close_where(320, &reason, |h| Arc::ptr_eq(&h.info, &c.info));
    no_content()
}

fn channels_of(conns: &[snapshot::ConnSnap]) -> Vec<Value> {
    let mut out = Vec::new();
    for c in conns {
        let chans: Vec<(u16, Arc<crate::model::stats::ChannelInfo>)> = c
            .info
            .channels()
            .iter()
            .map(|(n, i)| (*n, i.clone()))
            .collect();
        for (n, i) in chans {
            out.push(render::channel(c, n, &i));
        }
    }
    out
}

async fn connection_channels(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult {
    let c = find_connection(&state, &caller, &name)?;
    ok_json(Value::Array(channels_of(&[c])))
}

async fn list_channels(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<ListQuery>,
) -> ApiResult {
    list_response(channels_of(&visible_connections(&state, &caller)), &q)
}

async fn vhost_channels(
    State(state): State<AppState>,
    caller: Caller,
    Path(vhost): Path<String>,
    Query(q): Query<ListQuery>,
) -> ApiResult {
    scope_one(&state, &caller, &vhost)?;
    let conns: Vec<_> = visible_connections(&state, &caller)
        .into_iter()
        .filter(|c| c.vhost == vhost)
        .collect();
    list_response(channels_of(&conns), &q)
}

async fn get_channel(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult {
    channels_of(&visible_connections(&state, &caller))
        .into_iter()
        .find(|c| c.get("name").and_then(Value::as_str) == Some(name.as_str()))
        .map(|v| Json(v).into_response())
        .ok_or_else(ApiError::not_found)
}

fn consumers_in(state: &AppState, sc: &Vhosts) -> Vec<Value> {
    let qs = snapshot::queues(&state.core, sc, None);
    let conns = snapshot::connections(&state.core);
    qs.iter()
        .flat_map(|q| {
            q.consumers
                .iter()
                .map(|c| render::consumer(&q.vhost, &q.name, c, &conns))
                .collect::<Vec<_>>()
        })
        .collect()
}

async fn list_consumers(State(state): State<AppState>, caller: Caller) -> ApiResult {
    let sc = scope(&state, &caller);
    let st = state.clone();
    offload(&state, move || {
        ok_json(Value::Array(consumers_in(&st, &sc)))
    })
    .await?
}

async fn list_consumers_vhost(
    State(state): State<AppState>,
    caller: Caller,
    Path(vhost): Path<String>,
) -> ApiResult {
    let sc = scope_one(&state, &caller, &vhost)?;
    ok_json(Value::Array(consumers_in(&state, &sc)))
}

// ===== health =====

async fn aliveness(
    State(state): State<AppState>,
    caller: Caller,
    Path(vhost): Path<String>,
) -> ApiResult {
    scope_one(&state, &caller, &vhost)?;
    ok_json(json!({"status": "ok"}))
}

fn health_failed(reason: String) -> ApiResult {
    Ok((
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({"status": "failed", "reason": reason})),
    )
        .into_response())
}

async fn health_ok(_c: Caller) -> ApiResult {
    ok_json(json!({"status": "ok"}))
}

async fn health_alarms(State(state): State<AppState>, _c: Caller) -> ApiResult {
    let wm = state.config.memory_high_watermark;
    let mut alarms = Vec::new();
    if wm != 0 && state.core.memory.used() > wm {
        alarms.push(json!({"node": NODE, "resource": "memory"}));
    }
    if state.core.disk_alarm() {
        alarms.push(json!({"node": NODE, "resource": "disk"}));
    }
    if alarms.is_empty() {
        ok_json(json!({"status": "ok"}))
    } else {
        Ok((
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "failed", "reason": "resource alarm(s) in effect", "alarms": alarms})),
        )
            .into_response())
    }
}

async fn health_port(
    State(state): State<AppState>,
    _c: Caller,
    Path(port): Path<String>,
) -> ApiResult {
    let port: u16 = port
        .parse()
        .map_err(|_| ApiError::bad_request("port: expected a port number"))?;
    if port == state.amqp_addr.port() || port == state.http_addr.port() {
        ok_json(json!({"status": "ok", "port": port}))
    } else {
        health_failed(format!("No active listener on port {port}"))
    }
}

async fn health_protocol(_s: State<AppState>, _c: Caller, Path(p): Path<String>) -> ApiResult {
    match p.as_str() {
        "amqp" | "amqp091" | "amqp0-9-1" | "http" => {
            ok_json(json!({"status": "ok", "protocol": p}))
        }
        _ => health_failed(format!("No active listener for protocol {p}")),
    }
}
