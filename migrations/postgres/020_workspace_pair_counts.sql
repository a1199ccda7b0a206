-- SQLite's 020 adds workspace pair counts.
-- PostgreSQL keeps no decision counts (see 013), so this file only keeps the two ledgers alike.
SELECT 1;
