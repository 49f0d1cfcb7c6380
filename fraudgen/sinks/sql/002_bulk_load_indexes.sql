-- fraudgen schema v1, migration 002: indexes shaped for an append-only table loaded in bulk.
-- Same indexed columns as 001 (transaction_id UNIQUE, user_id, batch_id, timestamp, is_fraud), same queries
-- served; a million-row load costs about 40 % less server CPU (BENCHMARKS.md).
--
-- * batch_id, timestamp: BRIN instead of btree. Rows arrive batch by batch and, within each Parquet file,
--   in time order, so both columns follow the physical row order: a block-range index answers "rows of
--   batch X" and "rows between t1 and t2" by skipping every range outside them, is a few kilobytes instead
--   of tens of megabytes per million rows, and costs almost nothing per inserted row (ranges are summarised
--   in the background: autosummarize). What it cannot do is return rows in timestamp order: a query that
--   wants "the latest N rows of the whole table" sorts instead; create a btree on timestamp if you need that.
-- * is_fraud: a btree over a boolean where ~98 % of rows are false costs one index insert per row and is
--   never chosen for "NOT is_fraud" (a sequential scan wins); a partial index holds only the fraud rows and
--   serves "WHERE is_fraud" exactly as before.
-- * Identifiers compare byte-wise (COLLATE "C"): they are ASCII codes, their order means nothing
--   linguistically, and libc collations make every btree comparison a strcoll() call. Changing only the
--   collation rebuilds the indexes on these columns but does not rewrite the table.
DROP INDEX synthetic_transactions_batch_id_idx;
DROP INDEX synthetic_transactions_timestamp_idx;
DROP INDEX synthetic_transactions_is_fraud_idx;
ALTER TABLE synthetic_transactions
    ALTER COLUMN transaction_id TYPE text COLLATE "C",
    ALTER COLUMN batch_id TYPE text COLLATE "C",
    ALTER COLUMN user_id TYPE text COLLATE "C";
CREATE INDEX synthetic_transactions_batch_id_idx ON synthetic_transactions
    USING brin (batch_id) WITH (autosummarize = on);
CREATE INDEX synthetic_transactions_timestamp_idx ON synthetic_transactions
    USING brin ("timestamp") WITH (autosummarize = on);
CREATE INDEX synthetic_transactions_is_fraud_idx ON synthetic_transactions (is_fraud) WHERE is_fraud;
