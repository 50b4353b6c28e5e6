//! The command line: global connection flags and one subcommand per
//! management operation (clap derive), plus the `k=v` / `k:=json` pair
//! syntax of `--argument`, `--property` and `--header`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde_json::Value;

use crate::output::Format;

/// Command line of `eventbus-admin`.
///
/// Subcommand fields must not reuse the global arguments' ids (`url`, `user`, `password`,
/// `vhost`, `format`): clap would store their values under the global one.
#[derive(Debug, Parser)]
#[command(
    name = "eventbus-admin",
    version,
    about = "Manage eventbus-broker (or RabbitMQ) through its management HTTP API",
    after_help = "Exit codes: 0 ok; 1 API or usage error (the server's reason is printed); \
                  2 the server could not be reached.\n\
                  Pairs: `k=v` is a string (integers and true/false become numbers and booleans \
                  in --argument and --property), `k:=<json>` is any JSON value."
)]
pub struct Cli {
    /// Management API base URL.
    #[arg(
        long,
        global = true,
        env = "EVENTBUS_ADMIN_URL",
        default_value = "http://127.0.0.1:15673"
    )]
    pub url: String,
    /// User name (HTTP basic auth).
    #[arg(
        long,
        global = true,
        env = "EVENTBUS_ADMIN_USER",
        default_value = "guest"
    )]
    pub user: String,
    /// Password (HTTP basic auth).
    #[arg(
        long,
        global = true,
        env = "EVENTBUS_ADMIN_PASSWORD",
        default_value = "guest",
        hide_env_values = true
    )]
    pub password: String,
    /// Virtual host of the command [default: /; `export`/`import`: all vhosts].
    #[arg(long, global = true, env = "EVENTBUS_ADMIN_VHOST")]
    pub vhost: Option<String>,
    /// Output: human tables or JSON.
    #[arg(long, global = true, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    #[command(subcommand)]
    pub command: Command,
}

/// A management operation.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Server, totals and rates.
    Overview,
    /// List objects.
    List {
        #[arg(value_enum)]
        kind: ListKind,
        /// Only rows whose name (or user, source, destination, queue) contains this text.
        #[arg(long)]
        filter: Option<String>,
        /// Objects of every vhost instead of --vhost's.
        #[arg(long)]
        all_vhosts: bool,
    },
    /// Create or update an object.
    #[command(subcommand)]
    Declare(Declare),
    /// Delete an object.
    #[command(subcommand)]
    Delete(Delete),
    /// Publish one message through an exchange.
    Publish(Publish),
    /// Fetch messages from a queue (requeued unless `--ackmode ack`).
    Get {
        #[arg(long)]
        queue: String,
        #[arg(long, default_value_t = 1)]
        count: u32,
        #[arg(long, value_enum, default_value_t = AckMode::Requeue)]
        ackmode: AckMode,
        /// Payload bytes shown per message (larger payloads are cut).
        #[arg(long, default_value_t = 50_000)]
        truncate: u64,
    },
    /// Remove all ready messages from a queue.
    Purge {
        #[arg(long)]
        queue: String,
    },
    /// Move messages from a queue to other queues (eventbus-broker extension).
    Move {
        #[arg(long)]
        queue: String,
        /// Destination queues (same vhost), comma-separated.
        #[arg(long, value_delimiter = ',', required = true)]
        to: Vec<String>,
        /// Messages to move [default: all ready messages].
        #[arg(long)]
        count: Option<u64>,
    },
    /// Write definitions (vhosts, users, permissions, exchanges, queues, bindings) as JSON.
    Export {
        /// File to write, or `-` for standard output.
        file: PathBuf,
    },
    /// Load definitions written by `export` (or RabbitMQ).
    Import {
        /// File to read, or `-` for standard input.
        file: PathBuf,
    },
    /// Close a client connection.
    #[command(subcommand)]
    Close(Close),
}

/// What `list` lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ListKind {
    Vhosts,
    Users,
    Permissions,
    Exchanges,
    Queues,
    Bindings,
    Connections,
    Channels,
    Consumers,
}

/// `get --ackmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AckMode {
    /// Put the messages back (flagged redelivered).
    Requeue,
    /// Remove the messages from the queue.
    Ack,
}

/// `declare ...`.
#[derive(Debug, Subcommand)]
pub enum Declare {
    /// A virtual host.
    Vhost {
        #[arg(long)]
        name: String,
        #[arg(long)]
        description: Option<String>,
        /// Comma-separated tags.
        #[arg(long, value_delimiter = ',')]
        tags: Vec<String>,
    },
    /// A user.
    User {
        #[arg(long)]
        name: String,
        /// Password (or --password-hash).
        #[arg(long = "user-password", required_unless_present = "password_hash")]
        user_password: Option<String>,
        /// Password hash as `export` writes it.
        #[arg(long, conflicts_with = "user_password")]
        password_hash: Option<String>,
        /// Comma-separated tags: administrator, monitoring, management, ...
        #[arg(long, value_delimiter = ',')]
        tags: Vec<String>,
    },
    /// A user's permissions on --vhost (regular expressions over resource names).
    Permission {
        /// The user whose permissions these are.
        #[arg(long)]
        for_user: String,
        #[arg(long, default_value = ".*")]
        configure: String,
        #[arg(long, default_value = ".*")]
        write: String,
        #[arg(long, default_value = ".*")]
        read: String,
    },
    /// An exchange on --vhost.
    Exchange {
        #[arg(long)]
        name: String,
        /// direct, fanout, topic, headers, x-consistent-hash, ...
        #[arg(long = "type", default_value = "direct")]
        kind: String,
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
        durable: bool,
        #[arg(long)]
        auto_delete: bool,
        #[arg(long)]
        internal: bool,
        /// Argument `k=v` or `k:=json` (repeatable), e.g. `alternate-exchange=ae`.
        #[arg(long = "argument", value_parser = parse_inferred_pair)]
        arguments: Vec<(String, Value)>,
    },
    /// A queue on --vhost.
    Queue {
        #[arg(long)]
        name: String,
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
        durable: bool,
        #[arg(long)]
        auto_delete: bool,
        /// Argument `k=v` or `k:=json` (repeatable), e.g. `x-max-length=1000`.
        #[arg(long = "argument", value_parser = parse_inferred_pair)]
        arguments: Vec<(String, Value)>,
    },
    /// A binding from an exchange to a queue or exchange on --vhost.
    Binding {
        #[command(flatten)]
        binding: BindingArgs,
    },
}

/// `delete ...`.
#[derive(Debug, Subcommand)]
pub enum Delete {
    /// A virtual host and everything in it.
    Vhost {
        #[arg(long)]
        name: String,
    },
    /// A user.
    User {
        #[arg(long)]
        name: String,
    },
    /// A user's permissions on --vhost.
    Permission {
        /// The user whose permissions these are.
        #[arg(long)]
        for_user: String,
    },
    /// An exchange on --vhost.
    Exchange {
        #[arg(long)]
        name: String,
        /// Only if no binding uses it.
        #[arg(long)]
        if_unused: bool,
    },
    /// A queue on --vhost.
    Queue {
        #[arg(long)]
        name: String,
        #[arg(long)]
        if_empty: bool,
        #[arg(long)]
        if_unused: bool,
    },
    /// The binding(s) matching source, destination, routing key and arguments.
    Binding {
        #[command(flatten)]
        binding: BindingArgs,
    },
}

/// A binding's identity.
#[derive(Debug, Args)]
pub struct BindingArgs {
    /// Source exchange.
    #[arg(long)]
    pub source: String,
    /// Destination queue or exchange.
    #[arg(long)]
    pub destination: String,
    #[arg(long, value_enum, default_value_t = DestinationType::Queue)]
    pub destination_type: DestinationType,
    #[arg(long, default_value = "")]
    pub routing_key: String,
    /// Argument `k=v` or `k:=json` (repeatable), e.g. `x-match=all`.
    #[arg(long = "argument", value_parser = parse_inferred_pair)]
    pub arguments: Vec<(String, Value)>,
}

/// What a binding binds to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DestinationType {
    Queue,
    Exchange,
}

impl DestinationType {
    /// The path letter (`q` / `e`) of `/api/bindings/{vhost}/e/{source}/{q|e}/{destination}`.
    pub fn letter(self) -> &'static str {
        match self {
            DestinationType::Queue => "q",
            DestinationType::Exchange => "e",
        }
    }

    /// The `destination_type` field of a listed binding.
    pub fn name(self) -> &'static str {
        match self {
            DestinationType::Queue => "queue",
            DestinationType::Exchange => "exchange",
        }
    }
}

/// `publish`.
#[derive(Debug, Args)]
pub struct Publish {
    /// Exchange; empty (the default) is the default exchange.
    #[arg(long, default_value = "")]
    pub exchange: String,
    #[arg(long, default_value = "")]
    pub routing_key: String,
    /// Message body (UTF-8).
    #[arg(
        long,
        conflicts_with = "payload_file",
        required_unless_present = "payload_file"
    )]
    pub payload: Option<String>,
    /// Message body from a file (`-` = standard input); sent base64-encoded unless UTF-8.
    #[arg(long)]
    pub payload_file: Option<PathBuf>,
    /// Property `k=v` or `k:=json` (repeatable): delivery_mode=2, content_type=..., priority=5, ...
    #[arg(long = "property", value_parser = parse_inferred_pair)]
    pub properties: Vec<(String, Value)>,
    /// Header `k=v` (a string) or `k:=json` (repeatable).
    #[arg(long = "header", value_parser = parse_string_pair)]
    pub headers: Vec<(String, Value)>,
}

/// `close ...`.
#[derive(Debug, Subcommand)]
pub enum Close {
    /// A client connection, by the name `list connections` shows.
    Connection {
        name: String,
        /// Reason given to the client.
        #[arg(long, default_value = "closed by eventbus-admin")]
        reason: String,
    },
}

/// `k=v` → string `v`, `k:=v` → JSON `v`.
pub fn parse_string_pair(text: &str) -> Result<(String, Value), String> {
    parse_pair(text, false)
}

/// Like [`parse_string_pair`], but an integer or `true`/`false` after `=` becomes a number or boolean
/// (`x-max-length=10`, `delivery_mode=2`).
pub fn parse_inferred_pair(text: &str) -> Result<(String, Value), String> {
    parse_pair(text, true)
}

fn parse_pair(text: &str, infer: bool) -> Result<(String, Value), String> {
    let Some((key, value)) = text.split_once('=') else {
        return Err(format!("expected key=value or key:=json, got {text:?}"));
    };
    if let Some(key) = key.strip_suffix(':') {
        let json = serde_json::from_str(value).map_err(|e| format!("{key}:= needs JSON: {e}"))?;
        return Ok((non_empty(key)?, json));
    }
    let value = if infer {
        match value {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => value
                .parse::<i64>()
                .map_or_else(|_| Value::String(value.to_owned()), Value::from),
        }
    } else {
        Value::String(value.to_owned())
    };
    Ok((non_empty(key)?, value))
}

fn non_empty(key: &str) -> Result<String, String> {
    if key.is_empty() {
        Err("empty key".to_owned())
    } else {
        Ok(key.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use serde_json::json;

    #[test]
    fn command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn subcommand_fields_do_not_overwrite_global_flags() {
        let cli = Cli::try_parse_from([
            "eventbus-admin",
            "--user",
            "admin",
            "--vhost",
            "v",
            "declare",
            "permission",
            "--for-user",
            "app",
        ])
        .unwrap();
        assert_eq!(
            (cli.user.as_str(), cli.vhost.as_deref()),
            ("admin", Some("v"))
        );
        let Command::Declare(Declare::Permission { for_user, .. }) = cli.command else {
            panic!("parsed as {:?}", cli.command);
        };
        assert_eq!(for_user, "app");
    }

    #[test]
    fn pairs() {
        assert_eq!(
            parse_inferred_pair("x-max-length=10").unwrap(),
            ("x-max-length".into(), json!(10))
        );
        assert_eq!(
            parse_inferred_pair("x=true").unwrap(),
            ("x".into(), json!(true))
        );
        assert_eq!(
            parse_string_pair("x=10").unwrap(),
            ("x".into(), json!("10"))
        );
        assert_eq!(
            parse_string_pair("x:=[1,2]").unwrap(),
            ("x".into(), json!([1, 2]))
        );
        assert_eq!(
            parse_string_pair("url=a=b").unwrap(),
            ("url".into(), json!("a=b"))
        );
        assert!(parse_string_pair("novalue").is_err());
        assert!(parse_string_pair("x:={").is_err());
        assert!(parse_string_pair("=v").is_err());
    }
}
