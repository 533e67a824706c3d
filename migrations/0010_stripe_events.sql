-- Stripe's side of payments: received webhook events, hold renewals,
-- refunds, transfer reversals and disputes.

-- One row per received event id. The row is written in the unit of work
-- that applies the event, so a redelivered event finds it and has no effect.
-- A pending event waits for its object to become known or for Stripe to
-- answer, and a background worker retries it.
CREATE TABLE stripe_events (
    id                  text PRIMARY KEY,
    type                text NOT NULL,
    api_version         text NOT NULL,
    object_id           text NOT NULL DEFAULT '',
    object_type         text NOT NULL DEFAULT '',
    stripe_created_at   timestamptz NOT NULL,
    body                bytea NOT NULL,
    status              text NOT NULL CHECK (status IN ('processed', 'pending', 'failed')),
    attempts            int NOT NULL DEFAULT 1 CHECK (attempts >= 1),
    next_attempt_at     timestamptz,
    last_error          text NOT NULL DEFAULT '',
    received_at         timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    CHECK ((status = 'pending') = (next_attempt_at IS NOT NULL))
);
CREATE INDEX stripe_events_due ON stripe_events (next_attempt_at) WHERE status = 'pending';
CREATE INDEX stripe_events_object ON stripe_events (object_id) WHERE object_id <> '';

-- A payment whose hold expired waits in reauthorizing for a new hold.
ALTER TABLE payments DROP CONSTRAINT payments_status_check;
ALTER TABLE payments ADD CONSTRAINT payments_status_check CHECK (status IN ('authorizing', 'requires_customer_action',
    'authorized', 'reauthorizing', 'captured', 'transferred', 'released', 'failed'));
CREATE INDEX payments_capture_before ON payments (capture_before) WHERE status = 'authorized';
CREATE INDEX payments_awaiting_customer ON payments (created_at) WHERE status IN ('authorizing', 'requires_customer_action');
CREATE INDEX payments_charge ON payments (stripe_charge_id) WHERE stripe_charge_id <> '';
CREATE INDEX payments_transfer ON payments (stripe_transfer_id) WHERE stripe_transfer_id <> '';

ALTER TABLE payment_steps DROP CONSTRAINT payment_steps_step_check;
ALTER TABLE payment_steps ADD CONSTRAINT payment_steps_step_check CHECK (step IN ('authorize', 'capture', 'transfer',
    'release', 'reauthorize', 'release_previous', 'refund', 'transfer_reversal'));

-- The ledger kinds of refunds and disputes are added to whatever kinds the
-- constraint allows at this point, so kinds added by earlier migrations stay.
DO $$
DECLARE
    constraint_name text;
    kinds           text[];
    kind_list       text;
BEGIN
    SELECT c.conname, array(SELECT m[1] FROM regexp_matches(pg_get_constraintdef(c.oid), '''([a-z_]+)''', 'g') AS m)
      INTO constraint_name, kinds
      FROM pg_constraint c
     WHERE c.conrelid = 'ledger_transactions'::regclass AND c.contype = 'c'
       AND pg_get_constraintdef(c.oid) LIKE '%kind = ANY%' AND pg_get_constraintdef(c.oid) LIKE '%''settlement''%';
    IF constraint_name IS NULL THEN
        RAISE EXCEPTION 'no check constraint on ledger_transactions.kind was found';
    END IF;
    SELECT string_agg(quote_literal(k), ', ' ORDER BY k) INTO kind_list
      FROM (SELECT DISTINCT unnest(kinds || ARRAY['refund', 'transfer_reversal', 'dispute', 'dispute_reinstatement']) AS k) AS all_kinds;
    EXECUTE format('ALTER TABLE ledger_transactions DROP CONSTRAINT %I', constraint_name);
    EXECUTE format('ALTER TABLE ledger_transactions ADD CONSTRAINT %I CHECK (kind IN (%s))', constraint_name, kind_list);
END
$$;

-- Holds that a reauthorization replaced, until their PaymentIntent is
-- cancelled at Stripe.
CREATE TABLE replaced_holds (
    payment_intent_id text PRIMARY KEY,
    payment_id        text NOT NULL REFERENCES payments (id),
    replaced_at       timestamptz NOT NULL,
    released_at       timestamptz
);
CREATE INDEX replaced_holds_open ON replaced_holds (payment_id, replaced_at) WHERE released_at IS NULL;

-- Refunds run one at a time per payment, oldest first. Amounts are minor
-- units of the payment's currency.
CREATE TABLE refunds (
    id                     text PRIMARY KEY,
    payment_id             text NOT NULL REFERENCES payments (id),
    task_id                text NOT NULL,
    amount                 bigint NOT NULL CHECK (amount > 0),
    currency               text NOT NULL,
    reason                 text NOT NULL CHECK (reason IN ('requested_by_customer', 'duplicate', 'fraudulent')),
    status                 text NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed')),
    fee_returned           bigint NOT NULL DEFAULT 0 CHECK (fee_returned >= 0),
    agent_part             bigint NOT NULL DEFAULT 0 CHECK (agent_part >= 0),
    external               boolean NOT NULL DEFAULT false,
    stripe_refund_id       text UNIQUE,
    balance_transaction_id text NOT NULL DEFAULT '',
    failure_reason         text NOT NULL DEFAULT '',
    actor                  text NOT NULL DEFAULT '',
    request_id             text NOT NULL DEFAULT '',
    created_at             timestamptz NOT NULL,
    updated_at             timestamptz NOT NULL,
    CHECK (status <> 'succeeded' OR fee_returned + agent_part = amount)
);
CREATE INDEX refunds_payment ON refunds (payment_id, created_at, id);

-- Agent parts of refunds and disputes to take back from a transfer. A
-- failed one leaves the agent's receivable open in the ledger.
CREATE TABLE transfer_reversals (
    id                     text PRIMARY KEY,
    payment_id             text NOT NULL REFERENCES payments (id),
    task_id                text NOT NULL,
    agent_id               text NOT NULL,
    source_id              text NOT NULL UNIQUE,
    amount                 bigint NOT NULL CHECK (amount > 0),
    currency               text NOT NULL,
    status                 text NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed', 'canceled')),
    stripe_transfer_id     text NOT NULL,
    stripe_reversal_id     text UNIQUE,
    balance_transaction_id text NOT NULL DEFAULT '',
    failure_reason         text NOT NULL DEFAULT '',
    created_at             timestamptz NOT NULL,
    updated_at             timestamptz NOT NULL
);
CREATE INDEX transfer_reversals_payment ON transfer_reversals (payment_id, created_at, id);

CREATE TABLE disputes (
    id           text PRIMARY KEY,
    payment_id   text NOT NULL REFERENCES payments (id),
    task_id      text NOT NULL,
    charge_id    text NOT NULL,
    amount       bigint NOT NULL CHECK (amount > 0),
    currency     text NOT NULL,
    stripe_fee   bigint NOT NULL CHECK (stripe_fee >= 0),
    reason       text NOT NULL DEFAULT '',
    status       text NOT NULL CHECK (status IN ('open', 'won', 'lost')),
    fee_returned bigint NOT NULL CHECK (fee_returned >= 0),
    agent_part   bigint NOT NULL CHECK (agent_part >= 0),
    agent_side   text NOT NULL CHECK (agent_side IN ('reversal', 'payable', 'platform_loss')),
    created_at   timestamptz NOT NULL,
    closed_at    timestamptz,
    updated_at   timestamptz NOT NULL,
    CHECK (fee_returned + agent_part = amount)
);
CREATE INDEX disputes_payment ON disputes (payment_id);
