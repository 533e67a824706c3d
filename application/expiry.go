package application

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/taskpod/billing/domain"
	"github.com/taskpod/billing/ports"
)

// schedulerLock names the advisory lock that lets one instance at a time
// renew holds and cancel abandoned payments.
const schedulerLock = "hold-expiry-scheduler"

// ExpiryConfig sets the hold and payment deadlines the scheduler enforces.
type ExpiryConfig struct {
	// Policy applies to matched tasks whose hold is about to expire.
	Policy domain.HoldExpiryPolicy
	// RenewBefore is how long before the capture deadline the policy runs.
	RenewBefore time.Duration
	// PendingPaymentTimeout is how long a customer has to confirm a
	// PaymentIntent before the task is cancelled.
	PendingPaymentTimeout time.Duration
	// Interval is the pause between sweeps; zero means one minute.
	Interval time.Duration
	// BatchSize bounds the payments and events one sweep handles; zero
	// means 100.
	BatchSize int
}

// SweepResult counts what one sweep did.
type SweepResult struct {
	EventsRetried  int
	HoldsRenewed   int
	TasksFailed    int
	TasksAbandoned int
	// Skipped is set when another instance held the scheduler lock.
	Skipped bool
}

// Expiry runs the background work around Stripe's deadlines: it retries
// stored webhook events, renews or fails holds before Stripe cancels them,
// and cancels tasks whose PaymentIntent the customer never confirmed.
type Expiry struct {
	store    ports.StripeStore
	locker   ports.Locker
	webhooks *Webhooks
	clock    ports.Clock
	log      *slog.Logger
	cfg      ExpiryConfig
}

// NewExpiry builds the scheduler.
func NewExpiry(store ports.StripeStore, locker ports.Locker, webhooks *Webhooks, clock ports.Clock, cfg ExpiryConfig, log *slog.Logger) *Expiry {
	if cfg.Interval <= 0 {
		cfg.Interval = time.Minute
	}
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = 100
	}
	return &Expiry{store: store, locker: locker, webhooks: webhooks, clock: clock, log: log, cfg: cfg}
}

// Run sweeps every Interval until ctx ends. A failed sweep is logged and
// the next one runs on time.
func (e *Expiry) Run(ctx context.Context) {
	ticker := time.NewTicker(e.cfg.Interval)
	defer ticker.Stop()
	for {
		if _, err := e.Sweep(ctx); err != nil && ctx.Err() == nil {
			e.log.ErrorContext(ctx, "expiry sweep failed", "error", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
	}
}

// Sweep runs one pass. Event retries run on every instance; the deadline
// work runs only on the instance that takes the scheduler lock.
func (e *Expiry) Sweep(ctx context.Context) (SweepResult, error) {
	var res SweepResult
	var errs []error
	retried, err := e.webhooks.RetryDue(ctx, e.cfg.BatchSize)
	res.EventsRetried = retried
	errs = append(errs, err)

	unlock, acquired, err := e.locker.TryLock(ctx, schedulerLock)
	if err != nil || !acquired {
		res.Skipped = err == nil
		return res, errors.Join(append(errs, err)...)
	}
	defer unlock()

	errs = append(errs, e.sweepHolds(ctx, &res), e.sweepAbandoned(ctx, &res))
	if res.HoldsRenewed+res.TasksFailed+res.TasksAbandoned > 0 {
		e.log.InfoContext(ctx, "expiry sweep", "holds_renewed", res.HoldsRenewed, "tasks_failed", res.TasksFailed,
			"tasks_abandoned", res.TasksAbandoned, "events_retried", res.EventsRetried)
	}
	return res, errors.Join(errs...)
}

// sweepHolds applies the policy to matched tasks whose capture deadline is
// within RenewBefore.
func (e *Expiry) sweepHolds(ctx context.Context, res *SweepResult) error {
	deadline := e.clock.Now().Add(e.cfg.RenewBefore)
	ids, err := e.list(ctx, func(ctx context.Context, l ports.LookupRepository) ([]string, error) {
		return l.ExpiringHolds(ctx, deadline, e.cfg.BatchSize)
	})
	if err != nil {
		return err
	}
	var errs []error
	for _, id := range ids {
		renewed, failed, err := e.expireSoon(ctx, id, deadline)
		if err != nil {
			e.log.ErrorContext(ctx, "hold renewal failed", "payment_id", id, "error", err)
			errs = append(errs, err)
			continue
		}
		if renewed {
			res.HoldsRenewed++
		}
		if failed {
			res.TasksFailed++
		}
	}
	return errors.Join(errs...)
}

// expireSoon queues the renewal of one hold, or fails its task and queues
// the release, after checking under the row locks that it still applies.
func (e *Expiry) expireSoon(ctx context.Context, paymentID string, deadline time.Time) (renewed, failed bool, err error) {
	err = e.store.InStripeTx(ctx, func(ctx context.Context, tx ports.StripeTx) error {
		renewed, failed = false, false
		p, task, err := lockPayment(ctx, tx, paymentID)
		if err != nil {
			return err
		}
		rec := p.Record()
		if rec.Status != domain.PaymentAuthorized || task.Status() != domain.TaskMatched ||
			rec.CaptureBefore.IsZero() || !rec.CaptureBefore.Before(deadline) {
			return nil
		}
		log := e.log.With("payment_id", paymentID, "task_id", task.ID(), "capture_before", rec.CaptureBefore, "policy", e.cfg.Policy)
		if e.cfg.Policy == domain.HoldExpiryReauthorize {
			renewed = true
			log.InfoContext(ctx, "hold expires soon; renewing it")
			return requeueStep(ctx, tx, paymentID, domain.StepReauthorize, "")
		}
		if err := task.Fail(e.clock.Now()); err != nil {
			return err
		}
		if err := tx.Tasks().Update(ctx, task); err != nil {
			return err
		}
		failed = true
		log.InfoContext(ctx, "hold expires soon; task failed and hold released")
		return requeueStep(ctx, tx, paymentID, domain.StepRelease, "")
	})
	return renewed, failed, err
}

// sweepAbandoned cancels pending_payment tasks whose PaymentIntent was not
// confirmed within PendingPaymentTimeout, and queues the cancellation of
// the PaymentIntent.
func (e *Expiry) sweepAbandoned(ctx context.Context, res *SweepResult) error {
	cutoff := e.clock.Now().Add(-e.cfg.PendingPaymentTimeout)
	ids, err := e.list(ctx, func(ctx context.Context, l ports.LookupRepository) ([]string, error) {
		return l.AbandonedPayments(ctx, cutoff, e.cfg.BatchSize)
	})
	if err != nil {
		return err
	}
	var errs []error
	for _, id := range ids {
		err := e.store.InStripeTx(ctx, func(ctx context.Context, tx ports.StripeTx) error {
			p, task, err := lockPayment(ctx, tx, id)
			if err != nil {
				return err
			}
			status := p.Status()
			if task.Status() != domain.TaskPendingPayment || !p.Record().CreatedAt.Before(cutoff) ||
				(status != domain.PaymentAuthorizing && status != domain.PaymentRequiresCustomerAction) {
				return nil
			}
			if err := task.Cancel(e.clock.Now()); err != nil {
				return err
			}
			if err := tx.Tasks().Update(ctx, task); err != nil {
				return err
			}
			res.TasksAbandoned++
			e.log.InfoContext(ctx, "payment not confirmed in time; task cancelled", "payment_id", id, "task_id", task.ID(),
				"created_at", p.Record().CreatedAt, "timeout", e.cfg.PendingPaymentTimeout)
			return requeueStep(ctx, tx, id, domain.StepRelease, "")
		})
		if err != nil {
			e.log.ErrorContext(ctx, "abandoned payment not cancelled", "payment_id", id, "error", err)
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (e *Expiry) list(ctx context.Context, query func(context.Context, ports.LookupRepository) ([]string, error)) ([]string, error) {
	var ids []string
	err := e.store.InStripeTx(ctx, func(ctx context.Context, tx ports.StripeTx) error {
		var err error
		ids, err = query(ctx, tx.Lookups())
		return err
	})
	return ids, err
}
