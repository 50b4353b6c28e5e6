//! A service's database: SQLite (a file per service, the embedded default),
//! PostgreSQL or MariaDB/MySQL, with the service's own outbox and inbox
//! tables in it.
//!
//! The services' SQL is written once: [`with_db!`](crate::with_db)
//! instantiates a block for the backend actually connected, and [`sql`]
//! adapts a statement to it (placeholders are written `$1, $2, …` in
//! order; MySQL gets `?`). What differs beyond that — DDL, string
//! concatenation, insert-or-ignore — the [`Dialect`] says.

use eventbus::inbox::{Inbox, InboxConfig};
use eventbus::outbox::{Outbox, OutboxConfig};
use std::borrow::Cow;
use std::str::FromStr;
use std::time::Duration;

use eventbus::sqlx::mysql::{MySqlPool, MySqlPoolOptions};
use eventbus::sqlx::postgres::{PgPool, PgPoolOptions};
use eventbus::sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use eventbus::sqlx::{MySql, Postgres, Sqlite};
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
    MySql {
        pool: MySqlPool,
        outbox: Outbox<MySql>,
        inbox: Inbox<MySql>,
    },
}

/// What differs between the backends beyond the sqlx type.
pub trait Dialect {
    /// Placeholders are `?` (MySQL), not `$N`.
    const QUESTION_MARKS: bool = false;
    /// `a || b` (SQLite, PostgreSQL) or `CONCAT(a, b)` (MySQL).
    fn concat(a: &str, b: &str) -> String {
        format!("{a} || {b}")
    }
    /// `INSERT … ` that skips rows whose key exists.
    fn insert_or_ignore(into: &str, values: &str, key: &str) -> String {
        format!("INSERT INTO {into} VALUES {values} ON CONFLICT ({key}) DO NOTHING")
    }
    /// The 64-bit integer type for `CAST`.
    const BIGINT: &'static str = "BIGINT";
}

impl Dialect for Sqlite {}
impl Dialect for Postgres {}
impl Dialect for MySql {
    const QUESTION_MARKS: bool = true;
    fn concat(a: &str, b: &str) -> String {
        format!("CONCAT({a}, {b})")
    }
    fn insert_or_ignore(into: &str, values: &str, _key: &str) -> String {
        format!("INSERT IGNORE INTO {into} VALUES {values}")
    }
    const BIGINT: &'static str = "SIGNED";
}

/// `statement` for `DB`: `$1, $2, …` become `?` on MySQL. Placeholders
/// must appear in increasing order, each once (checked).
pub fn sql<DB: Dialect>(statement: &str) -> Cow<'_, str> {
    if !DB::QUESTION_MARKS {
        return Cow::Borrowed(statement);
    }
    let mut out = String::with_capacity(statement.len());
    let mut expected = 1u32;
    let mut chars = statement.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '$' && chars.peek().is_some_and(char::is_ascii_digit) {
            let mut n = 0u32;
            while let Some(d) = chars.peek().and_then(|c| c.to_digit(10)) {
                n = n * 10 + d;
                chars.next();
            }
            assert_eq!(n, expected, "placeholders out of order in {statement:?}");
            expected += 1;
            out.push('?');
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
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
            $crate::db::Database::MySql {
                pool: $pool,
                outbox: $outbox,
                inbox: $inbox,
            } => {
                #[allow(dead_code)]
                type $DB = ::eventbus::sqlx::MySql;
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
        } else if url.starts_with("mysql:") || url.starts_with("mariadb:") {
            let url = url.replacen("mariadb:", "mysql:", 1);
            let pool = retry(service, "database", &url, || {
                MySqlPoolOptions::new()
                    .max_connections(8)
                    .acquire_timeout(Duration::from_secs(10))
                    .connect(&url)
            })
            .await;
            Database::MySql {
                outbox: Outbox::mysql_with(pool.clone(), outbox_config),
                inbox: Inbox::mysql_with(pool.clone(), inbox_config),
                pool,
            }
        } else {
            return Err(format!(
                "{service}: unsupported database URL {} (use sqlite://…, postgres://… or mysql://…)",
                redact(url)
            )
            .into());
        };
        with_db!(&db, |_pool, outbox, inbox, DB| {
            outbox.migrate().await?;
            inbox.migrate().await?;
        });
        Ok(db)
    }

    /// Runs the service's own DDL: `sqlite`, `postgres` or `mysql` statements.
    pub async fn migrate(&self, ddl: &Ddl) -> Result<(), BoxError> {
        let Ddl {
            sqlite,
            postgres,
            mysql,
        } = ddl;
        match self {
            Database::MySql { pool, .. } => {
                for stmt in *mysql {
                    eventbus::sqlx::query(stmt).execute(pool).await?;
                }
            }
            Database::Sqlite { pool, .. } => {
                for stmt in *sqlite {
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
                for stmt in *postgres {
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

/// A service's tables, per backend.
#[derive(Debug)]
pub struct Ddl {
    pub sqlite: &'static [&'static str],
    pub postgres: &'static [&'static str],
    pub mysql: &'static [&'static str],
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_become_question_marks_on_mysql_only() {
        let q = "UPDATE t SET a = $1, b = $2 WHERE c = '$x' AND d = $3";
        assert_eq!(sql::<Postgres>(q), q);
        assert_eq!(sql::<Sqlite>(q), q);
        assert_eq!(
            sql::<MySql>(q),
            "UPDATE t SET a = ?, b = ? WHERE c = '$x' AND d = ?"
        );
    }

    #[test]
    #[should_panic(expected = "out of order")]
    fn reused_placeholders_are_refused_on_mysql() {
        let _ = sql::<MySql>("SELECT $2, $1");
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("amqp://guest:guest@127.0.0.1:5672/%2f"),
            "amqp://guest:***@127.0.0.1:5672/%2f"
        );
        assert_eq!(redact("sqlite://shop-data/a.db"), "sqlite://shop-data/a.db");
    }
}
