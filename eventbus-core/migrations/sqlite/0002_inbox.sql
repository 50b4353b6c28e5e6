-- The inbox table: one row per (handler group, message) handled. Times are Unix milliseconds.
CREATE TABLE IF NOT EXISTS {table} (
    group_name   TEXT    NOT NULL,
    message_id   BLOB    NOT NULL,
    processed_at INTEGER NOT NULL,
    PRIMARY KEY (group_name, message_id)
);
CREATE INDEX IF NOT EXISTS {ident}_processed_at ON {table} (processed_at);
