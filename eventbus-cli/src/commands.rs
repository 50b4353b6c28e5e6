//! Runs one parsed command against the management API: which endpoint
//! each command calls, with which body, and how its answer is shown.

use std::io::{Read, Write};
use std::path::Path;

use serde_json::{json, Map, Value};

use crate::cli::{AckMode, BindingArgs, Cli, Close, Command, Declare, Delete, ListKind, Publish};
use crate::client::{ApiPath, Client, Error, Result};
use crate::output::{self, col, Column, Format};

/// What a command prints on standard output.
#[derive(Debug)]
struct Shown(String);

/// Runs `cli`'s command; its standard output text, or why it failed.
pub async fn run(cli: &Cli) -> Result<String> {
    let client = Client::new(&cli.url, &cli.user, &cli.password)?;
    let ctx = Ctx {
        client,
        format: cli.format,
        vhost: cli.vhost.clone(),
    };
    let shown = match &cli.command {
        Command::Overview => ctx.overview().await?,
        Command::List {
            kind,
            filter,
            all_vhosts,
        } => ctx.list(*kind, filter.as_deref(), *all_vhosts).await?,
        Command::Declare(what) => ctx.declare(what).await?,
        Command::Delete(what) => ctx.delete(what).await?,
        Command::Publish(publish) => ctx.publish(publish).await?,
        Command::Get {
            queue,
            count,
            ackmode,
            truncate,
        } => ctx.get(queue, *count, *ackmode, *truncate).await?,
        Command::Purge { queue } => ctx.purge(queue).await?,
        Command::Move { queue, to, count } => ctx.move_messages(queue, to, *count).await?,
        Command::Export { file } => ctx.export(file).await?,
        Command::Import { file } => ctx.import(file).await?,
        Command::Close(Close::Connection { name, reason }) => {
            ctx.close_connection(name, reason).await?
        }
    };
    Ok(shown.0)
}

/// The client and the global flags a command needs.
#[derive(Debug)]
struct Ctx {
    client: Client,
    format: Format,
    /// `--vhost`; `None` means `/` except for `export`/`import` and `list --all-vhosts`.
    vhost: Option<String>,
}

impl Ctx {
    fn vhost(&self) -> &str {
        self.vhost.as_deref().unwrap_or("/")
    }

    /// A confirmation: a sentence in table format, `json` in JSON format.
    fn done(&self, sentence: String, json: Value) -> Shown {
        match self.format {
            Format::Table => Shown(sentence + "\n"),
            Format::Json => Shown(output::json(&json)),
        }
    }

    /// Rows as a table of `columns`, or as JSON.
    fn rows(&self, columns: &[Column], rows: &[Value]) -> Shown {
        match self.format {
            Format::Table => Shown(output::table(columns, rows)),
            Format::Json => Shown(output::json(&Value::Array(rows.to_vec()))),
        }
    }

    async fn overview(&self) -> Result<Shown> {
        let overview = self.client.get(&ApiPath::new(["overview"])?).await?;
        Ok(match self.format {
            Format::Json => Shown(output::json(&overview)),
            Format::Table => {
                // The interesting scalars; the full document is one `--format json` away.
                let mut picked = Map::new();
                for key in [
                    "product_name",
                    "product_version",
                    "rabbitmq_version",
                    "management_version",
                    "cluster_name",
                    "node",
                    "object_totals",
                    "queue_totals",
                ] {
                    if let Some(value) = overview.get(key) {
                        picked.insert(key.to_owned(), value.clone());
                    }
                }
                if let Some(stats) = overview.get("message_stats").and_then(Value::as_object) {
                    let counts: Map<String, Value> = stats
                        .iter()
                        .filter(|(_, v)| v.is_number())
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect();
                    picked.insert("message_stats".to_owned(), Value::Object(counts));
                }
                Shown(output::key_values(&Value::Object(picked)))
            }
        })
    }

    async fn list(&self, kind: ListKind, filter: Option<&str>, all_vhosts: bool) -> Result<Shown> {
        let vhost = self.vhost();
        let scoped = |all: &'static str, per_vhost: &[&str]| -> Result<ApiPath> {
            if all_vhosts {
                ApiPath::new([all])
            } else {
                ApiPath::new(per_vhost.iter().copied())
            }
        };
        let (path, columns, filter_fields): (ApiPath, &[Column], &[&str]) = match kind {
            ListKind::Vhosts => (ApiPath::new(["vhosts"])?, VHOST_COLUMNS, &["name"]),
            ListKind::Users => (ApiPath::new(["users"])?, USER_COLUMNS, &["name"]),
            ListKind::Permissions => (
                scoped("permissions", &["vhosts", vhost, "permissions"])?,
                PERMISSION_COLUMNS,
                &["user"],
            ),
            ListKind::Exchanges => (
                scoped("exchanges", &["exchanges", vhost])?,
                EXCHANGE_COLUMNS,
                &["name"],
            ),
            ListKind::Queues => (
                scoped("queues", &["queues", vhost])?,
                QUEUE_COLUMNS,
                &["name"],
            ),
            ListKind::Bindings => (
                scoped("bindings", &["bindings", vhost])?,
                BINDING_COLUMNS,
                &["source", "destination"],
            ),
            ListKind::Connections => (
                scoped("connections", &["vhosts", vhost, "connections"])?,
                CONNECTION_COLUMNS,
                &["name", "user"],
            ),
            ListKind::Channels => (
                scoped("channels", &["vhosts", vhost, "channels"])?,
                CHANNEL_COLUMNS,
                &["name", "user"],
            ),
            ListKind::Consumers => (
                scoped("consumers", &["consumers", vhost])?,
                CONSUMER_COLUMNS,
                &["queue.name", "consumer_tag"],
            ),
        };
        let answer = self.client.get(&path).await?;
        let mut rows = items(answer, &path)?;
        if let Some(text) = filter {
            rows.retain(|row| {
                filter_fields
                    .iter()
                    .any(|field| output::cell(output::lookup(row, field)).contains(text))
            });
        }
        if self.format == Format::Table {
            for row in &mut rows {
                name_default_exchange(row, kind);
            }
        }
        Ok(self.rows(columns, &rows))
    }

    async fn declare(&self, what: &Declare) -> Result<Shown> {
        let vhost = self.vhost();
        match what {
            Declare::Vhost {
                name,
                description,
                tags,
            } => {
                let mut body = json!({});
                if let Some(description) = description {
                    body["description"] = json!(description);
                }
                if !tags.is_empty() {
                    body["tags"] = json!(tags.join(","));
                }
                self.client
                    .put(&ApiPath::new(["vhosts", name])?, &body)
                    .await?;
                Ok(self.done(
                    format!("declared vhost {name:?}"),
                    json!({"declared": "vhost", "name": name}),
                ))
            }
            Declare::User {
                name,
                user_password,
                password_hash,
                tags,
            } => {
                let mut body = json!({ "tags": tags.join(",") });
                match (user_password, password_hash) {
                    (Some(password), _) => body["password"] = json!(password),
                    (None, Some(hash)) => body["password_hash"] = json!(hash),
                    (None, None) => return Err(Error::Usage("a password is required".into())),
                }
                self.client
                    .put(&ApiPath::new(["users", name])?, &body)
                    .await?;
                Ok(self.done(
                    format!("declared user {name:?}"),
                    json!({"declared": "user", "name": name}),
                ))
            }
            Declare::Permission {
                for_user: user,
                configure,
                write,
                read,
            } => {
                let body = json!({"configure": configure, "write": write, "read": read});
                self.client
                    .put(&ApiPath::new(["permissions", vhost, user])?, &body)
                    .await?;
                Ok(self.done(
                    format!("declared permissions of user {user:?} on vhost {vhost:?}"),
                    json!({"declared": "permission", "user": user, "vhost": vhost}),
                ))
            }
            Declare::Exchange {
                name,
                kind,
                durable,
                auto_delete,
                internal,
                arguments,
            } => {
                let body = json!({
                    "type": kind,
                    "durable": durable,
                    "auto_delete": auto_delete,
                    "internal": internal,
                    "arguments": object(arguments),
                });
                self.client
                    .put(&ApiPath::new(["exchanges", vhost, name])?, &body)
                    .await?;
                Ok(self.done(
                    format!("declared exchange {name:?} in vhost {vhost:?}"),
                    json!({"declared": "exchange", "name": name, "vhost": vhost}),
                ))
            }
            Declare::Queue {
                name,
                durable,
                auto_delete,
                arguments,
            } => {
                let body = json!({
                    "durable": durable,
                    "auto_delete": auto_delete,
                    "arguments": object(arguments),
                });
                self.client
                    .put(&ApiPath::new(["queues", vhost, name])?, &body)
                    .await?;
                Ok(self.done(
                    format!("declared queue {name:?} in vhost {vhost:?}"),
                    json!({"declared": "queue", "name": name, "vhost": vhost}),
                ))
            }
            Declare::Binding { binding } => {
                let path = binding_path(vhost, binding)?;
                let body = json!({
                    "routing_key": binding.routing_key,
                    "arguments": object(&binding.arguments),
                });
                self.client.post(&path, &body).await?;
                Ok(self.done(
                    format!(
                        "declared binding {:?} → {} {:?} (routing key {:?}) in vhost {vhost:?}",
                        binding.source,
                        binding.destination_type.name(),
                        binding.destination,
                        binding.routing_key
                    ),
                    json!({"declared": "binding", "source": binding.source,
                           "destination": binding.destination,
                           "destination_type": binding.destination_type.name(),
                           "routing_key": binding.routing_key, "vhost": vhost}),
                ))
            }
        }
    }

    async fn delete(&self, what: &Delete) -> Result<Shown> {
        let vhost = self.vhost();
        let (path, sentence, json) = match what {
            Delete::Vhost { name } => (
                ApiPath::new(["vhosts", name])?,
                format!("deleted vhost {name:?}"),
                json!({"deleted": "vhost", "name": name}),
            ),
            Delete::User { name } => (
                ApiPath::new(["users", name])?,
                format!("deleted user {name:?}"),
                json!({"deleted": "user", "name": name}),
            ),
            Delete::Permission { for_user: user } => (
                ApiPath::new(["permissions", vhost, user])?,
                format!("deleted permissions of user {user:?} on vhost {vhost:?}"),
                json!({"deleted": "permission", "user": user, "vhost": vhost}),
            ),
            Delete::Exchange { name, if_unused } => (
                with_query(
                    ApiPath::new(["exchanges", vhost, name])?,
                    &[("if-unused", *if_unused)],
                ),
                format!("deleted exchange {name:?} in vhost {vhost:?}"),
                json!({"deleted": "exchange", "name": name, "vhost": vhost}),
            ),
            Delete::Queue {
                name,
                if_empty,
                if_unused,
            } => (
                with_query(
                    ApiPath::new(["queues", vhost, name])?,
                    &[("if-empty", *if_empty), ("if-unused", *if_unused)],
                ),
                format!("deleted queue {name:?} in vhost {vhost:?}"),
                json!({"deleted": "queue", "name": name, "vhost": vhost}),
            ),
            Delete::Binding { binding } => return self.delete_binding(vhost, binding).await,
        };
        self.client.delete(&path).await?;
        Ok(self.done(sentence, json))
    }

    /// Bindings are addressed by their `properties_key` (derived from the routing key and
    /// arguments by the server), so the matching ones are looked up first.
    async fn delete_binding(&self, vhost: &str, binding: &BindingArgs) -> Result<Shown> {
        let path = binding_path(vhost, binding)?;
        let listed = items(self.client.get(&path).await?, &path)?;
        let arguments = Value::Object(object(&binding.arguments));
        let keys: Vec<String> = listed
            .iter()
            .filter(|b| {
                b.get("routing_key").and_then(Value::as_str) == Some(binding.routing_key.as_str())
                    && b.get("arguments").unwrap_or(&Value::Null) == &arguments
            })
            .filter_map(|b| {
                b.get("properties_key")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            })
            .collect();
        if keys.is_empty() {
            return Err(Error::Usage(format!(
                "no binding {:?} → {} {:?} with routing key {:?} and arguments {arguments} in vhost {vhost:?}",
                binding.source,
                binding.destination_type.name(),
                binding.destination,
                binding.routing_key
            )));
        }
        for key in &keys {
            let mut segments = binding_segments(vhost, binding);
            segments.push(key);
            self.client.delete(&ApiPath::new(segments)?).await?;
        }
        Ok(self.done(
            format!(
                "deleted binding {:?} → {} {:?} (routing key {:?}) in vhost {vhost:?}",
                binding.source,
                binding.destination_type.name(),
                binding.destination,
                binding.routing_key
            ),
            json!({"deleted": "binding", "source": binding.source,
                   "destination": binding.destination, "routing_key": binding.routing_key,
                   "vhost": vhost, "count": keys.len()}),
        ))
    }

    async fn publish(&self, publish: &Publish) -> Result<Shown> {
        let vhost = self.vhost();
        let (payload, encoding) = match (&publish.payload, &publish.payload_file) {
            (Some(text), _) => (text.clone(), "string"),
            (None, Some(file)) => {
                let bytes = read_input(file)?;
                match String::from_utf8(bytes) {
                    Ok(text) => (text, "string"),
                    Err(e) => (base64(e.as_bytes()), "base64"),
                }
            }
            (None, None) => {
                return Err(Error::Usage(
                    "--payload or --payload-file is required".into(),
                ))
            }
        };
        let mut properties = object(&publish.properties);
        if !publish.headers.is_empty() {
            properties.insert(
                "headers".to_owned(),
                Value::Object(object(&publish.headers)),
            );
        }
        let exchange = if publish.exchange.is_empty() {
            "amq.default"
        } else {
            &publish.exchange
        };
        let body = json!({
            "properties": properties,
            "routing_key": publish.routing_key,
            "payload": payload,
            "payload_encoding": encoding,
        });
        let path = ApiPath::new(["exchanges", vhost, exchange, "publish"])?;
        let answer = self.client.post(&path, &body).await?.unwrap_or(Value::Null);
        let routed = answer.get("routed").and_then(Value::as_bool);
        Ok(match self.format {
            Format::Json => Shown(output::json(&answer)),
            Format::Table => Shown(match routed {
                Some(true) => "published, routed to at least one queue\n".to_owned(),
                Some(false) => {
                    "published, but NOT routed: no queue is bound for this routing key\n".to_owned()
                }
                None => "published\n".to_owned(),
            }),
        })
    }

    async fn get(&self, queue: &str, count: u32, ackmode: AckMode, truncate: u64) -> Result<Shown> {
        let path = ApiPath::new(["queues", self.vhost(), queue, "get"])?;
        let body = json!({
            "count": count,
            "ackmode": match ackmode {
                AckMode::Requeue => "ack_requeue_true",
                AckMode::Ack => "ack_requeue_false",
            },
            "encoding": "auto",
            "truncate": truncate,
        });
        let answer = self.client.post(&path, &body).await?.unwrap_or(Value::Null);
        let messages = items(answer, &path)?;
        Ok(self.rows(GET_COLUMNS, &messages))
    }

    async fn purge(&self, queue: &str) -> Result<Shown> {
        let vhost = self.vhost();
        self.client
            .delete(&ApiPath::new(["queues", vhost, queue, "contents"])?)
            .await?;
        Ok(self.done(
            format!("purged queue {queue:?} in vhost {vhost:?}"),
            json!({"purged": queue, "vhost": vhost}),
        ))
    }

    /// `POST /api/queues/{vhost}/{name}/move` — an eventbus-broker extension. The queues are
    /// checked first, so a 404/405 from the move itself means the server lacks the endpoint.
    async fn move_messages(&self, queue: &str, to: &[String], count: Option<u64>) -> Result<Shown> {
        let vhost = self.vhost();
        self.queues_exist(queue, to).await?;
        let mut body = json!({ "destinations": to });
        if let Some(count) = count {
            body["count"] = json!(count);
        }
        let path = ApiPath::new(["queues", vhost, queue, "move"])?;
        let answer = match self.client.post(&path, &body).await {
            Ok(answer) => answer.unwrap_or(Value::Null),
            Err(Error::Api(e)) if matches!(e.status.as_u16(), 404 | 405) => {
                // A queue deleted since the check above is that 404, not a missing endpoint.
                self.queues_exist(queue, to).await?;
                return Err(Error::Usage(format!(
                    "moving messages is not supported by this server: it answered {} to POST {} \
                     (the move endpoint is an eventbus-broker extension of the management API; \
                     RabbitMQ does not have it)",
                    e.status,
                    path.as_str()
                )));
            }
            Err(e) => return Err(e),
        };
        let moved = answer.get("moved").and_then(Value::as_u64);
        Ok(match self.format {
            Format::Json => Shown(output::json(&answer)),
            Format::Table => Shown(format!(
                "moved {} message(s) from {queue:?} to {} in vhost {vhost:?}\n",
                moved.map_or_else(|| "?".to_owned(), |n| n.to_string()),
                to.join(", ")
            )),
        })
    }

    /// `Ok` if the source and every destination queue exist; the 404 for the first that does not.
    async fn queues_exist(&self, queue: &str, to: &[String]) -> Result<()> {
        let vhost = self.vhost();
        for name in std::iter::once(queue).chain(to.iter().map(String::as_str)) {
            self.client
                .get(&ApiPath::new(["queues", vhost, name])?)
                .await?;
        }
        Ok(())
    }

    async fn export(&self, file: &Path) -> Result<Shown> {
        let path = match &self.vhost {
            Some(vhost) => ApiPath::new(["definitions", vhost])?,
            None => ApiPath::new(["definitions"])?,
        };
        let definitions = self.client.get(&path).await?;
        let text = output::json(&definitions);
        if file == Path::new("-") {
            return Ok(Shown(text));
        }
        std::fs::write(file, text)
            .map_err(|e| Error::Usage(format!("cannot write {}: {e}", file.display())))?;
        Ok(self.done(
            format!("exported definitions to {}", file.display()),
            json!({"exported": file.display().to_string()}),
        ))
    }

    async fn import(&self, file: &Path) -> Result<Shown> {
        let bytes = read_input(file)?;
        let definitions: Value = serde_json::from_slice(&bytes).map_err(|e| {
            Error::Usage(format!(
                "{} is not valid JSON definitions: {e}",
                file.display()
            ))
        })?;
        if !definitions.is_object() {
            return Err(Error::Usage(format!(
                "{} is not a JSON object of definitions",
                file.display()
            )));
        }
        let path = match &self.vhost {
            Some(vhost) => ApiPath::new(["definitions", vhost])?,
            None => ApiPath::new(["definitions"])?,
        };
        self.client.post(&path, &definitions).await?;
        Ok(self.done(
            format!("imported definitions from {}", file.display()),
            json!({"imported": file.display().to_string()}),
        ))
    }

    async fn close_connection(&self, name: &str, reason: &str) -> Result<Shown> {
        let path = ApiPath::new(["connections", name])?;
        // RabbitMQ reads the reason from the `X-Reason` header; the body is ignored.
        self.client.delete_with_reason(&path, reason).await?;
        Ok(self.done(
            format!("closed connection {name:?}"),
            json!({"closed": name}),
        ))
    }
}

const VHOST_COLUMNS: &[Column] = &[
    col("name", "name"),
    col("messages", "messages"),
    col("description", "description"),
    col("tags", "tags"),
];
const USER_COLUMNS: &[Column] = &[col("name", "name"), col("tags", "tags")];
const PERMISSION_COLUMNS: &[Column] = &[
    col("user", "user"),
    col("vhost", "vhost"),
    col("configure", "configure"),
    col("write", "write"),
    col("read", "read"),
];
const EXCHANGE_COLUMNS: &[Column] = &[
    col("vhost", "vhost"),
    col("name", "name"),
    col("type", "type"),
    col("durable", "durable"),
    col("auto_delete", "auto_delete"),
    col("internal", "internal"),
    col("arguments", "arguments"),
];
const QUEUE_COLUMNS: &[Column] = &[
    col("vhost", "vhost"),
    col("name", "name"),
    col("durable", "durable"),
    col("auto_delete", "auto_delete"),
    col("messages", "messages"),
    col("ready", "messages_ready"),
    col("unacked", "messages_unacknowledged"),
    col("consumers", "consumers"),
    col("state", "state"),
    col("arguments", "arguments"),
];
const BINDING_COLUMNS: &[Column] = &[
    col("vhost", "vhost"),
    col("source", "source"),
    col("destination", "destination"),
    col("destination_type", "destination_type"),
    col("routing_key", "routing_key"),
    col("arguments", "arguments"),
];
const CONNECTION_COLUMNS: &[Column] = &[
    col("name", "name"),
    col("user", "user"),
    col("vhost", "vhost"),
    col("peer_host", "peer_host"),
    col("peer_port", "peer_port"),
    col("channels", "channels"),
    col("state", "state"),
];
const CHANNEL_COLUMNS: &[Column] = &[
    col("name", "name"),
    col("user", "user"),
    col("vhost", "vhost"),
    col("consumers", "consumer_count"),
    col("prefetch", "prefetch_count"),
    col("unacked", "messages_unacknowledged"),
    col("state", "state"),
];
const CONSUMER_COLUMNS: &[Column] = &[
    col("vhost", "queue.vhost"),
    col("queue", "queue.name"),
    col("consumer_tag", "consumer_tag"),
    col("channel", "channel_details.name"),
    col("ack_required", "ack_required"),
    col("prefetch", "prefetch_count"),
    col("active", "active"),
];
const GET_COLUMNS: &[Column] = &[
    col("routing_key", "routing_key"),
    col("exchange", "exchange"),
    col("redelivered", "redelivered"),
    col("remaining", "message_count"),
    col("payload_bytes", "payload_bytes"),
    col("encoding", "payload_encoding"),
    col("payload", "payload"),
    col("properties", "properties"),
];

/// The rows of a list answer: a JSON array, or the `items` of a paginated answer.
fn items(answer: Value, path: &ApiPath) -> Result<Vec<Value>> {
    let answer = match answer {
        Value::Array(rows) => return Ok(rows),
        Value::Object(mut page) => match page.remove("items") {
            Some(Value::Array(rows)) => return Ok(rows),
            _ => Value::Object(page),
        },
        other => other,
    };
    Err(Error::Usage(format!(
        "{} answered {} instead of a list",
        path.as_str(),
        truncate_text(&answer.to_string(), 120)
    )))
}

fn truncate_text(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_owned()
    } else {
        text.chars().take(max).collect::<String>() + "…"
    }
}

/// Shows the default exchange (named `""`) as `(default)` in a table, where an empty
/// cell would read as missing.
fn name_default_exchange(row: &mut Value, kind: ListKind) {
    let field = match kind {
        ListKind::Exchanges => "name",
        ListKind::Bindings => "source",
        _ => return,
    };
    if let Some(name) = row.get_mut(field) {
        if name == "" {
            *name = json!("(default)");
        }
    }
}

/// `/api/bindings/{vhost}/e/{source}/{q|e}/{destination}`.
fn binding_path(vhost: &str, binding: &BindingArgs) -> Result<ApiPath> {
    ApiPath::new(binding_segments(vhost, binding))
}

fn binding_segments<'a>(vhost: &'a str, binding: &'a BindingArgs) -> Vec<&'a str> {
    vec![
        "bindings",
        vhost,
        "e",
        &binding.source,
        binding.destination_type.letter(),
        &binding.destination,
    ]
}

/// `?flag=true` for each set flag.
fn with_query(path: ApiPath, flags: &[(&str, bool)]) -> ApiPath {
    let set: Vec<String> = flags
        .iter()
        .filter(|(_, on)| *on)
        .map(|(k, _)| format!("{k}=true"))
        .collect();
    if set.is_empty() {
        path
    } else {
        path.with_query(&set.join("&"))
    }
}

/// Key/value pairs as a JSON object (a later duplicate key wins).
fn object(pairs: &[(String, Value)]) -> Map<String, Value> {
    pairs.iter().cloned().collect()
}

/// A file's bytes, or standard input's for `-`.
fn read_input(file: &Path) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    let read = if file == Path::new("-") {
        std::io::stdin().read_to_end(&mut bytes).map(drop)
    } else {
        std::fs::read(file).map(|b| bytes = b)
    };
    read.map_err(|e| Error::Usage(format!("cannot read {}: {e}", file.display())))?;
    Ok(bytes)
}

/// Standard base64 with padding (payloads that are not UTF-8).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Writes command output to standard output, ignoring a closed pipe (`| head`).
pub fn print(text: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (input, expected) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(input.as_bytes()), expected);
        }
        assert_eq!(base64(&[0xff, 0xfe, 0x00]), "//4A");
    }

    #[test]
    fn paginated_answers_are_unwrapped() {
        let path = ApiPath::new(["queues"]).unwrap();
        let rows = items(json!({"items": [{"name": "a"}], "page": 1}), &path).unwrap();
        assert_eq!(rows, vec![json!({"name": "a"})]);
        assert!(items(json!({"error": "x"}), &path).is_err());
    }
}
