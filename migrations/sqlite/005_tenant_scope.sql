-- Tenant and workspace scope as columns, so they can be filtered and indexed.
-- CAVRA's current store creates both tables with these columns already (and records no ledger row): the
-- runner skips an ADD COLUMN whose column exists (SQLite has no ADD COLUMN IF NOT EXISTS; see migrate.py).
ALTER TABLE activity_decisions ADD COLUMN tenant_id TEXT;
ALTER TABLE activity_decisions ADD COLUMN workspace_id TEXT;
ALTER TABLE activity_sessions ADD COLUMN tenant_id TEXT;
ALTER TABLE activity_sessions ADD COLUMN workspace_id TEXT;

-- Rows written before this migration (by CAVRA or an older cavra-ingest) carry scope only in payload.
UPDATE activity_decisions
SET tenant_id = coalesce(tenant_id, json_extract(payload, '$.tenant_id')),
    workspace_id = coalesce(workspace_id, json_extract(payload, '$.workspace_id'))
WHERE (tenant_id IS NULL OR workspace_id IS NULL) AND json_valid(payload);
UPDATE activity_sessions
SET tenant_id = coalesce(tenant_id, json_extract(payload, '$.tenant_id')),
    workspace_id = coalesce(workspace_id, json_extract(payload, '$.workspace_id'))
WHERE (tenant_id IS NULL OR workspace_id IS NULL) AND json_valid(payload);
