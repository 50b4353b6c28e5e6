-- The outbox table. Times are Unix milliseconds. SQLite has one writer at a
-- time and no row locks, so relays claim rows with a lease (locked_by/locked_until).
CREATE TABLE IF NOT EXISTS {table} (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    id            BLOB    NOT NULL,
    name          TEXT    NOT NULL,
    version       INTEGER NOT NULL,
    partition_key TEXT,
    headers       TEXT    NOT NULL,
    occurred_at   TEXT    NOT NULL,
    content_type  TEXT    NOT NULL,
    payload       BLOB    NOT NULL,
    created_at    INTEGER NOT NULL DEFAULT (CAST(unixepoch('subsec') * 1000 AS INTEGER)),
    attempts      INTEGER NOT NULL DEFAULT 0,
    last_error    TEXT,
    retry_at      INTEGER,
    parked_at     INTEGER,
    locked_by     TEXT,
    locked_until  INTEGER
);
CREATE INDEX IF NOT EXISTS {ident}_key_seq ON {table} (partition_key, seq);
CREATE INDEX IF NOT EXISTS {ident}_blocked ON {table} (partition_key)
    WHERE parked_at IS NOT NULL OR retry_at IS NOT NULL OR locked_until IS NOT NULL;
