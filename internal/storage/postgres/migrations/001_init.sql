-- Accord store, schema version 1.
--
-- Every time is a bigint of Unix microseconds read from the database's clock
-- (clock_timestamp()), the same representation as the SQLite backend, so
-- that conversions at the Go boundary are exact. Keys and names that are
-- compared or ordered are COLLATE "C": byte order, the same in every
-- database locale and the same as Go's string comparison.

-- meta holds the schema version and the partition count, as key/value rows
-- so that an older binary can always read the version of a newer store.
CREATE TABLE meta (
    key   text COLLATE "C" PRIMARY KEY,
    value bigint NOT NULL
);

-- One row per partition, created with the store. The row is both the lease
-- and the log head: a commit updates head conditionally on epoch and expiry,
-- and that row lock serializes the partition's writers and its takeovers.
CREATE TABLE partitions (
    partition        integer PRIMARY KEY,
    owner            text COLLATE "C" NOT NULL DEFAULT '',
    epoch            bigint NOT NULL DEFAULT 0,
    lease_expires_at bigint NOT NULL DEFAULT 0,
    head             bigint NOT NULL DEFAULT 0
);

CREATE TABLE streams (
    stream    text COLLATE "C" PRIMARY KEY,
    partition integer NOT NULL,
    version   bigint NOT NULL
);

CREATE TABLE events (
    partition   integer NOT NULL,
    position    bigint NOT NULL,
    stream      text COLLATE "C" NOT NULL,
    version     bigint NOT NULL,
    type        text NOT NULL,
    data        bytea,
    metadata    bytea,
    recorded_at bigint NOT NULL,
    PRIMARY KEY (partition, position),
    CONSTRAINT events_stream_version_key UNIQUE (stream, version)
);

CREATE TABLE idempotency_keys (
    scope      text COLLATE "C" NOT NULL,
    key        text COLLATE "C" NOT NULL,
    partition  integer NOT NULL,
    result     bytea,
    created_at bigint NOT NULL,
    expires_at bigint NOT NULL,
    PRIMARY KEY (scope, key)
);
CREATE INDEX idempotency_keys_expires_at_idx ON idempotency_keys (expires_at);

-- seq orders tasks that become visible at the same microsecond by insertion.
CREATE TABLE tasks (
    id          text COLLATE "C" PRIMARY KEY,
    seq         bigint GENERATED ALWAYS AS IDENTITY,
    partition   integer NOT NULL,
    queue       text COLLATE "C" NOT NULL,
    payload     bytea,
    deliveries  integer NOT NULL DEFAULT 0,
    claim_token text COLLATE "C" NOT NULL DEFAULT '',
    visible_at  bigint NOT NULL,
    created_at  bigint NOT NULL
);
CREATE INDEX tasks_queue_visible_at_idx ON tasks (queue, visible_at, seq);
CREATE INDEX tasks_partition_idx ON tasks (partition);

CREATE TABLE timers (
    id        text COLLATE "C" PRIMARY KEY,
    partition integer NOT NULL,
    fire_at   bigint NOT NULL,
    payload   bytea
);
CREATE INDEX timers_partition_fire_at_idx ON timers (partition, fire_at, id);

CREATE TABLE consumer_positions (
    consumer  text COLLATE "C" NOT NULL,
    partition integer NOT NULL,
    position  bigint NOT NULL,
    PRIMARY KEY (consumer, partition)
);

CREATE TABLE definitions (
    name       text COLLATE "C" NOT NULL,
    version    integer NOT NULL,
    content    bytea NOT NULL,
    hash       text NOT NULL,
    created_at bigint NOT NULL,
    PRIMARY KEY (name, version)
);

CREATE TABLE sagas (
    id                 text COLLATE "C" PRIMARY KEY,
    partition          integer NOT NULL,
    stream             text COLLATE "C" NOT NULL,
    definition         text COLLATE "C" NOT NULL,
    definition_version integer NOT NULL,
    status             text COLLATE "C" NOT NULL,
    terminal           boolean NOT NULL,
    idempotency_key    text NOT NULL,
    state              bytea,
    created_at         bigint NOT NULL,
    updated_at         bigint NOT NULL,
    ended_at           bigint
);
CREATE INDEX sagas_created_at_id_idx ON sagas (created_at DESC, id DESC);
CREATE INDEX sagas_status_created_at_idx ON sagas (status, created_at DESC, id DESC);
CREATE INDEX sagas_definition_created_at_idx ON sagas (definition, created_at DESC, id DESC);
CREATE INDEX sagas_partition_created_at_idx ON sagas (partition, created_at DESC, id DESC);
CREATE INDEX sagas_partition_nonterminal_idx ON sagas (partition, created_at DESC, id DESC) WHERE NOT terminal;
CREATE INDEX sagas_ended_at_idx ON sagas (ended_at) WHERE ended_at IS NOT NULL;
