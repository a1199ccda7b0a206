-- Free-text search (q): a pg_trgm GIN index over each decision's searchable text (search.SEARCH_FIELDS),
-- which answers `ILIKE '%…%'` on substrings of paths and commands. GIN's pending list batches the index
-- work of inserts (fastupdate), so it is kept in the writers' transaction.
CREATE EXTENSION IF NOT EXISTS pg_trgm SCHEMA public;

-- IMMUTABLE so it can be indexed; a payload that is not JSON (CAVRA may write anything) adds nothing.
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

-- The operator class lives where pg_trgm was installed, which need not be this schema.
DO $$
DECLARE
    home text;
BEGIN
    SELECT n.nspname INTO home FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
    WHERE e.extname = 'pg_trgm';
    EXECUTE format(
        'CREATE INDEX IF NOT EXISTS idx_activity_decisions_search ON activity_decisions '
        'USING gin (cavra_search_text(target, rule_id, payload) %I.gin_trgm_ops)', home);
END
$$;
