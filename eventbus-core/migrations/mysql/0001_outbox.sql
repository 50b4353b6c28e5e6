-- The outbox table (MySQL 8 / MariaDB >= 10.6 for SKIP LOCKED).
CREATE TABLE IF NOT EXISTS {table} (
    seq           BIGINT       NOT NULL AUTO_INCREMENT PRIMARY KEY,
    id            BINARY(16)   NOT NULL,
    name          VARCHAR(255) NOT NULL,
    version       INT          NOT NULL,
    partition_key VARCHAR(255) NULL,
    headers       TEXT         NOT NULL,
    occurred_at   DATETIME(6)  NOT NULL,
    content_type  VARCHAR(255) NOT NULL,
    payload       LONGBLOB     NOT NULL,
    created_at    DATETIME(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    attempts      INT          NOT NULL DEFAULT 0,
    last_error    TEXT         NULL,
    retry_at      DATETIME(6)  NULL,
    parked_at     DATETIME(6)  NULL,
    KEY {ident}_key_seq (partition_key, seq),
    KEY {ident}_parked (parked_at),
    KEY {ident}_retry (retry_at)
) ENGINE = InnoDB;
