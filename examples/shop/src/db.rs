//! A service's database: SQLite (a file per service, the embedded default)
//! or PostgreSQL, with the service's own outbox and inbox tables in it.
//!
//! The services' SQL is written once and runs on both: placeholders are
//! `$1, $2, …` (SQLite accepts them too) and [`with_db!`](crate::with_db)
//! instantiates a block for the backend actually connected.

use std::str::FromStr;
use std::time::Duration;

use eventbus::inbox::{Inbox, InboxConfig};
use eventbus::outbox::{Outbox, OutboxConfig};
use eventbus::sqlx::postgres::{PgPool, PgPoolOptions};
use eventbus::sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use eventbus::sqlx::{Postgres, Sqlite};
use eventbus::BoxError;

/// A connected database with the service's outbox and inbox.
#[derive(Debug, Clone)]
pub enum Database {
    Sqlite {
        pool: SqlitePool,
        outbox: Outbox<Sqlite>,
        inbox: Inbox<Sqlite>,
    },
    Postgres {
        pool: PgPool,
        outbox: Outbox<Postgres>,
        inbox: Inbox<Postgres>,
    },
}

/// Runs `$body` with `$pool`, `$outbox`, `$inbox` bound to the connected
/// backend's values and `$DB` naming its sqlx database type.
#[macro_export]
macro_rules! with_db {
    ($db:expr, |$pool:ident, $outbox:ident, $inbox:ident, $DB:ident| $body:expr) => {
        match $db {
            $crate::db::Database::Sqlite {
                pool: $pool,
                outbox: $outbox,
                inbox: $inbox,
            } => {
                #[allow(dead_code)]
                type $DB = ::eventbus::sqlx::Sqlite;
                $body
            }
            $crate::db::Database::Postgres {
                pool: $pool,
                outbox: $outbox,
                inbox: $inbox,
            } => {
                #[allow(dead_code)]
                type $DB = ::eventbus::sqlx::Postgres;
                $body
            }
        }
    };
}

impl Database {
    /// Connects to `url` (`sqlite://path/file.db` or `postgres://…`),
    /// retrying with backoff while the database is unreachable, and
    /// migrates the service's outbox (`<service>_outbox`) and inbox
    /// (`<service>_inbox`) tables. `service` names the tables and the log lines.
    pub async fn connect(url: &str, service: &str) -> Result<Self, BoxError> {
        let prefix = service.replace('-', "_");
        let outbox_config = OutboxConfig::new().table(&format!("{prefix}_outbox"))?;
        let inbox_config = InboxConfig::new().table(&format!("{prefix}_inbox"))?;
        let db = if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(30));
            let pool = retry(service, "database", url, || {
                SqlitePoolOptions::new()
                    .max_connections(8)
                    .connect_with(options.clone())
            })
            .await;
            Database::Sqlite {
                outbox: Outbox::sqlite_with(pool.clone(), outbox_config),
                inbox: Inbox::sqlite_with(pool.clone(), inbox_config),
                pool,
            }
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let pool = retry(service, "database", url, || {
                PgPoolOptions::new()
                    // Several services may share one server (100 connections by default).
                    .max_connections(8)
                    .acquire_timeout(Duration::from_secs(10))
                    .connect(url)
            })
            .await;
            Database::Postgres {
                outbox: Outbox::postgres_with(pool.clone(), outbox_config),
                inbox: Inbox::postgres_with(pool.clone(), inbox_config),
                pool,
            }
        } else {
            return Err(format!(
                "{service}: unsupported database URL {url:?} (use sqlite://… or postgres://…)"
            )
            .into());
        };
        with_db!(&db, |_pool, outbox, inbox, DB| {
            outbox.migrate().await?;
            inbox.migrate().await?;
        });
        Ok(db)
    }

    /// Runs the service's own DDL: `sqlite` or `postgres` statements.
    pub async fn migrate(&self, sqlite: &[&str], postgres: &[&str]) -> Result<(), BoxError> {
        match self {
            Database::Sqlite { pool, .. } => {
                for stmt in sqlite {
                    eventbus::sqlx::query(stmt).execute(pool).await?;
                }
            }
            Database::Postgres { pool, .. } => {
                // Instances starting together would race on CREATE … IF NOT
                // EXISTS; a transaction-scoped advisory lock serialises them.
                let mut tx = pool.begin().await?;
                eventbus::sqlx::query("SELECT pg_advisory_xact_lock(7265735)")
                    .execute(&mut *tx)
                    .await?;
                for stmt in postgres {
                    eventbus::sqlx::query(stmt).execute(&mut *tx).await?;
                }
                tx.commit().await?;
            }
        }
        Ok(())
    }

    /// Rows waiting in the outbox (not yet published).
    pub async fn outbox_backlog(&self) -> Result<u64, BoxError> {
        Ok(with_db!(self, |_pool, outbox, _inbox, DB| outbox
            .backlog()
            .await?))
    }
}

/// Calls `connect` until it succeeds, logging which dependency (`what` at
/// `url`) is unreachable and backing off from 200 ms up to 10 s.
pub async fn retry<T, E, F, Fut>(service: &str, what: &str, url: &str, mut connect: F) -> T
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let mut delay = Duration::from_millis(200);
    loop {
        match connect().await {
            Ok(v) => return v,
            Err(e) => {
                eprintln!(
                    "{service}: {what} at {} unreachable ({e}); retrying in {} ms",
                    redact(url),
                    delay.as_millis()
                );
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
            }
        }
    }
}

/// `url` without its password, for log lines.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = &url[scheme + 3..at];
            match creds.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme + 3],
                    &creds[..colon],
                    &url[at..]
                ),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}
