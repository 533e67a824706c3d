package stripe

import (
	"context"
	"fmt"
	"log/slog"

	stripego "github.com/stripe/stripe-go/v76"

	"github.com/taskpod/billing/ports"
)

// Authorize places a hold with a manual-capture PaymentIntent. With a
// payment method the intent is confirmed off-session in the same request.
// Without one it stays unconfirmed and carries the client secret that the
// customer's browser confirms. A declined card returns a *ports.GatewayError
// of kind card_error whose PaymentIntent is the failed intent.
func (g *Gateway) Authorize(ctx context.Context, in ports.AuthorizeInput) (ports.PaymentIntent, error) {
	if err := validateAuthorize(in); err != nil {
		return ports.PaymentIntent{}, err
	}

	ctx, ex := withExchange(ctx)
	params := &stripego.PaymentIntentParams{
		// Amounts are minor units as Stripe counts them, so a zero-decimal
		// currency such as JPY is sent unchanged.
		Amount:        stripego.Int64(in.Amount.Amount()),
		Currency:      stripego.String(string(in.Amount.Currency())),
		Customer:      stripego.String(in.CustomerID),
		CaptureMethod: stripego.String(string(stripego.PaymentIntentCaptureMethodManual)),
		TransferGroup: stripego.String(in.TaskID),
		Metadata: map[string]string{
			metadataPaymentID: in.PaymentID,
			metadataTaskID:    in.TaskID,
		},
	}
	if in.PaymentMethodID != "" {
		params.PaymentMethod = stripego.String(in.PaymentMethodID)
		params.Confirm = stripego.Bool(true)
		params.OffSession = stripego.Bool(true)
	} else {
		params.PaymentMethodTypes = stripego.StringSlice([]string{string(stripego.PaymentMethodTypeCard)})
	}
	params.AddExpand("latest_charge")
	params.Context = ctx
	params.IdempotencyKey = stripego.String(in.IdempotencyKey)

	pi, err := g.api.PaymentIntents.New(params)
	if err != nil {
		return ports.PaymentIntent{}, toGatewayError(err, ex)
	}
	return convertPaymentIntent(pi), nil
}

func validateAuthorize(in ports.AuthorizeInput) error {
	if err := requireValue("payment id", in.PaymentID); err != nil {
		return err
	}
	if err := requireValue("task id", in.TaskID); err != nil {
		return err
	}
	if err := requireValue("customer id", in.CustomerID); err != nil {
		return err
	}
	if in.Amount.Currency() == "" || in.Amount.Amount() <= 0 {
		return invalidInput("authorize: amount %d %q must be positive and have a currency", in.Amount.Amount(), in.Amount.Currency())
	}
	return requireIdempotencyKey("authorize", in.IdempotencyKey)
}

// GetPaymentIntent reads a PaymentIntent with its latest charge, which
// carries the capture deadline.
func (g *Gateway) GetPaymentIntent(ctx context.Context, id string) (ports.PaymentIntent, error) {
	if err := requireValue("payment intent id", id); err != nil {
		return ports.PaymentIntent{}, err
	}

	ctx, ex := withExchange(ctx)
	params := &stripego.PaymentIntentParams{}
	params.AddExpand("latest_charge")
	params.Context = ctx

	pi, err := g.api.PaymentIntents.Get(id, params)
	if err != nil {
		return ports.PaymentIntent{}, toGatewayError(err, ex)
	}
	return convertPaymentIntent(pi), nil
}

// FindPaymentIntent pages through all of the customer's PaymentIntents,
// newest first, and returns the newest whose metadata payment_id matches.
// It lists instead of using Stripe's search API, whose index lags behind
// writes (under a minute normally and longer during outages, per Stripe's
// search documentation) and which emulators may not serve.
func (g *Gateway) FindPaymentIntent(ctx context.Context, customerID, paymentID string) (ports.PaymentIntent, bool, error) {
	if err := requireValue("customer id", customerID); err != nil {
		return ports.PaymentIntent{}, false, err
	}
	if err := requireValue("payment id", paymentID); err != nil {
		return ports.PaymentIntent{}, false, err
	}

	ctx, ex := withExchange(ctx)
	params := &stripego.PaymentIntentListParams{Customer: stripego.String(customerID)}
	params.AddExpand("data.latest_charge")
	params.Context = ctx
	params.Limit = stripego.Int64(listPageSize)

	var matches []*stripego.PaymentIntent
	it := g.api.PaymentIntents.List(params)
	for it.Next() {
		if pi := it.PaymentIntent(); pi.Metadata[metadataPaymentID] == paymentID {
			matches = append(matches, pi)
		}
	}
	if err := it.Err(); err != nil {
		return ports.PaymentIntent{}, false, toGatewayError(err, ex)
	}
	if len(matches) == 0 {
		return ports.PaymentIntent{}, false, nil
	}
	if len(matches) > 1 {
		ids := make([]string, len(matches))
		for i, pi := range matches {
			ids[i] = pi.ID
		}
		g.log.WarnContext(ctx, "several Stripe PaymentIntents carry one payment id; using the newest",
			slog.String("payment_id", paymentID), slog.String("customer_id", customerID),
			slog.Any("payment_intent_ids", ids))
	}
	return convertPaymentIntent(matches[0]), true, nil
}

// Capture captures amount (minor units, at most the authorized amount) of a
// requires_capture PaymentIntent, then reads the charge's balance
// transaction for Stripe's fee. If the capture succeeds but the charge has
// no balance transaction yet, Capture returns a retryable api_error, and a
// retry with the same key replays the capture and reads the charge again.
func (g *Gateway) Capture(ctx context.Context, paymentIntentID string, amount int64, idempotencyKey string) (ports.Capture, error) {
	if err := requireValue("payment intent id", paymentIntentID); err != nil {
		return ports.Capture{}, err
	}
	if amount <= 0 {
		return ports.Capture{}, invalidInput("capture: amount %d must be positive", amount)
	}
	if err := requireIdempotencyKey("capture", idempotencyKey); err != nil {
		return ports.Capture{}, err
	}

	captureCtx, ex := withExchange(ctx)
	params := &stripego.PaymentIntentCaptureParams{AmountToCapture: stripego.Int64(amount)}
	params.AddExpand("latest_charge")
	params.Context = captureCtx
	params.IdempotencyKey = stripego.String(idempotencyKey)

	pi, err := g.api.PaymentIntents.Capture(paymentIntentID, params)
	if err != nil {
		return ports.Capture{}, toGatewayError(err, ex)
	}
	if pi.LatestCharge == nil || pi.LatestCharge.ID == "" {
		return ports.Capture{}, &ports.GatewayError{Kind: ports.GatewayAPIError,
			Message: fmt.Sprintf("captured PaymentIntent %s has no latest_charge", pi.ID)}
	}
	return g.readCapture(ctx, pi.ID, pi.LatestCharge.ID)
}

// GetCapture reads the charge and fee of a PaymentIntent that is already
// captured. It returns an invalid_request error for any other status.
func (g *Gateway) GetCapture(ctx context.Context, paymentIntentID string) (ports.Capture, error) {
	if err := requireValue("payment intent id", paymentIntentID); err != nil {
		return ports.Capture{}, err
	}

	getCtx, ex := withExchange(ctx)
	params := &stripego.PaymentIntentParams{}
	params.Context = getCtx

	pi, err := g.api.PaymentIntents.Get(paymentIntentID, params)
	if err != nil {
		return ports.Capture{}, toGatewayError(err, ex)
	}
	if pi.Status != stripego.PaymentIntentStatusSucceeded {
		return ports.Capture{}, invalidInput("get capture: PaymentIntent %s is %s, not succeeded", pi.ID, pi.Status)
	}
	if pi.LatestCharge == nil || pi.LatestCharge.ID == "" {
		return ports.Capture{}, &ports.GatewayError{Kind: ports.GatewayAPIError,
			Message: fmt.Sprintf("succeeded PaymentIntent %s has no latest_charge", pi.ID)}
	}
	return g.readCapture(ctx, pi.ID, pi.LatestCharge.ID)
}

// readCapture reads a captured charge with its balance transaction expanded.
func (g *Gateway) readCapture(ctx context.Context, paymentIntentID, chargeID string) (ports.Capture, error) {
	ctx, ex := withExchange(ctx)
	params := &stripego.ChargeParams{}
	params.AddExpand("balance_transaction")
	params.Context = ctx

	ch, err := g.api.Charges.Get(chargeID, params)
	if err != nil {
		return ports.Capture{}, toGatewayError(err, ex)
	}
	if ch.BalanceTransaction == nil || ch.BalanceTransaction.ID == "" {
		return ports.Capture{}, &ports.GatewayError{Kind: ports.GatewayAPIError,
			Message: fmt.Sprintf("charge %s of PaymentIntent %s has no balance transaction yet, so the fee is unknown; read it again later", ch.ID, paymentIntentID)}
	}
	return convertCapture(paymentIntentID, ch), nil
}

// CancelPaymentIntent cancels an uncaptured PaymentIntent, releasing its hold.
func (g *Gateway) CancelPaymentIntent(ctx context.Context, paymentIntentID, idempotencyKey string) (ports.PaymentIntent, error) {
	if err := requireValue("payment intent id", paymentIntentID); err != nil {
		return ports.PaymentIntent{}, err
	}
	if err := requireIdempotencyKey("cancel_payment_intent", idempotencyKey); err != nil {
		return ports.PaymentIntent{}, err
	}

	ctx, ex := withExchange(ctx)
	params := &stripego.PaymentIntentCancelParams{}
	params.Context = ctx
	params.IdempotencyKey = stripego.String(idempotencyKey)

	pi, err := g.api.PaymentIntents.Cancel(paymentIntentID, params)
	if err != nil {
		return ports.PaymentIntent{}, toGatewayError(err, ex)
	}
	return convertPaymentIntent(pi), nil
}

// CreateTransfer sends an agent's share to its Connect account, funded by
// the captured charge through source_transaction so that the transfer does
// not depend on the platform's available balance.
func (g *Gateway) CreateTransfer(ctx context.Context, in ports.TransferInput) (ports.Transfer, error) {
	if err := validateTransfer(in); err != nil {
		return ports.Transfer{}, err
	}

	ctx, ex := withExchange(ctx)
	params := &stripego.TransferParams{
		Amount:            stripego.Int64(in.Amount.Amount()),
		Currency:          stripego.String(string(in.Amount.Currency())),
		Destination:       stripego.String(in.DestinationAccount),
		SourceTransaction: stripego.String(in.SourceChargeID),
		TransferGroup:     stripego.String(in.TransferGroup),
		Metadata:          map[string]string{metadataPaymentID: in.PaymentID},
	}
	params.Context = ctx
	params.IdempotencyKey = stripego.String(in.IdempotencyKey)

	tr, err := g.api.Transfers.New(params)
	if err != nil {
		return ports.Transfer{}, toGatewayError(err, ex)
	}
	return convertTransfer(tr), nil
}

func validateTransfer(in ports.TransferInput) error {
	if err := requireValue("payment id", in.PaymentID); err != nil {
		return err
	}
	if err := requireValue("destination account", in.DestinationAccount); err != nil {
		return err
	}
	if err := requireValue("source charge id", in.SourceChargeID); err != nil {
		return err
	}
	if err := requireValue("transfer group", in.TransferGroup); err != nil {
		return err
	}
	if in.Amount.Currency() == "" || in.Amount.Amount() <= 0 {
		return invalidInput("create transfer: amount %d %q must be positive and have a currency", in.Amount.Amount(), in.Amount.Currency())
	}
	return requireIdempotencyKey("create_transfer", in.IdempotencyKey)
}

// FindTransfer pages through the transfers of a transfer group and returns
// the newest whose metadata payment_id matches.
func (g *Gateway) FindTransfer(ctx context.Context, transferGroup, paymentID string) (ports.Transfer, bool, error) {
	if err := requireValue("transfer group", transferGroup); err != nil {
		return ports.Transfer{}, false, err
	}
	if err := requireValue("payment id", paymentID); err != nil {
		return ports.Transfer{}, false, err
	}

	ctx, ex := withExchange(ctx)
	params := &stripego.TransferListParams{TransferGroup: stripego.String(transferGroup)}
	params.Context = ctx
	params.Limit = stripego.Int64(listPageSize)

	var matches []*stripego.Transfer
	it := g.api.Transfers.List(params)
	for it.Next() {
		if tr := it.Transfer(); tr.Metadata[metadataPaymentID] == paymentID {
			matches = append(matches, tr)
		}
	}
	if err := it.Err(); err != nil {
		return ports.Transfer{}, false, toGatewayError(err, ex)
	}
	if len(matches) == 0 {
		return ports.Transfer{}, false, nil
	}
	if len(matches) > 1 {
		ids := make([]string, len(matches))
		for i, tr := range matches {
			ids[i] = tr.ID
		}
		g.log.WarnContext(ctx, "several Stripe transfers carry one payment id; using the newest",
			slog.String("payment_id", paymentID), slog.String("transfer_group", transferGroup),
			slog.Any("transfer_ids", ids))
	}
	return convertTransfer(matches[0]), true, nil
}
