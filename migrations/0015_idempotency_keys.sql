-- Idempotency-Key records of the public API. A row is claimed before the
-- request runs and completed with its response afterwards, so a retry with
-- the same key replays the response instead of running the request again.
CREATE TABLE idempotency_keys (
    -- role:subject of the token, so two callers never share a key.
    scope            text NOT NULL,
    method           text NOT NULL,
    path             text NOT NULL,
    idempotency_key  text NOT NULL CHECK (length(idempotency_key) BETWEEN 1 AND 255),
    -- SHA-256 of the canonical request body; another body under the same
    -- key is rejected.
    request_hash     bytea NOT NULL,
    -- Id reserved for the object the request creates (a task id), kept
    -- across retries so a request that ran before a crash is found again.
    resource_id      text NOT NULL DEFAULT '',
    -- Random value of the request holding the claim; NULL when nobody does.
    claim_token      text,
    -- The claim is abandoned after this time, so a crash cannot block the
    -- key forever.
    locked_until     timestamptz,
    response_status  int CHECK (response_status BETWEEN 100 AND 599),
    response_headers jsonb NOT NULL DEFAULT '{}',
    response_body    bytea,
    created_at       timestamptz NOT NULL DEFAULT now(),
    completed_at     timestamptz,
    expires_at       timestamptz NOT NULL,
    PRIMARY KEY (scope, method, path, idempotency_key),
    CHECK ((completed_at IS NULL) = (response_status IS NULL))
);

-- The purge job deletes expired keys in batches in this order.
CREATE INDEX idempotency_keys_expires ON idempotency_keys (expires_at);
