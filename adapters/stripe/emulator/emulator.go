// Package emulator is a stateful Stripe API emulator for tests and local runs.
//
// It serves the part of Stripe's REST API (version 2023-10-16) that TaskPod
// Billing uses: customers, SetupIntents, PaymentMethods, PaymentIntents with
// manual capture, charges, balance transactions, transfers, refunds, transfer
// reversals and disputes. Requests and responses have the shapes that
// stripe-go v76 sends and decodes. All state lives in the PostgreSQL schema
// stripe_emulator, so it survives restarts and can be shared by several
// processes.
//
// Routes under /_emulator/ form a control API for tests: fault injection,
// object inspection, request counters, a movable clock and a reset.
package emulator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// APIVersion is the Stripe API version whose shapes the emulator serves.
const APIVersion = "2023-10-16"

// Config sets the emulator's fees, clock, logging and webhook delivery.
type Config struct {
	// Logger receives start, stop and error records. Nil uses slog.Default.
	Logger *slog.Logger
	// FeePercentBps is the variable processing fee in basis points of the
	// captured amount. Zero means 290 (2.9 %).
	FeePercentBps int64
	// FeeFixed is the fixed processing fee per capture in minor units of the
	// charge's currency. Zero means 30.
	FeeFixed int64
	// WebhookURL receives signed event deliveries when set.
	WebhookURL string
	// WebhookSecret is the signing secret for the Stripe-Signature header.
	WebhookSecret string
	// Now is the base clock. Nil uses time.Now. The control API adds an
	// offset stored in the database on top of it.
	Now func() time.Time
}

// Emulator serves the emulated Stripe API from a PostgreSQL pool.
type Emulator struct {
	pool   *pgxpool.Pool
	cfg    Config
	log    *slog.Logger
	faults *faultSet
	hooks  *webhookState
	mux    *http.ServeMux

	closeOnce sync.Once
}

// New creates the stripe_emulator schema if it is missing and returns an
// emulator that stores its state through pool.
func New(ctx context.Context, pool *pgxpool.Pool, cfg Config) (*Emulator, error) {
	if pool == nil {
		return nil, errors.New("emulator: pool is nil")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.FeePercentBps == 0 {
		cfg.FeePercentBps = 290
	}
	if cfg.FeeFixed == 0 {
		cfg.FeeFixed = 30
	}
	if cfg.FeePercentBps < 0 || cfg.FeeFixed < 0 {
		return nil, fmt.Errorf("emulator: fees must not be negative, got FeePercentBps=%d FeeFixed=%d", cfg.FeePercentBps, cfg.FeeFixed)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if err := createSchema(ctx, pool); err != nil {
		return nil, err
	}
	e := &Emulator{
		pool:   pool,
		cfg:    cfg,
		log:    cfg.Logger.With("component", "stripe_emulator"),
		faults: newFaultSet(1),
		hooks:  newWebhookState(),
	}
	e.mux = e.routes()
	return e, nil
}

// Handler returns the HTTP handler for both the Stripe API under /v1/ and the
// control API under /_emulator/.
func (e *Emulator) Handler() http.Handler {
	return e.mux
}

// schemaLockKey is the pg_advisory_xact_lock key that serialises schema
// creation between processes starting at the same time.
const schemaLockKey = 0x5354_5250_454d_55 // "STRPEMU"

var schemaStatements = []string{
	`CREATE SCHEMA IF NOT EXISTS stripe_emulator`,
	// objects stores every Stripe object as its JSON body. seq orders lists,
	// expires_at is the capture deadline of a PaymentIntent in requires_capture.
	`CREATE TABLE IF NOT EXISTS stripe_emulator.objects (
		id         text PRIMARY KEY,
		type       text NOT NULL,
		seq        bigserial NOT NULL,
		created    bigint NOT NULL,
		expires_at bigint,
		data       jsonb NOT NULL
	)`,
	`CREATE INDEX IF NOT EXISTS objects_type_seq ON stripe_emulator.objects (type, seq)`,
	`CREATE INDEX IF NOT EXISTS objects_expires_at ON stripe_emulator.objects (expires_at) WHERE expires_at IS NOT NULL`,
	`CREATE TABLE IF NOT EXISTS stripe_emulator.idempotency_keys (
		api_key     text NOT NULL,
		key         text NOT NULL,
		method      text NOT NULL,
		path        text NOT NULL,
		params_hash text NOT NULL,
		status      int NOT NULL,
		body        bytea NOT NULL,
		created_at  bigint NOT NULL,
		PRIMARY KEY (api_key, key)
	)`,
	`CREATE TABLE IF NOT EXISTS stripe_emulator.clock (
		singleton      boolean PRIMARY KEY DEFAULT true CHECK (singleton),
		offset_seconds bigint NOT NULL
	)`,
	`INSERT INTO stripe_emulator.clock (singleton, offset_seconds) VALUES (true, 0) ON CONFLICT DO NOTHING`,
	`CREATE TABLE IF NOT EXISTS stripe_emulator.request_counts (
		method    text NOT NULL,
		path      text NOT NULL,
		requests  bigint NOT NULL DEFAULT 0,
		mutations bigint NOT NULL DEFAULT 0,
		replays   bigint NOT NULL DEFAULT 0,
		PRIMARY KEY (method, path)
	)`,
	`CREATE TABLE IF NOT EXISTS stripe_emulator.connected_accounts (
		id                 text PRIMARY KEY,
		insufficient_funds boolean NOT NULL DEFAULT false
	)`,
	`CREATE TABLE IF NOT EXISTS stripe_emulator.events (
		id              text PRIMARY KEY,
		seq             bigserial NOT NULL,
		type            text NOT NULL,
		created         bigint NOT NULL,
		body            bytea NOT NULL,
		delivered       boolean NOT NULL DEFAULT false,
		attempts        int NOT NULL DEFAULT 0,
		next_attempt_at timestamptz NOT NULL DEFAULT now(),
		last_error      text,
		gave_up         boolean NOT NULL DEFAULT false
	)`,
	`ALTER TABLE stripe_emulator.events ADD COLUMN IF NOT EXISTS gave_up boolean NOT NULL DEFAULT false`,
	`CREATE INDEX IF NOT EXISTS events_pending ON stripe_emulator.events (seq) WHERE NOT delivered`,
}

func createSchema(ctx context.Context, pool *pgxpool.Pool) error {
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, int64(schemaLockKey)); err != nil {
			return err
		}
		for _, stmt := range schemaStatements {
			if _, err := tx.Exec(ctx, stmt); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("emulator: create schema stripe_emulator: %w", err)
	}
	return nil
}

// clockNow returns the emulator's current time in unix seconds: the base
// clock plus the offset that /_emulator/clock/advance stored.
func (e *Emulator) clockNow(ctx context.Context, q querier) (int64, error) {
	var offset int64
	err := q.QueryRow(ctx, `SELECT offset_seconds FROM stripe_emulator.clock`).Scan(&offset)
	if err != nil {
		return 0, fmt.Errorf("read emulator clock: %w", err)
	}
	return e.cfg.Now().Unix() + offset, nil
}
