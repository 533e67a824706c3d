package application

import (
	"context"
	"errors"

	"github.com/taskpod/billing/domain"
	"github.com/taskpod/billing/ports"
)

// applyIntent moves a payment forward to what its PaymentIntent at Stripe
// shows. The authorize, capture and release steps record the same outcomes;
// whichever comes second finds the payment moved on and changes nothing.
func (w *Webhooks) applyIntent(ctx context.Context, tx ports.StripeTx, ev ports.StripeEvent, pi ports.PaymentIntent,
	capture *ports.Capture) (EventOutcome, []func(), error) {
	if pi.PaymentID == "" {
		return EventNoEffect, nil, nil
	}
	p, task, err := lockPayment(ctx, tx, pi.PaymentID)
	if err != nil {
		return "", nil, err
	}
	current := p.Record().StripePaymentIntentID
	if current != "" && current != pi.ID {
		// A hold a renewal replaced, or a renewal the reauthorize step has
		// not recorded yet: the steps own both.
		w.log.InfoContext(ctx, "event for another payment intent of the payment; not applied",
			"payment_id", p.ID(), "payment_intent_id", pi.ID, "current_payment_intent_id", current)
		return EventNoEffect, nil, nil
	}

	meta := w.meta(p.Record(), ev)
	outcomes, err := w.intentOutcomes(&p, task, pi, capture)
	if err != nil || len(outcomes) == 0 {
		return EventNoEffect, nil, err
	}

	var after []func()
	for _, o := range outcomes {
		if o.kind == 0 {
			// A decline recorded by intentOutcomes without a transition.
			continue
		}
		next, err := w.steps.applyOutcome(ctx, tx, &p, &task, o, meta)
		if errors.Is(err, domain.ErrInvalidTransition) {
			w.log.InfoContext(ctx, "payment already moved on; event not applied", "payment_id", p.ID(), "error", err)
			return EventNoEffect, nil, nil
		}
		if err != nil {
			return "", nil, err
		}
		if o.kind == outcomeCaptured {
			next, err = w.afterCapture(ctx, tx, p, task, meta)
			if err != nil {
				return "", nil, err
			}
		}
		if err := savePayment(ctx, tx, p, task, next, ev.ID); err != nil {
			return "", nil, err
		}
		rec, o := p.Record(), o
		after = append(after, func() { w.steps.observe(rec, o) })
	}
	if len(after) == 0 {
		if err := tx.Payments().Update(ctx, p); err != nil {
			return "", nil, err
		}
	}
	return EventApplied, after, nil
}

// intentOutcomes returns the outcomes that bring the payment to the
// intent's state, oldest first: a capture TaskPod has not seen needs the
// authorization first. A decline on an intent the customer still has to
// confirm changes no state and is recorded on p at once, as an outcome of
// kind zero.
func (w *Webhooks) intentOutcomes(p *domain.Payment, task domain.Task, pi ports.PaymentIntent, capture *ports.Capture) ([]outcome, error) {
	status := p.Status()
	waiting := status == domain.PaymentAuthorizing || status == domain.PaymentRequiresCustomerAction
	closed := task.Status() == domain.TaskCancelled || task.Status() == domain.TaskFailed

	switch pi.Status {
	case ports.PIRequiresCapture:
		if waiting {
			return []outcome{{kind: outcomeAuthorized, intent: pi}}, nil
		}

	case ports.PISucceeded:
		if capture == nil {
			return nil, errors.New("succeeded payment intent " + pi.ID + " was read without its capture")
		}
		captured := outcome{kind: outcomeCaptured, capture: *capture}
		switch {
		case waiting:
			return []outcome{{kind: outcomeAuthorized, intent: pi}, captured}, nil
		case status == domain.PaymentAuthorized:
			return []outcome{captured}, nil
		}

	case ports.PIRequiresPaymentMethod, ports.PIRequiresConfirmation, ports.PIRequiresAction, ports.PIProcessing:
		switch status {
		case domain.PaymentAuthorizing:
			o, err := outcomeOfIntent(pi)
			if err != nil {
				return nil, err
			}
			return []outcome{o}, nil
		case domain.PaymentRequiresCustomerAction:
			decline := pi.LastDeclineCode
			if decline == "" {
				decline = pi.LastErrorCode
			}
			if decline == "" || decline == p.Record().DeclineCode {
				return nil, nil
			}
			return []outcome{{}}, p.RecordDecline(decline, w.clock.Now())
		}

	case ports.PICanceled:
		switch {
		case status == domain.PaymentAuthorizing:
			return []outcome{{kind: outcomeFailed, intent: pi, reason: "payment intent canceled at Stripe"}}, nil
		case status == domain.PaymentRequiresCustomerAction && closed:
			return []outcome{{kind: outcomeReleased, intent: pi, reason: "payment intent canceled"}}, nil
		case status == domain.PaymentRequiresCustomerAction:
			return []outcome{{kind: outcomeFailed, intent: pi, reason: "payment intent canceled at Stripe"}}, nil
		case status == domain.PaymentAuthorized && closed:
			return []outcome{{kind: outcomeReleased, intent: pi, reason: "hold released"}}, nil
		case status == domain.PaymentAuthorized:
			reason := "payment intent canceled at Stripe before capture"
			// The reason comes from the intent read again, because a late
			// event of another type carries none.
			if pi.CancellationReason == "automatic" {
				reason = "authorization expired before capture"
			}
			return []outcome{{kind: outcomeExpired, intent: pi, reason: reason}}, nil
		}
	}
	return nil, nil
}

// afterCapture returns the step that follows a capture TaskPod learned from
// Stripe. A completed task gets its transfer, and a matched one nothing yet,
// because its completion queues the transfer. A task cancelled or failed
// meanwhile gets a full refund, so the customer does not pay for it.
func (w *Webhooks) afterCapture(ctx context.Context, tx ports.StripeTx, p domain.Payment, task domain.Task, meta domain.LedgerMeta) (domain.Step, error) {
	switch task.Status() {
	case domain.TaskCompleted:
		return domain.StepTransfer, nil
	case domain.TaskMatched:
		return "", nil
	}
	refund, err := domain.NewCompensationRefund(w.ids.NewID("rfd"), p.Record(), webhookActor, meta.EffectiveAt)
	if err != nil {
		return "", err
	}
	if err := tx.Refunds().Insert(ctx, refund); err != nil {
		return "", err
	}
	w.log.WarnContext(ctx, "stripe captured a payment of a closed task; refunding it",
		"payment_id", p.ID(), "task_id", task.ID(), "task_status", task.Status(), "refund_id", refund.ID())
	return domain.StepRefund, nil
}

// applySetupIntent saves the card of a succeeded SetupIntent, even when the
// client never calls confirm-setup. It becomes the default only when the
// customer has none, because confirm-setup is where a customer chooses.
func (w *Webhooks) applySetupIntent(ctx context.Context, tx ports.StripeTx, si ports.SetupIntent, pm *domain.PaymentMethod) (EventOutcome, error) {
	if si.Status != ports.SetupIntentSucceeded || pm == nil || si.CustomerID == "" {
		return EventNoEffect, nil
	}
	if pm.CustomerID != si.CustomerID {
		// Detached or moved since; payment_method.detached handles it.
		return EventNoEffect, nil
	}
	userID, found, err := tx.Lookups().CustomerByStripeID(ctx, si.CustomerID)
	if err != nil {
		return "", err
	}
	if !found {
		return "", errUnknownObject
	}
	customer, err := tx.Customers().GetForUpdate(ctx, userID)
	if err != nil {
		return "", err
	}
	if _, err := tx.Customers().GetPaymentMethod(ctx, userID, pm.ID); err == nil {
		return EventNoEffect, nil
	} else if !errors.Is(err, domain.ErrNotFound) {
		return "", err
	}

	card := *pm
	card.CustomerID = userID
	card.CreatedAt = w.clock.Now()
	if err := tx.Customers().UpsertPaymentMethod(ctx, card); err != nil {
		return "", err
	}
	if customer.DefaultPaymentMethodID == "" {
		customer.DefaultPaymentMethodID = card.ID
		if err := tx.Customers().Update(ctx, customer); err != nil {
			return "", err
		}
	}
	w.log.InfoContext(ctx, "card saved from setup_intent.succeeded", "customer_id", userID, "payment_method_id", card.ID,
		"is_default", customer.DefaultPaymentMethodID == card.ID)
	return EventApplied, nil
}

// applyDetached deletes a card that is no longer attached at Stripe and
// clears the default if it was that card. Holds already placed with it stay.
func (w *Webhooks) applyDetached(ctx context.Context, tx ports.StripeTx, pm domain.PaymentMethod) (EventOutcome, error) {
	if pm.CustomerID != "" {
		// Attached again since the event was sent.
		return EventNoEffect, nil
	}

	owner, found, err := tx.Lookups().PaymentMethodOwner(ctx, pm.ID)
	if err != nil || !found {
		return EventNoEffect, err
	}
	removing, err := tx.Lookups().OperationOpen(ctx, pm.ID, opDetach)
	if err != nil {
		return "", err
	}
	if removing {
		// The customer's DELETE detached it and deletes the card itself,
		// and deleting it here first would make that request fail. A retry
		// finds the card gone once that request has finished.
		return "", errUnknownObject
	}

	customer, err := tx.Customers().GetForUpdate(ctx, owner)
	if err != nil {
		return "", err
	}
	if err := tx.Customers().DeletePaymentMethod(ctx, owner, pm.ID); err != nil {
		return "", err
	}
	if customer.DefaultPaymentMethodID == pm.ID {
		customer.DefaultPaymentMethodID = ""
		if err := tx.Customers().Update(ctx, customer); err != nil {
			return "", err
		}
	}
	w.log.InfoContext(ctx, "card removed after payment_method.detached", "customer_id", owner, "payment_method_id", pm.ID)
	return EventApplied, nil
}
