//! `eventbus-relay`: the standalone outbox relay.
//!
//! Moves events from an outbox table (PostgreSQL, MySQL/MariaDB or SQLite,
//! chosen by the database URL's scheme) to a transport, with the guarantees
//! described in `eventbus_core::outbox`. Run as many as you like against one
//! table. Migrates the outbox table on start (unless `--no-migrate`).
//!
//! ```text
//! eventbus-relay --database-url postgres://app@db/app --transport-url amqp://127.0.0.1:5672/%2f
//! ```
//!
//! Every option can also come from the environment (`EVENTBUS_DATABASE_URL`,
//! `EVENTBUS_TRANSPORT_URL`, ...). Stops cleanly on SIGINT/SIGTERM after the
//! batch in flight.
//!
//! `eventbus-relay parked --database-url …` lists parked outbox rows as JSON
//! lines instead (see `admin.rs`).

mod admin;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use eventbus_core::outbox::{Outbox, OutboxConfig, OutboxStore, Relay, RelayConfig};
use eventbus_core::Publisher;
use tokio_util::sync::CancellationToken;

/// Command line / environment configuration.
#[derive(Debug, Parser)]
#[command(
    name = "eventbus-relay",
    version,
    about = "Relays events from a database outbox to a transport",
    after_help = "Outbox administration: `eventbus-relay parked --help` lists parked rows."
)]
struct Cli {
    /// Outbox database: `postgres://…`, `mysql://…` / `mariadb://…`, or `sqlite://path`.
    #[arg(long, env = "EVENTBUS_DATABASE_URL")]
    database_url: String,
    /// Where to publish: `amqp://user:pass@host:port/vhost` (feature `amqp`,
    /// on by default). Transports that keep nothing (`memory:`) are refused:
    /// the relay deletes what it published.
    #[arg(long, env = "EVENTBUS_TRANSPORT_URL")]
    transport_url: String,
    /// Outbox table name (`name` or `schema.name`).
    #[arg(long, env = "EVENTBUS_OUTBOX_TABLE", default_value = eventbus_core::outbox::DEFAULT_TABLE)]
    table: String,
    /// Rows per batch.
    #[arg(long, env = "EVENTBUS_RELAY_BATCH_SIZE", default_value_t = 500)]
    batch_size: usize,
    /// Safety-net polling interval in milliseconds.
    #[arg(long, env = "EVENTBUS_RELAY_POLL_MS", default_value_t = 1000)]
    poll_ms: u64,
    /// Failed attempts before a row is parked.
    #[arg(long, env = "EVENTBUS_RELAY_MAX_ATTEMPTS", default_value_t = 10)]
    max_attempts: u32,
    /// Database connections.
    #[arg(long, env = "EVENTBUS_RELAY_CONNECTIONS", default_value_t = 4)]
    connections: u32,
    /// Do not create/upgrade the outbox table on start.
    #[arg(long)]
    no_migrate: bool,
}

/// The transports the binary can publish to: only ones that keep what
/// they confirm, since a confirmed row is deleted from the outbox. Extend
/// here as such transports land in eventbus-core (AMQP behind its `amqp`
/// feature).
#[derive(Debug)]
enum TransportKind {
    /// AMQP 0-9-1 (our broker or RabbitMQ).
    Amqp(String),
}

impl TransportKind {
    fn parse(url: &str) -> Result<Self, String> {
        match url.split_once(':').map(|(scheme, _)| scheme) {
            Some("amqp" | "amqps") => Ok(Self::Amqp(url.to_owned())),
            Some("memory") => Err(format!(
                "refusing transport URL `{url}`: the memory transport lives inside one \
                 process and keeps nothing, so this relay would delete every outbox row \
                 it \"published\" and no consumer would ever see the events. Publish to a \
                 broker instead: --transport-url amqp://user:pass@host:5672/%2f"
            )),
            // The scheme only: the rest may hold a password.
            scheme => Err(format!(
                "unsupported transport URL scheme `{}` (expected amqp://user:pass@host:port/vhost)",
                scheme.unwrap_or(url)
            )),
        }
    }

    async fn connect(self) -> Result<Arc<dyn Publisher>, String> {
        match self {
            #[cfg(feature = "amqp")]
            Self::Amqp(url) => {
                let transport = eventbus_core::transport::amqp::AmqpTransport::connect(&url)
                    .await
                    .map_err(|e| format!("cannot connect to {url}: {e}"))?;
                Ok(Arc::new(transport))
            }
            #[cfg(not(feature = "amqp"))]
            Self::Amqp(url) => Err(format!(
                "this eventbus-relay was built without the `amqp` feature (requested {url})"
            )),
        }
    }
}

async fn store(cli: &Cli) -> Result<Arc<dyn OutboxStore>, Box<dyn std::error::Error>> {
    let config = OutboxConfig::new().table(&cli.table)?;
    let url = cli.database_url.as_str();
    let scheme = url.split_once(':').map(|(s, _)| s).unwrap_or_default();
    let store = match scheme {
        "postgres" | "postgresql" => {
            let pool = sqlx::postgres::PgPoolOptions::new()
                .max_connections(cli.connections)
                .connect(url)
                .await?;
            Outbox::postgres_with(pool, config).store()
        }
        "mysql" | "mariadb" => {
            let url = url.replacen("mariadb:", "mysql:", 1);
            let pool = sqlx::mysql::MySqlPoolOptions::new()
                .max_connections(cli.connections)
                .connect(&url)
                .await?;
            Outbox::mysql_with(pool, config).store()
        }
        "sqlite" => {
            use std::str::FromStr;
            let options = sqlx::sqlite::SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
                .busy_timeout(Duration::from_secs(30));
            let pool = sqlx::sqlite::SqlitePoolOptions::new()
                .max_connections(cli.connections)
                .connect_with(options)
                .await?;
            Outbox::sqlite_with(pool, config).store()
        }
        _ => return Err(format!("unsupported database URL scheme `{scheme}`").into()),
    };
    Ok(store)
}

async fn shutdown_signal(token: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    token.cancel();
}

#[tokio::main]
async fn main() -> ExitCode {
    if let Some(admin) = admin::Admin::from_args() {
        return match admin.run().await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("eventbus-relay: {e}");
                ExitCode::FAILURE
            }
        };
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let cli = Cli::parse();
    // A transport that would lose the events is refused before the database
    // is touched.
    let transport = match TransportKind::parse(&cli.transport_url) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("eventbus-relay: {e}");
            return ExitCode::from(2);
        }
    };
    match run(cli, transport).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("eventbus-relay: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli, transport: TransportKind) -> Result<(), Box<dyn std::error::Error>> {
    let store = store(&cli).await?;
    if !cli.no_migrate {
        store.migrate().await?;
    }
    let publisher = transport.connect().await?;
    let config = RelayConfig {
        batch_size: cli.batch_size.max(1),
        window: cli.batch_size.max(1) * 4,
        poll_interval: Duration::from_millis(cli.poll_ms.max(1)),
        max_attempts: cli.max_attempts.max(1),
        ..RelayConfig::default()
    };
    let token = CancellationToken::new();
    tokio::spawn(shutdown_signal(token.clone()));
    Relay::new(store, publisher)
        .with_config(config)
        .run(token)
        .await;
    Ok(())
}
