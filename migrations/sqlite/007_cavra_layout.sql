-- CAVRA's layout, whoever created the file, and time columns that compare as instants.
--
-- 1. CAVRA's index names. Older cavra-ingest files name six 004 indexes differently; CAVRA's store, on
--    opening such a file, would add its own beside them (two indexes on one column, both paid on every
--    insert). Drop-then-create-if-missing leaves exactly CAVRA's one, whatever the file held before.
DROP INDEX IF EXISTS idx_activity_sessions_agent_id;
CREATE INDEX IF NOT EXISTS idx_activity_sessions_agent ON activity_sessions(agent_id);
DROP INDEX IF EXISTS idx_activity_sessions_policy_pack;
CREATE INDEX IF NOT EXISTS idx_activity_sessions_policy ON activity_sessions(policy_pack);
DROP INDEX IF EXISTS idx_activity_sessions_updated_at;
CREATE INDEX IF NOT EXISTS idx_activity_sessions_updated ON activity_sessions(updated_at);
DROP INDEX IF EXISTS idx_activity_decisions_session_id;
CREATE INDEX IF NOT EXISTS idx_activity_decisions_session ON activity_decisions(session_id);
DROP INDEX IF EXISTS idx_activity_decisions_agent_id;
CREATE INDEX IF NOT EXISTS idx_activity_decisions_agent ON activity_decisions(agent_id);
DROP INDEX IF EXISTS idx_activity_decisions_policy_pack;
CREATE INDEX IF NOT EXISTS idx_activity_decisions_policy ON activity_decisions(policy_pack);

-- 2. CAVRA writes times as its clients sent them (`...Z`, `+02:00`, any number of fraction digits), which
--    do not compare as text with the normalised `YYYY-MM-DDTHH:MM:SS.ffffff+00:00`. Rewrite them to
--    that form, column and payload alike (the same instant: the record's meaning is unchanged), so
--    `since`/`until`, ordering and cursors compare instants through the plain time indexes.
--    UTC_TEXT(x) below is: whole seconds converted to UTC by strftime (it understands `Z` and `+HH:MM`),
--    then the fraction copied digit for digit, padded or cut to six. A value strftime cannot read is kept.
-- Payloads first, while the columns still tell which rows need it: only those rows are read.
UPDATE activity_decisions
SET payload = json_replace(payload, '$.timestamp', strftime('%Y-%m-%dT%H:%M:%S', substr(upper(timestamp), 1, 19) || ltrim(substr(upper(timestamp), 20), '.0123456789'))
        || '.' || substr(ltrim(substr(timestamp, 20, length(timestamp) - 19 - length(ltrim(substr(upper(timestamp), 20), '.0123456789'))), '.') || '000000', 1, 6)
        || '+00:00')
WHERE timestamp NOT GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]+00:00' AND json_valid(payload) AND (strftime('%Y-%m-%dT%H:%M:%S', substr(upper(timestamp), 1, 19) || ltrim(substr(upper(timestamp), 20), '.0123456789'))
        || '.' || substr(ltrim(substr(timestamp, 20, length(timestamp) - 19 - length(ltrim(substr(upper(timestamp), 20), '.0123456789'))), '.') || '000000', 1, 6)
        || '+00:00') IS NOT NULL;
UPDATE activity_decisions
SET timestamp = coalesce(strftime('%Y-%m-%dT%H:%M:%S', substr(upper(timestamp), 1, 19) || ltrim(substr(upper(timestamp), 20), '.0123456789'))
        || '.' || substr(ltrim(substr(timestamp, 20, length(timestamp) - 19 - length(ltrim(substr(upper(timestamp), 20), '.0123456789'))), '.') || '000000', 1, 6)
        || '+00:00', timestamp)
WHERE timestamp NOT GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]+00:00';

UPDATE activity_sessions
SET payload = json_replace(
    payload,
    '$.started_at', coalesce(strftime('%Y-%m-%dT%H:%M:%S', substr(upper(started_at), 1, 19) || ltrim(substr(upper(started_at), 20), '.0123456789'))
        || '.' || substr(ltrim(substr(started_at, 20, length(started_at) - 19 - length(ltrim(substr(upper(started_at), 20), '.0123456789'))), '.') || '000000', 1, 6)
        || '+00:00', started_at),
    '$.updated_at', coalesce(strftime('%Y-%m-%dT%H:%M:%S', substr(upper(updated_at), 1, 19) || ltrim(substr(upper(updated_at), 20), '.0123456789'))
        || '.' || substr(ltrim(substr(updated_at, 20, length(updated_at) - 19 - length(ltrim(substr(upper(updated_at), 20), '.0123456789'))), '.') || '000000', 1, 6)
        || '+00:00', updated_at)
)
WHERE (started_at NOT GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]+00:00' OR updated_at NOT GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]+00:00') AND json_valid(payload);
UPDATE activity_sessions
SET started_at = coalesce(strftime('%Y-%m-%dT%H:%M:%S', substr(upper(started_at), 1, 19) || ltrim(substr(upper(started_at), 20), '.0123456789'))
        || '.' || substr(ltrim(substr(started_at, 20, length(started_at) - 19 - length(ltrim(substr(upper(started_at), 20), '.0123456789'))), '.') || '000000', 1, 6)
        || '+00:00', started_at),
    updated_at = coalesce(strftime('%Y-%m-%dT%H:%M:%S', substr(upper(updated_at), 1, 19) || ltrim(substr(upper(updated_at), 20), '.0123456789'))
        || '.' || substr(ltrim(substr(updated_at, 20, length(updated_at) - 19 - length(ltrim(substr(upper(updated_at), 20), '.0123456789'))), '.') || '000000', 1, 6)
        || '+00:00', updated_at)
WHERE started_at NOT GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]+00:00' OR updated_at NOT GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]+00:00';

-- 3. Rows CAVRA writes into the file later get the same treatment, by triggers (plain SQL, so they run in
--    CAVRA's process too). Rows cavra-ingest writes are already normalised: the WHEN test (one GLOB per
--    row) skips them, so its inserts pay nothing more.
CREATE TRIGGER IF NOT EXISTS trg_activity_decisions_utc_insert
AFTER INSERT ON activity_decisions WHEN NEW.timestamp NOT GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]+00:00'
BEGIN
    UPDATE activity_decisions
    SET timestamp = coalesce(strftime('%Y-%m-%dT%H:%M:%S', substr(upper(timestamp), 1, 19) || ltrim(substr(upper(timestamp), 20), '.0123456789'))
            || '.' || substr(ltrim(substr(timestamp, 20, length(timestamp) - 19 - length(ltrim(substr(upper(timestamp), 20), '.0123456789'))), '.') || '000000', 1, 6)
            || '+00:00', timestamp)
    WHERE decision_id = NEW.decision_id;
    UPDATE activity_decisions SET payload = json_replace(payload, '$.timestamp', timestamp)
    WHERE decision_id = NEW.decision_id AND json_valid(payload) AND timestamp GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]+00:00';
END;
CREATE TRIGGER IF NOT EXISTS trg_activity_decisions_utc_update
AFTER UPDATE OF timestamp, payload ON activity_decisions WHEN NEW.timestamp NOT GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]+00:00'
BEGIN
    UPDATE activity_decisions
    SET timestamp = coalesce(strftime('%Y-%m-%dT%H:%M:%S', substr(upper(timestamp), 1, 19) || ltrim(substr(upper(timestamp), 20), '.0123456789'))
            || '.' || substr(ltrim(substr(timestamp, 20, length(timestamp) - 19 - length(ltrim(substr(upper(timestamp), 20), '.0123456789'))), '.') || '000000', 1, 6)
            || '+00:00', timestamp)
    WHERE decision_id = NEW.decision_id;
    UPDATE activity_decisions SET payload = json_replace(payload, '$.timestamp', timestamp)
    WHERE decision_id = NEW.decision_id AND json_valid(payload) AND timestamp GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]+00:00';
END;
CREATE TRIGGER IF NOT EXISTS trg_activity_sessions_utc_insert
AFTER INSERT ON activity_sessions
WHEN NEW.started_at NOT GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]+00:00' OR NEW.updated_at NOT GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]+00:00'
BEGIN
    UPDATE activity_sessions
    SET started_at = coalesce(strftime('%Y-%m-%dT%H:%M:%S', substr(upper(started_at), 1, 19) || ltrim(substr(upper(started_at), 20), '.0123456789'))
            || '.' || substr(ltrim(substr(started_at, 20, length(started_at) - 19 - length(ltrim(substr(upper(started_at), 20), '.0123456789'))), '.') || '000000', 1, 6)
            || '+00:00', started_at),
        updated_at = coalesce(strftime('%Y-%m-%dT%H:%M:%S', substr(upper(updated_at), 1, 19) || ltrim(substr(upper(updated_at), 20), '.0123456789'))
            || '.' || substr(ltrim(substr(updated_at, 20, length(updated_at) - 19 - length(ltrim(substr(upper(updated_at), 20), '.0123456789'))), '.') || '000000', 1, 6)
            || '+00:00', updated_at)
    WHERE session_id = NEW.session_id;
    UPDATE activity_sessions
    SET payload = json_replace(payload, '$.started_at', started_at, '$.updated_at', updated_at)
    WHERE session_id = NEW.session_id AND json_valid(payload)
        AND started_at GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]+00:00' AND updated_at GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]+00:00';
END;
CREATE TRIGGER IF NOT EXISTS trg_activity_sessions_utc_update
AFTER UPDATE OF started_at, updated_at, payload ON activity_sessions
WHEN NEW.started_at NOT GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]+00:00' OR NEW.updated_at NOT GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]+00:00'
BEGIN
    UPDATE activity_sessions
    SET started_at = coalesce(strftime('%Y-%m-%dT%H:%M:%S', substr(upper(started_at), 1, 19) || ltrim(substr(upper(started_at), 20), '.0123456789'))
            || '.' || substr(ltrim(substr(started_at, 20, length(started_at) - 19 - length(ltrim(substr(upper(started_at), 20), '.0123456789'))), '.') || '000000', 1, 6)
            || '+00:00', started_at),
        updated_at = coalesce(strftime('%Y-%m-%dT%H:%M:%S', substr(upper(updated_at), 1, 19) || ltrim(substr(upper(updated_at), 20), '.0123456789'))
            || '.' || substr(ltrim(substr(updated_at, 20, length(updated_at) - 19 - length(ltrim(substr(upper(updated_at), 20), '.0123456789'))), '.') || '000000', 1, 6)
            || '+00:00', updated_at)
    WHERE session_id = NEW.session_id;
    UPDATE activity_sessions
    SET payload = json_replace(payload, '$.started_at', started_at, '$.updated_at', updated_at)
    WHERE session_id = NEW.session_id AND json_valid(payload)
        AND started_at GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]+00:00' AND updated_at GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]+00:00';
END;
