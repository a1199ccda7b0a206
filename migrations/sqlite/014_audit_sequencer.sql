-- Nothing to do on SQLite: its one writer (BEGIN IMMEDIATE) numbers each leaf in the decision's own
-- transaction. PostgreSQL's 014 adds the queue its sequencer reads; the number is kept in step here.
SELECT 1;
