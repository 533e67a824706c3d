-- Outbox of money steps, in the layout of watermill-sql's PostgreSQL queue
-- schema for the topic payment_steps: rows are deleted when acknowledged, so
-- the table holds only pending messages.
CREATE TABLE IF NOT EXISTS "watermill_payment_steps" (
    "offset"   SERIAL PRIMARY KEY,
    "uuid"     VARCHAR(36) NOT NULL,
    "payload"  JSON DEFAULT NULL,
    "metadata" JSON DEFAULT NULL,
    "acked"    BOOLEAN NOT NULL DEFAULT FALSE,
    "created_at" TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT CURRENT_TIMESTAMP
);
CREATE INDEX IF NOT EXISTS "watermill_payment_steps_delayed_until_idx"
    ON "watermill_payment_steps" ((metadata->>'_watermill_delayed_until'));

-- Messages that failed every relay attempt wait here for an operator.
CREATE TABLE outbox_quarantine (
    id             bigserial PRIMARY KEY,
    message_uuid   text NOT NULL,
    payment_id     text NOT NULL,
    step           text NOT NULL,
    request_id     text NOT NULL DEFAULT '',
    attempts       int NOT NULL,
    last_error     text NOT NULL,
    payload        jsonb NOT NULL,
    quarantined_at timestamptz NOT NULL DEFAULT now(),
    requeued_at    timestamptz,
    requeued_by    text NOT NULL DEFAULT ''
);
CREATE INDEX outbox_quarantine_open ON outbox_quarantine (quarantined_at) WHERE requeued_at IS NULL;
