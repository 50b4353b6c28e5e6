//! Snapshots → RabbitMQ's JSON shapes, and JSON ↔ AMQP field tables and properties.

use amq_protocol::protocol::basic::AMQPProperties;
use amq_protocol::types::{AMQPValue, FieldArray, FieldTable, LongString, ShortString};
use serde_json::{json, Map, Value};

use super::snapshot::{
    BindingSnap, ConnSnap, ConsumerSnap, ExchangeSnap, QueueSnap, VhostSnap, FIELDS,
};
use super::ApiError;
use crate::model::stats::ChannelInfo;

/// The node name shown everywhere (`node` fields, `/api/nodes`).
pub const NODE: &str = "eventbus@localhost";

/// An AMQP value as JSON (as RabbitMQ renders arguments and headers).
pub fn value_to_json(v: &AMQPValue) -> Value {
    match v {
        AMQPValue::Boolean(b) => json!(b),
        AMQPValue::ShortShortInt(n) => json!(n),
        AMQPValue::ShortShortUInt(n) => json!(n),
        AMQPValue::ShortInt(n) => json!(n),
        AMQPValue::ShortUInt(n) => json!(n),
        AMQPValue::LongInt(n) => json!(n),
        AMQPValue::LongUInt(n) => json!(n),
        AMQPValue::LongLongInt(n) => json!(n),
        AMQPValue::Float(f) => json!(f),
        AMQPValue::Double(f) => json!(f),
        AMQPValue::DecimalValue(d) => json!(d.value as f64 / 10f64.powi(d.scale as i32)),
        AMQPValue::ShortString(s) => json!(s.as_str()),
        AMQPValue::LongString(s) => json!(String::from_utf8_lossy(s.as_bytes())),
        AMQPValue::FieldArray(a) => Value::Array(a.as_slice().iter().map(value_to_json).collect()),
        AMQPValue::Timestamp(t) => json!(t),
        AMQPValue::FieldTable(t) => table_to_json(t),
        AMQPValue::ByteArray(b) => json!(String::from_utf8_lossy(b.as_slice())),
        AMQPValue::Void => Value::Null,
    }
}

/// A field table as a JSON object.
pub fn table_to_json(t: &FieldTable) -> Value {
    Value::Object(
        t.inner()
            .iter()
            .map(|(k, v)| (k.to_string(), value_to_json(v)))
            .collect(),
    )
}

/// JSON → AMQP value: integers become long-long, strings long strings (as RabbitMQ).
pub fn json_to_value(v: &Value) -> AMQPValue {
    match v {
        Value::Null => AMQPValue::Void,
        Value::Bool(b) => AMQPValue::Boolean(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => AMQPValue::LongLongInt(i),
            None => AMQPValue::Double(n.as_f64().unwrap_or(0.0)),
        },
        Value::String(s) => AMQPValue::LongString(LongString::from(s.as_bytes().to_vec())),
        Value::Array(a) => AMQPValue::FieldArray(FieldArray::from(
            a.iter().map(json_to_value).collect::<Vec<_>>(),
        )),
        Value::Object(_) => {
            AMQPValue::FieldTable(json_to_table(v, "arguments").unwrap_or_default())
        }
    }
}

/// A JSON object (or null/absent) → field table; `field` names it in the error.
///
/// # Errors
/// 400 when it is not an object or a key is longer than 255 bytes.
pub fn json_to_table(v: &Value, field: &str) -> Result<FieldTable, ApiError> {
    let mut t = FieldTable::default();
    match v {
        Value::Null => {}
        Value::Object(m) => {
            for (k, v) in m {
                if k.len() > 255 {
                    return Err(ApiError::bad_request(format!(
                        "{field}: key longer than 255 bytes"
                    )));
                }
                t.insert(ShortString::from(k.clone()), json_to_value(v));
            }
        }
        _ => {
            return Err(ApiError::bad_request(format!(
                "{field}: expected an object"
            )))
        }
    }
    Ok(t)
}

/// Message properties as RabbitMQ shows them in `get` results.
pub fn properties_to_json(p: &AMQPProperties) -> Value {
    let mut m = Map::new();
    let mut s = |k: &str, v: Option<&ShortString>| {
        if let Some(v) = v {
            m.insert(k.into(), json!(v.as_str()));
        }
    };
    s("content_type", p.content_type().as_ref());
    s("content_encoding", p.content_encoding().as_ref());
    s("correlation_id", p.correlation_id().as_ref());
    s("reply_to", p.reply_to().as_ref());
    s("expiration", p.expiration().as_ref());
    s("message_id", p.message_id().as_ref());
    s("type", p.kind().as_ref());
    s("user_id", p.user_id().as_ref());
    s("app_id", p.app_id().as_ref());
    s("cluster_id", p.cluster_id().as_ref());
    if let Some(h) = p.headers() {
        m.insert("headers".into(), table_to_json(h));
    }
    if let Some(d) = p.delivery_mode() {
        m.insert("delivery_mode".into(), json!(d));
    }
    if let Some(d) = p.priority() {
        m.insert("priority".into(), json!(d));
    }
    if let Some(t) = p.timestamp() {
        m.insert("timestamp".into(), json!(t));
    }
    Value::Object(m)
}

/// `properties` of a publish request → AMQP properties.
///
/// # Errors
/// 400 naming the bad property.
pub fn json_to_properties(v: &Value) -> Result<AMQPProperties, ApiError> {
    let mut p = AMQPProperties::default();
    let m = match v {
        Value::Null => return Ok(p),
        Value::Object(m) => m,
        _ => return Err(ApiError::bad_request("properties: expected an object")),
    };
    let short = |k: &str, v: &Value| -> Result<ShortString, ApiError> {
        let s = match v {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            _ => {
                return Err(ApiError::bad_request(format!(
                    "properties.{k}: expected a string"
                )))
            }
        };
        if s.len() > 255 {
            return Err(ApiError::bad_request(format!(
                "properties.{k}: longer than 255 bytes"
            )));
        }
        Ok(ShortString::from(s))
    };
    let int = |k: &str, v: &Value, max: u64| -> Result<u64, ApiError> {
        v.as_u64()
            .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            .filter(|n| *n <= max)
            .ok_or_else(|| {
                ApiError::bad_request(format!("properties.{k}: expected an integer <= {max}"))
            })
    };
    for (k, v) in m {
        p = match k.as_str() {
            "content_type" => p.with_content_type(short(k, v)?),
            "content_encoding" => p.with_content_encoding(short(k, v)?),
            "correlation_id" => p.with_correlation_id(short(k, v)?),
            "reply_to" => p.with_reply_to(short(k, v)?),
            "expiration" => {
                let e = short(k, v)?;
                if e.as_str().parse::<u64>().is_err() {
                    return Err(ApiError::bad_request(
                        "properties.expiration: expected a non-negative integer string",
                    ));
                }
                p.with_expiration(e)
            }
            "message_id" => p.with_message_id(short(k, v)?),
            "type" => p.with_type(short(k, v)?),
            "user_id" => p.with_user_id(short(k, v)?),
            "app_id" => p.with_app_id(short(k, v)?),
            "cluster_id" => p.with_cluster_id(short(k, v)?),
            "delivery_mode" => p.with_delivery_mode(int(k, v, 2)? as u8),
            "priority" => p.with_priority(int(k, v, 255)? as u8),
            "timestamp" => p.with_timestamp(int(k, v, u64::MAX)?),
            "headers" => p.with_headers(json_to_table(v, "properties.headers")?),
            other => {
                return Err(ApiError::bad_request(format!(
                    "properties.{other}: unknown property"
                )))
            }
        };
    }
    Ok(p)
}

/// `{"rate": r}`.
fn details(r: f64) -> Value {
    json!({ "rate": r })
}

/// RabbitMQ's `message_stats` object for the fields `idx` of `vals`/`rates`.
pub fn message_stats(vals: &[u64], rates: &[f64], idx: &[usize]) -> Value {
    let mut m = Map::new();
    for &i in idx {
        m.insert(FIELDS[i].into(), json!(vals[i]));
        m.insert(format!("{}_details", FIELDS[i]), details(rates[i]));
    }
    Value::Object(m)
}

/// Fields of a vhost's (and the overview's) `message_stats`.
pub const VHOST_STATS: [usize; 12] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11];

fn rfc3339_ms(ms: u64) -> String {
    // civil-from-days (Howard Hinnant), UTC
    let secs = (ms / 1000) as i64;
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Channel details RabbitMQ embeds in consumer objects.
pub fn channel_details(c: Option<&ConnSnap>, channel: u16) -> Value {
    match c {
        Some(c) => {
            let (host, port) = split_host_port(&c.peer);
            json!({
                "connection_name": c.info.name,
                "name": format!("{} ({channel})", c.info.name),
                "node": NODE,
                "number": channel,
                "peer_host": host,
                "peer_port": port,
                "user": c.user,
            })
        }
        None => json!({}),
    }
}

fn split_host_port(a: &str) -> (String, u64) {
    match a.rsplit_once(':') {
        Some((h, p)) => (
            h.trim_matches(['[', ']']).to_owned(),
            p.parse().unwrap_or(0),
        ),
        None => (a.to_owned(), 0),
    }
}

/// A consumer object.
pub fn consumer(vhost: &str, queue: &str, c: &ConsumerSnap, conns: &[ConnSnap]) -> Value {
    let conn = conns.iter().find(|x| x.id == c.conn_id);
    json!({
        "arguments": {},
        "ack_required": c.ack_required,
        "active": true,
        "activity_status": "up",
        "channel_details": channel_details(conn, c.channel),
        "consumer_tag": c.tag,
        "exclusive": c.exclusive,
        "prefetch_count": c.prefetch,
        "priority": c.priority,
        "queue": {"name": queue, "vhost": vhost},
    })
}

/// A queue object (`details` adds `consumer_details`).
pub fn queue(q: &QueueSnap, rates: &[f64], conns: &[ConnSnap], details: bool) -> Value {
    let mut v = serde_json::to_value(queue_item(q, rates, conns)).unwrap_or(Value::Null);
    if details {
        v["consumer_details"] = Value::Array(
            q.consumers
                .iter()
                .map(|c| consumer(&q.vhost, &q.name, c, conns))
                .collect(),
        );
    }
    v
}

/// `{"rate": r}` as a typed value.
#[derive(Debug, serde::Serialize)]
pub struct Rate {
    rate: f64,
}

/// A queue's `message_stats`, typed.
#[derive(Debug, serde::Serialize)]
pub struct QueueStatsJson {
    publish: u64,
    publish_details: Rate,
    deliver: u64,
    deliver_details: Rate,
    deliver_no_ack: u64,
    deliver_no_ack_details: Rate,
    get: u64,
    get_details: Rate,
    get_no_ack: u64,
    get_no_ack_details: Rate,
    get_empty: u64,
    get_empty_details: Rate,
    redeliver: u64,
    redeliver_details: Rate,
    ack: u64,
    ack_details: Rate,
    deliver_get: u64,
    deliver_get_details: Rate,
}

/// A queue object as listed, typed so that large listings serialise without building a
/// JSON tree per queue.
#[derive(Debug, serde::Serialize)]
pub struct QueueJson {
    arguments: Value,
    auto_delete: bool,
    consumer_capacity: f64,
    consumer_utilisation: f64,
    consumers: usize,
    durable: bool,
    exclusive: bool,
    exclusive_consumer_tag: Option<String>,
    idle_since: String,
    memory: usize,
    message_bytes: usize,
    message_bytes_ready: usize,
    message_bytes_unacknowledged: u64,
    message_stats: QueueStatsJson,
    messages: u64,
    messages_details: Rate,
    messages_ready: u64,
    messages_ready_details: Rate,
    messages_unacknowledged: u64,
    messages_unacknowledged_details: Rate,
    name: String,
    node: &'static str,
    owner_pid_details: Option<Value>,
    policy: Option<String>,
    single_active_consumer_tag: Option<String>,
    state: &'static str,
    #[serde(rename = "type")]
    kind: &'static str,
    vhost: String,
}

/// A queue as listed (without `consumer_details`).
pub fn queue_item(q: &QueueSnap, rates: &[f64], conns: &[ConnSnap]) -> QueueJson {
    let vals = super::snapshot::queue_values(&q.counts, q.ready as u64, q.unacked as u64);
    let owner = q.owner.and_then(|o| conns.iter().find(|c| c.id == o));
    let r = |i: usize| Rate { rate: rates[i] };
    let busy = if q.consumers.is_empty() { 0.0 } else { 1.0 };
    QueueJson {
        arguments: table_to_json(&q.arguments),
        auto_delete: q.auto_delete,
        consumer_capacity: busy,
        consumer_utilisation: busy,
        consumers: q.consumers.len(),
        durable: q.durable,
        exclusive: q.owner.is_some(),
        exclusive_consumer_tag: q
            .consumers
            .iter()
            .find(|c| c.exclusive)
            .map(|c| c.tag.clone()),
        idle_since: rfc3339_ms(q.idle_since_ms),
        memory: q.ready_bytes,
        message_bytes: q.ready_bytes,
        message_bytes_ready: q.ready_bytes,
        message_bytes_unacknowledged: 0,
        message_stats: QueueStatsJson {
            publish: vals[0],
            publish_details: r(0),
            deliver: vals[1],
            deliver_details: r(1),
            deliver_no_ack: vals[2],
            deliver_no_ack_details: r(2),
            get: vals[3],
            get_details: r(3),
            get_no_ack: vals[4],
            get_no_ack_details: r(4),
            get_empty: vals[5],
            get_empty_details: r(5),
            redeliver: vals[6],
            redeliver_details: r(6),
            ack: vals[7],
            ack_details: r(7),
            deliver_get: vals[8],
            deliver_get_details: r(8),
        },
        messages: vals[12],
        messages_details: r(12),
        messages_ready: vals[13],
        messages_ready_details: r(13),
        messages_unacknowledged: vals[14],
        messages_unacknowledged_details: r(14),
        name: q.name.to_string(),
        node: NODE,
        owner_pid_details: owner.map(|c| {
            let (host, port) = split_host_port(&c.peer);
            json!({"name": c.info.name, "peer_host": host, "peer_port": port})
        }),
        policy: None,
        single_active_consumer_tag: if q.single_active {
            q.consumers.first().map(|c| c.tag.clone())
        } else {
            None
        },
        state: "running",
        kind: "classic",
        vhost: q.vhost.to_string(),
    }
}

fn details_of(rates: &[f64], i: usize) -> Value {
    details(rates[i])
}

/// An exchange object.
pub fn exchange(e: &ExchangeSnap) -> Value {
    json!({
        "arguments": table_to_json(&e.arguments),
        "auto_delete": e.auto_delete,
        "durable": e.durable,
        "internal": e.internal,
        "name": e.name,
        "type": e.kind,
        "user_who_performed_action": "rmq-internal",
        "vhost": e.vhost,
    })
}

/// A binding's `properties_key`: the routing key (`~` when empty) when it has no
/// arguments, else `key~<crc32 of the arguments>` (RabbitMQ uses a hash there too).
pub fn properties_key(routing_key: &str, args: &FieldTable) -> String {
    if args.inner().is_empty() {
        if routing_key.is_empty() {
            "~".into()
        } else {
            routing_key.to_owned()
        }
    } else {
        let h = crc32fast::hash(table_to_json(args).to_string().as_bytes());
        format!("{routing_key}~{h:08x}")
    }
}

/// A binding object.
pub fn binding(b: &BindingSnap) -> Value {
    json!({
        "arguments": table_to_json(&b.arguments),
        "destination": b.destination,
        "destination_type": if b.destination_is_queue { "queue" } else { "exchange" },
        "properties_key": properties_key(&b.routing_key, &b.arguments),
        "routing_key": b.routing_key,
        "source": b.source,
        "vhost": b.vhost,
    })
}

/// A vhost object.
pub fn vhost(v: &VhostSnap, rates: &[f64]) -> Value {
    let vals = super::snapshot::vhost_values(v);
    json!({
        "cluster_state": {NODE: "running"},
        "default_queue_type": "classic",
        "description": if v.name == "/" { "Default virtual host" } else { "" },
        "message_stats": message_stats(&vals, rates, &VHOST_STATS),
        "messages": vals[12],
        "messages_details": details_of(rates, 12),
        "messages_ready": vals[13],
        "messages_ready_details": details_of(rates, 13),
        "messages_unacknowledged": vals[14],
        "messages_unacknowledged_details": details_of(rates, 14),
        "metadata": {"description": "", "tags": []},
        "name": v.name,
        "tags": [],
        "tracing": false,
    })
}

/// A connection object.
pub fn connection(c: &ConnSnap) -> Value {
    use std::sync::atomic::Ordering::Relaxed;
    let i = &c.info;
    let (host, port) = split_host_port(&c.peer);
    let (lhost, lport) = split_host_port(&i.local);
    let props: Map<String, Value> = i
        .client_properties
        .iter()
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    json!({
        "auth_mechanism": "PLAIN",
        "channel_max": i.channel_max,
        "channels": i.channels().len(),
        "client_properties": props,
        "connected_at": i.connected_at_ms,
        "frame_max": i.frame_max,
        "host": lhost,
        "name": i.name,
        "node": NODE,
        "peer_host": host,
        "peer_port": port,
        "port": lport,
        "protocol": "AMQP 0-9-1",
        "recv_oct": i.recv_oct.load(Relaxed),
        "send_oct": i.send_oct.load(Relaxed),
        "ssl": false,
        "state": if i.blocked.load(Relaxed) { "blocked" } else { "running" },
        "timeout": i.heartbeat,
        "type": "network",
        "user": c.user,
        "user_provided_name": i.client_properties.get("connection_name"),
        "vhost": c.vhost,
    })
}

/// A channel object.
pub fn channel(c: &ConnSnap, number: u16, ch: &ChannelInfo) -> Value {
    use std::sync::atomic::Ordering::Relaxed;
    let (host, port) = split_host_port(&c.peer);
    json!({
        "acks_uncommitted": 0,
        "confirm": ch.confirm.load(Relaxed),
        "connection_details": {"name": c.info.name, "peer_host": host, "peer_port": port},
        "consumer_count": ch.consumers.load(Relaxed),
        "global_prefetch_count": ch.global_prefetch.load(Relaxed),
        "message_stats": {"publish": ch.publish.load(Relaxed)},
        "messages_unacknowledged": ch.unacked.load(Relaxed),
        "messages_unconfirmed": 0,
        "messages_uncommitted": 0,
        "name": format!("{} ({number})", c.info.name),
        "node": NODE,
        "number": number,
        "prefetch_count": ch.prefetch.load(Relaxed),
        "state": "running",
        "transactional": ch.transactional.load(Relaxed),
        "user": c.user,
        "vhost": c.vhost,
    })
}
