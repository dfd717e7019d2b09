-- 003: a definition version can be disabled (no new saga starts on it,
-- and "latest" skips it) and deleted. A deleted version stays as a
-- tombstone without its content, so that its number is never registered
-- again with other content: a (name, version) means one definition for
-- the life of the store, which is what lets every node cache it.
ALTER TABLE definitions ADD COLUMN disabled INTEGER NOT NULL DEFAULT 0;
ALTER TABLE definitions ADD COLUMN deleted INTEGER NOT NULL DEFAULT 0;

-- Counting the unfinished sagas of a version before deleting it.
CREATE INDEX sagas_definition_active ON sagas (definition, definition_version) WHERE terminal = 0;
