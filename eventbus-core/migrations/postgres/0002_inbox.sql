-- The inbox table: one row per (handler group, message) handled.
CREATE TABLE IF NOT EXISTS {table} (
    group_name   TEXT        NOT NULL,
    message_id   UUID        NOT NULL,
    processed_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (group_name, message_id)
);
CREATE INDEX IF NOT EXISTS {ident}_processed_at ON {table} (processed_at);
