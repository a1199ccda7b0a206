-- Facets of one rule read only that rule's decisions: rule_id had no index and no pair rows (a rule's
-- pair rows would outnumber the decisions, 020), so they read every entry of the time index (420-820 ms
-- at 5 M decisions). This index holds, after the rule and its time (a window is a range of it), every
-- facet field and the tenant scope, so the facets, histogram and time bounds of a rule filter read its
-- entries alone and never the table (docs/performance.md, "Rule facets at 5 M"). No CAVRA index starts
-- with rule_id, so CAVRA's store (CREATE INDEX IF NOT EXISTS by name) adds no duplicate of it.
-- Partial on a condition every rule filter's match meets: a statement may read the index only if it
-- states the condition (store/sqlite/listings.py), since, narrower than the time index, it would
-- otherwise be chosen for every full scan (facets and counts of no or other filters).
CREATE INDEX IF NOT EXISTS idx_activity_decisions_rule
    ON activity_decisions(
        rule_id, timestamp, decision, severity, repository, agent_id, policy_pack, action_type,
        tenant_id, workspace_id
    )
    WHERE rule_id IS NOT NULL;
