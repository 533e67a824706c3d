package application

import (
	"context"
	"errors"
	"fmt"

	"github.com/taskpod/billing/domain"
	"github.com/taskpod/billing/ports"
)

// outcomeKind is the meaning of a Stripe response for the payment.
type outcomeKind int

const (
	outcomeAuthorized outcomeKind = iota + 1
	outcomeCustomerAction
	outcomeFailed
	outcomeCaptured
	outcomeExpired
	outcomeTransferred
	outcomeTransferFailed
	outcomeReleased
	// outcomeReauthorized: a new hold replaces the current one.
	outcomeReauthorized
	// outcomeReauthFailed: no new hold could be placed.
	outcomeReauthFailed
	// outcomeReplacedReleased: a replaced hold was cancelled at Stripe.
	outcomeReplacedReleased
)

// outcome is a step's result at Stripe, ready to be recorded.
type outcome struct {
	kind        outcomeKind
	intent      ports.PaymentIntent
	capture     ports.Capture
	transfer    ports.Transfer
	reason      string
	declineCode string
}

// call makes the step's Stripe request with the current attempt's key.
func (s *Steps) call(ctx context.Context, c claim) (outcome, error) {
	p := c.payment
	key := IdempotencyKey(p.ID, c.msg.Step, c.state.Attempt)

	switch c.msg.Step {
	case domain.StepAuthorize:
		pi, err := s.gateway.Authorize(ctx, ports.AuthorizeInput{
			PaymentID: p.ID, TaskID: p.TaskID, CustomerID: p.StripeCustomerID,
			PaymentMethodID: p.PaymentMethodID, Amount: p.Amount, IdempotencyKey: key,
		})
		if err != nil {
			return authorizeFailure(err)
		}
		return outcomeOfIntent(pi)

	case domain.StepCapture:
		capture, err := s.gateway.Capture(ctx, p.StripePaymentIntentID, p.CaptureAmount.Amount(), key)
		if err == nil {
			return outcome{kind: outcomeCaptured, capture: capture}, nil
		}
		if isFinal(err) {
			// Stripe refuses a capture after the hold expired; read the
			// intent to tell that apart from a capture that already happened.
			return s.captureState(ctx, p.StripePaymentIntentID, err)
		}
		return outcome{}, err

	case domain.StepTransfer:
		transfer, err := s.gateway.CreateTransfer(ctx, ports.TransferInput{
			PaymentID: p.ID, Amount: domain.MustMoney(p.AgentShare, p.Amount.Currency()),
			DestinationAccount: p.DestinationAccountID, SourceChargeID: p.StripeChargeID,
			TransferGroup: p.TaskID, IdempotencyKey: key,
		})
		if err == nil {
			return outcome{kind: outcomeTransferred, transfer: transfer}, nil
		}
		if isFinal(err) {
			return outcome{kind: outcomeTransferFailed, reason: err.Error()}, nil
		}
		return outcome{}, err

	case domain.StepRelease:
		pi, err := s.gateway.CancelPaymentIntent(ctx, p.StripePaymentIntentID, key)
		if err == nil {
			return outcome{kind: outcomeReleased, intent: pi, reason: "hold released"}, nil
		}
		if isFinal(err) {
			return s.releaseState(ctx, p.StripePaymentIntentID, err)
		}
		return outcome{}, err

	case domain.StepReauthorize:
		return s.reauthorize(ctx, c, key)

	case domain.StepReleasePrevious:
		pi, err := s.gateway.CancelPaymentIntent(ctx, c.target, key)
		if err == nil {
			return outcome{kind: outcomeReplacedReleased, intent: pi, reason: "replaced hold released"}, nil
		}
		if isFinal(err) {
			o, stateErr := s.releaseState(ctx, c.target, err)
			o.kind = outcomeReplacedReleased
			return o, stateErr
		}
		return outcome{}, err
	}
	return outcome{}, fmt.Errorf("unknown payment step %q", c.msg.Step)
}

// reconcile reads from Stripe whether an earlier attempt of the step took effect.
// It records the effect and returns done when it did; when Stripe shows
// nothing happened it stores a new attempt number, so the next call cannot
// replay the stored response of the earlier attempt.
func (s *Steps) reconcile(ctx context.Context, c *claim) (bool, error) {
	p := c.payment
	var o outcome
	var found bool

	switch c.msg.Step {
	case domain.StepAuthorize:
		pi, ok, err := s.gateway.FindPaymentIntent(ctx, p.StripeCustomerID, p.ID)
		if err != nil {
			return false, err
		}
		if ok {
			if o, err = outcomeOfIntent(pi); err != nil {
				return false, err
			}
			found = true
		}

	case domain.StepCapture, domain.StepRelease:
		pi, err := s.gateway.GetPaymentIntent(ctx, p.StripePaymentIntentID)
		if err != nil {
			return false, err
		}
		switch {
		case pi.Status == ports.PISucceeded:
			capture, err := s.gateway.GetCapture(ctx, pi.ID)
			if err != nil {
				return false, err
			}
			o, found = outcome{kind: outcomeCaptured, capture: capture}, true
		case pi.Status == ports.PICanceled && c.msg.Step == domain.StepRelease:
			o, found = outcome{kind: outcomeReleased, intent: pi, reason: "hold released"}, true
		case pi.Status == ports.PICanceled:
			o, found = outcome{kind: outcomeExpired, intent: pi, reason: "authorization expired before capture"}, true
		}

	case domain.StepTransfer:
		t, ok, err := s.gateway.FindTransfer(ctx, p.TaskID, p.ID)
		if err != nil {
			return false, err
		}
		if ok {
			o, found = outcome{kind: outcomeTransferred, transfer: t}, true
		}

	case domain.StepReauthorize:
		// The newest intent of the payment is the renewal's when an earlier
		// attempt placed it; the current hold's intent means it did not.
		pi, ok, err := s.gateway.FindPaymentIntent(ctx, p.StripeCustomerID, p.ID)
		if err != nil {
			return false, err
		}
		if ok && pi.ID != p.StripePaymentIntentID && pi.Status == ports.PIRequiresCapture {
			o, found = outcome{kind: outcomeReauthorized, intent: pi}, true
		}

	case domain.StepReleasePrevious:
		pi, err := s.gateway.GetPaymentIntent(ctx, c.target)
		if err != nil {
			return false, err
		}
		if pi.Status == ports.PICanceled {
			o, found = outcome{kind: outcomeReplacedReleased, intent: pi, reason: "replaced hold released"}, true
		}
	}

	if found {
		s.log.InfoContext(ctx, "earlier attempt found at stripe", "payment_id", p.ID, "step", c.msg.Step, "attempt", c.state.Attempt)
		return true, s.record(ctx, *c, o)
	}
	return false, s.newAttempt(ctx, c)
}

// reauthorize places a new off-session hold on the customer's default card
// for the payment's full amount. A missing card, a decline or a request for
// authentication ends the renewal; the customer is off-session and cannot
// confirm.
func (s *Steps) reauthorize(ctx context.Context, c claim, key string) (outcome, error) {
	p := c.payment
	if c.defaultCard == "" {
		return outcome{kind: outcomeReauthFailed, reason: "the customer has no default card"}, nil
	}
	pi, err := s.gateway.Authorize(ctx, ports.AuthorizeInput{
		PaymentID: p.ID, TaskID: p.TaskID, CustomerID: p.StripeCustomerID,
		PaymentMethodID: c.defaultCard, Amount: p.Amount, IdempotencyKey: key,
	})
	var ge *ports.GatewayError
	switch {
	case err == nil && pi.Status == ports.PIRequiresCapture:
		return outcome{kind: outcomeReauthorized, intent: pi}, nil
	case err == nil:
		return outcome{kind: outcomeReauthFailed, intent: pi, reason: fmt.Sprintf("the new payment intent %s is %s", pi.ID, pi.Status)}, nil
	case errors.As(err, &ge) && (ge.Kind == ports.GatewayCardError || ge.Kind == ports.GatewayInvalidRequest):
		decline := ge.DeclineCode
		if decline == "" {
			decline = ge.Code
		}
		return outcome{kind: outcomeReauthFailed, reason: "the new hold was declined: " + decline, declineCode: decline}, nil
	}
	return outcome{}, err
}

// captureState reads an intent after Stripe refused a capture.
func (s *Steps) captureState(ctx context.Context, paymentIntentID string, cause error) (outcome, error) {
	pi, err := s.gateway.GetPaymentIntent(ctx, paymentIntentID)
	if err != nil {
		return outcome{}, errors.Join(cause, err)
	}
	switch pi.Status {
	case ports.PISucceeded:
		capture, err := s.gateway.GetCapture(ctx, pi.ID)
		if err != nil {
			return outcome{}, err
		}
		return outcome{kind: outcomeCaptured, capture: capture}, nil
	case ports.PICanceled:
		return outcome{kind: outcomeExpired, intent: pi, reason: "authorization expired before capture"}, nil
	}
	return outcome{}, fmt.Errorf("capture rejected while the payment intent is %s: %w", pi.Status, cause)
}

// releaseState reads an intent after Stripe refused a cancel.
func (s *Steps) releaseState(ctx context.Context, paymentIntentID string, cause error) (outcome, error) {
	pi, err := s.gateway.GetPaymentIntent(ctx, paymentIntentID)
	if err != nil {
		return outcome{}, errors.Join(cause, err)
	}
	if pi.Status == ports.PICanceled {
		return outcome{kind: outcomeReleased, intent: pi, reason: "hold released"}, nil
	}
	return outcome{}, fmt.Errorf("cancel rejected while the payment intent is %s: %w", pi.Status, cause)
}

// authorizeFailure turns a failed authorization into an outcome: a card
// error leaves the customer to confirm the intent themselves, an invalid
// request fails the payment, anything else is retried.
func authorizeFailure(err error) (outcome, error) {
	var ge *ports.GatewayError
	if !errors.As(err, &ge) {
		return outcome{}, err
	}
	switch ge.Kind {
	case ports.GatewayCardError:
		if ge.PaymentIntent == nil {
			return outcome{}, fmt.Errorf("card error without a payment intent: %w", err)
		}
		decline := ge.DeclineCode
		if decline == "" {
			decline = ge.Code
		}
		return outcome{kind: outcomeCustomerAction, intent: *ge.PaymentIntent, declineCode: decline}, nil
	case ports.GatewayInvalidRequest:
		return outcome{kind: outcomeFailed, reason: err.Error()}, nil
	}
	return outcome{}, err
}

// outcomeOfIntent reads an authorization's result from its intent.
func outcomeOfIntent(pi ports.PaymentIntent) (outcome, error) {
	switch pi.Status {
	case ports.PIRequiresCapture:
		return outcome{kind: outcomeAuthorized, intent: pi}, nil
	case ports.PIRequiresPaymentMethod, ports.PIRequiresConfirmation, ports.PIRequiresAction:
		decline := pi.LastDeclineCode
		if decline == "" {
			decline = pi.LastErrorCode
		}
		return outcome{kind: outcomeCustomerAction, intent: pi, declineCode: decline}, nil
	case ports.PICanceled:
		return outcome{kind: outcomeFailed, intent: pi, reason: "payment intent canceled"}, nil
	}
	return outcome{}, fmt.Errorf("payment intent %s is %s; waiting for Stripe", pi.ID, pi.Status)
}

// isFinal reports whether Stripe rejected the request itself, so repeating
// it cannot help.
func isFinal(err error) bool {
	var ge *ports.GatewayError
	if !errors.As(err, &ge) {
		return false
	}
	return ge.Kind == ports.GatewayInvalidRequest || ge.Kind == ports.GatewayCardError
}
