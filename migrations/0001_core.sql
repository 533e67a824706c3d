-- Core billing schema: customers, cards, agents, tasks, payments, tokens.

CREATE TABLE customers (
    user_id                   text PRIMARY KEY,
    stripe_customer_id        text UNIQUE,
    default_payment_method_id text,
    created_at                timestamptz NOT NULL DEFAULT now(),
    updated_at                timestamptz NOT NULL DEFAULT now()
);

-- Display data of saved cards as Stripe reports them; never a card number.
CREATE TABLE payment_methods (
    id               text PRIMARY KEY,
    customer_user_id text NOT NULL REFERENCES customers (user_id),
    brand            text NOT NULL,
    last4            text NOT NULL CHECK (last4 ~ '^[0-9]{4}$'),
    exp_month        int  NOT NULL CHECK (exp_month BETWEEN 1 AND 12),
    exp_year         int  NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX payment_methods_customer ON payment_methods (customer_user_id, created_at);

CREATE TABLE agents (
    id                 text PRIMARY KEY,
    name               text NOT NULL,
    price_amount       bigint NOT NULL CHECK (price_amount >= 0),
    currency           text NOT NULL,
    connect_account_id text NOT NULL DEFAULT '',
    active             boolean NOT NULL DEFAULT true,
    created_at         timestamptz NOT NULL,
    updated_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX agents_created ON agents (created_at DESC, id DESC);

CREATE TABLE tasks (
    id               text PRIMARY KEY,
    customer_id      text NOT NULL,
    agent_id         text NOT NULL REFERENCES agents (id),
    agent_name       text NOT NULL,
    title            text NOT NULL,
    description      text NOT NULL DEFAULT '',
    max_price_amount bigint NOT NULL CHECK (max_price_amount >= 0),
    currency         text NOT NULL,
    status           text NOT NULL CHECK (status IN ('pending_payment', 'matched', 'completed', 'failed', 'cancelled')),
    payment_id       text,
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL
);
CREATE INDEX tasks_customer ON tasks (customer_id, created_at DESC, id DESC);
CREATE INDEX tasks_agent ON tasks (agent_id, created_at DESC, id DESC);

CREATE TABLE payments (
    id                       text PRIMARY KEY,
    task_id                  text NOT NULL UNIQUE REFERENCES tasks (id),
    customer_id              text NOT NULL,
    agent_id                 text NOT NULL,
    stripe_customer_id       text NOT NULL,
    destination_account_id   text NOT NULL,
    amount                   bigint NOT NULL CHECK (amount > 0),
    currency                 text NOT NULL,
    capture_amount           bigint NOT NULL CHECK (capture_amount > 0 AND capture_amount <= amount),
    fee_rate_bps             int NOT NULL CHECK (fee_rate_bps BETWEEN 0 AND 10000),
    status                   text NOT NULL CHECK (status IN ('authorizing', 'requires_customer_action', 'authorized',
                                                             'captured', 'transferred', 'released', 'failed')),
    auto_charged             boolean NOT NULL,
    payment_method_id        text NOT NULL DEFAULT '',
    stripe_payment_intent_id text UNIQUE,
    client_secret            text NOT NULL DEFAULT '',
    decline_code             text NOT NULL DEFAULT '',
    failure_reason           text NOT NULL DEFAULT '',
    capture_before           timestamptz,
    captured_amount          bigint NOT NULL DEFAULT 0 CHECK (captured_amount >= 0 AND captured_amount <= amount),
    platform_fee             bigint NOT NULL DEFAULT 0 CHECK (platform_fee >= 0),
    agent_share              bigint NOT NULL DEFAULT 0 CHECK (agent_share >= 0),
    stripe_fee               bigint NOT NULL DEFAULT 0 CHECK (stripe_fee >= 0),
    stripe_charge_id         text NOT NULL DEFAULT '',
    stripe_balance_tx_id     text NOT NULL DEFAULT '',
    stripe_transfer_id       text NOT NULL DEFAULT '',
    transfer_failed_reason   text NOT NULL DEFAULT '',
    created_at               timestamptz NOT NULL,
    updated_at               timestamptz NOT NULL,
    -- The fee and the agent's share always add up to the captured amount.
    CHECK (platform_fee + agent_share = captured_amount)
);

-- Progress of each money step; attempt numbers the Stripe idempotency key.
CREATE TABLE payment_steps (
    payment_id  text NOT NULL REFERENCES payments (id),
    step        text NOT NULL CHECK (step IN ('authorize', 'capture', 'transfer', 'release')),
    attempt     int NOT NULL CHECK (attempt >= 1),
    claimed     boolean NOT NULL DEFAULT false,
    lease_until timestamptz,
    done        boolean NOT NULL DEFAULT false,
    last_error  text NOT NULL DEFAULT '',
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (payment_id, step)
);

-- Direct Stripe calls (card management) take their idempotency key from an
-- open operation, so a retried request reuses it and a new request does not.
CREATE TABLE operations (
    id          text PRIMARY KEY,
    subject     text NOT NULL,
    kind        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz
);
CREATE UNIQUE INDEX operations_open ON operations (subject, kind) WHERE finished_at IS NULL;

-- Bearer tokens, stored only as SHA-256 hashes of 256-bit random values.
CREATE TABLE api_tokens (
    id           text PRIMARY KEY,
    token_hash   bytea NOT NULL UNIQUE,
    role         text NOT NULL CHECK (role IN ('customer', 'agent', 'auditor', 'admin')),
    subject      text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    expires_at   timestamptz,
    revoked_at   timestamptz
);
