-- Free-text search (q): a trigram index over each decision's searchable text (search.SEARCH_FIELDS), so
-- substrings of paths and commands (`.env`, `git push --force`) are found. Contentless and without
-- positions: it only narrows the candidates, each of which is then checked against the row itself.
-- A background worker (workers/indexer.py) fills it by rowid in large batches, outside the writers'
-- transactions; rows above `indexed_upto` are searched by scanning them, so nothing is ever missed.
CREATE VIRTUAL TABLE IF NOT EXISTS activity_search
    USING fts5(body, tokenize = 'trigram', content = '', detail = 'none');

CREATE TABLE IF NOT EXISTS activity_search_progress (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    indexed_upto INTEGER NOT NULL
);
INSERT OR IGNORE INTO activity_search_progress (id, indexed_upto) VALUES (1, 0);
