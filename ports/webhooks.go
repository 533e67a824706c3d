package ports

import (
	"context"
	"errors"
	"time"

	"github.com/taskpod/billing/domain"
)

// StripeStore runs units of work that, besides the core repositories, see
// what Stripe reports after a payment: received events, refunds, transfer
// reversals, disputes and replaced holds. Its transactions follow the same
// rules as Store.InTx.
type StripeStore interface {
	InStripeTx(ctx context.Context, fn func(ctx context.Context, tx StripeTx) error) error
}

// StripeTx is one open unit of work of a StripeStore.
type StripeTx interface {
	Tx
	Events() EventRepository
	Refunds() RefundRepository
	Disputes() DisputeRepository
	Holds() HoldRepository
	Lookups() LookupRepository
}

// EventStatus is the processing state of a received Stripe event.
type EventStatus string

// Event statuses.
const (
	// EventProcessed: the event's effect, possibly none, is committed.
	EventProcessed EventStatus = "processed"
	// EventPending: the event waits for a retry, because its object was
	// not known yet or Stripe could not be read.
	EventPending EventStatus = "pending"
	// EventFailed: every retry failed; an operator must look at it.
	EventFailed EventStatus = "failed"
)

// StoredEvent is a received event with its processing state.
type StoredEvent struct {
	Event         StripeEvent
	Status        EventStatus
	Attempts      int
	NextAttemptAt time.Time
	LastError     string
	ReceivedAt    time.Time
}

// EventRepository records Stripe event ids, so each event takes effect once.
type EventRepository interface {
	// Insert stores a new event and returns false, storing nothing, when
	// its id was stored before. A concurrent insert of the same id waits
	// for the other unit of work to end.
	Insert(ctx context.Context, e StoredEvent) (bool, error)
	// GetForUpdate locks a stored event; SKIP LOCKED semantics: found is
	// false when another unit of work holds it.
	GetForUpdate(ctx context.Context, id string) (e StoredEvent, found bool, err error)
	Update(ctx context.Context, e StoredEvent) error
	// DueIDs lists pending events whose next attempt is due, oldest first.
	DueIDs(ctx context.Context, now time.Time, limit int) ([]string, error)
}

// RefundRepository stores refunds and transfer reversals.
type RefundRepository interface {
	Insert(ctx context.Context, r domain.Refund) error
	Update(ctx context.Context, r domain.Refund) error
	// NextPending locks the oldest pending refund of a payment.
	NextPending(ctx context.Context, paymentID string) (domain.Refund, bool, error)
	GetForUpdate(ctx context.Context, id string) (domain.Refund, error)
	ByStripeRefund(ctx context.Context, stripeRefundID string) (domain.Refund, bool, error)
	List(ctx context.Context, paymentID string) ([]domain.Refund, error)
	// Totals sums what a payment returned to the customer. The caller holds
	// the payment's row lock, so the totals cannot change under it.
	Totals(ctx context.Context, paymentID string) (domain.ReturnedTotals, error)

	InsertReversal(ctx context.Context, r domain.TransferReversal) error
	UpdateReversal(ctx context.Context, r domain.TransferReversal) error
	// NextPendingReversal locks the oldest pending reversal of a payment.
	NextPendingReversal(ctx context.Context, paymentID string) (domain.TransferReversal, bool, error)
	GetReversalForUpdate(ctx context.Context, id string) (domain.TransferReversal, error)
	ReversalBySource(ctx context.Context, sourceID string) (domain.TransferReversal, bool, error)
	ReversalByStripeID(ctx context.Context, stripeReversalID string) (domain.TransferReversal, bool, error)
	ListReversals(ctx context.Context, paymentID string) ([]domain.TransferReversal, error)
}

// DisputeRepository stores disputes.
type DisputeRepository interface {
	// GetForUpdate locks a dispute by Stripe id; found is false when unknown.
	GetForUpdate(ctx context.Context, id string) (domain.Dispute, bool, error)
	Insert(ctx context.Context, d domain.Dispute) error
	Update(ctx context.Context, d domain.Dispute) error
	// HasOpen reports whether a payment has a dispute that is not closed.
	HasOpen(ctx context.Context, paymentID string) (bool, error)
	List(ctx context.Context, paymentID string) ([]domain.Dispute, error)
}

// HoldRepository stores holds that a reauthorization replaced and that
// must still be cancelled at Stripe.
type HoldRepository interface {
	AddReplaced(ctx context.Context, paymentID, paymentIntentID string, at time.Time) error
	// NextReplaced returns the oldest replaced hold not yet released.
	NextReplaced(ctx context.Context, paymentID string) (string, bool, error)
	MarkReleased(ctx context.Context, paymentIntentID string, at time.Time) error
	IsReplaced(ctx context.Context, paymentIntentID string) (bool, error)
}

// LookupRepository finds TaskPod rows by Stripe ids and lists payments
// that the schedulers act on.
type LookupRepository interface {
	// CustomerByStripeID returns the user id of a Stripe customer.
	CustomerByStripeID(ctx context.Context, stripeCustomerID string) (string, bool, error)
	// PaymentMethodOwner returns the user id that saved a card.
	PaymentMethodOwner(ctx context.Context, paymentMethodID string) (string, bool, error)
	// PaymentByCharge returns the payment id of a Stripe charge.
	PaymentByCharge(ctx context.Context, chargeID string) (string, bool, error)
	// OperationOpen reports whether an operation of kind for subject, such
	// as a card removal, has begun and not finished.
	OperationOpen(ctx context.Context, subject, kind string) (bool, error)
	// PaymentByTransfer returns the payment id of a Stripe transfer.
	PaymentByTransfer(ctx context.Context, transferID string) (string, bool, error)
	// ExpiringHolds lists authorized payments of matched tasks whose capture
	// deadline is before deadline and that no reauthorization is renewing.
	ExpiringHolds(ctx context.Context, deadline time.Time, limit int) ([]string, error)
	// AbandonedPayments lists payments of pending_payment tasks created
	// before cutoff whose PaymentIntent the customer never confirmed.
	AbandonedPayments(ctx context.Context, cutoff time.Time, limit int) ([]string, error)
}

// Locker takes advisory locks so that only one instance runs a job.
type Locker interface {
	// TryLock takes the named lock without waiting. When acquired, unlock
	// must be called once the job ends.
	TryLock(ctx context.Context, name string) (unlock func(), acquired bool, err error)
}

// StripeEvent is a verified Stripe event with the fields of data.object the
// service reads. Fields a later change at Stripe could make stale are only
// hints: handlers read the object again from Stripe where order matters.
type StripeEvent struct {
	ID         string
	Type       string
	APIVersion string
	Created    time.Time
	ObjectID   string
	ObjectType string
	// Body is the event exactly as received, kept for retries.
	Body []byte

	// PaymentID is TaskPod's payment id from the object's metadata, set on
	// PaymentIntents, transfers, refunds and reversals that TaskPod created.
	PaymentID string
	// PaymentIntentID names the intent of a charge, refund or dispute.
	PaymentIntentID string
	ChargeID        string
	CustomerID      string
	// CancellationReason of a canceled PaymentIntent; "automatic" when
	// Stripe canceled it because the capture deadline passed.
	CancellationReason string
	// Dispute is set for charge.dispute.* events.
	Dispute *Dispute
}

// Dispute is the part of a Stripe dispute the service reads.
type Dispute struct {
	ID              string
	ChargeID        string
	PaymentIntentID string
	Amount          int64
	Currency        domain.Currency
	Reason          string
	// Status is Stripe's: needs_response, under_review, won, lost, ...
	Status string
	// Fee is the dispute fee withdrawn with the disputed amount.
	Fee int64
}

// Webhook rejection reasons, wrapped by the errors EventParser.Verify returns.
var (
	ErrWebhookNotSigned      = errors.New("missing Stripe-Signature header")
	ErrWebhookBadHeader      = errors.New("malformed Stripe-Signature header")
	ErrWebhookBadSignature   = errors.New("no signature matches the configured webhook secrets")
	ErrWebhookStale          = errors.New("signature timestamp is outside the tolerance")
	ErrWebhookAPIVersion     = errors.New("event API version differs from the version stripe-go expects")
	ErrWebhookMalformed      = errors.New("event body is not a Stripe event")
	ErrWebhookSecretsMissing = errors.New("no webhook secret is configured")
)

// EventParser turns a webhook request into a StripeEvent.
type EventParser interface {
	// Verify checks the Stripe-Signature header against the configured
	// secrets and the API version, then parses the body.
	Verify(body []byte, signatureHeader string) (StripeEvent, error)
	// Parse reads a body that was verified when it was received.
	Parse(body []byte) (StripeEvent, error)
}

// RefundGateway is the part of Stripe that returns money after a capture.
// Like PaymentGateway, every call that changes money takes a caller-built
// idempotency key.
type RefundGateway interface {
	CreateRefund(ctx context.Context, in RefundInput) (StripeRefund, error)
	// ListRefunds returns every refund of a charge, newest first.
	ListRefunds(ctx context.Context, chargeID string) ([]StripeRefund, error)
	CreateTransferReversal(ctx context.Context, in TransferReversalInput) (StripeTransferReversal, error)
	// ListTransferReversals returns every reversal of a transfer, newest first.
	ListTransferReversals(ctx context.Context, transferID string) ([]StripeTransferReversal, error)
}

// RefundInput describes a refund of part or all of a captured charge.
type RefundInput struct {
	RefundID       string
	PaymentID      string
	ChargeID       string
	Amount         domain.Money
	Reason         domain.RefundReason
	IdempotencyKey string
}

// StripeRefund is a refund at Stripe.
type StripeRefund struct {
	ID                   string
	ChargeID             string
	Amount               int64
	Currency             domain.Currency
	Status               string
	BalanceTransactionID string
	// RefundID is TaskPod's refund id from the metadata; empty for a refund
	// made outside TaskPod.
	RefundID string
}

// TransferReversalInput describes a reversal of part of a transfer.
type TransferReversalInput struct {
	ReversalID     string
	PaymentID      string
	TransferID     string
	Amount         domain.Money
	IdempotencyKey string
}

// StripeTransferReversal is a transfer reversal at Stripe.
type StripeTransferReversal struct {
	ID                   string
	TransferID           string
	Amount               int64
	BalanceTransactionID string
	// ReversalID is TaskPod's reversal id from the metadata.
	ReversalID string
}
