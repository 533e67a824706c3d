package application

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/taskpod/billing/domain"
	"github.com/taskpod/billing/ports"
)

// webhookActor names Stripe's events in ledger records.
const webhookActor = "system:webhook"

// WebhookObserver counts Stripe events by type and outcome, for metrics.
type WebhookObserver interface {
	WebhookReceived(eventType, outcome string)
}

type nopWebhookObserver struct{}

func (nopWebhookObserver) WebhookReceived(string, string) {}

// EventOutcome is what receiving one Stripe event did.
type EventOutcome string

// Event outcomes, also the outcome label of the webhook metric.
const (
	// EventApplied: the event changed TaskPod's state.
	EventApplied EventOutcome = "applied"
	// EventNoEffect: the event was recorded and changed nothing, because
	// TaskPod already knew its news or does not track its object.
	EventNoEffect EventOutcome = "no_effect"
	// EventDuplicate: the event id was recorded before.
	EventDuplicate EventOutcome = "duplicate"
	// EventDeferred: the event is stored and a worker retries it.
	EventDeferred EventOutcome = "deferred"
	// EventGaveUp: the last retry failed; the event waits for an operator.
	EventGaveUp EventOutcome = "failed"
)

// WebhooksConfig sets how events are applied and retried.
type WebhooksConfig struct {
	// DisputeClawback reverses the agent's part of a dispute like a refund.
	DisputeClawback bool
	// MaxAttempts bounds the attempts of an event; after the last it is
	// marked failed. Zero means 20.
	MaxAttempts int
	// RetryBase is the wait before the first retry, doubled for each later
	// one up to RetryMax. Zero means 5 s and 10 min.
	RetryBase time.Duration
	RetryMax  time.Duration
}

// Webhooks applies Stripe's events. Each event's id is stored in the unit
// of work that applies it, so a redelivered event has no effect. Where the
// order of events matters, the object is read again from Stripe and its
// current state is applied, so events may arrive in any order. An event
// whose object TaskPod does not know yet is stored and retried.
type Webhooks struct {
	store    ports.StripeStore
	gateway  ports.PaymentGateway
	refunds  ports.RefundGateway
	parser   ports.EventParser
	steps    *Steps
	clock    ports.Clock
	ids      ports.IDGenerator
	observer WebhookObserver
	log      *slog.Logger
	cfg      WebhooksConfig
}

// NewWebhooks builds the webhook use cases. refunds may be nil when the
// gateway cannot list refunds; refund and reversal events are then retried.
func NewWebhooks(store ports.StripeStore, gateway ports.PaymentGateway, refunds ports.RefundGateway, parser ports.EventParser,
	steps *Steps, clock ports.Clock, ids ports.IDGenerator, observer WebhookObserver, cfg WebhooksConfig, log *slog.Logger) *Webhooks {
	if observer == nil {
		observer = nopWebhookObserver{}
	}
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = 20
	}
	if cfg.RetryBase <= 0 {
		cfg.RetryBase = 5 * time.Second
	}
	if cfg.RetryMax <= 0 {
		cfg.RetryMax = 10 * time.Minute
	}
	return &Webhooks{store: store, gateway: gateway, refunds: refunds, parser: parser, steps: steps, clock: clock,
		ids: ids, observer: observer, log: log, cfg: cfg}
}

// Observe counts an event that was rejected before it could be received,
// such as one with a bad signature.
func (w *Webhooks) Observe(eventType, outcome string) { w.observer.WebhookReceived(eventType, outcome) }

// Receive applies one verified event. It returns an error only when the
// event could not even be stored, so Stripe should deliver it again.
func (w *Webhooks) Receive(ctx context.Context, ev ports.StripeEvent) (EventOutcome, error) {
	log := w.log.With("event_id", ev.ID, "event_type", ev.Type, "object_id", ev.ObjectID)
	snap, readErr := w.read(ctx, ev)

	var outcome EventOutcome
	var after []func()
	var applyErr error
	err := w.store.InStripeTx(ctx, func(ctx context.Context, tx ports.StripeTx) error {
		after, applyErr = nil, nil
		stored := ports.StoredEvent{Event: ev, Status: ports.EventProcessed, Attempts: 1, ReceivedAt: w.clock.Now()}
		inserted, err := tx.Events().Insert(ctx, stored)
		if err != nil {
			return err
		}
		if !inserted {
			outcome = EventDuplicate
			return nil
		}
		if readErr != nil {
			outcome = EventDeferred
			return w.reschedule(ctx, tx, &stored, readErr)
		}
		outcome, after, err = w.apply(ctx, tx, ev, snap)
		if errors.Is(err, errUnknownObject) {
			outcome = EventDeferred
			return w.reschedule(ctx, tx, &stored, err)
		}
		if err != nil {
			// Roll back the partial effect; the event is stored for a retry
			// in a unit of work of its own below.
			applyErr = err
		}
		return err
	})
	if applyErr != nil {
		log.WarnContext(ctx, "stripe event failed; stored for a retry", "error", applyErr)
		outcome, err = w.storeForRetry(ctx, ev, applyErr)
	}
	if err != nil {
		w.observer.WebhookReceived(ev.Type, "error")
		return "", fmt.Errorf("record stripe event %s: %w", ev.ID, err)
	}

	for _, f := range after {
		f()
	}
	w.observer.WebhookReceived(ev.Type, string(outcome))
	switch outcome {
	case EventDeferred:
		log.InfoContext(ctx, "stripe event deferred", "reason", errorText(readErr, applyErr))
	case EventDuplicate:
		log.InfoContext(ctx, "stripe event already received")
	default:
		log.InfoContext(ctx, "stripe event received", "outcome", outcome)
	}
	return outcome, nil
}

// storeForRetry stores an event whose effect failed, as pending, in a unit
// of work of its own.
func (w *Webhooks) storeForRetry(ctx context.Context, ev ports.StripeEvent, cause error) (EventOutcome, error) {
	outcome := EventDeferred
	err := w.store.InStripeTx(ctx, func(ctx context.Context, tx ports.StripeTx) error {
		stored := ports.StoredEvent{Event: ev, Status: ports.EventPending, Attempts: 1, ReceivedAt: w.clock.Now(),
			NextAttemptAt: w.clock.Now().Add(w.cfg.RetryBase), LastError: truncate(cause.Error(), 500)}
		inserted, err := tx.Events().Insert(ctx, stored)
		if !inserted && err == nil {
			outcome = EventDuplicate
		}
		return err
	})
	return outcome, err
}

// reschedule marks a stored event pending with a backoff, or failed after
// the last attempt.
func (w *Webhooks) reschedule(ctx context.Context, tx ports.StripeTx, e *ports.StoredEvent, cause error) error {
	e.LastError = truncate(cause.Error(), 500)
	if e.Attempts >= w.cfg.MaxAttempts {
		e.Status = ports.EventFailed
		w.log.ErrorContext(ctx, "stripe event failed on its last attempt; an operator must look at it",
			"event_id", e.Event.ID, "event_type", e.Event.Type, "attempts", e.Attempts, "error", cause)
		return tx.Events().Update(ctx, *e)
	}
	wait := w.cfg.RetryBase << min(e.Attempts-1, 16)
	e.Status = ports.EventPending
	e.NextAttemptAt = w.clock.Now().Add(min(wait, w.cfg.RetryMax))
	return tx.Events().Update(ctx, *e)
}

// RetryDue applies stored events whose retry is due and returns how many
// it attempted. Several instances may run it at once: each event is taken
// under a row lock, and one taken by another instance is skipped.
func (w *Webhooks) RetryDue(ctx context.Context, limit int) (int, error) {
	var ids []string
	err := w.store.InStripeTx(ctx, func(ctx context.Context, tx ports.StripeTx) error {
		var err error
		ids, err = tx.Events().DueIDs(ctx, w.clock.Now(), limit)
		return err
	})
	if err != nil {
		return 0, err
	}
	attempted := 0
	for _, id := range ids {
		if ctx.Err() != nil {
			return attempted, ctx.Err()
		}
		ok, err := w.retry(ctx, id)
		if err != nil {
			w.log.ErrorContext(ctx, "stripe event retry failed", "event_id", id, "error", err)
			continue
		}
		if ok {
			attempted++
		}
	}
	return attempted, nil
}

// retry claims a due event by pushing its next attempt past the time the
// Stripe reads may take, reads its object and applies it.
func (w *Webhooks) retry(ctx context.Context, id string) (bool, error) {
	var stored ports.StoredEvent
	var claimed bool
	err := w.store.InStripeTx(ctx, func(ctx context.Context, tx ports.StripeTx) error {
		e, found, err := tx.Events().GetForUpdate(ctx, id)
		if err != nil || !found || e.Status != ports.EventPending || e.NextAttemptAt.After(w.clock.Now()) {
			return err
		}
		e.Attempts++
		e.NextAttemptAt = w.clock.Now().Add(2 * time.Minute)
		claimed, stored = true, e
		return tx.Events().Update(ctx, e)
	})
	if err != nil || !claimed {
		return false, err
	}

	ev, err := w.parser.Parse(stored.Event.Body)
	if err != nil {
		return true, w.finishRetry(ctx, id, nil, err)
	}
	snap, readErr := w.read(ctx, ev)
	if readErr != nil {
		return true, w.finishRetry(ctx, id, nil, readErr)
	}
	return true, w.finishRetry(ctx, id, func(ctx context.Context, tx ports.StripeTx) (EventOutcome, []func(), error) {
		return w.apply(ctx, tx, ev, snap)
	}, nil)
}

// finishRetry applies a retried event, or reschedules it when apply is nil
// or fails. A failed apply is rolled back before the event is rescheduled.
func (w *Webhooks) finishRetry(ctx context.Context, id string,
	apply func(context.Context, ports.StripeTx) (EventOutcome, []func(), error), cause error) error {
	var outcome EventOutcome
	var after []func()
	if apply != nil {
		err := w.store.InStripeTx(ctx, func(ctx context.Context, tx ports.StripeTx) error {
			e, found, err := tx.Events().GetForUpdate(ctx, id)
			if err != nil || !found || e.Status != ports.EventPending {
				return err
			}
			outcome, after, err = apply(ctx, tx)
			if err != nil {
				return err
			}
			e.Status, e.LastError = ports.EventProcessed, ""
			return tx.Events().Update(ctx, e)
		})
		if err == nil {
			for _, f := range after {
				f()
			}
			if outcome != "" {
				w.observer.WebhookReceived("retry", string(outcome))
				w.log.InfoContext(ctx, "stripe event applied on retry", "event_id", id, "outcome", outcome)
			}
			return nil
		}
		cause = err
	}

	return w.store.InStripeTx(ctx, func(ctx context.Context, tx ports.StripeTx) error {
		e, found, err := tx.Events().GetForUpdate(ctx, id)
		if err != nil || !found || e.Status != ports.EventPending {
			return err
		}
		if err := w.reschedule(ctx, tx, &e, cause); err != nil {
			return err
		}
		outcome := EventDeferred
		if e.Status == ports.EventFailed {
			outcome = EventGaveUp
		}
		w.observer.WebhookReceived("retry", string(outcome))
		return nil
	})
}

// snapshot is the current state at Stripe of an event's object.
type snapshot struct {
	intent        *ports.PaymentIntent
	capture       *ports.Capture
	setupIntent   *ports.SetupIntent
	paymentMethod *domain.PaymentMethod
	refunds       []ports.StripeRefund
	reversals     []ports.StripeTransferReversal
}

// read fetches the event's object from Stripe, because events may arrive
// late, twice or out of order and only Stripe's current state is safe to
// apply. Dispute events are applied from their payload: a closed dispute's
// payload holds everything its opening did.
func (w *Webhooks) read(ctx context.Context, ev ports.StripeEvent) (snapshot, error) {
	var snap snapshot
	switch kindOf(ev.Type) {
	case "payment_intent":
		pi, err := w.gateway.GetPaymentIntent(ctx, ev.ObjectID)
		if err != nil {
			return snap, err
		}
		snap.intent = &pi
		if pi.Status == ports.PISucceeded {
			capture, err := w.gateway.GetCapture(ctx, pi.ID)
			if err != nil {
				return snap, err
			}
			snap.capture = &capture
		}
	case "setup_intent":
		si, err := w.gateway.GetSetupIntent(ctx, ev.ObjectID)
		if err != nil {
			return snap, err
		}
		snap.setupIntent = &si
		if si.Status == ports.SetupIntentSucceeded && si.PaymentMethodID != "" {
			pm, err := w.gateway.GetPaymentMethod(ctx, si.PaymentMethodID)
			if err != nil {
				return snap, err
			}
			snap.paymentMethod = &pm
		}
	case "payment_method":
		pm, err := w.gateway.GetPaymentMethod(ctx, ev.ObjectID)
		if errors.Is(err, ports.ErrGatewayNotFound) {
			pm, err = domain.PaymentMethod{ID: ev.ObjectID}, nil
		}
		if err != nil {
			return snap, err
		}
		snap.paymentMethod = &pm
	case "refund":
		if w.refunds == nil {
			return snap, errors.New("the payment gateway cannot list refunds")
		}
		refunds, err := w.refunds.ListRefunds(ctx, ev.ChargeID)
		if err != nil {
			return snap, err
		}
		snap.refunds = refunds
	case "reversal":
		if w.refunds == nil {
			return snap, errors.New("the payment gateway cannot list transfer reversals")
		}
		reversals, err := w.refunds.ListTransferReversals(ctx, ev.ObjectID)
		if err != nil {
			return snap, err
		}
		snap.reversals = reversals
	}
	return snap, nil
}

// kindOf groups the event types TaskPod handles by what they need.
func kindOf(eventType string) string {
	switch eventType {
	case "payment_intent.amount_capturable_updated", "payment_intent.payment_failed", "payment_intent.canceled",
		"payment_intent.succeeded", "payment_intent.requires_action", "payment_intent.processing":
		return "payment_intent"
	case "setup_intent.succeeded":
		return "setup_intent"
	case "payment_method.detached":
		return "payment_method"
	case "charge.refunded":
		return "refund"
	case "transfer.reversed":
		return "reversal"
	case "charge.dispute.created", "charge.dispute.closed", "charge.dispute.updated", "charge.dispute.funds_withdrawn",
		"charge.dispute.funds_reinstated":
		return "dispute"
	}
	return ""
}

// apply changes TaskPod's state for one event inside tx and returns what
// to run after commit, such as metrics.
func (w *Webhooks) apply(ctx context.Context, tx ports.StripeTx, ev ports.StripeEvent, snap snapshot) (EventOutcome, []func(), error) {
	switch kindOf(ev.Type) {
	case "payment_intent":
		return w.applyIntent(ctx, tx, ev, *snap.intent, snap.capture)
	case "setup_intent":
		o, err := w.applySetupIntent(ctx, tx, *snap.setupIntent, snap.paymentMethod)
		return o, nil, err
	case "payment_method":
		o, err := w.applyDetached(ctx, tx, *snap.paymentMethod)
		return o, nil, err
	case "refund":
		return w.applyRefunds(ctx, tx, ev, snap.refunds)
	case "reversal":
		o, err := w.applyReversals(ctx, tx, ev, snap.reversals)
		return o, nil, err
	case "dispute":
		o, err := w.applyDispute(ctx, tx, ev)
		return o, nil, err
	}
	return EventNoEffect, nil, nil
}

func (w *Webhooks) meta(p domain.PaymentRecord, ev ports.StripeEvent) domain.LedgerMeta {
	return domain.LedgerMeta{
		Actor: webhookActor, RequestID: ev.ID, Reason: ev.Type, TaskID: p.TaskID, PaymentID: p.ID,
		EffectiveAt: w.clock.Now(),
		Stripe:      domain.StripeRefs{PaymentIntentID: p.StripePaymentIntentID, ChargeID: p.StripeChargeID},
	}
}

// lockPayment locks a payment and its task; a payment not stored yet, such
// as one whose task is still being created, is an unknown object.
func lockPayment(ctx context.Context, tx ports.Tx, paymentID string) (domain.Payment, domain.Task, error) {
	p, err := tx.Payments().GetForUpdate(ctx, paymentID)
	if errors.Is(err, domain.ErrNotFound) {
		return domain.Payment{}, domain.Task{}, fmt.Errorf("payment %s: %w", paymentID, errUnknownObject)
	}
	if err != nil {
		return domain.Payment{}, domain.Task{}, err
	}
	task, err := tx.Tasks().GetForUpdate(ctx, p.TaskID())
	return p, task, err
}

// savePayment stores a changed payment and task and queues the next step.
func savePayment(ctx context.Context, tx ports.Tx, p domain.Payment, task domain.Task, next domain.Step, requestID string) error {
	if err := tx.Payments().Update(ctx, p); err != nil {
		return err
	}
	if err := tx.Tasks().Update(ctx, task); err != nil {
		return err
	}
	if next == "" {
		return nil
	}
	return requeueStep(ctx, tx, p.ID(), next, requestID)
}

func errorText(errs ...error) string {
	for _, err := range errs {
		if err != nil {
			return err.Error()
		}
	}
	return ""
}
