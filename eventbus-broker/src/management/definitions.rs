//! `/api/definitions`: export and import in RabbitMQ's definitions format (whole broker or
//! one vhost). Imports are validated completely (400 naming the bad entry) before anything
//! is applied, then applied through the same operations as the rest of the API.

use axum::body::Bytes;
use axum::extract::{Path, State};
use serde_json::{json, Value};

use super::api::{opt_bool, opt_str, parse_body, parse_tags, req_str, RABBITMQ_API_VERSION};
use super::render::{json_to_table, table_to_json};
use super::{ApiError, ApiResult, AppState, Caller};
use crate::auth::users::HASHING_ALGORITHM;
use crate::auth::User;
use crate::model::exchange::Dest;
use crate::model::Core;
use crate::storage::Definitions;

/// A hash we can check: RabbitMQ's salted SHA-256 (4-byte salt + 32-byte digest).
///
/// # Errors
/// 400 for another algorithm or a malformed hash.
pub(super) fn check_hash(hash: &str, algorithm: &str) -> Result<(), ApiError> {
    if algorithm != HASHING_ALGORITHM {
        return Err(ApiError::bad_request(format!(
            "hashing_algorithm: only {HASHING_ALGORITHM} is supported, got {algorithm:?}"
        )));
    }
    match crate::auth::users::base64_decode(hash) {
        Some(raw) if raw.len() == 36 => Ok(()),
        _ if hash.is_empty() => Ok(()),
        _ => Err(ApiError::bad_request(
            "password_hash: expected base64 of a 4-byte salt and a SHA-256 digest",
        )),
    }
}

/// Everything (or one vhost's objects) as a definitions document, rendered from a copy of
/// the durable definitions taken under the lock ([`Core::definitions`]).
fn export(d: &Definitions, only: Option<&str>) -> Value {
    let keep = |v: &str| only.is_none_or(|o| o == v);
    let with_vhost = |mut o: Value, vhost: &str| {
        if only.is_none() {
            o["vhost"] = json!(vhost);
        }
        o
    };
    let queues: Vec<Value> = d
        .queues
        .iter()
        .filter(|q| keep(&q.vhost))
        .map(|q| {
            with_vhost(
                json!({
                    "name": q.name,
                    "durable": true,
                    "auto_delete": q.auto_delete,
                    "arguments": table_to_json(&q.arguments),
                }),
                &q.vhost,
            )
        })
        .collect();
    let exchanges: Vec<Value> = d
        .exchanges
        .iter()
        .filter(|x| keep(&x.vhost))
        .map(|x| {
            with_vhost(
                json!({
                    "name": x.name,
                    "type": x.kind,
                    "durable": true,
                    "auto_delete": x.auto_delete,
                    "internal": x.internal,
                    "arguments": table_to_json(&x.arguments),
                }),
                &x.vhost,
            )
        })
        .collect();
    let bindings: Vec<Value> = d
        .bindings
        .iter()
        .filter(|b| keep(&b.vhost))
        .map(|b| {
            with_vhost(
                json!({
                    "source": b.source,
                    "destination": b.destination,
                    "destination_type": b.destination_type,
                    "routing_key": b.routing_key,
                    "arguments": table_to_json(&b.arguments),
                }),
                &b.vhost,
            )
        })
        .collect();
    let mut doc = json!({
        "rabbit_version": RABBITMQ_API_VERSION,
        "rabbitmq_version": RABBITMQ_API_VERSION,
        "product_name": "eventbus-broker",
        "product_version": env!("CARGO_PKG_VERSION"),
        "parameters": [],
        "policies": [],
        "queues": queues,
        "exchanges": exchanges,
        "bindings": bindings,
    });
    if only.is_none() {
        doc["users"] = json!(d
            .users
            .iter()
            .map(|u| json!({
                "name": u.name,
                "password_hash": u.password_hash,
                "hashing_algorithm": u.hashing_algorithm,
                "tags": u.tags,
                "limits": {},
            }))
            .collect::<Vec<_>>());
        doc["vhosts"] = json!(d
            .vhosts
            .iter()
            .map(|v| json!({"name": v.name, "limits": [], "metadata": {"description": "", "tags": []}}))
            .collect::<Vec<_>>());
        doc["permissions"] = json!(d
            .permissions
            .iter()
            .map(|p| json!({
                "user": p.user, "vhost": p.vhost,
                "configure": p.configure, "write": p.write, "read": p.read,
            }))
            .collect::<Vec<_>>());
        doc["topic_permissions"] = json!([]);
        doc["global_parameters"] = json!([]);
    }
    doc
}

fn download(v: Value, q: &std::collections::HashMap<String, String>) -> ApiResult {
    use axum::response::IntoResponse;
    let mut r = axum::Json(v).into_response();
    if let Some(name) = q.get("download") {
        let safe: String = name
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || "-_.".contains(*c))
            .collect();
        if let Ok(h) = format!("attachment; filename=\"{safe}\"").parse() {
            r.headers_mut()
                .insert(axum::http::header::CONTENT_DISPOSITION, h);
        }
    }
    Ok(r)
}

pub(super) async fn export_all(
    State(state): State<AppState>,
    caller: Caller,
    axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> ApiResult {
    caller.require_admin()?;
    let defs = Core::definitions(&state.core.lock());
    download(export(&defs, None), &q)
}

pub(super) async fn export_vhost(
    State(state): State<AppState>,
    caller: Caller,
    Path(vhost): Path<String>,
    axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> ApiResult {
    caller.require_admin()?;
    let defs = {
        let st = state.core.lock();
        if !st.vhosts.contains_key(&vhost) {
            return Err(ApiError::not_found());
        }
        Core::definitions(&st)
    };
    download(export(&defs, Some(&vhost)), &q)
}

/// A validated import.
#[derive(Debug, Default)]
struct Import {
    users: Vec<User>,
    vhosts: Vec<String>,
    permissions: Vec<[String; 5]>,
    exchanges: Vec<(
        String,
        String,
        String,
        bool,
        bool,
        bool,
        amq_protocol::types::FieldTable,
    )>,
    queues: Vec<(String, String, bool, bool, amq_protocol::types::FieldTable)>,
    bindings: Vec<(
        String,
        String,
        String,
        bool,
        String,
        amq_protocol::types::FieldTable,
    )>,
}

fn array<'a>(doc: &'a Value, key: &str) -> Result<&'a [Value], ApiError> {
    match doc.get(key) {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(a)) => Ok(a),
        Some(_) => Err(ApiError::bad_request(format!("{key}: expected an array"))),
    }
}

/// Validate a definitions document; `vhost` set for a per-vhost import (entries' `vhost`
/// fields are then ignored).
fn parse(doc: &Value, vhost: Option<&str>) -> Result<Import, ApiError> {
    let mut imp = Import::default();
    let at = |key: &str, i: usize, e: ApiError| {
        ApiError::bad_request(format!("{key}[{i}].{}", e.reason))
    };
    let vh_of = |v: &Value| -> Result<String, ApiError> {
        match vhost {
            Some(vh) => Ok(vh.to_owned()),
            None => Ok(req_str(v, "vhost")?.to_owned()),
        }
    };
    if vhost.is_none() {
        for (i, u) in array(doc, "users")?.iter().enumerate() {
            let r: Result<User, ApiError> = (|| {
                let name = req_str(u, "name")?.to_owned();
                let tags = parse_tags(u)?;
                let (hash, algo) = match opt_str(u, "password")? {
                    Some(pw) => (
                        crate::auth::users::hash_password(pw),
                        HASHING_ALGORITHM.to_owned(),
                    ),
                    None => {
                        let h = opt_str(u, "password_hash")?.unwrap_or("").to_owned();
                        let a = opt_str(u, "hashing_algorithm")?
                            .unwrap_or(HASHING_ALGORITHM)
                            .to_owned();
                        check_hash(&h, &a)?;
                        (h, a)
                    }
                };
                Ok(User {
                    name,
                    password_hash: hash,
                    hashing_algorithm: algo,
                    tags,
                })
            })();
            imp.users.push(r.map_err(|e| at("users", i, e))?);
        }
        for (i, v) in array(doc, "vhosts")?.iter().enumerate() {
            let n = req_str(v, "name").map_err(|e| at("vhosts", i, e))?;
            imp.vhosts.push(n.to_owned());
        }
        for (i, p) in array(doc, "permissions")?.iter().enumerate() {
            let r: Result<[String; 5], ApiError> = (|| {
                let f = |k: &str| req_str(p, k).map(str::to_owned);
                let perm = [
                    f("user")?,
                    f("vhost")?,
                    f("configure")?,
                    f("write")?,
                    f("read")?,
                ];
                for (k, re) in ["configure", "write", "read"].iter().zip(&perm[2..]) {
                    regex::Regex::new(re)
                        .map_err(|e| ApiError::bad_request(format!("{k}: invalid regex: {e}")))?;
                }
                Ok(perm)
            })();
            imp.permissions
                .push(r.map_err(|e| at("permissions", i, e))?);
        }
    }
    for (i, x) in array(doc, "exchanges")?.iter().enumerate() {
        let r: Result<_, ApiError> = (|| {
            Ok((
                vh_of(x)?,
                req_str(x, "name")?.to_owned(),
                req_str(x, "type")?.to_owned(),
                opt_bool(x, "durable", true)?,
                opt_bool(x, "auto_delete", false)?,
                opt_bool(x, "internal", false)?,
                json_to_table(x.get("arguments").unwrap_or(&Value::Null), "arguments")?,
            ))
        })();
        imp.exchanges.push(r.map_err(|e| at("exchanges", i, e))?);
    }
    for (i, q) in array(doc, "queues")?.iter().enumerate() {
        let r: Result<_, ApiError> = (|| {
            Ok((
                vh_of(q)?,
                Some(req_str(q, "name")?)
                    .filter(|n| !n.is_empty())
                    .ok_or_else(|| ApiError::bad_request("name: must not be empty"))?
                    .to_owned(),
                opt_bool(q, "durable", true)?,
                opt_bool(q, "auto_delete", false)?,
                json_to_table(q.get("arguments").unwrap_or(&Value::Null), "arguments")?,
            ))
        })();
        imp.queues.push(r.map_err(|e| at("queues", i, e))?);
    }
    for (i, b) in array(doc, "bindings")?.iter().enumerate() {
        let r: Result<_, ApiError> = (|| {
            let to_queue = match req_str(b, "destination_type")? {
                "queue" => true,
                "exchange" => false,
                other => {
                    return Err(ApiError::bad_request(format!(
                        "destination_type: expected \"queue\" or \"exchange\", got {other:?}"
                    )))
                }
            };
            Ok((
                vh_of(b)?,
                req_str(b, "source")?.to_owned(),
                req_str(b, "destination")?.to_owned(),
                to_queue,
                opt_str(b, "routing_key")?.unwrap_or("").to_owned(),
                json_to_table(b.get("arguments").unwrap_or(&Value::Null), "arguments")?,
            ))
        })();
        imp.bindings.push(r.map_err(|e| at("bindings", i, e))?);
    }
    for key in ["policies", "parameters", "global_parameters"] {
        if !array(doc, key)?.is_empty() {
            tracing::warn!(
                key,
                "definitions import: {key} are not supported and were ignored"
            );
        }
    }
    Ok(imp)
}

/// Apply a validated import, in RabbitMQ's order. Stops at the first failing object.
fn apply(core: &Core, imp: Import) -> Result<(), ApiError> {
    for u in imp.users {
        core.put_user_record(u).map_err(ApiError::admin)?;
    }
    for v in &imp.vhosts {
        core.add_vhost(v).map_err(ApiError::admin)?;
    }
    for [user, vhost, c, w, r] in &imp.permissions {
        core.set_permissions(user, vhost, c, w, r)
            .map_err(|e| ApiError::bad_request(format!("permissions: {e}")))?;
    }
    for (vhost, name, kind, durable, auto_delete, internal, args) in imp.exchanges {
        core.with_vhost(&vhost, |vh, _| {
            vh.declare_exchange(&name, &kind, false, durable, auto_delete, internal, args)
        })
        .ok_or_else(|| ApiError::bad_request(format!("exchanges: no vhost '{vhost}'")))?
        .map_err(|e| ApiError::bad_request(format!("exchanges: {}", e.text)))?;
    }
    for (vhost, name, durable, auto_delete, args) in imp.queues {
        core.with_vhost(&vhost, |vh, ctx| {
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
        })
        .ok_or_else(|| ApiError::bad_request(format!("queues: no vhost '{vhost}'")))?
        .map_err(|e| ApiError::bad_request(format!("queues: {}", e.text)))?;
    }
    for (vhost, source, dest, to_queue, key, args) in imp.bindings {
        let d = if to_queue {
            Dest::Queue(dest)
        } else {
            Dest::Exchange(dest)
        };
        core.with_vhost(&vhost, |vh, _| vh.bind(&source, d, &key, args, 0))
            .ok_or_else(|| ApiError::bad_request(format!("bindings: no vhost '{vhost}'")))?
            .map_err(|e| ApiError::bad_request(format!("bindings: {}", e.text)))?;
    }
    Ok(())
}

/// The import body: JSON, or the `file` field of RabbitMQ's UI upload form is not
/// supported — send the document itself.
fn import_doc(body: &Bytes) -> Result<Value, ApiError> {
    parse_body(body)
}

pub(super) async fn import_all(
    State(state): State<AppState>,
    caller: Caller,
    body: Bytes,
) -> ApiResult {
    caller.require_admin()?;
    let doc = import_doc(&body)?;
    let imp = parse(&doc, None)?;
    apply(&state.core, imp)?;
    Ok(axum::http::StatusCode::NO_CONTENT.into_response_ok())
}

pub(super) async fn import_vhost(
    State(state): State<AppState>,
    caller: Caller,
    Path(vhost): Path<String>,
    body: Bytes,
) -> ApiResult {
    caller.require_admin()?;
    if !state.core.vhost_exists(&vhost) {
        return Err(ApiError::not_found());
    }
    let doc = import_doc(&body)?;
    let imp = parse(&doc, Some(&vhost))?;
    apply(&state.core, imp)?;
    Ok(axum::http::StatusCode::NO_CONTENT.into_response_ok())
}

trait IntoResponseOk {
    fn into_response_ok(self) -> axum::response::Response;
}

impl IntoResponseOk for axum::http::StatusCode {
    fn into_response_ok(self) -> axum::response::Response {
        axum::response::IntoResponse::into_response(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_names_the_bad_entry() {
        let doc = json!({"queues": [{"name": "a", "vhost": "/"}, {"vhost": "/"}]});
        let e = parse(&doc, None).unwrap_err();
        assert_eq!(e.reason, "queues[1].name: missing");
        let doc = json!({"users": [{"name": "u", "password_hash": "x", "hashing_algorithm": "rabbit_password_hashing_md5"}]});
        assert!(parse(&doc, None)
            .unwrap_err()
            .reason
            .contains("hashing_algorithm"));
    }
}
