-- Accord store, schema version 2: the bus — topics, consumer groups,
-- messages, deliveries and dead letters. Times are bigint Unix
-- microseconds, names COLLATE "C", as in 001.

-- message_head is the last message position written in the partition: a
-- counter of its own, separate from the event log's head, moved by the
-- fenced commit under the same row lock.
ALTER TABLE partitions ADD COLUMN message_head bigint NOT NULL DEFAULT 0;

CREATE TABLE topics (
    name       text COLLATE "C" PRIMARY KEY,
    config     bytea,
    created_at bigint NOT NULL,
    updated_at bigint NOT NULL
);

CREATE TABLE consumer_groups (
    topic      text COLLATE "C" NOT NULL,
    name       text COLLATE "C" NOT NULL,
    config     bytea,
    created_at bigint NOT NULL,
    PRIMARY KEY (topic, name)
);

-- Positions count the partition's messages of every topic. key and
-- correlation_id are '' when absent; expires_at is NULL for a message that
-- never expires.
CREATE TABLE messages (
    partition      integer NOT NULL,
    position       bigint NOT NULL,
    topic          text COLLATE "C" NOT NULL,
    key            text COLLATE "C" NOT NULL,
    id             text COLLATE "C" NOT NULL,
    correlation_id text COLLATE "C" NOT NULL,
    headers        bytea,
    payload        bytea,
    tombstone      boolean NOT NULL,
    published_at   bigint NOT NULL,
    expires_at     bigint,
    PRIMARY KEY (partition, position)
);
CREATE INDEX messages_topic_idx ON messages (topic, partition, position);
CREATE INDEX messages_key_idx ON messages (topic, partition, key, position) WHERE key <> '';
CREATE INDEX messages_correlation_id_idx ON messages (correlation_id, published_at, partition, position)
    WHERE correlation_id <> '';
CREATE INDEX messages_published_at_idx ON messages (published_at, partition, position);

-- One row per message a group has not acked, dead-lettered or dropped.
-- Among a group's deliveries of one partition and non-empty key exactly one
-- is not blocked; claim_token is '' while not claimed.
CREATE TABLE deliveries (
    topic       text COLLATE "C" NOT NULL,
    grp         text COLLATE "C" NOT NULL,
    partition   integer NOT NULL,
    position    bigint NOT NULL,
    key         text COLLATE "C" NOT NULL,
    deliveries  integer NOT NULL DEFAULT 0,
    claim_token text COLLATE "C" NOT NULL DEFAULT '',
    visible_at  bigint NOT NULL,
    blocked     boolean NOT NULL,
    history     bytea,
    PRIMARY KEY (topic, grp, partition, position)
);
CREATE INDEX deliveries_claim_idx ON deliveries (topic, grp, visible_at, partition, position) WHERE NOT blocked;
CREATE INDEX deliveries_key_idx ON deliveries (topic, grp, partition, key, position) WHERE key <> '';
-- The one unblocked delivery of each key, found without scanning its backlog.
CREATE INDEX deliveries_unblocked_key_idx ON deliveries (topic, grp, partition, key) WHERE NOT blocked AND key <> '';
CREATE INDEX deliveries_message_idx ON deliveries (partition, position);

-- A dead letter keeps a copy of its message, which retention may delete.
CREATE TABLE dead_letters (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    topic          text COLLATE "C" NOT NULL,
    grp            text COLLATE "C" NOT NULL,
    partition      integer NOT NULL,
    position       bigint NOT NULL,
    deliveries     integer NOT NULL,
    reason         text NOT NULL,
    history        bytea,
    dead_at        bigint NOT NULL,
    key            text COLLATE "C" NOT NULL,
    message_id     text COLLATE "C" NOT NULL,
    correlation_id text COLLATE "C" NOT NULL,
    headers        bytea,
    payload        bytea,
    tombstone      boolean NOT NULL,
    published_at   bigint NOT NULL,
    expires_at     bigint
);
CREATE INDEX dead_letters_group_idx ON dead_letters (topic, grp, id);
