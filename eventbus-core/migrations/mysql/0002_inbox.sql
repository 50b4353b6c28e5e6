-- The inbox table: one row per (handler group, message) handled.
CREATE TABLE IF NOT EXISTS {table} (
    group_name   VARCHAR(190) NOT NULL,
    message_id   BINARY(16)   NOT NULL,
    processed_at DATETIME(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    PRIMARY KEY (group_name, message_id),
    KEY {ident}_processed_at (processed_at)
) ENGINE = InnoDB;
