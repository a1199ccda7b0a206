-- The activity tables of the SQLite layout, for a server database. Times are the same normalised
-- UTC text and every text compares bytewise (COLLATE "C"), so order, keyset paging and facets
-- behave exactly as on SQLite.
CREATE TABLE IF NOT EXISTS activity_sessions (
    session_id TEXT COLLATE "C" PRIMARY KEY,
    agent_id TEXT COLLATE "C" NOT NULL,
    actor TEXT COLLATE "C" NOT NULL,
    repository TEXT COLLATE "C",
    policy_pack TEXT COLLATE "C" NOT NULL,
    state TEXT COLLATE "C" NOT NULL DEFAULT 'active',
    started_at TEXT COLLATE "C" NOT NULL,
    updated_at TEXT COLLATE "C" NOT NULL,
    decision_count INTEGER NOT NULL DEFAULT 0,
    blocked_count INTEGER NOT NULL DEFAULT 0,
    approval_required_count INTEGER NOT NULL DEFAULT 0,
    payload TEXT COLLATE "C" NOT NULL
);

CREATE INDEX IF NOT EXISTS idx_activity_sessions_agent ON activity_sessions (agent_id);
CREATE INDEX IF NOT EXISTS idx_activity_sessions_repository ON activity_sessions (repository);
CREATE INDEX IF NOT EXISTS idx_activity_sessions_policy ON activity_sessions (policy_pack);
CREATE INDEX IF NOT EXISTS idx_activity_sessions_state ON activity_sessions (state);
CREATE INDEX IF NOT EXISTS idx_activity_sessions_updated ON activity_sessions (updated_at);

CREATE TABLE IF NOT EXISTS activity_decisions (
    decision_id TEXT COLLATE "C" PRIMARY KEY,
    session_id TEXT COLLATE "C" NOT NULL,
    agent_id TEXT COLLATE "C" NOT NULL,
    actor TEXT COLLATE "C" NOT NULL,
    repository TEXT COLLATE "C",
    policy_pack TEXT COLLATE "C" NOT NULL,
    action_type TEXT COLLATE "C" NOT NULL,
    target TEXT COLLATE "C" NOT NULL DEFAULT '',
    rule_id TEXT COLLATE "C" NOT NULL,
    decision TEXT COLLATE "C" NOT NULL,
    severity TEXT COLLATE "C" NOT NULL,
    timestamp TEXT COLLATE "C" NOT NULL,
    correlation_id TEXT COLLATE "C",
    payload TEXT COLLATE "C" NOT NULL
);

CREATE INDEX IF NOT EXISTS idx_activity_decisions_session ON activity_decisions (session_id);
CREATE INDEX IF NOT EXISTS idx_activity_decisions_agent ON activity_decisions (agent_id);
CREATE INDEX IF NOT EXISTS idx_activity_decisions_repository ON activity_decisions (repository);
CREATE INDEX IF NOT EXISTS idx_activity_decisions_policy ON activity_decisions (policy_pack);
CREATE INDEX IF NOT EXISTS idx_activity_decisions_decision ON activity_decisions (decision);
CREATE INDEX IF NOT EXISTS idx_activity_decisions_timestamp ON activity_decisions (timestamp);
