//! Outbox administration subcommands: `eventbus-relay parked …`.
//!
//! Without a subcommand the binary relays (see `main.rs`); its flags are
//! unchanged. A subcommand is recognised only as the first argument, so the
//! relay's own command line never reaches this parser.
//!
//! `parked` lists parked outbox rows as JSON lines through
//! [`ParkedEvent::describe`](eventbus_core::outbox::ParkedEvent::describe).
//! This binary links no application event types, so payloads are shown as
//! stored (`"payload_format": "json"` or `"text"`, with `decode_error`
//! saying the type is not linked in). A service that wants them decoded by
//! their event types calls `Outbox::parked` and `ParkedEvent::describe`
//! itself: the output is the same, with `"payload_format": "event"`.

use std::io::Write;
use std::time::Duration;

use clap::{CommandFactory, Parser, Subcommand};
use eventbus_core::outbox::{Outbox, OutboxConfig, OutboxStore};

/// `eventbus-relay <command> …`.
#[derive(Debug, Parser)]
#[command(name = "eventbus-relay", version)]
struct AdminCli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Lists parked outbox rows as JSON lines, payloads decoded where the
    /// event type is known.
    Parked(ParkedArgs),
}

#[derive(Debug, clap::Args)]
struct ParkedArgs {
    /// Outbox database: `postgres://…`, `mysql://…` / `mariadb://…`, or `sqlite://path`.
    #[arg(long, env = "EVENTBUS_DATABASE_URL")]
    database_url: String,
    /// Outbox table name (`name` or `schema.name`).
    #[arg(long, env = "EVENTBUS_OUTBOX_TABLE", default_value = eventbus_core::outbox::DEFAULT_TABLE)]
    table: String,
    /// At most this many rows, oldest first.
    #[arg(long, default_value_t = 100)]
    limit: u32,
}

/// An administration command, if the first argument names one.
#[derive(Debug)]
pub struct Admin(Command);

impl Admin {
    /// Parses the process arguments if they start with a subcommand (exits
    /// with clap's message on a malformed one); `None` means "run the relay".
    pub fn from_args() -> Option<Admin> {
        let first = std::env::args_os().nth(1)?;
        let first = first.to_str()?;
        AdminCli::command().find_subcommand(first)?;
        Some(Admin(AdminCli::parse().command))
    }

    /// Runs the command, writing its output to stdout.
    pub async fn run(self) -> Result<(), Box<dyn std::error::Error>> {
        match self.0 {
            Command::Parked(args) => parked(args).await,
        }
    }
}

async fn parked(args: ParkedArgs) -> Result<(), Box<dyn std::error::Error>> {
    let store = store(&args.database_url, &args.table).await?;
    let rows = store.parked(args.limit).await?;
    let mut out = std::io::stdout().lock();
    for row in rows {
        serde_json::to_writer(&mut out, &row.describe())?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(())
}

/// The outbox store at `url` (one connection; nothing is created or migrated).
async fn store(
    url: &str,
    table: &str,
) -> Result<std::sync::Arc<dyn OutboxStore>, Box<dyn std::error::Error>> {
    let config = OutboxConfig::new().table(table)?;
    let scheme = url.split_once(':').map(|(s, _)| s).unwrap_or_default();
    let store = match scheme {
        "postgres" | "postgresql" => {
            let pool = sqlx::postgres::PgPoolOptions::new()
                .max_connections(1)
                .connect(url)
                .await?;
            Outbox::postgres_with(pool, config).store()
        }
        "mysql" | "mariadb" => {
            let url = url.replacen("mariadb:", "mysql:", 1);
            let pool = sqlx::mysql::MySqlPoolOptions::new()
                .max_connections(1)
                .connect(&url)
                .await?;
            Outbox::mysql_with(pool, config).store()
        }
        "sqlite" => {
            use std::str::FromStr;
            // No `create_if_missing`: a mistyped path is an error, not a new
            // empty database.
            let options = sqlx::sqlite::SqliteConnectOptions::from_str(url)?
                .busy_timeout(Duration::from_secs(30));
            let pool = sqlx::sqlite::SqlitePoolOptions::new()
                .max_connections(1)
                .connect_with(options)
                .await?;
            Outbox::sqlite_with(pool, config).store()
        }
        _ => return Err(format!("unsupported database URL scheme `{scheme}`").into()),
    };
    Ok(store)
}
