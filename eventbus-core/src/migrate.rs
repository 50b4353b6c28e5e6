//! Versioned schema migrations for the outbox and inbox tables.
//!
//! The SQL lives in `eventbus-core/migrations/<backend>/NNNN_<name>.sql` and is
//! embedded at compile time. Table names are configurable, so the files are
//! templates: `{table}` becomes the configured (possibly schema-qualified)
//! table name and `{ident}` the same with `.` replaced by `_` (used for index,
//! trigger and notification channel names).
//!
//! Applied versions are recorded per table in `eventbus_migrations`
//! (`target` = table name, `version`), so every outbox or inbox table is
//! migrated independently and each migration runs once. Runs are serialised
//! across processes (PostgreSQL advisory lock, MySQL `GET_LOCK`, SQLite
//! `BEGIN IMMEDIATE`), so several relays may start at the same time.
//!
//! Call it through [`Outbox::migrate`](crate::outbox::Outbox::migrate) and
//! [`Inbox::migrate`](crate::inbox::Inbox::migrate); the `eventbus-relay`
//! binary migrates its outbox table on start.

use std::fmt;

/// One embedded migration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migration {
    /// Monotonic version (the file's number).
    pub version: i64,
    /// What it does (the file's name).
    pub description: &'static str,
    /// The SQL template.
    pub sql: &'static str,
}

/// Which table set a migration belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Component {
    /// The outbox table.
    Outbox,
    /// The inbox table.
    Inbox,
}

macro_rules! migration {
    ($backend:literal, $version:literal, $file:literal) => {
        Migration {
            version: $version,
            description: $file,
            sql: include_str!(concat!("../migrations/", $backend, "/", $file, ".sql")),
        }
    };
}

/// The migrations of `component` for `backend` (`"postgres"`, `"mysql"`, `"sqlite"`).
pub fn migrations(backend: &str, component: Component) -> &'static [Migration] {
    const PG_OUTBOX: &[Migration] = &[migration!("postgres", 1, "0001_outbox")];
    const PG_INBOX: &[Migration] = &[migration!("postgres", 2, "0002_inbox")];
    const MY_OUTBOX: &[Migration] = &[migration!("mysql", 1, "0001_outbox")];
    const MY_INBOX: &[Migration] = &[migration!("mysql", 2, "0002_inbox")];
    const LITE_OUTBOX: &[Migration] = &[migration!("sqlite", 1, "0001_outbox")];
    const LITE_INBOX: &[Migration] = &[migration!("sqlite", 2, "0002_inbox")];
    match (backend, component) {
        ("postgres", Component::Outbox) => PG_OUTBOX,
        ("postgres", Component::Inbox) => PG_INBOX,
        ("mysql", Component::Outbox) => MY_OUTBOX,
        ("mysql", Component::Inbox) => MY_INBOX,
        ("sqlite", Component::Outbox) => LITE_OUTBOX,
        ("sqlite", Component::Inbox) => LITE_INBOX,
        _ => &[],
    }
}

/// A validated table name: `name` or `schema.name`, each part
/// `[A-Za-z_][A-Za-z0-9_]*`, at most 48 characters in all (so derived
/// index names stay within PostgreSQL's 63-character limit).
///
/// Only such names are accepted because they are spliced into SQL text.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct TableName {
    qualified: String,
    ident: String,
}

impl fmt::Debug for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.qualified)
    }
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.qualified)
    }
}

/// A table name that is not a plain SQL identifier.
#[derive(Debug, thiserror::Error)]
#[error("invalid table name `{0}`: use `name` or `schema.name` made of [A-Za-z0-9_] (max 48 chars, not starting with a digit)")]
pub struct InvalidTableName(pub String);

impl TableName {
    /// Validates `name`.
    pub fn new(name: &str) -> Result<Self, InvalidTableName> {
        let part_ok = |p: &str| {
            !p.is_empty()
                && !p.as_bytes()[0].is_ascii_digit()
                && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        };
        let parts: Vec<&str> = name.split('.').collect();
        if name.len() > 48 || parts.len() > 2 || !parts.iter().all(|p| part_ok(p)) {
            return Err(InvalidTableName(name.to_owned()));
        }
        Ok(Self {
            qualified: name.to_owned(),
            ident: name.replace('.', "_"),
        })
    }
    /// The name as written in SQL (`schema.name` or `name`).
    pub fn as_str(&self) -> &str {
        &self.qualified
    }
    /// The name with `.` replaced by `_`: a single identifier.
    pub fn ident(&self) -> &str {
        &self.ident
    }
    /// `sql` with `{table}` and `{ident}` substituted.
    pub(crate) fn render(&self, sql: &str) -> String {
        sql.replace("{table}", &self.qualified)
            .replace("{ident}", &self.ident)
    }
}

/// A migration failed.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// The database refused a statement.
    #[cfg(any(feature = "postgres", feature = "mysql", feature = "sqlite"))]
    #[error("migration of `{target}` failed: {source}")]
    Database {
        /// The table being migrated.
        target: String,
        /// The database error.
        #[source]
        source: sqlx::Error,
    },
    /// The database has a newer schema than this build knows.
    #[error("`{target}` is at schema version {found}, newer than this build knows ({known})")]
    TooNew {
        /// The table.
        target: String,
        /// Highest version recorded in the database.
        found: i64,
        /// Highest version embedded in this build.
        known: i64,
    },
}

/// The table that records applied migrations.
pub const MIGRATIONS_TABLE: &str = "eventbus_migrations";

#[cfg(any(feature = "postgres", feature = "mysql", feature = "sqlite"))]
fn pending<'a>(
    target: &TableName,
    all: &'a [Migration],
    applied: &[i64],
) -> Result<Vec<&'a Migration>, MigrateError> {
    let known = all.iter().map(|m| m.version).max().unwrap_or(0);
    let found = applied.iter().copied().max().unwrap_or(0);
    if found > known {
        return Err(MigrateError::TooNew {
            target: target.to_string(),
            found,
            known,
        });
    }
    Ok(all
        .iter()
        .filter(|m| !applied.contains(&m.version))
        .collect())
}

/// Applies `component`'s pending migrations to `table` on PostgreSQL.
#[cfg(feature = "postgres")]
pub async fn postgres(
    pool: &sqlx::PgPool,
    component: Component,
    table: &TableName,
) -> Result<(), MigrateError> {
    use sqlx::Row;
    let mut tx = pool.begin().await.map_err(|e| db_error(table, e))?;
    // One migrator at a time across all processes (released at commit).
    sqlx::query("SELECT pg_advisory_xact_lock(7201880412001)")
        .execute(&mut *tx)
        .await
        .map_err(|e| db_error(table, e))?;
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS eventbus_migrations (
            target TEXT NOT NULL, version BIGINT NOT NULL, description TEXT NOT NULL,
            applied_at TIMESTAMPTZ NOT NULL DEFAULT now(), PRIMARY KEY (target, version))",
    )
    .execute(&mut *tx)
    .await
    .map_err(|e| db_error(table, e))?;
    let rows = sqlx::query("SELECT version FROM eventbus_migrations WHERE target = $1")
        .bind(table.as_str())
        .fetch_all(&mut *tx)
        .await
        .map_err(|e| db_error(table, e))?;
    let applied: Vec<i64> = rows.iter().map(|r| r.get::<i64, _>(0)).collect();
    for m in pending(table, migrations("postgres", component), &applied)? {
        let sql = table.render(m.sql);
        sqlx::Executor::execute(&mut *tx, sql.as_str())
            .await
            .map_err(|e| db_error(table, e))?;
        sqlx::query(
            "INSERT INTO eventbus_migrations (target, version, description) VALUES ($1, $2, $3)",
        )
        .bind(table.as_str())
        .bind(m.version)
        .bind(m.description)
        .execute(&mut *tx)
        .await
        .map_err(|e| db_error(table, e))?;
    }
    tx.commit().await.map_err(|e| db_error(table, e))
}

#[cfg(any(feature = "postgres", feature = "mysql", feature = "sqlite"))]
fn db_error(table: &TableName, source: sqlx::Error) -> MigrateError {
    MigrateError::Database {
        target: table.to_string(),
        source,
    }
}

/// Applies `component`'s pending migrations to `table` on MySQL / MariaDB.
///
/// MySQL DDL is not transactional; the migrations are written to be
/// idempotent (`IF NOT EXISTS`) so a run interrupted half-way can be repeated.
#[cfg(feature = "mysql")]
pub async fn mysql(
    pool: &sqlx::MySqlPool,
    component: Component,
    table: &TableName,
) -> Result<(), MigrateError> {
    let mut conn = pool.acquire().await.map_err(|e| db_error(table, e))?;
    sqlx::query("SELECT GET_LOCK('eventbus_migrations', 60)")
        .execute(&mut *conn)
        .await
        .map_err(|e| db_error(table, e))?;
    let outcome = mysql_locked(&mut conn, component, table).await;
    let _ = sqlx::query("SELECT RELEASE_LOCK('eventbus_migrations')")
        .execute(&mut *conn)
        .await;
    outcome
}

#[cfg(feature = "mysql")]
async fn mysql_locked(
    conn: &mut sqlx::MySqlConnection,
    component: Component,
    table: &TableName,
) -> Result<(), MigrateError> {
    use sqlx::Row;
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS eventbus_migrations (
            target VARCHAR(190) NOT NULL, version BIGINT NOT NULL, description VARCHAR(255) NOT NULL,
            applied_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6), PRIMARY KEY (target, version))",
    )
    .execute(&mut *conn)
    .await
    .map_err(|e| db_error(table, e))?;
    let rows = sqlx::query("SELECT version FROM eventbus_migrations WHERE target = ?")
        .bind(table.as_str())
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| db_error(table, e))?;
    let applied: Vec<i64> = rows.iter().map(|r| r.get::<i64, _>(0)).collect();
    for m in pending(table, migrations("mysql", component), &applied)? {
        let sql = table.render(m.sql);
        sqlx::Executor::execute(&mut *conn, sql.as_str())
            .await
            .map_err(|e| db_error(table, e))?;
        sqlx::query(
            "INSERT IGNORE INTO eventbus_migrations (target, version, description) VALUES (?, ?, ?)",
        )
        .bind(table.as_str())
        .bind(m.version)
        .bind(m.description)
        .execute(&mut *conn)
        .await
        .map_err(|e| db_error(table, e))?;
    }
    Ok(())
}

/// Applies `component`'s pending migrations to `table` on SQLite.
#[cfg(feature = "sqlite")]
pub async fn sqlite(
    pool: &sqlx::SqlitePool,
    component: Component,
    table: &TableName,
) -> Result<(), MigrateError> {
    use sqlx::Row;
    let mut tx = pool
        .begin_with("BEGIN IMMEDIATE")
        .await
        .map_err(|e| db_error(table, e))?;
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS eventbus_migrations (
            target TEXT NOT NULL, version INTEGER NOT NULL, description TEXT NOT NULL,
            applied_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP, PRIMARY KEY (target, version))",
    )
    .execute(&mut *tx)
    .await
    .map_err(|e| db_error(table, e))?;
    let rows = sqlx::query("SELECT version FROM eventbus_migrations WHERE target = ?")
        .bind(table.as_str())
        .fetch_all(&mut *tx)
        .await
        .map_err(|e| db_error(table, e))?;
    let applied: Vec<i64> = rows.iter().map(|r| r.get::<i64, _>(0)).collect();
    for m in pending(table, migrations("sqlite", component), &applied)? {
        let sql = table.render(m.sql);
        sqlx::Executor::execute(&mut *tx, sql.as_str())
            .await
            .map_err(|e| db_error(table, e))?;
        sqlx::query(
            "INSERT INTO eventbus_migrations (target, version, description) VALUES (?, ?, ?)",
        )
        .bind(table.as_str())
        .bind(m.version)
        .bind(m.description)
        .execute(&mut *tx)
        .await
        .map_err(|e| db_error(table, e))?;
    }
    tx.commit().await.map_err(|e| db_error(table, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_are_validated() {
        assert!(TableName::new("outbox").is_ok());
        assert_eq!(TableName::new("app.outbox").unwrap().ident(), "app_outbox");
        for bad in ["", "1x", "a.b.c", "x;drop", "a-b", "a b", &"x".repeat(49)] {
            assert!(TableName::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn templates_render() {
        let t = TableName::new("s.t").unwrap();
        assert_eq!(t.render("{table} {ident}"), "s.t s_t");
    }
}
