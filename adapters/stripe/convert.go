package stripe

import (
	"time"

	stripego "github.com/stripe/stripe-go/v76"

	"github.com/taskpod/billing/domain"
	"github.com/taskpod/billing/ports"
)

// Metadata keys that TaskPod writes on Stripe objects.
const (
	metadataUserID    = "taskpod_user_id"
	metadataPaymentID = "payment_id"
	metadataTaskID    = "task_id"
)

func convertSetupIntent(si *stripego.SetupIntent) ports.SetupIntent {
	return ports.SetupIntent{
		ID:              si.ID,
		CustomerID:      customerID(si.Customer),
		ClientSecret:    si.ClientSecret,
		Status:          ports.SetupIntentStatus(si.Status),
		PaymentMethodID: paymentMethodID(si.PaymentMethod),
	}
}

// convertPaymentMethod keeps the card's display data. A payment method of
// another type converts with an empty brand and last4.
func convertPaymentMethod(pm *stripego.PaymentMethod) domain.PaymentMethod {
	out := domain.PaymentMethod{
		ID:         pm.ID,
		CustomerID: customerID(pm.Customer),
	}
	if pm.Created != 0 {
		out.CreatedAt = time.Unix(pm.Created, 0).UTC()
	}
	if pm.Card != nil {
		out.Brand = string(pm.Card.Brand)
		out.Last4 = pm.Card.Last4
		out.ExpMonth = int(pm.Card.ExpMonth)
		out.ExpYear = int(pm.Card.ExpYear)
	}
	return out
}

// convertPaymentIntent reads the capture deadline only when latest_charge
// was expanded. Otherwise CaptureBefore stays zero.
func convertPaymentIntent(pi *stripego.PaymentIntent) ports.PaymentIntent {
	out := ports.PaymentIntent{
		ID:               pi.ID,
		Status:           ports.PaymentIntentStatus(pi.Status),
		ClientSecret:     pi.ClientSecret,
		Amount:           pi.Amount,
		AmountCapturable: pi.AmountCapturable,
		AmountReceived:   pi.AmountReceived,
		Currency:         domain.Currency(pi.Currency),
		CustomerID:       customerID(pi.Customer),
		PaymentMethodID:  paymentMethodID(pi.PaymentMethod),
		PaymentID:        pi.Metadata[metadataPaymentID],
	}
	if pi.LatestCharge != nil {
		out.LatestChargeID = pi.LatestCharge.ID
		out.CaptureBefore = captureBefore(pi.LatestCharge)
	}
	if pi.LastPaymentError != nil {
		out.LastErrorCode = string(pi.LastPaymentError.Code)
		out.LastDeclineCode = string(pi.LastPaymentError.DeclineCode)
	}
	out.CancellationReason = string(pi.CancellationReason)
	return out
}

// captureBefore returns the card authorization's capture deadline, or the
// zero time when the charge does not carry one.
func captureBefore(ch *stripego.Charge) time.Time {
	details := ch.PaymentMethodDetails
	if details == nil || details.Card == nil || details.Card.CaptureBefore == 0 {
		return time.Time{}
	}
	return time.Unix(details.Card.CaptureBefore, 0).UTC()
}

// convertCapture reads a captured charge whose balance_transaction was
// expanded. The caller checks that the balance transaction is present.
func convertCapture(paymentIntentID string, ch *stripego.Charge) ports.Capture {
	out := ports.Capture{
		PaymentIntentID: paymentIntentID,
		ChargeID:        ch.ID,
		Amount:          ch.AmountCaptured,
	}
	if ch.BalanceTransaction != nil {
		out.BalanceTransactionID = ch.BalanceTransaction.ID
		out.StripeFee = ch.BalanceTransaction.Fee
	}
	return out
}

func convertTransfer(tr *stripego.Transfer) ports.Transfer {
	return ports.Transfer{ID: tr.ID, Amount: tr.Amount}
}

func customerID(c *stripego.Customer) string {
	if c == nil {
		return ""
	}
	return c.ID
}

func paymentMethodID(pm *stripego.PaymentMethod) string {
	if pm == nil {
		return ""
	}
	return pm.ID
}
