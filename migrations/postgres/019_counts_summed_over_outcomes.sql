-- SQLite's 019 sums its all-time decision counts over the outcomes for facets without an outcome filter.
-- PostgreSQL keeps no decision counts (see 013), so this file only keeps the two ledgers alike.
SELECT 1;
