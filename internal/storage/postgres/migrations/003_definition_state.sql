-- Accord store, schema version 3: a definition version can be disabled (no
-- new saga starts on it, and "latest" skips it) and deleted. A deleted
-- version stays as a tombstone without its content, so that its number is
-- never registered again with other content: a (name, version) means one
-- definition for the life of the store, which is what lets every node
-- cache it.
ALTER TABLE definitions ADD COLUMN disabled boolean NOT NULL DEFAULT false;
ALTER TABLE definitions ADD COLUMN deleted boolean NOT NULL DEFAULT false;

-- Counting the unfinished sagas of a version before deleting it.
CREATE INDEX sagas_definition_active_idx ON sagas (definition, definition_version) WHERE NOT terminal;
