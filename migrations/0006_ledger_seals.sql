-- Tamper evidence for the ledger: a single sealer gives every committed
-- ledger transaction a position in one gap-free sequence and a SHA-256 hash
-- that covers its content and the previous hash. Ledger rows themselves are
-- never updated.

-- Work queue of the sealer: one row per committed, not yet sealed ledger
-- transaction. Writers only insert (through the trigger below) and the
-- sealer deletes what it sealed, so the table stays small and nobody scans
-- the whole ledger to find new transactions.
CREATE TABLE ledger_unsealed (
    id             bigserial PRIMARY KEY,
    transaction_id text NOT NULL UNIQUE
);

CREATE FUNCTION ledger_queue_for_sealing() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO ledger_unsealed (transaction_id) VALUES (NEW.id);
    RETURN NULL;
END;
$$;
CREATE TRIGGER ledger_transactions_queue_for_sealing AFTER INSERT ON ledger_transactions
    FOR EACH ROW EXECUTE FUNCTION ledger_queue_for_sealing();

-- Transactions written before this migration are sealed first, oldest first.
INSERT INTO ledger_unsealed (transaction_id)
SELECT id FROM ledger_transactions ORDER BY recorded_at, id;

CREATE TABLE ledger_seals (
    sequence       bigint PRIMARY KEY CHECK (sequence > 0),
    transaction_id text NOT NULL UNIQUE REFERENCES ledger_transactions (id),
    -- 32 bytes each; the first seal's prev_hash is 32 zero bytes.
    prev_hash      bytea NOT NULL CHECK (length(prev_hash) = 32),
    hash           bytea NOT NULL CHECK (length(hash) = 32),
    sealed_at      timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE TRIGGER ledger_seals_immutable BEFORE UPDATE OR DELETE ON ledger_seals
    FOR EACH ROW EXECUTE FUNCTION ledger_reject_change();
CREATE TRIGGER ledger_seals_no_truncate BEFORE TRUNCATE ON ledger_seals
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_reject_change();

-- A seal must extend the chain: the next sequence number and the hash of
-- the current head as prev_hash. Rows inserted earlier by the same statement
-- are visible here, so one INSERT may append several seals in order.
CREATE FUNCTION ledger_check_seal_link() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    head_sequence bigint;
    head_hash     bytea;
BEGIN
    SELECT sequence, hash INTO head_sequence, head_hash FROM ledger_seals ORDER BY sequence DESC LIMIT 1;
    IF NOT FOUND THEN
        head_sequence := 0;
        head_hash := decode(repeat('00', 32), 'hex');
    END IF;
    IF NEW.sequence <> head_sequence + 1 OR NEW.prev_hash <> head_hash THEN
        RAISE EXCEPTION 'seal % of ledger transaction % does not extend the chain head at sequence %',
            NEW.sequence, NEW.transaction_id, head_sequence
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END;
$$;
CREATE TRIGGER ledger_seals_extend_chain BEFORE INSERT ON ledger_seals
    FOR EACH ROW EXECUTE FUNCTION ledger_check_seal_link();

-- Auditor filters by Stripe object.
CREATE INDEX ledger_transactions_stripe_payment_intent ON ledger_transactions (stripe_payment_intent_id)
    WHERE stripe_payment_intent_id <> '';
CREATE INDEX ledger_transactions_stripe_charge ON ledger_transactions (stripe_charge_id)
    WHERE stripe_charge_id <> '';
CREATE INDEX ledger_transactions_stripe_balance_transaction ON ledger_transactions (stripe_balance_transaction_id)
    WHERE stripe_balance_transaction_id <> '';
CREATE INDEX ledger_transactions_stripe_transfer ON ledger_transactions (stripe_transfer_id)
    WHERE stripe_transfer_id <> '';
CREATE INDEX ledger_transactions_stripe_refund ON ledger_transactions (stripe_refund_id)
    WHERE stripe_refund_id <> '';

-- Balances are sums over entries; this index answers them with index-only
-- scans instead of reading the heap.
CREATE INDEX ledger_entries_balance ON ledger_entries (account_id, currency, effective_at)
    INCLUDE (amount, pending, transaction_id);

CREATE INDEX audit_log_action ON audit_log (action, id);
