package application

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/taskpod/billing/domain"
	"github.com/taskpod/billing/ports"
)

var (
	// ErrStepBusy means another executor holds the step's lease; retry later.
	ErrStepBusy = errors.New("payment step is running in another executor")
	// ErrStepNotReady means an earlier step of the payment has not resolved.
	ErrStepNotReady = errors.New("payment step waits for an earlier step")
)

// relayActor names the relay in ledger records.
const relayActor = "system:relay"

// Steps runs the money steps of payments: authorize, capture, transfer,
// release, hold renewal, refunds and transfer reversals. Each run claims the
// step under a lease in one unit of work, calls Stripe with a key built from
// the payment id, the step and the stored attempt number, and records the
// outcome in another unit of work. A run that finds its step claimed before
// first reads from Stripe what happened, so a crash between the call and the
// record never acts twice.
type Steps struct {
	store    ports.Store
	gateway  ports.PaymentGateway
	clock    ports.Clock
	ids      ports.IDGenerator
	observer ports.PaymentObserver
	log      *slog.Logger
	leaseTTL time.Duration

	// stripe and refunds are the store and gateway seen through their
	// extended ports. Each is nil when they do not implement it, and then
	// the steps that need it fail with an error naming what is missing.
	stripe  ports.StripeStore
	refunds ports.RefundGateway
	// policy holds the domain.HoldExpiryPolicy for a hold that expired
	// before capture; empty releases the payment as HoldExpiryFail does.
	policy atomic.Value
}

// StepsConfig carries the executor's settings.
type StepsConfig struct {
	// LeaseTTL must exceed the gateway's request timeout, so a lease only
	// expires after the request that took it has ended.
	LeaseTTL time.Duration
}

// NewSteps builds the step executor.
func NewSteps(store ports.Store, gateway ports.PaymentGateway, clock ports.Clock, ids ports.IDGenerator,
	observer ports.PaymentObserver, cfg StepsConfig, log *slog.Logger) *Steps {
	if observer == nil {
		observer = ports.NopObserver{}
	}
	if cfg.LeaseTTL <= 0 {
		cfg.LeaseTTL = time.Minute
	}
	s := &Steps{store: store, gateway: gateway, clock: clock, ids: ids, observer: observer, log: log, leaseTTL: cfg.LeaseTTL}
	s.stripe, _ = store.(ports.StripeStore)
	s.refunds, _ = gateway.(ports.RefundGateway)
	return s
}

// SetHoldExpiryPolicy sets what happens when a hold expires before the
// task is captured. Until it is called an expired hold is released.
func (s *Steps) SetHoldExpiryPolicy(p domain.HoldExpiryPolicy) { s.policy.Store(p) }

func (s *Steps) holdExpiryPolicy() domain.HoldExpiryPolicy {
	p, _ := s.policy.Load().(domain.HoldExpiryPolicy)
	return p
}

// inTx runs fn in a unit of work of the extended store when there is one,
// so that steps can reach replaced holds, refunds and reversals.
func (s *Steps) inTx(ctx context.Context, fn func(ctx context.Context, tx ports.Tx) error) error {
	if s.stripe != nil {
		return s.stripe.InStripeTx(ctx, func(ctx context.Context, tx ports.StripeTx) error { return fn(ctx, tx) })
	}
	return s.store.InTx(ctx, fn)
}

// errNoStripeStore is returned by steps that need the extended store.
var errNoStripeStore = errors.New("this step needs a store that implements ports.StripeStore")

func stripeTx(tx ports.Tx) (ports.StripeTx, error) {
	st, ok := tx.(ports.StripeTx)
	if !ok {
		return nil, errNoStripeStore
	}
	return st, nil
}

// IdempotencyKey is the Stripe key of one attempt of one step.
func IdempotencyKey(paymentID string, step domain.Step, attempt int) string {
	return fmt.Sprintf("taskpod:%s:%s:%d", paymentID, step, attempt)
}

// claim is the state a run read and reserved in its first unit of work.
type claim struct {
	msg     ports.OutboxMessage
	payment domain.PaymentRecord
	state   ports.StepState
	// reconcile is set when an earlier attempt may have reached Stripe.
	reconcile bool
	// skip is set when the step has nothing left to do.
	skip bool
	// defaultCard is the customer's default card for a reauthorization.
	defaultCard string
	// target is the replaced PaymentIntent a release_previous cancels.
	target string
}

// Run performs one outbox message. It returns nil when the step is done or
// has nothing to do, and an error when the relay should try again later.
func (s *Steps) Run(ctx context.Context, msg ports.OutboxMessage) error {
	if msg.Step == domain.StepRefund || msg.Step == domain.StepTransferReversal {
		return s.runReturn(ctx, msg)
	}
	c, err := s.claim(ctx, msg)
	if err != nil || c.skip {
		return err
	}
	log := s.log.With("payment_id", msg.PaymentID, "task_id", c.payment.TaskID, "step", msg.Step, "attempt", c.state.Attempt)

	if c.reconcile {
		done, err := s.reconcile(ctx, &c)
		if err != nil {
			return s.release(ctx, c, err)
		}
		if done {
			return nil
		}
	}

	outcome, err := s.call(ctx, c)
	if err != nil {
		log.WarnContext(ctx, "payment step failed, will retry", "error", err)
		return s.release(ctx, c, err)
	}
	if err := s.record(ctx, c, outcome); err != nil {
		// The outcome stays at Stripe; the next run finds it by
		// reconciling, and need not wait for this run's lease to expire.
		return s.release(ctx, c, err)
	}
	return nil
}

// claim locks the payment, decides whether the step is still needed and
// takes its lease.
func (s *Steps) claim(ctx context.Context, msg ports.OutboxMessage) (claim, error) {
	c := claim{msg: msg}
	err := s.inTx(ctx, func(ctx context.Context, tx ports.Tx) error {
		c = claim{msg: msg}
		p, err := tx.Payments().GetForUpdate(ctx, msg.PaymentID)
		if err != nil {
			return err
		}
		c.payment = p.Record()
		st, err := tx.Payments().Step(ctx, msg.PaymentID, msg.Step)
		if err != nil {
			return err
		}
		c.state = st

		if c.payment.Status == domain.PaymentAuthorizing && (msg.Step == domain.StepAuthorize || msg.Step == domain.StepRelease) {
			// A task closed before any authorization request was sent ends
			// its payment here, so no hold is ever placed for it.
			auth, err := tx.Payments().Step(ctx, msg.PaymentID, domain.StepAuthorize)
			if err != nil {
				return err
			}
			if !auth.Claimed {
				task, err := tx.Tasks().GetForUpdate(ctx, c.payment.TaskID)
				if err != nil {
					return err
				}
				if task.Status() == domain.TaskCancelled || task.Status() == domain.TaskFailed {
					return s.releaseUnauthorized(ctx, tx, &c)
				}
			}
		}

		needed, err := stepNeeded(msg.Step, c.payment, st)
		if err != nil || !needed {
			c.skip = err == nil
			return err
		}
		now := s.clock.Now()
		if st.LeaseUntil.After(now) {
			return fmt.Errorf("%w: %s %s until %s", ErrStepBusy, msg.PaymentID, msg.Step, st.LeaseUntil.Format(time.RFC3339))
		}
		if msg.Step == domain.StepRelease && c.payment.StripePaymentIntentID == "" {
			return s.releaseUnauthorized(ctx, tx, &c)
		}
		if err := s.claimTarget(ctx, tx, &c); err != nil || c.skip {
			return err
		}

		c.reconcile = st.Claimed
		c.state.Claimed = true
		c.state.LeaseUntil = now.Add(s.leaseTTL)
		return tx.Payments().SaveStep(ctx, c.state)
	})
	return c, err
}

// stepNeeded reports whether a step still has work, given the payment's
// confirmed state. A step whose turn has not come returns ErrStepNotReady.
func stepNeeded(step domain.Step, p domain.PaymentRecord, st ports.StepState) (bool, error) {
	if st.Done {
		return false, nil
	}
	switch step {
	case domain.StepAuthorize:
		return p.Status == domain.PaymentAuthorizing, nil
	case domain.StepCapture:
		switch p.Status {
		case domain.PaymentAuthorized:
			return true, nil
		case domain.PaymentAuthorizing, domain.PaymentRequiresCustomerAction, domain.PaymentReauthorizing:
			return false, ErrStepNotReady
		}
		return false, nil
	case domain.StepTransfer:
		return p.Status == domain.PaymentCaptured && p.TransferFailedReason == "", nil
	case domain.StepRelease:
		switch p.Status {
		case domain.PaymentAuthorized, domain.PaymentRequiresCustomerAction:
			return true, nil
		case domain.PaymentAuthorizing, domain.PaymentReauthorizing:
			// The authorization must resolve first; until then the hold may
			// or may not exist at Stripe.
			return false, ErrStepNotReady
		}
		return false, nil
	case domain.StepReauthorize:
		return p.Status == domain.PaymentAuthorized || p.Status == domain.PaymentReauthorizing, nil
	case domain.StepReleasePrevious:
		// claimTarget finds the hold to release, or skips.
		return true, nil
	}
	return false, fmt.Errorf("unknown payment step %q", step)
}

// releaseUnauthorized ends a payment that never reached Stripe: there is no
// PaymentIntent to cancel and no hold in the ledger.
func (s *Steps) releaseUnauthorized(ctx context.Context, tx ports.Tx, c *claim) error {
	p := domain.UnmarshalPaymentFromDatabase(c.payment)
	if err := p.MarkReleased("cancelled before authorization", s.clock.Now()); err != nil {
		return err
	}
	if err := tx.Payments().Update(ctx, p); err != nil {
		return err
	}
	c.state.Done = true
	c.skip = true
	return tx.Payments().SaveStep(ctx, c.state)
}

// claimTarget reads what a reauthorize or release_previous run needs: the
// customer's default card, or the oldest replaced hold still to cancel.
func (s *Steps) claimTarget(ctx context.Context, tx ports.Tx, c *claim) error {
	switch c.msg.Step {
	case domain.StepReauthorize:
		customer, err := tx.Customers().Get(ctx, c.payment.CustomerID)
		if err != nil && !errors.Is(err, domain.ErrNotFound) {
			return err
		}
		c.defaultCard = customer.DefaultPaymentMethodID
	case domain.StepReleasePrevious:
		st, err := stripeTx(tx)
		if err != nil {
			return err
		}
		target, found, err := st.Holds().NextReplaced(ctx, c.payment.ID)
		if err != nil {
			return err
		}
		if !found {
			c.skip = true
			c.state.Done = true
			return tx.Payments().SaveStep(ctx, c.state)
		}
		c.target = target
	}
	return nil
}

// requeueStep queues step again for a payment. A finished step is opened
// again, and when its last attempt may have reached Stripe the attempt
// number grows, so the new run does not replay that attempt's stored reply.
// A step still in flight is left as it is: its run records its outcome and
// the new message finds whatever work is left.
func requeueStep(ctx context.Context, tx ports.Tx, paymentID string, step domain.Step, requestID string) error {
	return requeueStepAfter(ctx, tx, ports.OutboxMessage{PaymentID: paymentID, Step: step, RequestID: requestID})
}

// requeueStepAfter is requeueStep for a message that may carry a Delay,
// for a step its writer runs itself right after commit.
func requeueStepAfter(ctx context.Context, tx ports.Tx, msg ports.OutboxMessage) error {
	st, err := tx.Payments().Step(ctx, msg.PaymentID, msg.Step)
	if err != nil {
		return err
	}
	if st.Done || !st.Claimed {
		if st.Claimed {
			st.Attempt++
		}
		st.Claimed, st.Done, st.LeaseUntil, st.LastError = false, false, time.Time{}, ""
		if err := tx.Payments().SaveStep(ctx, st); err != nil {
			return err
		}
	}
	return tx.Outbox().Enqueue(ctx, msg)
}

// release gives up the lease after a failed call so the relay can retry
// soon, keeps the error for operators and returns cause.
func (s *Steps) release(ctx context.Context, c claim, cause error) error {
	err := s.inTx(ctx, func(ctx context.Context, tx ports.Tx) error {
		st, err := tx.Payments().Step(ctx, c.msg.PaymentID, c.msg.Step)
		if err != nil {
			return err
		}
		st.LeaseUntil = time.Time{}
		st.LastError = truncate(cause.Error(), 500)
		return tx.Payments().SaveStep(ctx, st)
	})
	if err != nil {
		return errors.Join(cause, fmt.Errorf("release step lease: %w", err))
	}
	return cause
}

// newAttempt stores the next attempt number after Stripe showed the last
// attempt had no effect, so the next call uses a fresh idempotency key.
func (s *Steps) newAttempt(ctx context.Context, c *claim) error {
	return s.inTx(ctx, func(ctx context.Context, tx ports.Tx) error {
		st, err := tx.Payments().Step(ctx, c.msg.PaymentID, c.msg.Step)
		if err != nil {
			return err
		}
		st.Attempt++
		c.state = st
		return tx.Payments().SaveStep(ctx, st)
	})
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}
