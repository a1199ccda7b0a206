-- Per-token daily record quotas: the limit on the token, and the records each token created per UTC day.
-- The store adds to a usage row in the same transaction as the decisions, so every server sharing the
-- database reads one count.
ALTER TABLE api_tokens ADD COLUMN daily_quota INTEGER;
CREATE TABLE IF NOT EXISTS token_usage (
    token_id TEXT NOT NULL,
    day TEXT NOT NULL,
    records INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (token_id, day)
) WITHOUT ROWID;
