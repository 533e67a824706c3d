-- Double-entry ledger. Rows are insert-only: triggers reject UPDATE and
-- DELETE, and a deferred constraint trigger rejects, at commit, any
-- transaction whose entries do not sum to zero in every currency.

CREATE TABLE ledger_accounts (
    id             text PRIMARY KEY,
    normal_balance text NOT NULL CHECK (normal_balance IN ('debit', 'credit')),
    created_at     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE ledger_transactions (
    id                            text PRIMARY KEY,
    kind                          text NOT NULL CHECK (kind IN ('hold', 'capture', 'void', 'settlement', 'transfer', 'reversal')),
    pending                       boolean NOT NULL DEFAULT false,
    -- A capture or void names the hold it resolves; the unique index makes a
    -- hold resolve at most once.
    resolves_id                   text REFERENCES ledger_transactions (id),
    reverses_id                   text REFERENCES ledger_transactions (id),
    actor                         text NOT NULL,
    request_id                    text NOT NULL DEFAULT '',
    reason                        text NOT NULL DEFAULT '',
    task_id                       text NOT NULL DEFAULT '',
    payment_id                    text NOT NULL DEFAULT '',
    stripe_payment_intent_id      text NOT NULL DEFAULT '',
    stripe_charge_id              text NOT NULL DEFAULT '',
    stripe_balance_transaction_id text NOT NULL DEFAULT '',
    stripe_transfer_id            text NOT NULL DEFAULT '',
    stripe_refund_id              text NOT NULL DEFAULT '',
    effective_at                  timestamptz NOT NULL,
    recorded_at                   timestamptz NOT NULL DEFAULT clock_timestamp(),
    CHECK (NOT (pending AND kind <> 'hold')),
    CHECK ((resolves_id IS NOT NULL) = (kind IN ('capture', 'void'))),
    CHECK ((reverses_id IS NOT NULL) = (kind = 'reversal'))
);
CREATE UNIQUE INDEX ledger_transactions_resolves ON ledger_transactions (resolves_id) WHERE resolves_id IS NOT NULL;
CREATE UNIQUE INDEX ledger_transactions_reverses ON ledger_transactions (reverses_id) WHERE reverses_id IS NOT NULL;
CREATE INDEX ledger_transactions_task ON ledger_transactions (task_id) WHERE task_id <> '';
CREATE INDEX ledger_transactions_payment ON ledger_transactions (payment_id) WHERE payment_id <> '';

CREATE TABLE ledger_entries (
    id             bigserial PRIMARY KEY,
    transaction_id text NOT NULL REFERENCES ledger_transactions (id),
    account_id     text NOT NULL REFERENCES ledger_accounts (id),
    currency       text NOT NULL,
    -- Minor units; positive debits, negative credits.
    amount         bigint NOT NULL CHECK (amount <> 0),
    -- Copied from the transaction so balance queries need no join.
    pending        boolean NOT NULL,
    effective_at   timestamptz NOT NULL
);
CREATE INDEX ledger_entries_transaction ON ledger_entries (transaction_id);
CREATE INDEX ledger_entries_account ON ledger_entries (account_id, currency, effective_at, id);

CREATE FUNCTION ledger_reject_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% on % is not allowed: ledger rows are immutable; post a reversal instead', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END;
$$;

CREATE TRIGGER ledger_transactions_immutable BEFORE UPDATE OR DELETE ON ledger_transactions
    FOR EACH ROW EXECUTE FUNCTION ledger_reject_change();
CREATE TRIGGER ledger_entries_immutable BEFORE UPDATE OR DELETE ON ledger_entries
    FOR EACH ROW EXECUTE FUNCTION ledger_reject_change();
CREATE TRIGGER ledger_transactions_no_truncate BEFORE TRUNCATE ON ledger_transactions
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_reject_change();
CREATE TRIGGER ledger_entries_no_truncate BEFORE TRUNCATE ON ledger_entries
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_reject_change();

-- Runs at commit for every inserted transaction, whatever code wrote it.
CREATE FUNCTION ledger_check_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    bad record;
    entry_count int;
BEGIN
    SELECT currency, sum(amount) AS total INTO bad
      FROM ledger_entries WHERE transaction_id = NEW.id
     GROUP BY currency HAVING sum(amount) <> 0 LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'ledger transaction % does not balance: % entries sum to %', NEW.id, bad.currency, bad.total
            USING ERRCODE = 'check_violation';
    END IF;
    SELECT count(*) INTO entry_count FROM ledger_entries WHERE transaction_id = NEW.id;
    IF (NEW.kind = 'void') <> (entry_count = 0) THEN
        RAISE EXCEPTION 'ledger transaction % (%) has % entries', NEW.id, NEW.kind, entry_count
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END;
$$;

CREATE CONSTRAINT TRIGGER ledger_transactions_balanced AFTER INSERT ON ledger_transactions
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION ledger_check_balanced();

-- An entry added later to an already committed transaction would escape the
-- check above, so entries must be inserted in their transaction's own unit of work.
CREATE FUNCTION ledger_check_entry_transaction() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM ledger_transactions WHERE id = NEW.transaction_id AND xmin = pg_current_xact_id()::xid) THEN
        RAISE EXCEPTION 'entry for ledger transaction % must be written in the same database transaction', NEW.transaction_id
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END;
$$;
CREATE TRIGGER ledger_entries_same_transaction BEFORE INSERT ON ledger_entries
    FOR EACH ROW EXECUTE FUNCTION ledger_check_entry_transaction();

-- Append-only log of admin actions outside the ledger.
CREATE TABLE audit_log (
    id         bigserial PRIMARY KEY,
    at         timestamptz NOT NULL,
    actor      text NOT NULL,
    action     text NOT NULL,
    subject    text NOT NULL,
    request_id text NOT NULL DEFAULT '',
    details    jsonb NOT NULL DEFAULT '{}'
);
CREATE TRIGGER audit_log_immutable BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION ledger_reject_change();
