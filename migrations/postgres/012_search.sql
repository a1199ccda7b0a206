-- Free-text search (q): a pg_trgm GIN index over each decision's searchable text (search.SEARCH_FIELDS),
-- which answers `ILIKE '%…%'` on substrings of paths and commands. Built in the writers' transaction the
-- index cost 56 % more per insert (bench/search_bench.py), so it lives on its own table, filled by the
-- background indexer (workers/indexer.py); an insert only notes its id in a queue (about 4 %). Rows still
-- in the queue are searched by reading them, so nothing is ever missed; CAVRA's own inserts queue alike.
CREATE EXTENSION IF NOT EXISTS pg_trgm SCHEMA public;

-- A payload that is not JSON (CAVRA may write anything) adds nothing.
CREATE OR REPLACE FUNCTION cavra_search_text(target text, rule_id text, payload text) RETURNS text
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    doc jsonb;
    field text;
    parts text[] := ARRAY[coalesce(target, ''), coalesce(rule_id, '')];
BEGIN
    BEGIN
        doc := payload::jsonb;
    EXCEPTION WHEN others THEN
        doc := NULL;
    END;
    FOREACH field IN ARRAY ARRAY['requested_operation', 'reason', 'policy_id', 'tool_name', 'mcp_server'] LOOP
        IF jsonb_typeof(doc) = 'object' AND jsonb_typeof(doc -> field) = 'string' THEN
            parts := parts || (doc ->> field);
        ELSE
            parts := parts || ''::text;
        END IF;
    END LOOP;
    RETURN array_to_string(parts, E'\n');
END
$$;

CREATE TABLE IF NOT EXISTS activity_search (
    decision_id TEXT COLLATE "C" PRIMARY KEY,
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS activity_search_queue (decision_id TEXT COLLATE "C" NOT NULL);

-- The search_path of this migration is fixed into the function: a writer with another search_path
-- (CAVRA itself) still finds the queue of this schema.
CREATE OR REPLACE FUNCTION cavra_search_enqueue() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    INSERT INTO activity_search_queue (decision_id) VALUES (NEW.decision_id);
    RETURN NULL;
END
$$;
CREATE OR REPLACE TRIGGER activity_decisions_search_queue
    AFTER INSERT ON activity_decisions FOR EACH ROW EXECUTE FUNCTION cavra_search_enqueue();

-- Decisions stored before this migration are indexed by the same worker.
INSERT INTO activity_search_queue (decision_id) SELECT decision_id FROM activity_decisions;

-- The operator class lives where pg_trgm was installed, which need not be this schema.
DO $$
DECLARE
    home text;
BEGIN
    SELECT n.nspname INTO home FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
    WHERE e.extname = 'pg_trgm';
    EXECUTE format(
        'CREATE INDEX IF NOT EXISTS idx_activity_search_body ON activity_search USING gin (body %I.gin_trgm_ops)',
        home);
END
$$;
