// Package ports holds the interfaces the application needs from the outside
// world: storage, the payment gateway, the outbox and the clock.
package ports

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/taskpod/billing/domain"
)

// PaymentGateway is the part of Stripe the application uses. Every call that
// creates or changes an object takes an idempotency key built by the caller
// from stored business ids; implementations never invent one.
type PaymentGateway interface {
	CreateCustomer(ctx context.Context, in CreateCustomerInput) (string, error)
	CreateSetupIntent(ctx context.Context, customerID, idempotencyKey string) (SetupIntent, error)
	GetSetupIntent(ctx context.Context, id string) (SetupIntent, error)
	GetPaymentMethod(ctx context.Context, id string) (domain.PaymentMethod, error)
	ListPaymentMethods(ctx context.Context, customerID string) ([]domain.PaymentMethod, error)
	DetachPaymentMethod(ctx context.Context, id, idempotencyKey string) error

	// Authorize creates a manual-capture PaymentIntent. With a payment
	// method it confirms off-session at once; without one it returns an
	// unconfirmed intent whose client secret the customer confirms.
	Authorize(ctx context.Context, in AuthorizeInput) (PaymentIntent, error)
	GetPaymentIntent(ctx context.Context, id string) (PaymentIntent, error)
	// FindPaymentIntent looks among the customer's PaymentIntents for the one
	// whose metadata names paymentID; found is false when none does.
	FindPaymentIntent(ctx context.Context, customerID, paymentID string) (pi PaymentIntent, found bool, err error)
	Capture(ctx context.Context, paymentIntentID string, amount int64, idempotencyKey string) (Capture, error)
	// GetCapture reads the settled charge of a succeeded PaymentIntent.
	GetCapture(ctx context.Context, paymentIntentID string) (Capture, error)
	CancelPaymentIntent(ctx context.Context, paymentIntentID, idempotencyKey string) (PaymentIntent, error)
	CreateTransfer(ctx context.Context, in TransferInput) (Transfer, error)
	// FindTransfer looks in a transfer group for the transfer whose metadata
	// names paymentID; found is false when none does.
	FindTransfer(ctx context.Context, transferGroup, paymentID string) (t Transfer, found bool, err error)
}

// CreateCustomerInput describes a new Stripe customer for a TaskPod user.
type CreateCustomerInput struct {
	UserID         string
	IdempotencyKey string
}

// SetupIntentStatus mirrors Stripe's SetupIntent status.
type SetupIntentStatus string

// SetupIntentSucceeded is the status of a SetupIntent whose card is saved.
const SetupIntentSucceeded SetupIntentStatus = "succeeded"

// SetupIntent is Stripe's object for saving a card.
type SetupIntent struct {
	ID              string
	CustomerID      string
	ClientSecret    string
	Status          SetupIntentStatus
	PaymentMethodID string
}

// PaymentIntentStatus mirrors Stripe's PaymentIntent status.
type PaymentIntentStatus string

// PaymentIntent statuses used by the application.
const (
	PIRequiresPaymentMethod PaymentIntentStatus = "requires_payment_method"
	PIRequiresConfirmation  PaymentIntentStatus = "requires_confirmation"
	PIRequiresAction        PaymentIntentStatus = "requires_action"
	PIProcessing            PaymentIntentStatus = "processing"
	PIRequiresCapture       PaymentIntentStatus = "requires_capture"
	PISucceeded             PaymentIntentStatus = "succeeded"
	PICanceled              PaymentIntentStatus = "canceled"
)

// PaymentIntent is the part of Stripe's PaymentIntent the application reads.
type PaymentIntent struct {
	ID               string
	Status           PaymentIntentStatus
	ClientSecret     string
	Amount           int64
	AmountCapturable int64
	AmountReceived   int64
	Currency         domain.Currency
	CustomerID       string
	PaymentMethodID  string
	LatestChargeID   string
	// CaptureBefore is the charge's capture deadline; zero when unknown.
	CaptureBefore time.Time
	// PaymentID is our payment id from the intent's metadata.
	PaymentID string
	// LastErrorCode and LastDeclineCode come from last_payment_error.
	LastErrorCode   string
	LastDeclineCode string
	// CancellationReason of a canceled intent; "automatic" when Stripe
	// canceled it because the capture deadline passed.
	CancellationReason string
}

// AuthorizeInput describes a hold to place.
type AuthorizeInput struct {
	PaymentID       string
	TaskID          string
	CustomerID      string
	PaymentMethodID string
	Amount          domain.Money
	IdempotencyKey  string
}

// Capture is the result of capturing a PaymentIntent, with Stripe's fee from
// the charge's balance transaction.
type Capture struct {
	PaymentIntentID      string
	ChargeID             string
	BalanceTransactionID string
	Amount               int64
	StripeFee            int64
}

// TransferInput describes a transfer of an agent's share to its Connect
// account, funded by the captured charge (separate charges and transfers).
type TransferInput struct {
	PaymentID          string
	Amount             domain.Money
	DestinationAccount string
	SourceChargeID     string
	TransferGroup      string
	IdempotencyKey     string
}

// Transfer is a transfer to a Connect account.
type Transfer struct {
	ID     string
	Amount int64
}

// GatewayErrorKind classifies a failed gateway call by what the caller should do.
type GatewayErrorKind string

// Gateway error kinds, matching the outcome labels of the Stripe metrics.
const (
	// GatewayCardError: the card was declined or needs authentication; final.
	GatewayCardError GatewayErrorKind = "card_error"
	// GatewayInvalidRequest: Stripe rejected the request; final.
	GatewayInvalidRequest GatewayErrorKind = "invalid_request"
	// GatewayIdempotencyError: the key was reused with other parameters.
	GatewayIdempotencyError GatewayErrorKind = "idempotency_error"
	// GatewayRateLimited: 429; retry later.
	GatewayRateLimited GatewayErrorKind = "rate_limited"
	// GatewayAPIError: a 5xx from Stripe; the outcome is unknown.
	GatewayAPIError GatewayErrorKind = "api_error"
	// GatewayNetwork: no answer arrived; the outcome is unknown.
	GatewayNetwork GatewayErrorKind = "network"
)

// GatewayError is a failed gateway call.
type GatewayError struct {
	Kind        GatewayErrorKind
	Code        string
	DeclineCode string
	Message     string
	HTTPStatus  int
	// PaymentIntent is the intent Stripe returned with a card error, if any.
	PaymentIntent *PaymentIntent
	Err           error
}

func (e *GatewayError) Error() string {
	msg := fmt.Sprintf("stripe %s", e.Kind)
	if e.Code != "" {
		msg += " " + e.Code
	}
	if e.Message != "" {
		msg += ": " + e.Message
	}
	return msg
}

// Unwrap returns the transport error, if any.
func (e *GatewayError) Unwrap() error { return e.Err }

// Retryable reports whether the same call may succeed later: network
// failures, rate limits and Stripe's own errors.
func (e *GatewayError) Retryable() bool {
	switch e.Kind {
	case GatewayNetwork, GatewayRateLimited, GatewayAPIError:
		return true
	}
	return false
}

// IsRetryableGatewayError reports whether err is a retryable gateway failure.
func IsRetryableGatewayError(err error) bool {
	var ge *GatewayError
	return errors.As(err, &ge) && ge.Retryable()
}

// ErrGatewayNotFound is wrapped by gateway errors for a missing Stripe object.
var ErrGatewayNotFound = errors.New("stripe object not found")
