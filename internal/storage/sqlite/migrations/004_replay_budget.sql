-- 003: a replayed dead letter keeps its delivery count (so its attempts
-- number on from where they stopped) and gets a fresh max_deliveries
-- budget: delivered_before is the count it came back with.
ALTER TABLE deliveries ADD COLUMN delivered_before INTEGER NOT NULL DEFAULT 0;
