package application

import (
	"context"
	"errors"

	"github.com/taskpod/billing/domain"
	"github.com/taskpod/billing/ports"
)

// applyRefunds records the succeeded refunds of a charge that TaskPod has
// not recorded yet: its own refunds whose step has not recorded them, and
// refunds made outside TaskPod, such as in the Stripe Dashboard.
func (w *Webhooks) applyRefunds(ctx context.Context, tx ports.StripeTx, ev ports.StripeEvent, refunds []ports.StripeRefund) (EventOutcome, []func(), error) {
	paymentID, found, err := tx.Lookups().PaymentByCharge(ctx, ev.ChargeID)
	if err != nil {
		return "", nil, err
	}
	if !found {
		if ev.PaymentID == "" {
			return EventNoEffect, nil, nil
		}
		return "", nil, errUnknownObject
	}
	p, _, err := lockPayment(ctx, tx, paymentID)
	if err != nil {
		return "", nil, err
	}
	meta := w.meta(p.Record(), ev)

	var after []func()
	// Stripe lists newest first; the running totals need oldest first.
	for i := len(refunds) - 1; i >= 0; i-- {
		re := refunds[i]
		if re.Status != "succeeded" {
			continue
		}
		rf, pending, err := w.refundToRecord(ctx, tx, p.Record(), re)
		if err != nil {
			return "", nil, err
		}
		if !pending {
			continue
		}
		rec, err := w.steps.applyRefundSucceeded(ctx, tx, p.Record(), rf, re, meta)
		if err != nil {
			return "", nil, err
		}
		amount, cur := rec.Amount.Amount(), rec.Amount.Currency()
		after = append(after, func() { w.steps.observer.PaymentTransitioned(metricRefunded, cur, amount) })
	}
	if len(after) == 0 {
		return EventNoEffect, nil, nil
	}
	return EventApplied, after, nil
}

// refundToRecord finds the TaskPod refund of a Stripe refund, creating one
// for a refund made outside TaskPod; pending is false when it is already
// recorded.
func (w *Webhooks) refundToRecord(ctx context.Context, tx ports.StripeTx, p domain.PaymentRecord, re ports.StripeRefund) (domain.Refund, bool, error) {
	if re.RefundID != "" {
		rf, err := tx.Refunds().GetForUpdate(ctx, re.RefundID)
		if errors.Is(err, domain.ErrNotFound) {
			w.log.WarnContext(ctx, "stripe refund names an unknown TaskPod refund", "stripe_refund_id", re.ID, "refund_id", re.RefundID)
			return domain.Refund{}, false, nil
		}
		if err != nil {
			return domain.Refund{}, false, err
		}
		return rf, rf.Record().Status == domain.RefundPending, nil
	}
	if _, known, err := tx.Refunds().ByStripeRefund(ctx, re.ID); err != nil || known {
		return domain.Refund{}, false, err
	}
	rf, err := domain.NewExternalRefund(w.ids.NewID("rfd"), p, re.Amount, re.ID, w.clock.Now())
	if err != nil {
		return domain.Refund{}, false, err
	}
	if err := tx.Refunds().Insert(ctx, rf); err != nil {
		return domain.Refund{}, false, err
	}
	w.log.WarnContext(ctx, "refund made outside TaskPod recorded", "stripe_refund_id", re.ID, "payment_id", p.ID, "amount", re.Amount)
	return rf, true, nil
}

// applyReversals records the reversals of a transfer that TaskPod has not
// recorded yet. A reversal made outside TaskPod is booked against the
// agent's receivable, which it settles when an earlier reversal failed.
func (w *Webhooks) applyReversals(ctx context.Context, tx ports.StripeTx, ev ports.StripeEvent, reversals []ports.StripeTransferReversal) (EventOutcome, error) {
	paymentID, found, err := tx.Lookups().PaymentByTransfer(ctx, ev.ObjectID)
	if err != nil {
		return "", err
	}
	if !found {
		if ev.PaymentID == "" {
			return EventNoEffect, nil
		}
		return "", errUnknownObject
	}
	p, _, err := lockPayment(ctx, tx, paymentID)
	if err != nil {
		return "", err
	}
	meta := w.meta(p.Record(), ev)

	outcome := EventNoEffect
	for i := len(reversals) - 1; i >= 0; i-- {
		trr := reversals[i]
		rv, pending, err := w.reversalToRecord(ctx, tx, p.Record(), trr)
		if err != nil {
			return "", err
		}
		if !pending {
			continue
		}
		if err := w.steps.applyReversalSucceeded(ctx, tx, rv, trr, meta); err != nil {
			return "", err
		}
		outcome = EventApplied
	}
	return outcome, nil
}

func (w *Webhooks) reversalToRecord(ctx context.Context, tx ports.StripeTx, p domain.PaymentRecord,
	trr ports.StripeTransferReversal) (domain.TransferReversal, bool, error) {
	if trr.ReversalID != "" {
		rv, err := tx.Refunds().GetReversalForUpdate(ctx, trr.ReversalID)
		if errors.Is(err, domain.ErrNotFound) {
			w.log.WarnContext(ctx, "stripe reversal names an unknown TaskPod reversal", "stripe_reversal_id", trr.ID, "reversal_id", trr.ReversalID)
			return domain.TransferReversal{}, false, nil
		}
		if err != nil {
			return domain.TransferReversal{}, false, err
		}
		status := rv.Record().Status
		return rv, status == domain.ReversalPending || status == domain.ReversalCanceled, nil
	}
	if _, known, err := tx.Refunds().ReversalByStripeID(ctx, trr.ID); err != nil || known {
		return domain.TransferReversal{}, false, err
	}
	rv, err := domain.NewTransferReversal(w.ids.NewID("trv"), p, "stripe:"+trr.ID, trr.Amount, w.clock.Now())
	if err != nil {
		return domain.TransferReversal{}, false, err
	}
	if err := tx.Refunds().InsertReversal(ctx, rv); err != nil {
		return domain.TransferReversal{}, false, err
	}
	w.log.WarnContext(ctx, "transfer reversal made outside TaskPod recorded", "stripe_reversal_id", trr.ID,
		"payment_id", p.ID, "amount", trr.Amount)
	return rv, true, nil
}
