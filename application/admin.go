package application

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/taskpod/billing/domain"
	"github.com/taskpod/billing/ports"
)

// Admin holds the operator's repairs of money steps: reading and requeueing
// outbox messages the relay gave up on, and retrying a transfer Stripe rejected.
// Every repair is written to the audit log in the unit of work that makes it.
type Admin struct {
	store ports.AdminStore
	clock ports.Clock
	log   *slog.Logger
}

// NewAdmin builds the admin use cases.
func NewAdmin(store ports.AdminStore, clock ports.Clock, log *slog.Logger) *Admin {
	return &Admin{store: store, clock: clock, log: log}
}

// ListQuarantine returns one page of quarantined outbox messages, newest first.
func (a *Admin) ListQuarantine(ctx context.Context, f ports.QuarantineFilter, page ports.Page) ([]ports.QuarantinedMessage, bool, error) {
	var out []ports.QuarantinedMessage
	var more bool
	err := a.store.InAdminTx(ctx, func(ctx context.Context, tx ports.AdminTx) error {
		var err error
		out, more, err = tx.Quarantine().List(ctx, f, page)
		return err
	})
	return out, more, err
}

// Requeue puts a quarantined message back in the outbox as a new message
// with attempt 1 and marks the entry requeued, in one unit of work. A
// second call for the same entry changes nothing and returns it as stored,
// so a retried request never queues the step twice.
func (a *Admin) Requeue(ctx context.Context, actor Actor, id string) (ports.QuarantinedMessage, error) {
	var m ports.QuarantinedMessage
	var requeued bool
	err := a.store.InAdminTx(ctx, func(ctx context.Context, tx ports.AdminTx) error {
		requeued = false
		var err error
		m, err = tx.Quarantine().GetForUpdate(ctx, id)
		if err != nil {
			return err
		}
		if !m.RequeuedAt.IsZero() {
			return nil
		}
		if _, err := domain.ParseStep(string(m.Step)); err != nil || m.PaymentID == "" {
			return domain.Invalid("id", "message_unreadable",
				"quarantined message %s names no payment step (payment %q, step %q), so it cannot be requeued", id, m.PaymentID, m.Step)
		}

		now := a.clock.Now()
		if err := tx.Outbox().Enqueue(ctx, ports.OutboxMessage{PaymentID: m.PaymentID, Step: m.Step, RequestID: actor.RequestID}); err != nil {
			return err
		}
		if err := tx.Quarantine().MarkRequeued(ctx, id, actor.Name(), now); err != nil {
			return err
		}
		m.RequeuedAt, m.RequeuedBy = now, actor.Name()
		requeued = true
		return tx.Audit().Record(ctx, ports.AuditEvent{
			Actor: actor.Name(), Action: "outbox.requeued", Subject: id, RequestID: actor.RequestID, At: now,
			Details: map[string]any{
				"paymentId": m.PaymentID, "step": string(m.Step), "attempts": m.Attempts,
				"messageUuid": m.MessageUUID, "lastError": m.LastError,
			},
		})
	})
	if err != nil {
		return ports.QuarantinedMessage{}, err
	}
	if requeued {
		a.log.InfoContext(ctx, "quarantined outbox message requeued", "quarantine_id", id,
			"payment_id", m.PaymentID, "step", m.Step, "attempts", m.Attempts)
	}
	return m, nil
}

// RetryTransfer queues again the transfer of a captured payment whose
// transfer Stripe rejected, to destination when it is set (for an agent
// whose Connect account changed) and else to the same account. The
// transfer step is reopened as claimed, so its next run first looks for a
// transfer at Stripe and, finding none, moves to a new attempt number:
// Stripe then sees a new idempotency key instead of replaying its stored
// rejection.
func (a *Admin) RetryTransfer(ctx context.Context, actor Actor, paymentID, destination string) (domain.PaymentRecord, error) {
	var rec domain.PaymentRecord
	err := a.store.InAdminTx(ctx, func(ctx context.Context, tx ports.AdminTx) error {
		p, err := tx.Payments().GetForUpdate(ctx, paymentID)
		if err != nil {
			return err
		}
		before := p.Record()
		now := a.clock.Now()
		if err := p.RetryTransfer(destination, now); err != nil {
			if errors.Is(err, domain.ErrInvalidTransition) {
				return fmt.Errorf("retry transfer: only a captured payment whose transfer failed can retry it: %w", err)
			}
			return err
		}
		if err := tx.Payments().Update(ctx, p); err != nil {
			return err
		}

		st, err := tx.Payments().Step(ctx, paymentID, domain.StepTransfer)
		if err != nil {
			return err
		}
		if err := tx.Payments().SaveStep(ctx, reopenStep(st)); err != nil {
			return err
		}
		if err := tx.Outbox().Enqueue(ctx, ports.OutboxMessage{PaymentID: paymentID, Step: domain.StepTransfer, RequestID: actor.RequestID}); err != nil {
			return err
		}
		rec = p.Record()
		return tx.Audit().Record(ctx, ports.AuditEvent{
			Actor: actor.Name(), Action: "payment.transfer_retried", Subject: paymentID, RequestID: actor.RequestID, At: now,
			Details: map[string]any{
				"taskId": rec.TaskID, "rejectedAttempt": st.Attempt, "rejectedReason": before.TransferFailedReason,
				"previousDestination": before.DestinationAccountID, "destination": rec.DestinationAccountID,
				"amountCents": rec.AgentShare, "currency": string(rec.Amount.Currency()),
			},
		})
	})
	if err != nil {
		return domain.PaymentRecord{}, err
	}
	a.log.InfoContext(ctx, "transfer retry queued", "payment_id", paymentID, "task_id", rec.TaskID,
		"destination", rec.DestinationAccountID)
	return rec, nil
}

// reopenStep returns a finished step ready to run again. Claimed tells the
// executor that an earlier attempt may have reached Stripe, so it reads
// Stripe before sending anything and bumps the attempt number itself.
func reopenStep(st ports.StepState) ports.StepState {
	return ports.StepState{PaymentID: st.PaymentID, Step: st.Step, Attempt: st.Attempt, Claimed: true}
}
