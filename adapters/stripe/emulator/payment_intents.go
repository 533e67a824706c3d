package emulator

import (
	"context"
	"fmt"
	"net/http"
	"strings"

	"github.com/jackc/pgx/v5"
)

// minimumAmounts are Stripe's minimum charge amounts in minor units (whole
// yen for jpy), from Stripe's "Minimum and maximum charge amounts" table.
var minimumAmounts = map[string]int64{
	"usd": 50, "aed": 200, "aud": 50, "bgn": 100, "brl": 50, "cad": 50, "chf": 50,
	"czk": 1500, "dkk": 250, "eur": 50, "gbp": 30, "hkd": 400, "huf": 17500,
	"inr": 50, "jpy": 50, "mxn": 1000, "myr": 200, "nok": 300, "nzd": 50,
	"pln": 200, "ron": 200, "sek": 300, "sgd": 50, "thb": 1000,
}

// zeroDecimalCurrencies have no minor unit among minimumAmounts.
var zeroDecimalCurrencies = map[string]bool{"jpy": true}

// maximumAmount is Stripe's largest amount for a single charge.
const maximumAmount = 99_999_999

func formatAmount(amount int64, currency string) string {
	if zeroDecimalCurrencies[currency] {
		return fmt.Sprintf("%d %s", amount, currency)
	}
	return fmt.Sprintf("%d.%02d %s", amount/100, amount%100, currency)
}

var paymentIntentCreateParams = []string{
	"amount", "currency", "customer", "payment_method", "capture_method", "confirm", "off_session",
	"metadata", "transfer_group", "payment_method_types", "description", "statement_descriptor",
	"statement_descriptor_suffix", "receipt_email", "setup_future_usage", "payment_method_options",
	"confirmation_method", "return_url", "error_on_requires_action", "use_stripe_sdk", "mandate_data",
	// Accepted and ignored: the emulator offers only cards.
	"automatic_payment_methods",
}

func (e *Emulator) createPaymentIntent(c *call) (any, error) {
	if err := c.p.checkKnown(paymentIntentCreateParams...); err != nil {
		return nil, err
	}
	pi := &paymentIntent{
		Object:               "payment_intent",
		AmountDetails:        map[string]any{"tip": map[string]any{}},
		CaptureMethod:        "automatic",
		ConfirmationMethod:   "automatic",
		Created:              c.now,
		Metadata:             map[string]string{},
		PaymentMethodOptions: map[string]any{"card": map[string]any{"installments": nil, "mandate_options": nil, "network": nil, "request_three_d_secure": "automatic"}},
		Status:               "requires_payment_method",
	}
	pi.ID = newID("pi")
	pi.ClientSecret = pi.ID + "_secret_" + randomToken(24)

	amount, sent, err := c.p.int("amount")
	if err != nil {
		return nil, err
	}
	if !sent {
		return nil, missingParam("amount")
	}
	currency, err := c.p.str("currency")
	if err != nil {
		return nil, err
	}
	if currency == "" {
		return nil, missingParam("currency")
	}
	currency = strings.ToLower(currency)
	minimum, known := minimumAmounts[currency]
	if !known {
		return nil, invalidParam("currency", fmt.Sprintf("Invalid currency: %s. The Stripe emulator knows usd, eur, gbp, jpy and the other currencies of Stripe's minimum amount table.", currency))
	}
	if amount < minimum {
		return nil, invalidRequest("amount_too_small", "amount", "Amount must be at least "+formatAmount(minimum, currency))
	}
	if amount > maximumAmount {
		return nil, invalidRequest("amount_too_large", "amount", "Amount must be no more than "+formatAmount(maximumAmount, currency))
	}
	pi.Amount = amount
	pi.Currency = currency

	if cusID, err := c.p.str("customer"); err != nil {
		return nil, err
	} else if cusID != "" {
		if err := c.mustLoad(cusID, "customer", "customer", &customer{}, false); err != nil {
			return nil, err
		}
		pi.Customer = &cusID
	}
	if err := setCaptureMethod(c.p, pi); err != nil {
		return nil, err
	}
	if pi.PaymentMethodTypes, err = cardOnlyTypes(c.p); err != nil {
		return nil, err
	}
	if pi.Metadata, err = c.p.applyMetadata(pi.Metadata); err != nil {
		return nil, err
	}
	for name, field := range map[string]**string{
		"description": &pi.Description, "transfer_group": &pi.TransferGroup, "receipt_email": &pi.ReceiptEmail,
		"statement_descriptor": &pi.StatementDescriptor, "statement_descriptor_suffix": &pi.StatementDescriptorSuffix,
		"setup_future_usage": &pi.SetupFutureUsage,
	} {
		if *field, err = c.p.optStr(name); err != nil {
			return nil, err
		}
	}

	confirm, err := c.p.bool("confirm")
	if err != nil {
		return nil, err
	}
	offSession, err := c.p.bool("off_session")
	if err != nil {
		return nil, err
	}
	if c.p.has("off_session") && !confirm {
		return nil, invalidParam("off_session", "off_session can only be used when confirm=true.")
	}
	pmArg, err := c.p.str("payment_method")
	if err != nil {
		return nil, err
	}
	if confirm {
		if err := c.confirmPayment(pi, pmArg, offSession); err != nil {
			return nil, err
		}
		return pi, nil
	}
	if pmArg != "" {
		pm, err := c.resolvePaymentMethod(pmArg, "payment_method")
		if err != nil {
			return nil, err
		}
		pi.PaymentMethod = &pm.ID
		pi.Status = "requires_confirmation"
	}
	return pi, c.save("payment_intent", pi.ID, pi.Created, pi)
}

// setCaptureMethod applies the capture_method parameter when it was sent.
func setCaptureMethod(p *params, pi *paymentIntent) error {
	method, err := p.str("capture_method")
	if err != nil || method == "" {
		return err
	}
	if method != "automatic" && method != "automatic_async" && method != "manual" {
		return invalidParam("capture_method", fmt.Sprintf("Invalid capture_method: must be one of automatic, automatic_async or manual, got %q.", method))
	}
	pi.CaptureMethod = method
	return nil
}

func (e *Emulator) getPaymentIntent(c *call) (any, error) {
	if err := c.p.checkKnown("client_secret"); err != nil {
		return nil, err
	}
	pi := &paymentIntent{}
	if err := c.mustLoad(c.pathID(), "payment_intent", "intent", pi, false); err != nil {
		return nil, err
	}
	return pi, c.checkClientSecret("PaymentIntent", pi.ClientSecret)
}

// listPaymentIntents serves GET /v1/payment_intents, newest first.
func (e *Emulator) listPaymentIntents(c *call) (any, error) {
	if err := c.p.checkKnown("customer", "limit", "starting_after", "ending_before", "created"); err != nil {
		return nil, err
	}
	cusID, err := c.p.str("customer")
	if err != nil {
		return nil, err
	}
	var filters []listFilter
	if cusID != "" {
		filters = append(filters, listFilter{"customer", cusID})
	}
	// NOTE: the created[gte]/created[lte] filters are accepted but ignored.
	return c.list("payment_intent", "/v1/payment_intents", filters...)
}

func (e *Emulator) confirmPaymentIntentRoute(c *call) (any, error) {
	if err := c.p.checkKnown("payment_method", "off_session", "return_url", "payment_method_options", "mandate_data",
		"error_on_requires_action", "use_stripe_sdk", "receipt_email", "setup_future_usage", "capture_method", "client_secret"); err != nil {
		return nil, err
	}
	pi := &paymentIntent{}
	if err := c.mustLoad(c.pathID(), "payment_intent", "intent", pi, true); err != nil {
		return nil, err
	}
	if err := c.checkClientSecret("PaymentIntent", pi.ClientSecret); err != nil {
		return nil, err
	}

	if err := setCaptureMethod(c.p, pi); err != nil {
		return nil, err
	}
	offSession, err := c.p.bool("off_session")
	if err != nil {
		return nil, err
	}
	if offSession && c.publishable {
		return nil, invalidParam("off_session", "off_session requires a secret key; a publishable key confirms on session.")
	}

	pmArg, err := c.p.str("payment_method")
	if err != nil {
		return nil, err
	}
	if err := c.confirmPayment(pi, pmArg, offSession); err != nil {
		return nil, err
	}
	return pi, nil
}

// confirmPayment authorizes pi with pmArg (or its payment method) and saves
// it. Manual capture leaves it in requires_capture with an uncaptured charge;
// automatic capture captures at once. A decline saves a failed charge, moves
// pi back to requires_payment_method with last_payment_error and returns a
// 402 card error carrying pi.
//
// NOTE: a card that needs authentication is approved when confirmed on
// session, as if the customer completed 3D Secure; the emulator has no
// requires_action step.
func (c *call) confirmPayment(pi *paymentIntent, pmArg string, offSession bool) error {
	if pi.Status != "requires_payment_method" && pi.Status != "requires_confirmation" {
		return unexpectedState(fmt.Sprintf("You cannot confirm this PaymentIntent because it has a status of %s. Only a PaymentIntent with one of the following statuses may be confirmed: requires_payment_method, requires_confirmation, requires_action.", pi.Status))
	}
	if pmArg == "" && pi.PaymentMethod != nil {
		pmArg = *pi.PaymentMethod
	}
	if pmArg == "" {
		return invalidRequest("parameter_missing", "payment_method", "You cannot confirm this PaymentIntent because it's missing a payment method. Pass payment_method, for example pm_card_visa.")
	}
	pm, err := c.resolvePaymentMethod(pmArg, "payment_method")
	if err != nil {
		return err
	}
	if pm.Customer != nil && (pi.Customer == nil || *pi.Customer != *pm.Customer) {
		return invalidRequest("", "payment_method", fmt.Sprintf("The provided PaymentMethod belongs to customer %s; pass customer=%s with this PaymentIntent.", *pm.Customer, *pm.Customer))
	}

	ch := c.newCharge(pi, pm)
	behavior := behaviorOf(pm)
	if behavior == cardDeclined || behavior == cardFailsCharges || (behavior == cardNeedsAuthentication && offSession) {
		return c.declinePayment(pi, pm, ch, behavior)
	}

	pi.PaymentMethod = &pm.ID
	pi.LatestCharge = &ch.ID
	pi.LastPaymentError = nil
	pi.Status = "requires_capture"
	pi.AmountCapturable = pi.Amount
	if pi.CaptureMethod != "manual" {
		if err := c.save("charge", ch.ID, ch.Created, ch); err != nil {
			return err
		}
		return c.captureCharge(pi, ch, pi.Amount)
	}

	deadline := c.now + captureWindowOnSession
	if offSession {
		deadline = c.now + captureWindowOffSession
	}
	ch.PaymentMethodDetails.Card.CaptureBefore = deadline
	if err := c.save("charge", ch.ID, ch.Created, ch); err != nil {
		return err
	}
	if err := c.save("payment_intent", pi.ID, pi.Created, pi); err != nil {
		return err
	}
	if err := c.setCaptureDeadline(pi.ID, &deadline); err != nil {
		return err
	}
	c.emit("payment_intent.amount_capturable_updated", pi)
	return nil
}

func (c *call) declinePayment(pi *paymentIntent, pm *paymentMethod, ch *charge, behavior cardBehavior) error {
	cardErr := declinedError("Your card was declined.")
	reason := "generic_decline"
	if behavior == cardNeedsAuthentication {
		cardErr.Code = "authentication_required"
		cardErr.DeclineCode = "authentication_required"
		cardErr.Message = "Your card was declined. This transaction requires authentication."
		reason = "authentication_required"
	}
	cardErr.Charge = ch.ID
	cardErr.PaymentMethod = marshalObject(pm)

	ch.Status = "failed"
	ch.Paid = false
	ch.FailureCode = &cardErr.Code
	ch.FailureMessage = &cardErr.Message
	ch.Outcome = chargeOutcome{
		NetworkStatus: "declined_by_network",
		Reason:        &reason,
		RiskLevel:     "normal",
		RiskScore:     20,
		SellerMessage: "The bank did not return any further details with this decline.",
		Type:          "issuer_declined",
	}
	if err := c.save("charge", ch.ID, ch.Created, ch); err != nil {
		return err
	}

	pi.LastPaymentError = &apiError{
		Type: cardErr.Type, Code: cardErr.Code, DeclineCode: cardErr.DeclineCode, Message: cardErr.Message,
		Charge: ch.ID, PaymentMethod: cardErr.PaymentMethod,
	}
	pi.LatestCharge = &ch.ID
	pi.PaymentMethod = nil
	pi.Status = "requires_payment_method"
	if err := c.save("payment_intent", pi.ID, pi.Created, pi); err != nil {
		return err
	}
	c.emit("payment_intent.payment_failed", pi)
	cardErr.PaymentIntent = marshalObject(pi)
	return cardErr
}

func (e *Emulator) capturePaymentIntent(c *call) (any, error) {
	if err := c.p.checkKnown("amount_to_capture", "metadata", "statement_descriptor", "statement_descriptor_suffix"); err != nil {
		return nil, err
	}
	pi := &paymentIntent{}
	if err := c.mustLoad(c.pathID(), "payment_intent", "intent", pi, true); err != nil {
		return nil, err
	}
	if pi.Status != "requires_capture" {
		return nil, unexpectedState(fmt.Sprintf("This PaymentIntent could not be captured because it has a status of %s. Only a PaymentIntent with one of the following statuses may be captured: requires_capture.", pi.Status))
	}

	amount, sent, err := c.p.int("amount_to_capture")
	if err != nil {
		return nil, err
	}
	if !sent {
		amount = pi.AmountCapturable
	}
	if amount <= 0 {
		return nil, invalidParam("amount_to_capture", fmt.Sprintf("Invalid amount_to_capture: must be a positive integer, got %d.", amount))
	}
	if amount > pi.AmountCapturable {
		return nil, invalidRequest("amount_too_large", "amount_to_capture",
			fmt.Sprintf("The amount to capture (%d) must be less than or equal to the amount capturable (%d).", amount, pi.AmountCapturable))
	}
	if pi.Metadata, err = c.p.applyMetadata(pi.Metadata); err != nil {
		return nil, err
	}

	ch := &charge{}
	if pi.LatestCharge == nil {
		return nil, fmt.Errorf("payment intent %s in requires_capture has no charge", pi.ID)
	}
	if err := c.mustLoad(*pi.LatestCharge, "charge", "charge", ch, true); err != nil {
		return nil, err
	}
	if err := c.captureCharge(pi, ch, amount); err != nil {
		return nil, err
	}
	return pi, nil
}

var cancellationReasons = map[string]bool{
	"duplicate": true, "fraudulent": true, "requested_by_customer": true, "abandoned": true,
}

func (e *Emulator) cancelPaymentIntentRoute(c *call) (any, error) {
	if err := c.p.checkKnown("cancellation_reason"); err != nil {
		return nil, err
	}
	reason, err := c.p.optStr("cancellation_reason")
	if err != nil {
		return nil, err
	}
	if reason != nil && !cancellationReasons[*reason] {
		return nil, invalidParam("cancellation_reason", fmt.Sprintf("Invalid cancellation_reason: must be one of duplicate, fraudulent, requested_by_customer or abandoned, got %q.", *reason))
	}
	pi := &paymentIntent{}
	if err := c.mustLoad(c.pathID(), "payment_intent", "intent", pi, true); err != nil {
		return nil, err
	}
	if err := c.cancelPayment(pi, reason); err != nil {
		return nil, err
	}
	return pi, nil
}

// cancelPayment cancels pi and releases an uncaptured authorization, which
// shows as a fully refunded charge.
func (c *call) cancelPayment(pi *paymentIntent, reason *string) error {
	switch pi.Status {
	case "requires_payment_method", "requires_capture", "requires_confirmation", "requires_action", "processing":
	default:
		return unexpectedState(fmt.Sprintf("You cannot cancel this PaymentIntent because it has a status of %s. Only a PaymentIntent with one of the following statuses may be canceled: requires_payment_method, requires_capture, requires_confirmation, requires_action, processing.", pi.Status))
	}
	if pi.Status == "requires_capture" && pi.LatestCharge != nil {
		ch := &charge{}
		if err := c.mustLoad(*pi.LatestCharge, "charge", "charge", ch, true); err != nil {
			return err
		}
		ch.AmountRefunded = ch.Amount
		ch.Refunded = true
		if err := c.save("charge", ch.ID, ch.Created, ch); err != nil {
			return err
		}
	}
	pi.Status = "canceled"
	pi.CanceledAt = &c.now
	pi.CancellationReason = reason
	pi.AmountCapturable = 0
	if err := c.save("payment_intent", pi.ID, pi.Created, pi); err != nil {
		return err
	}
	if err := c.setCaptureDeadline(pi.ID, nil); err != nil {
		return err
	}
	c.emit("payment_intent.canceled", pi)
	return nil
}

// expireAuthorizations cancels, with cancellation_reason "automatic", every
// PaymentIntent whose capture deadline has passed on the emulator clock. It
// runs before each API request and after each clock advance.
func (e *Emulator) expireAuthorizations(ctx context.Context) error {
	var due bool
	err := e.pool.QueryRow(ctx, `
		SELECT EXISTS (
			SELECT 1 FROM stripe_emulator.objects o, stripe_emulator.clock k
			WHERE o.expires_at IS NOT NULL AND o.expires_at <= $1 + k.offset_seconds)`,
		e.cfg.Now().Unix()).Scan(&due)
	if err != nil || !due {
		return err
	}

	tx, err := e.pool.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // a no-op after Commit
	now, err := e.clockNow(ctx, tx)
	if err != nil {
		return err
	}
	rows, err := tx.Query(ctx, `
		SELECT id FROM stripe_emulator.objects
		WHERE type = 'payment_intent' AND expires_at IS NOT NULL AND expires_at <= $1
		ORDER BY seq FOR UPDATE SKIP LOCKED`, now)
	if err != nil {
		return err
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return err
	}
	c := &call{ctx: ctx, e: e, tx: tx, now: now, p: &params{root: map[string]any{}}, r: &http.Request{}}
	for _, id := range ids {
		pi := &paymentIntent{}
		if err := c.mustLoad(id, "payment_intent", "intent", pi, false); err != nil {
			return err
		}
		if pi.Status != "requires_capture" {
			if err := c.setCaptureDeadline(id, nil); err != nil {
				return err
			}
			continue
		}
		if err := c.cancelPayment(pi, ptr("automatic")); err != nil {
			return err
		}
		e.log.Info("authorization expired", "payment_intent", id)
	}
	if err := c.flushEvents(); err != nil {
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return err
	}
	e.hooks.wake()
	return nil
}
