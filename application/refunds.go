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

// metricRefunded labels refunds in the payment transitions metric. A
// refund changes no payment status, so it is not a domain.PaymentStatus.
const metricRefunded domain.PaymentStatus = "refunded"

// Refunds lets admins return captured money to customers. A refund is
// stored with its payment locked, so concurrent requests cannot refund more
// than was captured, and runs through the outbox like every money step.
type Refunds struct {
	store ports.StripeStore
	steps *Steps
	clock ports.Clock
	ids   ports.IDGenerator
	log   *slog.Logger
}

// NewRefunds builds the refund use cases.
func NewRefunds(store ports.StripeStore, steps *Steps, clock ports.Clock, ids ports.IDGenerator, log *slog.Logger) *Refunds {
	return &Refunds{store: store, steps: steps, clock: clock, ids: ids, log: log}
}

// RefundInput is an admin's refund request. A nil Amount refunds whatever
// is left; an empty Reason means requested_by_customer.
type RefundInput struct {
	Amount *int64
	Reason string
}

// PaymentReturns is everything a payment gave back: refunds, transfer
// reversals and disputes, oldest first.
type PaymentReturns struct {
	Payment   domain.PaymentRecord
	Refunds   []domain.RefundRecord
	Reversals []domain.ReversalRecord
	Disputes  []domain.DisputeRecord
}

// Request stores a refund of a task's payment and queues it, then runs it
// at once, so the result usually carries Stripe's outcome. If that run does
// not finish, the relay does.
func (r *Refunds) Request(ctx context.Context, actor Actor, taskID string, in RefundInput) (domain.RefundRecord, error) {
	reason, err := domain.ParseRefundReason(in.Reason)
	if err != nil {
		return domain.RefundRecord{}, err
	}
	var refund domain.Refund
	err = r.store.InStripeTx(ctx, func(ctx context.Context, tx ports.StripeTx) error {
		task, err := tx.Tasks().Get(ctx, taskID)
		if err != nil {
			return err
		}
		if task.PaymentID() == "" {
			return fmt.Errorf("task %s is free, so it has no payment to refund: %w", taskID, domain.ErrConflict)
		}
		p, err := tx.Payments().GetForUpdate(ctx, task.PaymentID())
		if err != nil {
			return err
		}
		open, err := tx.Disputes().HasOpen(ctx, p.ID())
		if err != nil {
			return err
		}
		if open {
			return fmt.Errorf("payment %s has an open dispute; Stripe rejects refunds of a disputed charge: %w", p.ID(), domain.ErrConflict)
		}
		totals, err := tx.Refunds().Totals(ctx, p.ID())
		if err != nil {
			return err
		}
		refund, err = domain.NewRefund(r.ids.NewID("rfd"), p.Record(), totals, in.Amount, reason, actor.Name(), actor.RequestID, r.clock.Now())
		if err != nil {
			return err
		}
		if err := tx.Refunds().Insert(ctx, refund); err != nil {
			return err
		}
		if err := tx.Audit().Record(ctx, ports.AuditEvent{
			Actor: actor.Name(), Action: "refund.request", Subject: refund.ID(), RequestID: actor.RequestID, At: r.clock.Now(),
			Details: map[string]any{"taskId": taskID, "paymentId": p.ID(), "amount": refund.Record().Amount.Amount(), "reason": string(reason)},
		}); err != nil {
			return err
		}
		return requeueStepAfter(ctx, tx, ports.OutboxMessage{PaymentID: p.ID(), Step: domain.StepRefund,
			RequestID: actor.RequestID, Delay: inlineStepGrace})
	})
	if err != nil {
		return domain.RefundRecord{}, err
	}
	rec := refund.Record()
	r.log.InfoContext(ctx, "refund requested", "refund_id", rec.ID, "payment_id", rec.PaymentID, "task_id", taskID,
		"amount", rec.Amount.Amount(), "currency", rec.Amount.Currency())

	msg := ports.OutboxMessage{PaymentID: rec.PaymentID, Step: domain.StepRefund, RequestID: actor.RequestID}
	if err := r.steps.Run(ctx, msg); err != nil {
		r.log.WarnContext(ctx, "refund deferred to the relay", "refund_id", rec.ID, "error", err)
	}
	return r.refund(ctx, rec.ID)
}

func (r *Refunds) refund(ctx context.Context, id string) (domain.RefundRecord, error) {
	var out domain.RefundRecord
	err := r.store.InStripeTx(ctx, func(ctx context.Context, tx ports.StripeTx) error {
		rf, err := tx.Refunds().GetForUpdate(ctx, id)
		out = rf.Record()
		return err
	})
	return out, err
}

// Returns lists what a task's payment gave back.
func (r *Refunds) Returns(ctx context.Context, taskID string) (PaymentReturns, error) {
	var out PaymentReturns
	err := r.store.InStripeTx(ctx, func(ctx context.Context, tx ports.StripeTx) error {
		task, err := tx.Tasks().Get(ctx, taskID)
		if err != nil {
			return err
		}
		if task.PaymentID() == "" {
			return fmt.Errorf("task %s is free and has no payment: %w", taskID, domain.ErrNotFound)
		}
		p, err := tx.Payments().Get(ctx, task.PaymentID())
		if err != nil {
			return err
		}
		out = PaymentReturns{Payment: p.Record()}
		refunds, err := tx.Refunds().List(ctx, p.ID())
		if err != nil {
			return err
		}
		for _, rf := range refunds {
			out.Refunds = append(out.Refunds, rf.Record())
		}
		reversals, err := tx.Refunds().ListReversals(ctx, p.ID())
		if err != nil {
			return err
		}
		for _, rv := range reversals {
			out.Reversals = append(out.Reversals, rv.Record())
		}
		disputes, err := tx.Disputes().List(ctx, p.ID())
		if err != nil {
			return err
		}
		for _, d := range disputes {
			out.Disputes = append(out.Disputes, d.Record())
		}
		return nil
	})
	return out, err
}

// returnClaim is the payment, step state and pending item a refund or
// transfer_reversal run reserved.
type returnClaim struct {
	msg       ports.OutboxMessage
	payment   domain.PaymentRecord
	state     ports.StepState
	refund    domain.RefundRecord
	reversal  domain.ReversalRecord
	reconcile bool
	skip      bool
}

// returnOutcome is Stripe's reply to a refund or reversal request.
type returnOutcome struct {
	refund   ports.StripeRefund
	reversal ports.StripeTransferReversal
	// failure is set when Stripe rejected the request for good.
	failure string
}

// runReturn runs the oldest pending refund or transfer reversal of the
// payment. One step row per payment and kind numbers the attempts, so the
// idempotency key is taskpod:{paymentId}:{step}:{attempt}; the attempt
// grows after each finished refund and after Stripe showed an attempt had
// no effect.
func (s *Steps) runReturn(ctx context.Context, msg ports.OutboxMessage) error {
	if s.stripe == nil {
		return fmt.Errorf("%s step: %w", msg.Step, errNoStripeStore)
	}
	if s.refunds == nil {
		return fmt.Errorf("%s step: the payment gateway does not implement ports.RefundGateway", msg.Step)
	}
	c, err := s.claimReturn(ctx, msg)
	if err != nil || c.skip {
		return err
	}
	key := IdempotencyKey(c.payment.ID, msg.Step, c.state.Attempt)

	if c.reconcile {
		o, found, err := s.findReturn(ctx, c)
		if err != nil {
			return s.release(ctx, claim{msg: msg}, err)
		}
		if found {
			s.log.InfoContext(ctx, "earlier attempt found at stripe", "payment_id", c.payment.ID, "step", msg.Step, "attempt", c.state.Attempt)
			return s.recordReturn(ctx, c, o)
		}
		cl := claim{msg: msg, state: c.state}
		if err := s.newAttempt(ctx, &cl); err != nil {
			return err
		}
		c.state = cl.state
		key = IdempotencyKey(c.payment.ID, msg.Step, c.state.Attempt)
	}

	o, err := s.callReturn(ctx, c, key)
	if err != nil {
		s.log.WarnContext(ctx, "payment step failed, will retry", "payment_id", c.payment.ID, "step", msg.Step, "error", err)
		return s.release(ctx, claim{msg: msg}, err)
	}
	return s.recordReturn(ctx, c, o)
}

// claimReturn locks the payment, finds the oldest pending refund or
// reversal and takes the step's lease.
func (s *Steps) claimReturn(ctx context.Context, msg ports.OutboxMessage) (returnClaim, error) {
	var c returnClaim
	err := s.stripe.InStripeTx(ctx, func(ctx context.Context, tx ports.StripeTx) error {
		c = returnClaim{msg: msg}
		p, err := tx.Payments().GetForUpdate(ctx, msg.PaymentID)
		if err != nil {
			return err
		}
		c.payment = p.Record()
		if c.state, err = tx.Payments().Step(ctx, msg.PaymentID, msg.Step); err != nil {
			return err
		}
		now := s.clock.Now()
		if c.state.LeaseUntil.After(now) {
			return fmt.Errorf("%w: %s %s until %s", ErrStepBusy, msg.PaymentID, msg.Step, c.state.LeaseUntil.Format(time.RFC3339))
		}

		var found bool
		if msg.Step == domain.StepRefund {
			var rf domain.Refund
			rf, found, err = tx.Refunds().NextPending(ctx, msg.PaymentID)
			c.refund = rf.Record()
		} else {
			var rv domain.TransferReversal
			rv, found, err = tx.Refunds().NextPendingReversal(ctx, msg.PaymentID)
			c.reversal = rv.Record()
		}
		if err != nil {
			return err
		}
		if !found {
			c.skip = true
			c.state.Done, c.state.LeaseUntil = true, time.Time{}
			return tx.Payments().SaveStep(ctx, c.state)
		}

		c.reconcile = c.state.Claimed && !c.state.Done
		c.state.Claimed, c.state.Done = true, false
		c.state.LeaseUntil = now.Add(s.leaseTTL)
		return tx.Payments().SaveStep(ctx, c.state)
	})
	return c, err
}

// findReturn looks at Stripe for the refund or reversal an earlier attempt
// may have made, by the TaskPod id in its metadata.
func (s *Steps) findReturn(ctx context.Context, c returnClaim) (returnOutcome, bool, error) {
	if c.msg.Step == domain.StepRefund {
		refunds, err := s.refunds.ListRefunds(ctx, c.payment.StripeChargeID)
		if err != nil {
			return returnOutcome{}, false, err
		}
		for _, re := range refunds {
			if re.RefundID == c.refund.ID {
				return returnOutcome{refund: re}, true, nil
			}
		}
		return returnOutcome{}, false, nil
	}
	reversals, err := s.refunds.ListTransferReversals(ctx, c.reversal.StripeTransferID)
	if err != nil {
		return returnOutcome{}, false, err
	}
	for _, rv := range reversals {
		if rv.ReversalID == c.reversal.ID {
			return returnOutcome{reversal: rv}, true, nil
		}
	}
	return returnOutcome{}, false, nil
}

// callReturn sends the refund or reversal. Stripe rejecting the request,
// such as a reversal the connected account's balance cannot cover, is an
// outcome; anything else is retried.
func (s *Steps) callReturn(ctx context.Context, c returnClaim, key string) (returnOutcome, error) {
	var err error
	var o returnOutcome
	if c.msg.Step == domain.StepRefund {
		o.refund, err = s.refunds.CreateRefund(ctx, ports.RefundInput{
			RefundID: c.refund.ID, PaymentID: c.payment.ID, ChargeID: c.payment.StripeChargeID,
			Amount: c.refund.Amount, Reason: c.refund.Reason, IdempotencyKey: key,
		})
	} else {
		o.reversal, err = s.refunds.CreateTransferReversal(ctx, ports.TransferReversalInput{
			ReversalID: c.reversal.ID, PaymentID: c.payment.ID, TransferID: c.reversal.StripeTransferID,
			Amount: c.reversal.Amount, IdempotencyKey: key,
		})
	}
	if err != nil && isFinal(err) {
		return returnOutcome{failure: err.Error()}, nil
	}
	return o, err
}

// recordReturn applies the outcome, marks the step done and queues it
// again when more refunds or reversals wait.
func (s *Steps) recordReturn(ctx context.Context, c returnClaim, o returnOutcome) error {
	var refunded *domain.RefundRecord
	err := s.stripe.InStripeTx(ctx, func(ctx context.Context, tx ports.StripeTx) error {
		refunded = nil
		p, err := tx.Payments().GetForUpdate(ctx, c.msg.PaymentID)
		if err != nil {
			return err
		}
		st, err := tx.Payments().Step(ctx, c.msg.PaymentID, c.msg.Step)
		if err != nil {
			return err
		}
		st.Done, st.LeaseUntil, st.LastError = true, time.Time{}, o.failure
		if err := tx.Payments().SaveStep(ctx, st); err != nil {
			return err
		}

		meta := s.returnMeta(p.Record(), c.msg.RequestID, string(c.msg.Step))
		var more bool
		if c.msg.Step == domain.StepRefund {
			if refunded, err = s.recordRefund(ctx, tx, p.Record(), c.refund.ID, o, meta); err != nil {
				return err
			}
			_, more, err = tx.Refunds().NextPending(ctx, p.ID())
		} else {
			if err := s.recordReversal(ctx, tx, c.reversal.ID, o, meta); err != nil {
				return err
			}
			_, more, err = tx.Refunds().NextPendingReversal(ctx, p.ID())
		}
		if err != nil || !more {
			return err
		}
		return requeueStep(ctx, tx, p.ID(), c.msg.Step, c.msg.RequestID)
	})
	if err == nil && refunded != nil {
		s.observer.PaymentTransitioned(metricRefunded, refunded.Amount.Currency(), refunded.Amount.Amount())
	}
	return err
}

func (s *Steps) recordRefund(ctx context.Context, tx ports.StripeTx, p domain.PaymentRecord, refundID string,
	o returnOutcome, meta domain.LedgerMeta) (*domain.RefundRecord, error) {
	rf, err := tx.Refunds().GetForUpdate(ctx, refundID)
	if err != nil {
		return nil, err
	}
	if rf.Record().Status != domain.RefundPending {
		// A charge.refunded webhook recorded it first.
		return nil, nil
	}
	if o.failure != "" {
		s.log.WarnContext(ctx, "refund rejected by stripe", "refund_id", refundID, "payment_id", p.ID, "reason", o.failure)
		if err := rf.MarkFailed(o.failure, meta.EffectiveAt); err != nil {
			return nil, err
		}
		return nil, tx.Refunds().Update(ctx, rf)
	}
	return s.applyRefundSucceeded(ctx, tx, p, rf, o.refund, meta)
}

// applyRefundSucceeded splits a refund Stripe made by the running totals,
// posts it and plans the reversal of its agent part.
func (s *Steps) applyRefundSucceeded(ctx context.Context, tx ports.StripeTx, p domain.PaymentRecord, rf domain.Refund,
	re ports.StripeRefund, meta domain.LedgerMeta) (*domain.RefundRecord, error) {
	totals, err := tx.Refunds().Totals(ctx, p.ID)
	if err != nil {
		return nil, err
	}
	rec := rf.Record()
	feePart, agentPart, err := domain.SplitReturn(p, totals, rec.Amount.Amount())
	if err != nil {
		return nil, err
	}
	if err := rf.MarkSucceeded(re.ID, re.BalanceTransactionID, feePart, agentPart, meta.EffectiveAt); err != nil {
		return nil, err
	}
	if err := tx.Refunds().Update(ctx, rf); err != nil {
		return nil, err
	}
	rec = rf.Record()

	meta.Stripe.RefundID = re.ID
	meta.Stripe.BalanceTransactionID = re.BalanceTransactionID
	posting, err := domain.RefundPosting(s.ids.NewID("ltx"), p, rec, meta)
	if err != nil {
		return nil, err
	}
	if err := tx.Ledger().Append(ctx, posting); err != nil {
		return nil, err
	}
	if err := s.planReversal(ctx, tx, p, rec.ID, agentPart, meta); err != nil {
		return nil, err
	}
	s.log.InfoContext(ctx, "refund succeeded", "refund_id", rec.ID, "stripe_refund_id", re.ID, "payment_id", p.ID,
		"amount", rec.Amount.Amount(), "fee_returned", feePart, "agent_part", agentPart)
	return &rec, nil
}

// planReversal queues the reversal of an agent part from the payment's
// transfer; a payment never transferred has nothing to reverse.
func (s *Steps) planReversal(ctx context.Context, tx ports.StripeTx, p domain.PaymentRecord, sourceID string, agentPart int64, meta domain.LedgerMeta) error {
	if agentPart == 0 || domain.RefundAgentSide(p) != domain.DisputeClawbackReversal {
		return nil
	}
	rv, err := domain.NewTransferReversal(s.ids.NewID("trv"), p, sourceID, agentPart, meta.EffectiveAt)
	if err != nil {
		return err
	}
	if err := tx.Refunds().InsertReversal(ctx, rv); err != nil {
		return err
	}
	return requeueStep(ctx, tx, p.ID, domain.StepTransferReversal, meta.RequestID)
}

func (s *Steps) recordReversal(ctx context.Context, tx ports.StripeTx, reversalID string, o returnOutcome, meta domain.LedgerMeta) error {
	rv, err := tx.Refunds().GetReversalForUpdate(ctx, reversalID)
	if err != nil {
		return err
	}
	if o.failure != "" {
		if rv.Record().Status != domain.ReversalPending {
			return nil
		}
		s.log.WarnContext(ctx, "transfer reversal rejected by stripe; the agent's receivable stays open",
			"reversal_id", reversalID, "payment_id", rv.Record().PaymentID, "agent_id", rv.Record().AgentID,
			"amount", rv.Record().Amount.Amount(), "reason", o.failure)
		if err := rv.MarkFailed(o.failure, meta.EffectiveAt); err != nil {
			return err
		}
		return tx.Refunds().UpdateReversal(ctx, rv)
	}
	return s.applyReversalSucceeded(ctx, tx, rv, o.reversal, meta)
}

// applyReversalSucceeded posts a reversal Stripe made. A reversal that a won
// dispute had canceled credits the agent's payable instead of the
// receivable, because the platform owes that money to the agent again.
func (s *Steps) applyReversalSucceeded(ctx context.Context, tx ports.StripeTx, rv domain.TransferReversal,
	trr ports.StripeTransferReversal, meta domain.LedgerMeta) error {
	late := rv.Record().Status == domain.ReversalCanceled
	if rv.Record().Status == domain.ReversalSucceeded {
		return nil
	}
	if err := rv.MarkSucceeded(trr.ID, trr.BalanceTransactionID, meta.EffectiveAt); err != nil {
		return err
	}
	if err := tx.Refunds().UpdateReversal(ctx, rv); err != nil {
		return err
	}
	meta.Stripe.TransferID = rv.Record().StripeTransferID
	meta.Stripe.BalanceTransactionID = trr.BalanceTransactionID
	post := domain.TransferReversalPosting
	if late {
		post = domain.LateReversalPosting
	}
	posting, err := post(s.ids.NewID("ltx"), rv.Record(), meta)
	if err != nil {
		return err
	}
	s.log.InfoContext(ctx, "transfer reversed", "reversal_id", rv.Record().ID, "stripe_reversal_id", trr.ID,
		"payment_id", rv.Record().PaymentID, "amount", rv.Record().Amount.Amount())
	return tx.Ledger().Append(ctx, posting)
}

func (s *Steps) returnMeta(p domain.PaymentRecord, requestID, reason string) domain.LedgerMeta {
	return domain.LedgerMeta{
		Actor: relayActor, RequestID: requestID, Reason: reason, TaskID: p.TaskID, PaymentID: p.ID,
		EffectiveAt: s.clock.Now(),
		Stripe:      domain.StripeRefs{PaymentIntentID: p.StripePaymentIntentID, ChargeID: p.StripeChargeID},
	}
}

// errUnknownObject marks a webhook event whose object TaskPod does not know
// yet; the event is kept and retried.
var errUnknownObject = errors.New("the event's object is not known yet")
