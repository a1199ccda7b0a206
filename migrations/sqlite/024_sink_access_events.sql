-- Sinks may stream the access events too (docs/streaming.md, "Access events"): `events` says which streams a
-- sink follows (space-separated: decisions, access). Each stream has its own cursor; the access cursor is
-- the last access_events.id delivered (one writer at a time: ids are handed out in commit order).
ALTER TABLE sinks ADD COLUMN events TEXT NOT NULL DEFAULT 'decisions';
ALTER TABLE sink_cursors ADD COLUMN access_hi INTEGER NOT NULL DEFAULT 0;
ALTER TABLE sink_cursors ADD COLUMN access_lo INTEGER NOT NULL DEFAULT 0;
ALTER TABLE sink_cursors ADD COLUMN access_delivered INTEGER NOT NULL DEFAULT 0;
-- A dead letter names its stream: a decision's (decision_id) or an access event's (its id).
ALTER TABLE sink_dead_letters ADD COLUMN stream TEXT NOT NULL DEFAULT 'decisions';
