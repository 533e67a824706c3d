package application

import (
	"context"
	"fmt"

	"github.com/taskpod/billing/domain"
	"github.com/taskpod/billing/ports"
)

// applyDispute records a dispute from its event: opened when first seen,
// closed once Stripe's status is won or lost. The payload is applied as it
// is, because a closed dispute's payload carries everything its opening
// did, so events arriving in reverse order still end in the right state.
//
// NOTE: the payload is trusted here because the emulator serves no GET
// /v1/disputes/{id}; with real Stripe the dispute could be read again.
func (w *Webhooks) applyDispute(ctx context.Context, tx ports.StripeTx, ev ports.StripeEvent) (EventOutcome, error) {
	d := ev.Dispute
	if d == nil {
		return "", fmt.Errorf("event %s of type %s carries no dispute", ev.ID, ev.Type)
	}
	paymentID, found, err := tx.Lookups().PaymentByCharge(ctx, d.ChargeID)
	if err != nil {
		return "", err
	}
	if !found {
		return "", errUnknownObject
	}
	p, _, err := lockPayment(ctx, tx, paymentID)
	if err != nil {
		return "", err
	}
	meta := w.meta(p.Record(), ev)
	meta.Stripe.ChargeID = d.ChargeID

	dispute, known, err := tx.Disputes().GetForUpdate(ctx, d.ID)
	if err != nil {
		return "", err
	}
	outcome := EventNoEffect
	if !known {
		if dispute, err = w.openDispute(ctx, tx, p.Record(), *d, meta); err != nil {
			return "", err
		}
		outcome = EventApplied
	}
	if dispute.Record().Status != domain.DisputeOpen {
		return outcome, nil
	}
	switch d.Status {
	case "won":
		return EventApplied, w.winDispute(ctx, tx, p.Record(), dispute, meta)
	case "lost":
		if err := dispute.Lose(meta.EffectiveAt); err != nil {
			return "", err
		}
		w.log.InfoContext(ctx, "dispute lost", "dispute_id", d.ID, "payment_id", p.ID(), "amount", d.Amount)
		return EventApplied, tx.Disputes().Update(ctx, dispute)
	}
	return outcome, nil
}

// openDispute books the withdrawal and, with DISPUTE_CLAWBACK, the agent
// part: reversed from the transfer like a refund, or taken off the payable
// when the share was never transferred.
func (w *Webhooks) openDispute(ctx context.Context, tx ports.StripeTx, p domain.PaymentRecord, d ports.Dispute, meta domain.LedgerMeta) (domain.Dispute, error) {
	if p.Status != domain.PaymentCaptured && p.Status != domain.PaymentTransferred {
		return domain.Dispute{}, fmt.Errorf("dispute %s on payment %s, which is %s and has no capture", d.ID, p.ID, p.Status)
	}
	if d.Currency != p.Amount.Currency() {
		return domain.Dispute{}, fmt.Errorf("dispute %s is in %s, payment %s in %s", d.ID, d.Currency, p.ID, p.Amount.Currency())
	}
	totals, err := tx.Refunds().Totals(ctx, p.ID)
	if err != nil {
		return domain.Dispute{}, err
	}
	feePart, agentPart, err := domain.SplitReturn(p, totals, d.Amount)
	if err != nil {
		return domain.Dispute{}, err
	}

	side := domain.DisputePlatformLoss
	if w.cfg.DisputeClawback {
		side = domain.RefundAgentSide(p)
	}
	dispute, err := domain.NewDispute(d.ID, p, d.ChargeID, d.Amount, d.Fee, d.Reason, feePart, agentPart, side, meta.EffectiveAt)
	if err != nil {
		return domain.Dispute{}, err
	}
	if err := tx.Disputes().Insert(ctx, dispute); err != nil {
		return domain.Dispute{}, err
	}

	posting, err := domain.DisputePosting(w.ids.NewID("ltx"), p, dispute.Record(), meta)
	if err != nil {
		return domain.Dispute{}, err
	}
	if err := tx.Ledger().Append(ctx, posting); err != nil {
		return domain.Dispute{}, err
	}
	if side == domain.DisputeClawbackReversal {
		if err := w.steps.planReversal(ctx, tx, p, d.ID, agentPart, meta); err != nil {
			return domain.Dispute{}, err
		}
	}
	w.log.WarnContext(ctx, "dispute opened", "dispute_id", d.ID, "payment_id", p.ID, "amount", d.Amount,
		"dispute_fee", d.Fee, "agent_part", agentPart, "agent_side", side)
	return dispute, nil
}

// winDispute books the amount coming back and undoes the clawback. A
// reversal that has not run yet is canceled, since nothing needs taking
// back any more.
func (w *Webhooks) winDispute(ctx context.Context, tx ports.StripeTx, p domain.PaymentRecord, dispute domain.Dispute, meta domain.LedgerMeta) error {
	rec := dispute.Record()
	reversal := domain.ReversalStatus("")
	if rec.AgentSide == domain.DisputeClawbackReversal {
		rv, found, err := tx.Refunds().ReversalBySource(ctx, rec.ID)
		if err != nil {
			return err
		}
		if found {
			if rv.Record().Status == domain.ReversalPending {
				if err := rv.Cancel(meta.EffectiveAt); err != nil {
					return err
				}
				if err := tx.Refunds().UpdateReversal(ctx, rv); err != nil {
					return err
				}
			}
			reversal = rv.Record().Status
		}
	}
	if err := dispute.Win(meta.EffectiveAt); err != nil {
		return err
	}
	if err := tx.Disputes().Update(ctx, dispute); err != nil {
		return err
	}
	account := domain.ReinstatementAccount(p.AgentID, rec.AgentSide, reversal)
	posting, err := domain.DisputeReinstatementPosting(w.ids.NewID("ltx"), dispute.Record(), account, meta)
	if err != nil {
		return err
	}
	w.log.InfoContext(ctx, "dispute won", "dispute_id", rec.ID, "payment_id", p.ID, "amount", rec.Amount.Amount(),
		"agent_account", account)
	return tx.Ledger().Append(ctx, posting)
}
