-- The outbox table. `{table}` is the configured table name, `{ident}` the
-- same with '.' replaced by '_' (for index and trigger names).
CREATE TABLE IF NOT EXISTS {table} (
    seq           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id            UUID        NOT NULL,
    name          TEXT        NOT NULL,
    version       INTEGER     NOT NULL,
    partition_key TEXT,
    headers       JSONB       NOT NULL,
    occurred_at   TIMESTAMPTZ NOT NULL,
    content_type  TEXT        NOT NULL,
    payload       BYTEA       NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    attempts      INTEGER     NOT NULL DEFAULT 0,
    last_error    TEXT,
    retry_at      TIMESTAMPTZ,
    parked_at     TIMESTAMPTZ
);
CREATE INDEX IF NOT EXISTS {ident}_key_seq ON {table} (partition_key, seq);
CREATE INDEX IF NOT EXISTS {ident}_blocked ON {table} (partition_key)
    WHERE parked_at IS NOT NULL OR retry_at IS NOT NULL;
-- Wake relays right after commit (notifications are delivered on commit and
-- de-duplicated per transaction, so a batch insert sends one).
CREATE OR REPLACE FUNCTION {table}_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('{ident}', '');
    RETURN NULL;
END
$$;
CREATE OR REPLACE TRIGGER {ident}_notify AFTER INSERT ON {table}
    FOR EACH STATEMENT EXECUTE FUNCTION {table}_notify();
