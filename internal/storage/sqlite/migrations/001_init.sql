-- 001: the first Accord schema. Times are Unix microseconds (INTEGER).

-- accord_meta marks the file as an Accord store and holds its schema version
-- and partition count. Its name is distinctive on purpose: a file that has
-- tables but no accord_meta is someone else's database.
CREATE TABLE accord_meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;

-- One row per partition: its lease and the last position written.
CREATE TABLE partitions (
    partition  INTEGER PRIMARY KEY,
    owner      TEXT    NOT NULL DEFAULT '',
    epoch      INTEGER NOT NULL DEFAULT 0,
    expires_at INTEGER NOT NULL DEFAULT 0,
    head       INTEGER NOT NULL DEFAULT 0
);

-- A stream's partition is fixed by its first append; version is the
-- version of its last event, so an expected-version check reads one row.
CREATE TABLE streams (
    name      TEXT PRIMARY KEY,
    partition INTEGER NOT NULL,
    version   INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE events (
    partition   INTEGER NOT NULL,
    position    INTEGER NOT NULL,
    stream      TEXT    NOT NULL,
    version     INTEGER NOT NULL,
    type        TEXT    NOT NULL,
    data        BLOB,
    metadata    BLOB,
    recorded_at INTEGER NOT NULL,
    PRIMARY KEY (partition, position)
);
CREATE UNIQUE INDEX events_stream_version ON events (stream, version);

CREATE TABLE idempotency_keys (
    scope      TEXT    NOT NULL,
    key        TEXT    NOT NULL,
    partition  INTEGER NOT NULL,
    result     BLOB,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (scope, key)
);
CREATE INDEX idempotency_keys_expiry ON idempotency_keys (expires_at);

-- seq orders tasks that become visible at the same microsecond by insertion.
-- claim_token is '' while the task is not claimed.
CREATE TABLE tasks (
    seq         INTEGER PRIMARY KEY,
    id          TEXT    NOT NULL UNIQUE,
    partition   INTEGER NOT NULL,
    queue       TEXT    NOT NULL,
    payload     BLOB,
    deliveries  INTEGER NOT NULL DEFAULT 0,
    claim_token TEXT    NOT NULL DEFAULT '',
    visible_at  INTEGER NOT NULL,
    created_at  INTEGER NOT NULL
);
CREATE INDEX tasks_claim ON tasks (queue, visible_at, seq);

CREATE TABLE timers (
    id        TEXT    PRIMARY KEY,
    partition INTEGER NOT NULL,
    fire_at   INTEGER NOT NULL,
    payload   BLOB
);
CREATE INDEX timers_due ON timers (partition, fire_at, id);

CREATE TABLE consumer_positions (
    consumer  TEXT    NOT NULL,
    partition INTEGER NOT NULL,
    position  INTEGER NOT NULL,
    PRIMARY KEY (consumer, partition)
) WITHOUT ROWID;

CREATE TABLE definitions (
    name       TEXT    NOT NULL,
    version    INTEGER NOT NULL,
    content    BLOB    NOT NULL,
    hash       TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (name, version)
);

-- ended_at is NULL until the saga is terminal.
CREATE TABLE sagas (
    id                 TEXT    PRIMARY KEY,
    partition          INTEGER NOT NULL,
    stream             TEXT    NOT NULL,
    definition         TEXT    NOT NULL,
    definition_version INTEGER NOT NULL,
    status             TEXT    NOT NULL,
    terminal           INTEGER NOT NULL,
    idempotency_key    TEXT    NOT NULL,
    state              BLOB,
    created_at         INTEGER NOT NULL,
    updated_at         INTEGER NOT NULL,
    ended_at           INTEGER
);
CREATE INDEX sagas_created ON sagas (created_at DESC, id DESC);
CREATE INDEX sagas_status ON sagas (status, created_at DESC, id DESC);
CREATE INDEX sagas_definition ON sagas (definition, created_at DESC, id DESC);
CREATE INDEX sagas_partition_active ON sagas (partition, created_at DESC, id DESC) WHERE terminal = 0;
CREATE INDEX sagas_ended ON sagas (ended_at) WHERE ended_at IS NOT NULL;
