package postgres

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/taskpod/billing/ports"
)

var (
	_ ports.StripeStore = (*Store)(nil)
	_ ports.Locker      = (*Store)(nil)
)

// InStripeTx runs fn in a unit of work like InTx, with the repositories of
// Stripe events, refunds, transfer reversals, disputes and replaced holds.
func (s *Store) InStripeTx(ctx context.Context, fn func(ctx context.Context, tx ports.StripeTx) error) error {
	return s.InTx(ctx, func(ctx context.Context, tx ports.Tx) error {
		uow, ok := tx.(*unitOfWork)
		if !ok {
			return fmt.Errorf("InStripeTx: unit of work of type %T is not this store's", tx)
		}
		return fn(ctx, stripeUnitOfWork{uow})
	})
}

// stripeUnitOfWork implements ports.StripeTx on the same database
// transaction as the core repositories.
type stripeUnitOfWork struct {
	*unitOfWork
}

func (u stripeUnitOfWork) Events() ports.EventRepository     { return eventRepository{u.tx} }
func (u stripeUnitOfWork) Refunds() ports.RefundRepository   { return refundRepository{u.tx} }
func (u stripeUnitOfWork) Disputes() ports.DisputeRepository { return disputeRepository{u.tx} }
func (u stripeUnitOfWork) Holds() ports.HoldRepository       { return holdRepository{u.tx} }
func (u stripeUnitOfWork) Lookups() ports.LookupRepository   { return lookupRepository{u.tx} }

// TryLock takes a session-level pg_try_advisory_lock keyed by a hash of
// name on a connection held until unlock, so one instance at a time runs
// the named job. The key space is shared with the migration lock, whose key
// is a fixed constant that a 64-bit FNV hash of a job name is unlikely to hit.
func (s *Store) TryLock(ctx context.Context, name string) (func(), bool, error) {
	h := fnv.New64a()
	h.Write([]byte("taskpod:" + name))
	key := int64(h.Sum64())

	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return nil, false, fmt.Errorf("take lock %s: acquire connection: %w", name, err)
	}
	var acquired bool
	if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, key).Scan(&acquired); err != nil {
		conn.Release()
		return nil, false, fmt.Errorf("take lock %s: %w", name, err)
	}
	if !acquired {
		conn.Release()
		return nil, false, nil
	}
	unlock := func() {
		unlockCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if _, err := conn.Exec(unlockCtx, `SELECT pg_advisory_unlock($1)`, key); err != nil {
			// Closing the session is the only other way to drop the lock,
			// and a connection returned to the pool would keep it.
			s.logger.Warn("release advisory lock failed; closing its connection", "lock", name, "error", err)
			_ = conn.Hijack().Close(unlockCtx)
			return
		}
		conn.Release()
	}
	return unlock, true, nil
}

// lookupRepository implements ports.LookupRepository.
type lookupRepository struct {
	tx pgx.Tx
}

func (r lookupRepository) scanOne(ctx context.Context, what, query string, arg any) (string, bool, error) {
	var id string
	err := r.tx.QueryRow(ctx, query, arg).Scan(&id)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", false, nil
	}
	if err != nil {
		return "", false, mapError(err, what)
	}
	return id, true, nil
}

func (r lookupRepository) CustomerByStripeID(ctx context.Context, stripeCustomerID string) (string, bool, error) {
	return r.scanOne(ctx, "find customer of "+stripeCustomerID,
		`SELECT user_id FROM customers WHERE stripe_customer_id = $1`, stripeCustomerID)
}

func (r lookupRepository) PaymentMethodOwner(ctx context.Context, paymentMethodID string) (string, bool, error) {
	return r.scanOne(ctx, "find owner of payment method "+paymentMethodID,
		`SELECT customer_user_id FROM payment_methods WHERE id = $1`, paymentMethodID)
}

func (r lookupRepository) OperationOpen(ctx context.Context, subject, kind string) (bool, error) {
	var open bool
	err := r.tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM operations
		WHERE subject = $1 AND kind = $2 AND finished_at IS NULL)`, subject, kind).Scan(&open)
	return open, mapError(err, fmt.Sprintf("read open %s operation of %s", kind, subject))
}

func (r lookupRepository) PaymentByCharge(ctx context.Context, chargeID string) (string, bool, error) {
	if chargeID == "" {
		return "", false, nil
	}
	return r.scanOne(ctx, "find payment of charge "+chargeID,
		`SELECT id FROM payments WHERE stripe_charge_id = $1 ORDER BY created_at LIMIT 1`, chargeID)
}

func (r lookupRepository) PaymentByTransfer(ctx context.Context, transferID string) (string, bool, error) {
	if transferID == "" {
		return "", false, nil
	}
	return r.scanOne(ctx, "find payment of transfer "+transferID,
		`SELECT id FROM payments WHERE stripe_transfer_id = $1 ORDER BY created_at LIMIT 1`, transferID)
}

// ExpiringHolds skips payments whose reauthorize step is still running:
// its row exists and is not done.
func (r lookupRepository) ExpiringHolds(ctx context.Context, deadline time.Time, limit int) ([]string, error) {
	rows, err := r.tx.Query(ctx, `
		SELECT p.id FROM payments p JOIN tasks t ON t.id = p.task_id
		 WHERE p.status = 'authorized' AND p.capture_before IS NOT NULL AND p.capture_before < $1
		   AND t.status = 'matched'
		   AND NOT EXISTS (SELECT 1 FROM payment_steps s
		                    WHERE s.payment_id = p.id AND s.step = 'reauthorize' AND NOT s.done)
		 ORDER BY p.capture_before, p.id LIMIT $2`, deadline, limit)
	if err != nil {
		return nil, mapError(err, "list expiring holds")
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	return ids, mapError(err, "list expiring holds")
}

func (r lookupRepository) AbandonedPayments(ctx context.Context, cutoff time.Time, limit int) ([]string, error) {
	rows, err := r.tx.Query(ctx, `
		SELECT p.id FROM payments p JOIN tasks t ON t.id = p.task_id
		 WHERE p.status IN ('authorizing', 'requires_customer_action') AND p.created_at < $1
		   AND t.status = 'pending_payment'
		 ORDER BY p.created_at, p.id LIMIT $2`, cutoff, limit)
	if err != nil {
		return nil, mapError(err, "list abandoned payments")
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	return ids, mapError(err, "list abandoned payments")
}

// holdRepository implements ports.HoldRepository.
type holdRepository struct {
	tx pgx.Tx
}

func (r holdRepository) AddReplaced(ctx context.Context, paymentID, paymentIntentID string, at time.Time) error {
	_, err := r.tx.Exec(ctx, `
		INSERT INTO replaced_holds (payment_intent_id, payment_id, replaced_at) VALUES ($1, $2, $3)
		ON CONFLICT (payment_intent_id) DO NOTHING`, paymentIntentID, paymentID, at)
	return mapError(err, "record replaced hold "+paymentIntentID)
}

func (r holdRepository) NextReplaced(ctx context.Context, paymentID string) (string, bool, error) {
	var id string
	err := r.tx.QueryRow(ctx, `
		SELECT payment_intent_id FROM replaced_holds WHERE payment_id = $1 AND released_at IS NULL
		 ORDER BY replaced_at, payment_intent_id LIMIT 1`, paymentID).Scan(&id)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", false, nil
	}
	return id, err == nil, mapError(err, "read replaced holds of payment "+paymentID)
}

func (r holdRepository) MarkReleased(ctx context.Context, paymentIntentID string, at time.Time) error {
	_, err := r.tx.Exec(ctx, `UPDATE replaced_holds SET released_at = $2 WHERE payment_intent_id = $1 AND released_at IS NULL`,
		paymentIntentID, at)
	return mapError(err, "mark replaced hold "+paymentIntentID+" released")
}

func (r holdRepository) IsReplaced(ctx context.Context, paymentIntentID string) (bool, error) {
	var found bool
	err := r.tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM replaced_holds WHERE payment_intent_id = $1)`, paymentIntentID).Scan(&found)
	return found, mapError(err, "read replaced hold "+paymentIntentID)
}
