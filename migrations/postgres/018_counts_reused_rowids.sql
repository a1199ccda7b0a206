-- SQLite's 018 keeps its decision counts exact when deleted rowids are reused.
-- PostgreSQL keeps no decision counts (see 013), so this file only keeps the two ledgers alike.
SELECT 1;
