-- Tenant and workspace scope as columns, as in the SQLite layout.
ALTER TABLE activity_decisions ADD COLUMN IF NOT EXISTS tenant_id TEXT COLLATE "C";
ALTER TABLE activity_decisions ADD COLUMN IF NOT EXISTS workspace_id TEXT COLLATE "C";
ALTER TABLE activity_sessions ADD COLUMN IF NOT EXISTS tenant_id TEXT COLLATE "C";
ALTER TABLE activity_sessions ADD COLUMN IF NOT EXISTS workspace_id TEXT COLLATE "C";
