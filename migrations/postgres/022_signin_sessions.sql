-- Sign-in sessions of people (OpenID Connect): only a SHA-256 hash of the cookie and of its CSRF token is kept.
CREATE TABLE IF NOT EXISTS signin_sessions (
    id_hash TEXT COLLATE "C" PRIMARY KEY,
    csrf_hash TEXT COLLATE "C" NOT NULL,
    sub TEXT COLLATE "C" NOT NULL,
    sid TEXT COLLATE "C",
    email TEXT,
    tenant_id TEXT COLLATE "C",
    workspace_id TEXT COLLATE "C",
    scopes TEXT NOT NULL,
    created_s DOUBLE PRECISION NOT NULL,
    seen_s DOUBLE PRECISION NOT NULL,
    ended_s DOUBLE PRECISION,
    end_reason TEXT
);
CREATE INDEX IF NOT EXISTS signin_sessions_sub ON signin_sessions (sub);
CREATE INDEX IF NOT EXISTS signin_sessions_sid ON signin_sessions (sid);

-- Who signed in, out or was refused, whose session expired, which token was created or revoked: kept for review.
CREATE TABLE IF NOT EXISTS access_events (
    id BIGSERIAL PRIMARY KEY,
    at TEXT NOT NULL,
    kind TEXT NOT NULL,
    outcome TEXT NOT NULL,
    sub TEXT,
    email TEXT,
    remote TEXT,
    tenant_id TEXT COLLATE "C",
    detail TEXT
);
CREATE INDEX IF NOT EXISTS access_events_tenant ON access_events (tenant_id, id);
