-- 002: the bus — topics, consumer groups, messages, deliveries and dead
-- letters. Times are Unix microseconds (INTEGER).

-- message_head is the last message position written in the partition: a
-- counter of its own, separate from the event log's head.
ALTER TABLE partitions ADD COLUMN message_head INTEGER NOT NULL DEFAULT 0;

CREATE TABLE topics (
    name       TEXT    PRIMARY KEY,
    config     BLOB,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);

-- "groups" is an SQL keyword.
CREATE TABLE consumer_groups (
    topic      TEXT    NOT NULL,
    name       TEXT    NOT NULL,
    config     BLOB,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (topic, name)
);

-- Positions count the partition's messages of every topic. expires_at is
-- NULL for a message that never expires; key and correlation_id are '' when
-- absent.
CREATE TABLE messages (
    partition      INTEGER NOT NULL,
    position       INTEGER NOT NULL,
    topic          TEXT    NOT NULL,
    key            TEXT    NOT NULL,
    id             TEXT    NOT NULL,
    correlation_id TEXT    NOT NULL,
    headers        BLOB,
    payload        BLOB,
    tombstone      INTEGER NOT NULL,
    published_at   INTEGER NOT NULL,
    expires_at     INTEGER,
    PRIMARY KEY (partition, position)
);
CREATE INDEX messages_topic ON messages (topic, partition, position);
CREATE INDEX messages_key ON messages (topic, partition, key, position) WHERE key <> '';
CREATE INDEX messages_correlation ON messages (correlation_id, published_at, partition, position) WHERE correlation_id <> '';
CREATE INDEX messages_published ON messages (published_at, partition, position);
-- Retention by age and the sweep of old tombstones.
CREATE INDEX messages_age ON messages (topic, partition, published_at);
CREATE INDEX messages_tombstones ON messages (topic, partition, published_at) WHERE tombstone;

-- One row per message a group has not yet acked (nor dead-lettered, nor
-- dropped). Among a group's deliveries of one partition and non-empty key,
-- exactly one has blocked = 0; claim_token is '' while not claimed.
CREATE TABLE deliveries (
    topic       TEXT    NOT NULL,
    grp         TEXT    NOT NULL,
    partition   INTEGER NOT NULL,
    position    INTEGER NOT NULL,
    key         TEXT    NOT NULL,
    deliveries  INTEGER NOT NULL DEFAULT 0,
    claim_token TEXT    NOT NULL DEFAULT '',
    visible_at  INTEGER NOT NULL,
    blocked     INTEGER NOT NULL,
    history     BLOB,
    PRIMARY KEY (topic, grp, partition, position)
);
CREATE INDEX deliveries_claim ON deliveries (topic, grp, blocked, visible_at, partition, position);
CREATE INDEX deliveries_key ON deliveries (topic, grp, partition, key, position);
CREATE INDEX deliveries_message ON deliveries (partition, position);

-- A dead letter keeps a copy of its message, which retention may delete.
-- AUTOINCREMENT: ids are never reused after a purge.
CREATE TABLE dead_letters (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    topic          TEXT    NOT NULL,
    grp            TEXT    NOT NULL,
    partition      INTEGER NOT NULL,
    position       INTEGER NOT NULL,
    deliveries     INTEGER NOT NULL,
    reason         TEXT    NOT NULL,
    history        BLOB,
    dead_at        INTEGER NOT NULL,
    key            TEXT    NOT NULL,
    message_id     TEXT    NOT NULL,
    correlation_id TEXT    NOT NULL,
    headers        BLOB,
    payload        BLOB,
    tombstone      INTEGER NOT NULL,
    published_at   INTEGER NOT NULL,
    expires_at     INTEGER
);
CREATE INDEX dead_letters_group ON dead_letters (topic, grp, id);
