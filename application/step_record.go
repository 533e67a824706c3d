package application

import (
	"context"
	"errors"
	"time"

	"github.com/taskpod/billing/domain"
	"github.com/taskpod/billing/ports"
)

// record applies a step's outcome to the payment, its task and the ledger
// in one unit of work, queues the next step and marks the step done. The
// step is marked done before the outcome is applied, so an outcome that
// queues the same step again (one more replaced hold) leaves it open.
func (s *Steps) record(ctx context.Context, c claim, o outcome) error {
	var applied domain.PaymentRecord
	var changed bool
	err := s.inTx(ctx, func(ctx context.Context, tx ports.Tx) error {
		p, err := tx.Payments().GetForUpdate(ctx, c.msg.PaymentID)
		if err != nil {
			return err
		}
		task, err := tx.Tasks().GetForUpdate(ctx, p.TaskID())
		if err != nil {
			return err
		}

		st, err := tx.Payments().Step(ctx, c.msg.PaymentID, c.msg.Step)
		if err != nil {
			return err
		}
		st.Done = true
		st.LeaseUntil = time.Time{}
		st.LastError = o.reason
		if err := tx.Payments().SaveStep(ctx, st); err != nil {
			return err
		}

		next, err := s.apply(ctx, tx, &p, &task, o, c.msg)
		switch {
		case errors.Is(err, domain.ErrInvalidTransition):
			// Another path, such as a webhook, already moved the payment on.
			s.log.InfoContext(ctx, "payment already moved on; outcome not applied",
				"payment_id", p.ID(), "step", c.msg.Step, "status", p.Status(), "error", err)
			changed = false
		case err != nil:
			return err
		default:
			changed = true
			if err := tx.Payments().Update(ctx, p); err != nil {
				return err
			}
			if err := tx.Tasks().Update(ctx, task); err != nil {
				return err
			}
			if next != "" {
				if err := requeueStep(ctx, tx, p.ID(), next, c.msg.RequestID); err != nil {
					return err
				}
			}
		}
		applied = p.Record()
		return nil
	})
	if err != nil {
		return err
	}
	if changed {
		s.observe(applied, o)
	}
	return nil
}

// apply changes the payment and task for an outcome, appends the ledger
// postings it implies and returns the step to queue next, if any.
func (s *Steps) apply(ctx context.Context, tx ports.Tx, p *domain.Payment, task *domain.Task, o outcome, msg ports.OutboxMessage) (domain.Step, error) {
	return s.applyOutcome(ctx, tx, p, task, o, s.meta(*p, msg, s.clock.Now()))
}

// applyOutcome is apply with the ledger metadata given, so webhooks can
// record what they learned from Stripe the same way steps do.
func (s *Steps) applyOutcome(ctx context.Context, tx ports.Tx, p *domain.Payment, task *domain.Task, o outcome, meta domain.LedgerMeta) (domain.Step, error) {
	now := meta.EffectiveAt

	switch o.kind {
	case outcomeAuthorized:
		if err := p.MarkAuthorized(o.intent.ID, o.intent.LatestChargeID, o.intent.CaptureBefore, now); err != nil {
			return "", err
		}
		meta.Stripe.PaymentIntentID = o.intent.ID
		meta.Stripe.ChargeID = o.intent.LatestChargeID
		hold, err := domain.HoldPosting(s.ids.NewID("ltx"), p.Record(), meta)
		if err != nil {
			return "", err
		}
		if err := tx.Ledger().Append(ctx, hold); err != nil {
			return "", err
		}
		if task.Status() == domain.TaskPendingPayment {
			return "", task.MarkMatched(now)
		}
		// The task was cancelled or failed while the hold was being placed.
		return releaseIfOpen(task), nil

	case outcomeCustomerAction:
		if err := p.RequireCustomerAction(o.intent.ID, o.intent.ClientSecret, o.declineCode, now); err != nil {
			return "", err
		}
		return releaseIfOpen(task), nil

	case outcomeFailed:
		if err := p.MarkFailed(o.reason, now); err != nil {
			return "", err
		}
		if task.Status() == domain.TaskPendingPayment {
			return "", task.Fail(now)
		}
		return "", nil

	case outcomeCaptured:
		return s.applyCapture(ctx, tx, p, o, meta, now)

	case outcomeExpired:
		return s.expireHold(ctx, tx, p, task, o.reason, meta)

	case outcomeReleased:
		if err := p.MarkReleased(o.reason, now); err != nil {
			return "", err
		}
		return "", s.voidHold(ctx, tx, p.ID(), meta)

	case outcomeReauthorized:
		return s.applyReauthorized(ctx, tx, p, task, o.intent, meta)

	case outcomeReauthFailed:
		return s.applyReauthFailed(p, task, o.reason, now)

	case outcomeReplacedReleased:
		st, err := stripeTx(tx)
		if err != nil {
			return "", err
		}
		if err := st.Holds().MarkReleased(ctx, o.intent.ID, now); err != nil {
			return "", err
		}
		if _, more, err := st.Holds().NextReplaced(ctx, p.ID()); err != nil || !more {
			return "", err
		}
		return domain.StepReleasePrevious, nil

	case outcomeTransferred:
		if err := p.MarkTransferred(o.transfer.ID, now); err != nil {
			return "", err
		}
		meta.Stripe.TransferID = o.transfer.ID
		posting, err := domain.TransferPosting(s.ids.NewID("ltx"), p.Record(), meta)
		if err != nil {
			return "", err
		}
		return "", tx.Ledger().Append(ctx, posting)

	case outcomeTransferFailed:
		s.log.WarnContext(ctx, "transfer failed; agent payable stays open", "payment_id", p.ID(), "reason", o.reason)
		return "", p.MarkTransferFailed(o.reason, now)
	}
	return "", nil
}

// applyCapture posts the hold for the captured amount, records Stripe's
// settlement with its fee, and queues the transfer.
func (s *Steps) applyCapture(ctx context.Context, tx ports.Tx, p *domain.Payment, o outcome, meta domain.LedgerMeta, now time.Time) (domain.Step, error) {
	c := o.capture
	if err := p.MarkCaptured(c.Amount, c.ChargeID, c.BalanceTransactionID, c.StripeFee, now); err != nil {
		return "", err
	}
	hold, found, err := tx.Ledger().PendingHold(ctx, p.ID())
	if err != nil {
		return "", err
	}
	if !found {
		return "", errors.New("captured payment " + p.ID() + " has no open hold in the ledger")
	}

	meta.Stripe.ChargeID = c.ChargeID
	meta.Stripe.BalanceTransactionID = c.BalanceTransactionID
	capture, err := domain.CapturePosting(s.ids.NewID("ltx"), hold.ID, p.Record(), meta)
	if err != nil {
		return "", err
	}
	settlement, err := domain.SettlementPosting(s.ids.NewID("ltx"), p.Record(), meta)
	if err != nil {
		return "", err
	}
	if err := tx.Ledger().Append(ctx, capture); err != nil {
		return "", err
	}
	if err := tx.Ledger().Append(ctx, settlement); err != nil {
		return "", err
	}
	return domain.StepTransfer, nil
}

// expireHold applies a hold that Stripe canceled because its capture
// deadline passed. Under the reauthorize policy an open or completed task
// gets a new hold, and its capture waits for it. Otherwise the payment is
// released and a matched task fails, because it can no longer be paid. A
// completed task whose hold cannot be renewed stays unpaid.
func (s *Steps) expireHold(ctx context.Context, tx ports.Tx, p *domain.Payment, task *domain.Task, reason string, meta domain.LedgerMeta) (domain.Step, error) {
	now := meta.EffectiveAt
	open := task.Status() == domain.TaskMatched || task.Status() == domain.TaskCompleted
	if s.holdExpiryPolicy() == domain.HoldExpiryReauthorize && open {
		if err := p.StartReauthorization(reason, now); err != nil {
			return "", err
		}
		return domain.StepReauthorize, s.voidHold(ctx, tx, p.ID(), meta)
	}
	if err := p.MarkReleased(reason, now); err != nil {
		return "", err
	}
	if task.Status() == domain.TaskMatched {
		if err := task.Fail(now); err != nil {
			return "", err
		}
	}
	return "", s.voidHold(ctx, tx, p.ID(), meta)
}

// applyReauthorized makes a new hold the payment's hold: the open hold in
// the ledger is voided and the new one posted, and a hold it replaced is
// queued for cancellation. A payment that moved on while the new hold was
// placed keeps its state, and the new hold is cancelled instead.
func (s *Steps) applyReauthorized(ctx context.Context, tx ports.Tx, p *domain.Payment, task *domain.Task, pi ports.PaymentIntent, meta domain.LedgerMeta) (domain.Step, error) {
	now := meta.EffectiveAt
	st, err := stripeTx(tx)
	if err != nil {
		return "", err
	}
	if p.Status() != domain.PaymentAuthorized && p.Status() != domain.PaymentReauthorizing {
		s.log.WarnContext(ctx, "new hold arrived after the payment moved on; cancelling it",
			"payment_id", p.ID(), "status", p.Status(), "payment_intent_id", pi.ID)
		if err := st.Holds().AddReplaced(ctx, p.ID(), pi.ID, now); err != nil {
			return "", err
		}
		return "", requeueStep(ctx, tx, p.ID(), domain.StepReleasePrevious, meta.RequestID)
	}

	replaced, err := p.RenewHold(pi.ID, pi.LatestChargeID, pi.CaptureBefore, now)
	if err != nil {
		return "", err
	}
	if err := s.voidHold(ctx, tx, p.ID(), meta); err != nil {
		return "", err
	}
	meta.Stripe.PaymentIntentID = pi.ID
	meta.Stripe.ChargeID = pi.LatestChargeID
	hold, err := domain.HoldPosting(s.ids.NewID("ltx"), p.Record(), meta)
	if err != nil {
		return "", err
	}
	if err := tx.Ledger().Append(ctx, hold); err != nil {
		return "", err
	}
	if replaced != "" {
		if err := st.Holds().AddReplaced(ctx, p.ID(), replaced, now); err != nil {
			return "", err
		}
		if err := requeueStep(ctx, tx, p.ID(), domain.StepReleasePrevious, meta.RequestID); err != nil {
			return "", err
		}
	}
	s.log.InfoContext(ctx, "hold renewed", "payment_id", p.ID(), "payment_intent_id", pi.ID,
		"replaced_payment_intent_id", replaced, "capture_before", pi.CaptureBefore)

	switch task.Status() {
	case domain.TaskCancelled, domain.TaskFailed:
		return domain.StepRelease, nil
	case domain.TaskCompleted:
		// A capture that ended on the expired hold is done; it must run
		// again on the new one. One still waiting runs on its own.
		capture, err := tx.Payments().Step(ctx, p.ID(), domain.StepCapture)
		if err != nil || !capture.Done {
			return "", err
		}
		return domain.StepCapture, nil
	}
	return "", nil
}

// applyReauthFailed ends a renewal that placed no hold. Before expiry the
// current hold is still valid, so a matched task fails and the hold is
// released, while a completed task is captured from it. After expiry the payment is
// released and a matched task fails; a completed one stays unpaid.
func (s *Steps) applyReauthFailed(p *domain.Payment, task *domain.Task, reason string, now time.Time) (domain.Step, error) {
	switch p.Status() {
	case domain.PaymentAuthorized:
		if task.Status() != domain.TaskMatched {
			return "", nil
		}
		if err := task.Fail(now); err != nil {
			return "", err
		}
		return domain.StepRelease, nil
	case domain.PaymentReauthorizing:
		if err := p.MarkReleased("authorization expired and "+reason, now); err != nil {
			return "", err
		}
		if task.Status() == domain.TaskMatched {
			return "", task.Fail(now)
		}
		return "", nil
	}
	return "", &domain.TransitionError{Entity: "payment " + p.ID(), From: string(p.Status()), To: "renewal failed"}
}

func (s *Steps) voidHold(ctx context.Context, tx ports.Tx, paymentID string, meta domain.LedgerMeta) error {
	hold, found, err := tx.Ledger().PendingHold(ctx, paymentID)
	if err != nil || !found {
		return err
	}
	return tx.Ledger().Append(ctx, domain.VoidPosting(s.ids.NewID("ltx"), hold.ID, meta))
}

func (s *Steps) meta(p domain.Payment, msg ports.OutboxMessage, now time.Time) domain.LedgerMeta {
	r := p.Record()
	return domain.LedgerMeta{
		Actor: relayActor, RequestID: msg.RequestID, Reason: string(msg.Step),
		TaskID: r.TaskID, PaymentID: r.ID, EffectiveAt: now,
		Stripe: domain.StripeRefs{PaymentIntentID: r.StripePaymentIntentID, ChargeID: r.StripeChargeID},
	}
}

// releaseIfOpen returns the release step when the task was closed without
// completion while its payment was still being authorized.
func releaseIfOpen(task *domain.Task) domain.Step {
	switch task.Status() {
	case domain.TaskCancelled, domain.TaskFailed:
		return domain.StepRelease
	}
	return ""
}

func (s *Steps) observe(p domain.PaymentRecord, o outcome) {
	cur := p.Amount.Currency()
	switch o.kind {
	case outcomeAuthorized:
		s.observer.PaymentTransitioned(domain.PaymentAuthorized, cur, p.Amount.Amount())
	case outcomeCaptured:
		s.observer.PaymentTransitioned(domain.PaymentCaptured, cur, p.CapturedAmount)
	case outcomeTransferred:
		s.observer.PaymentTransitioned(domain.PaymentTransferred, cur, p.AgentShare)
	case outcomeReleased:
		s.observer.PaymentTransitioned(domain.PaymentReleased, cur, p.Amount.Amount())
	case outcomeExpired:
		s.observer.PaymentTransitioned("expired", cur, p.Amount.Amount())
	case outcomeFailed:
		s.observer.PaymentTransitioned(domain.PaymentFailed, cur, p.Amount.Amount())
	case outcomeReauthorized:
		s.observer.PaymentTransitioned(domain.PaymentAuthorized, cur, p.Amount.Amount())
	case outcomeReauthFailed:
		if p.Status == domain.PaymentReleased {
			s.observer.PaymentTransitioned("expired", cur, p.Amount.Amount())
		}
	}
}
