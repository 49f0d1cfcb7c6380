-- fraudgen schema v1: transactions, WORM batch audit, job state, per-file persistence progress, statistics.
-- Applied by fraudgen.sinks.migrate (tracked in schema_migrations); never edit once released: add 002_*.sql.

CREATE TABLE synthetic_transactions (
    transaction_id    text PRIMARY KEY,            -- the UNIQUE index; bulk loads use ON CONFLICT on it
    batch_id          text NOT NULL,
    tenant_id         text NOT NULL DEFAULT 'default',
    "timestamp"       timestamptz NOT NULL,
    user_id           text NOT NULL,
    account_id        text NOT NULL,
    card_id           text,
    merchant_id       text,
    merchant_category text CHECK (merchant_category ~ '^[0-9]{4}$'),
    counterparty_id   text,
    amount            numeric(18, 2) NOT NULL CHECK (amount > 0),
    currency          char(3) NOT NULL,
    transaction_type  text NOT NULL CHECK (transaction_type IN
                        ('purchase', 'refund', 'chargeback', 'transfer', 'cash_withdrawal', 'deposit')),
    channel           text NOT NULL CHECK (channel IN
                        ('card_present', 'ecommerce', 'atm', 'mobile_app', 'online_banking')),
    status            text NOT NULL CHECK (status IN ('approved', 'declined')),
    device_id         text,
    ip_address        inet,
    country           char(2) NOT NULL,
    latitude          double precision NOT NULL,
    longitude         double precision NOT NULL,
    is_fraud          boolean NOT NULL,
    fraud_scenario    text,
    fraud_case_id     text,
    source            text NOT NULL DEFAULT 'rules',
    signature         char(64) NOT NULL,
    loaded_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX synthetic_transactions_user_id_idx ON synthetic_transactions (user_id);
CREATE INDEX synthetic_transactions_batch_id_idx ON synthetic_transactions (batch_id);
CREATE INDEX synthetic_transactions_timestamp_idx ON synthetic_transactions ("timestamp");
CREATE INDEX synthetic_transactions_is_fraud_idx ON synthetic_transactions (is_fraud);

-- WORM audit trail: one row per batch, its content hash = the manifest's batch_sha256.
CREATE TABLE synthetic_batches (
    batch_id       text PRIMARY KEY,
    sha256_hash    char(64) NOT NULL CHECK (sha256_hash ~ '^[0-9a-f]{64}$'),
    schema_version text NOT NULL,
    rows           bigint NOT NULL CHECK (rows >= 0),
    fraud_rows     bigint NOT NULL CHECK (fraud_rows >= 0),
    manifest       jsonb NOT NULL,
    metadata       jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at     timestamptz NOT NULL DEFAULT now()
);

CREATE FUNCTION synthetic_batches_worm() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'synthetic_batches is write-once (WORM): % is not allowed', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;
CREATE TRIGGER synthetic_batches_no_update_delete
    BEFORE UPDATE OR DELETE ON synthetic_batches
    FOR EACH ROW EXECUTE FUNCTION synthetic_batches_worm();
CREATE TRIGGER synthetic_batches_no_truncate
    BEFORE TRUNCATE ON synthetic_batches
    FOR EACH STATEMENT EXECUTE FUNCTION synthetic_batches_worm();

-- Mutable state of each sink of each batch (what `fraudgen persist` resumes from).
CREATE TABLE generation_jobs (
    batch_id   text NOT NULL,
    sink       text NOT NULL CHECK (sink IN ('postgres', 'kafka', 's3')),
    state      text NOT NULL CHECK (state IN ('pending', 'running', 'done', 'failed')),
    rows_total bigint NOT NULL DEFAULT 0,
    rows_done  bigint NOT NULL DEFAULT 0,
    error      text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (batch_id, sink)
);

-- Daily counts, fraud rate and amounts per scenario. One row per (tenant, UTC day, scenario) where
-- scenario is a fraud scenario name, 'legit' (rows with no scenario) or 'all' (the whole day).
-- fraud_rate = fraud rows of that scenario / all rows of that day (for 'all': the day's fraud rate).
CREATE VIEW fraud_statistics AS
WITH per_scenario AS (
    SELECT tenant_id,
           ("timestamp" AT TIME ZONE 'UTC')::date AS day,
           COALESCE(fraud_scenario, 'legit') AS fraud_scenario,
           count(*) AS tx_count,
           count(*) FILTER (WHERE is_fraud) AS fraud_count,
           sum(amount) AS total_amount,
           COALESCE(sum(amount) FILTER (WHERE is_fraud), 0) AS fraud_amount
    FROM synthetic_transactions
    GROUP BY 1, 2, 3
), per_day AS (
    SELECT tenant_id, day, 'all'::text AS fraud_scenario, sum(tx_count)::bigint AS tx_count,
           sum(fraud_count)::bigint AS fraud_count, sum(total_amount) AS total_amount,
           sum(fraud_amount) AS fraud_amount
    FROM per_scenario
    GROUP BY 1, 2
), unioned AS (
    SELECT * FROM per_scenario
    UNION ALL
    SELECT * FROM per_day
)
SELECT u.tenant_id,
       u.day,
       u.fraud_scenario,
       u.tx_count,
       u.fraud_count,
       d.tx_count AS day_tx_count,
       round(u.fraud_count::numeric / d.tx_count, 6) AS fraud_rate,
       u.total_amount,
       u.fraud_amount,
       round(u.total_amount / u.tx_count, 2) AS avg_amount
FROM unioned u
JOIN per_day d USING (tenant_id, day);
