package postgres

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/taskpod/billing/ports"
)

// Retry limits of InTx for serialization failures and deadlocks.
const (
	maxTxAttempts  = 5
	retryBaseDelay = 10 * time.Millisecond
	retryMaxDelay  = 250 * time.Millisecond
)

// Store implements ports.Store on a pgx pool.
type Store struct {
	pool   *pgxpool.Pool
	outbox func(pgx.Tx) ports.Outbox
	logger *slog.Logger

	// retryDelay returns the pause before the given attempt (2 or later).
	retryDelay func(attempt int) time.Duration
	// commit ends a unit of work; tests replace it to simulate a lost
	// COMMIT response.
	commit func(ctx context.Context, tx pgx.Tx) error
}

var _ ports.Store = (*Store)(nil)

// NewStore returns a Store on pool. outbox builds the outbox bound to one
// database transaction. When outbox is nil, Tx.Outbox returns an outbox
// whose Enqueue always fails, so missing wiring fails the first unit of work
// that enqueues a message.
func NewStore(pool *pgxpool.Pool, outbox func(pgx.Tx) ports.Outbox) *Store {
	return &Store{
		pool:       pool,
		outbox:     outbox,
		logger:     slog.Default(),
		retryDelay: jitteredBackoff,
		commit:     func(ctx context.Context, tx pgx.Tx) error { return tx.Commit(ctx) },
	}
}

// WithLogger returns s logging retries to logger instead of slog.Default.
func (s *Store) WithLogger(logger *slog.Logger) *Store {
	s.logger = logger
	return s
}

// InTx runs fn in a READ COMMITTED transaction and commits when fn returns
// nil. On a serialization failure or deadlock, from fn or from the deferred
// constraint checks, it rolls back and runs fn again, up to 5 attempts in all
// with jittered backoff. A failed COMMIT returns an error wrapping
// ErrCommitUnknown and is not retried, because the database may have
// committed.
func (s *Store) InTx(ctx context.Context, fn func(ctx context.Context, tx ports.Tx) error) error {
	var err error
	for attempt := 1; attempt <= maxTxAttempts; attempt++ {
		if attempt > 1 {
			if waitErr := sleepContext(ctx, s.retryDelay(attempt)); waitErr != nil {
				return fmt.Errorf("unit of work abandoned after %d attempts: %w (last error: %w)", attempt-1, waitErr, err)
			}
		}

		var committing bool
		committing, err = s.runOnce(ctx, fn)
		if err == nil || committing || !isRetryable(err) {
			return err
		}
		s.logger.WarnContext(ctx, "unit of work rolled back and will be retried",
			"attempt", attempt, "max_attempts", maxTxAttempts, "error", err)
	}
	return fmt.Errorf("unit of work failed %d times on serialization failures or deadlocks: %w", maxTxAttempts, err)
}

// runOnce runs one attempt of a unit of work. committing reports that the
// error came from COMMIT, whose outcome is unknown.
func (s *Store) runOnce(ctx context.Context, fn func(ctx context.Context, tx ports.Tx) error) (committing bool, err error) {
	tx, err := s.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.ReadCommitted})
	if err != nil {
		return false, fmt.Errorf("begin unit of work: %w", err)
	}
	// Rollback after a successful Commit is a no-op; it also runs when fn
	// panics. It ignores ctx cancellation so the connection goes back clean.
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()

	if err := fn(ctx, &unitOfWork{tx: tx, outbox: s.outbox}); err != nil {
		return false, err
	}

	// Deferred constraint triggers, such as the ledger balance check, run
	// here rather than inside COMMIT, so their errors are known rollbacks
	// and not commit failures of unknown outcome.
	if _, err := tx.Exec(ctx, "SET CONSTRAINTS ALL IMMEDIATE"); err != nil {
		return false, mapError(err, "check deferred constraints")
	}

	if err := s.commit(ctx, tx); err != nil {
		return true, fmt.Errorf("commit unit of work: %w: %w", ErrCommitUnknown, err)
	}
	return false, nil
}

// jitteredBackoff returns a random pause between zero and an exponentially
// growing cap (full jitter), so writers that collided spread out.
func jitteredBackoff(attempt int) time.Duration {
	limit := retryBaseDelay << (attempt - 2)
	if limit > retryMaxDelay || limit <= 0 {
		limit = retryMaxDelay
	}
	return time.Duration(rand.Int64N(int64(limit))) + time.Millisecond
}

func sleepContext(ctx context.Context, d time.Duration) error {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-timer.C:
		return nil
	}
}

// unitOfWork implements ports.Tx on one open database transaction.
type unitOfWork struct {
	tx     pgx.Tx
	outbox func(pgx.Tx) ports.Outbox
}

func (u *unitOfWork) Customers() ports.CustomerRepository   { return customerRepository{u.tx} }
func (u *unitOfWork) Agents() ports.AgentRepository         { return agentRepository{u.tx} }
func (u *unitOfWork) Tasks() ports.TaskRepository           { return taskRepository{u.tx} }
func (u *unitOfWork) Payments() ports.PaymentRepository     { return paymentRepository{u.tx} }
func (u *unitOfWork) Ledger() ports.LedgerRepository        { return ledgerRepository{u.tx} }
func (u *unitOfWork) Operations() ports.OperationRepository { return operationRepository{u.tx} }
func (u *unitOfWork) Audit() ports.AuditLog                 { return auditLog{u.tx} }

func (u *unitOfWork) Outbox() ports.Outbox {
	if u.outbox == nil {
		return missingOutbox{}
	}
	return u.outbox(u.tx)
}

// errOutboxNotConfigured is returned by the outbox of a Store built without
// an outbox factory.
var errOutboxNotConfigured = errors.New("enqueue outbox message: no outbox is configured, so pass an outbox factory to postgres.NewStore")

// missingOutbox rejects every message, so a Store wired without an outbox
// fails the unit of work instead of dropping money steps.
type missingOutbox struct{}

func (missingOutbox) Enqueue(context.Context, ports.OutboxMessage) error {
	return errOutboxNotConfigured
}
