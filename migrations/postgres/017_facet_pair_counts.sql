-- SQLite's 017 adds facet counts per policy pack, severity and action type to its decision counts.
-- PostgreSQL keeps no decision counts (see 013), so this file only keeps the two ledgers alike.
SELECT 1;
