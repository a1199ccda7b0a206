-- API tokens: only a SHA-256 hash of each secret is kept; the secret itself is shown once, at creation.
CREATE TABLE IF NOT EXISTS api_tokens (
    id TEXT COLLATE "C" PRIMARY KEY,
    name TEXT NOT NULL,
    secret_hash TEXT COLLATE "C" NOT NULL UNIQUE,
    scopes TEXT NOT NULL,
    tenant_id TEXT COLLATE "C",
    workspace_id TEXT COLLATE "C",
    rate_per_s DOUBLE PRECISION,
    created_at TEXT NOT NULL,
    expires_at TEXT,
    revoked_at TEXT,
    last_used_at TEXT
);
