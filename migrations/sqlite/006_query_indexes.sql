-- Indexes shaped like the read queries: equality column, then time in listing order, then id, so a
-- filtered page is read in order and stops after `limit` rows instead of sorting every match.
-- The 004 single-column indexes stay (CAVRA's contract). Each index costs every insert, so only the
-- filters that drive a listing get one (cavra_ingest/store/sqlite.py DECISION_DRIVERS); other filters
-- are tested on the entries the driving index yields.

-- Unfiltered, time-range and low-cardinality listings walk this one newest first. It also carries the
-- facet fields, the scope and the rule, so those filters are tested on the index entry before any row is
-- read, and counts and facets over a time window never touch the table. New rows land at its head,
-- so its width costs bytes written, not random page reads.
CREATE INDEX IF NOT EXISTS idx_activity_decisions_time
    ON activity_decisions(
        timestamp DESC, decision_id, decision, severity, tenant_id, workspace_id,
        agent_id, repository, policy_pack, action_type, rule_id
    );

CREATE INDEX IF NOT EXISTS idx_activity_decisions_agent_time
    ON activity_decisions(agent_id, timestamp DESC, decision_id);
CREATE INDEX IF NOT EXISTS idx_activity_decisions_repository_time
    ON activity_decisions(repository, timestamp DESC, decision_id);

-- A session's timeline is read oldest first.
CREATE INDEX IF NOT EXISTS idx_activity_decisions_session_time
    ON activity_decisions(session_id, timestamp, decision_id);

-- An auditor following one correlation id across sessions; without it that is a full scan.
CREATE INDEX IF NOT EXISTS idx_activity_decisions_correlation
    ON activity_decisions(correlation_id);

CREATE INDEX IF NOT EXISTS idx_activity_sessions_recent
    ON activity_sessions(updated_at DESC, session_id);
