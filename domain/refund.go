package domain

import (
	"fmt"
	"time"
)

// RefundStatus is the lifecycle state of a refund.
type RefundStatus string

// Refund statuses. A refund waits as pending until Stripe refunds it or
// rejects the request.
const (
	RefundPending   RefundStatus = "pending"
	RefundSucceeded RefundStatus = "succeeded"
	RefundFailed    RefundStatus = "failed"
)

// RefundReason is one of the reasons Stripe accepts on a refund.
type RefundReason string

// Refund reasons, as Stripe names them.
const (
	RefundRequestedByCustomer RefundReason = "requested_by_customer"
	RefundDuplicate           RefundReason = "duplicate"
	RefundFraudulent          RefundReason = "fraudulent"
)

// ParseRefundReason checks a reason; empty means requested_by_customer.
func ParseRefundReason(s string) (RefundReason, error) {
	switch RefundReason(s) {
	case "":
		return RefundRequestedByCustomer, nil
	case RefundRequestedByCustomer, RefundDuplicate, RefundFraudulent:
		return RefundReason(s), nil
	}
	return "", Invalid("reason", "invalid_reason", "reason must be requested_by_customer, duplicate or fraudulent, got %q", s)
}

// ReturnedTotals are the running totals of money a payment has returned to
// the customer, through refunds and disputes not won, in minor units of the
// payment's currency.
type ReturnedTotals struct {
	// Returned is the money sent back to the customer: succeeded refunds
	// plus the amounts of disputes that are open or lost.
	Returned int64
	// FeeReturned is the part of Returned taken from the platform fee.
	FeeReturned int64
	// Pending is the amount of refunds requested and not yet resolved.
	Pending int64
}

// SplitReturn splits amount, returned to the customer after earlier
// returns, into the platform fee part and the agent part. The fee returned
// so far is always half-up(fee × total returned ÷ captured), so each return
// takes the difference and the fee parts add up to the whole fee once
// everything is returned.
func SplitReturn(p PaymentRecord, before ReturnedTotals, amount int64) (feePart, agentPart int64, err error) {
	if amount <= 0 {
		return 0, 0, fmt.Errorf("returned amount must be positive, got %d", amount)
	}
	total := before.Returned + amount
	if total > p.CapturedAmount {
		return 0, 0, fmt.Errorf("payment %s: returning %d after %d exceeds the captured %d", p.ID, amount, before.Returned, p.CapturedAmount)
	}
	feeTotal, err := MulRateHalfUp(p.PlatformFee, total, p.CapturedAmount)
	if err != nil {
		return 0, 0, err
	}
	feePart = feeTotal - before.FeeReturned
	if feePart < 0 || feePart > amount {
		return 0, 0, fmt.Errorf("payment %s: fee part %d of %d is out of range; totals %+v", p.ID, feePart, amount, before)
	}
	return feePart, amount - feePart, nil
}

// Refund is money returned to the customer from a captured payment.
type Refund struct {
	r RefundRecord
}

// RefundRecord carries a refund's fields for storage and presentation.
// Amounts are minor units of Amount's currency.
type RefundRecord struct {
	ID, PaymentID, TaskID string
	Amount                Money
	Reason                RefundReason
	Status                RefundStatus
	// FeeReturned and AgentPart split Amount once Stripe refunded it.
	FeeReturned int64
	AgentPart   int64
	// External marks a refund made outside TaskPod, found at Stripe.
	External             bool
	StripeRefundID       string
	BalanceTransactionID string
	FailureReason        string
	Actor, RequestID     string
	CreatedAt, UpdatedAt time.Time
}

// RefundablePayment reports why a payment cannot be refunded now, or nil.
// Only captured money can be refunded, and only once the agent's share is
// either transferred or known to have failed, so the agent part is taken
// from the right place.
func RefundablePayment(p PaymentRecord) error {
	switch {
	case p.Status == PaymentTransferred:
		return nil
	case p.Status == PaymentCaptured && p.TransferFailedReason != "":
		return nil
	case p.Status == PaymentCaptured:
		return fmt.Errorf("payment %s: its transfer to the agent is still running; retry the refund in a minute: %w", p.ID, ErrConflict)
	}
	return fmt.Errorf("payment %s is %s, so nothing was captured to refund: %w", p.ID, p.Status, ErrConflict)
}

// NewRefund requests a refund of amount (the whole refundable rest when
// amount is nil) after checking it against what is left.
func NewRefund(id string, p PaymentRecord, totals ReturnedTotals, amount *int64, reason RefundReason, actor, requestID string, now time.Time) (Refund, error) {
	if err := RefundablePayment(p); err != nil {
		return Refund{}, err
	}
	left := p.CapturedAmount - totals.Returned - totals.Pending
	value := left
	if amount != nil {
		value = *amount
	}
	if value <= 0 && amount == nil {
		return Refund{}, fmt.Errorf("payment %s has nothing left to refund: %w", p.ID, ErrConflict)
	}
	if value <= 0 {
		return Refund{}, Invalid("amountCents", "invalid_amount", "amountCents must be positive, got %d", value)
	}
	if value > left {
		return Refund{}, Invalid("amountCents", "amount_above_refundable",
			"amountCents %d is above the refundable %d (captured %d, refunded or disputed %d, pending %d)",
			value, left, p.CapturedAmount, totals.Returned, totals.Pending)
	}
	money, err := NewMoney(value, p.Amount.Currency())
	if err != nil {
		return Refund{}, err
	}
	return Refund{r: RefundRecord{
		ID: id, PaymentID: p.ID, TaskID: p.TaskID, Amount: money, Reason: reason, Status: RefundPending,
		Actor: actor, RequestID: requestID, CreatedAt: now, UpdatedAt: now,
	}}, nil
}

// NewExternalRefund records a refund that Stripe made without a TaskPod
// request, for example one made in the Stripe Dashboard. It is pending until
// MarkSucceeded splits it.
func NewExternalRefund(id string, p PaymentRecord, amount int64, stripeRefundID string, now time.Time) (Refund, error) {
	money, err := NewMoney(amount, p.Amount.Currency())
	if err != nil {
		return Refund{}, err
	}
	return Refund{r: RefundRecord{
		ID: id, PaymentID: p.ID, TaskID: p.TaskID, Amount: money, Reason: RefundRequestedByCustomer,
		Status: RefundPending, External: true, StripeRefundID: stripeRefundID, Actor: "stripe",
		CreatedAt: now, UpdatedAt: now,
	}}, nil
}

// UnmarshalRefundFromDatabase rebuilds a stored refund without validation.
func UnmarshalRefundFromDatabase(r RefundRecord) Refund { return Refund{r: r} }

// Record returns a copy of the refund's fields.
func (r Refund) Record() RefundRecord { return r.r }

// ID returns the refund id.
func (r Refund) ID() string { return r.r.ID }

// MarkSucceeded records Stripe's refund and how it splits between the
// platform fee and the agent.
func (r *Refund) MarkSucceeded(stripeRefundID, balanceTxID string, feePart, agentPart int64, now time.Time) error {
	if r.r.Status != RefundPending {
		return &TransitionError{Entity: "refund " + r.r.ID, From: string(r.r.Status), To: string(RefundSucceeded)}
	}
	if feePart+agentPart != r.r.Amount.Amount() {
		return fmt.Errorf("refund %s: parts %d + %d do not add up to %d", r.r.ID, feePart, agentPart, r.r.Amount.Amount())
	}
	r.r.Status = RefundSucceeded
	r.r.StripeRefundID = stripeRefundID
	r.r.BalanceTransactionID = balanceTxID
	r.r.FeeReturned = feePart
	r.r.AgentPart = agentPart
	r.r.UpdatedAt = now
	return nil
}

// MarkFailed records that Stripe rejected the refund; nothing was returned.
func (r *Refund) MarkFailed(reason string, now time.Time) error {
	if r.r.Status != RefundPending {
		return &TransitionError{Entity: "refund " + r.r.ID, From: string(r.r.Status), To: string(RefundFailed)}
	}
	r.r.Status = RefundFailed
	r.r.FailureReason = reason
	r.r.UpdatedAt = now
	return nil
}

// ReversalStatus is the lifecycle state of a transfer reversal.
type ReversalStatus string

// Transfer reversal statuses. A failed reversal leaves the agent's part as
// a receivable in the ledger. A canceled one was not needed any more,
// because a dispute was won before it ran.
const (
	ReversalPending   ReversalStatus = "pending"
	ReversalSucceeded ReversalStatus = "succeeded"
	ReversalFailed    ReversalStatus = "failed"
	ReversalCanceled  ReversalStatus = "canceled"
)

// TransferReversal takes an agent's part of a refund or dispute back from
// its Connect account.
type TransferReversal struct {
	r ReversalRecord
}

// ReversalRecord carries a transfer reversal's fields.
type ReversalRecord struct {
	ID, PaymentID, TaskID, AgentID string
	// SourceID is the refund or dispute whose agent part this reverses.
	SourceID             string
	Amount               Money
	Status               ReversalStatus
	StripeTransferID     string
	StripeReversalID     string
	BalanceTransactionID string
	FailureReason        string
	CreatedAt, UpdatedAt time.Time
}

// NewTransferReversal plans the reversal of agentPart from the payment's
// transfer.
func NewTransferReversal(id string, p PaymentRecord, sourceID string, agentPart int64, now time.Time) (TransferReversal, error) {
	if p.StripeTransferID == "" {
		return TransferReversal{}, fmt.Errorf("payment %s has no transfer to reverse", p.ID)
	}
	money, err := NewMoney(agentPart, p.Amount.Currency())
	if err != nil || agentPart == 0 {
		return TransferReversal{}, fmt.Errorf("payment %s: reversal amount %d must be positive", p.ID, agentPart)
	}
	return TransferReversal{r: ReversalRecord{
		ID: id, PaymentID: p.ID, TaskID: p.TaskID, AgentID: p.AgentID, SourceID: sourceID, Amount: money,
		Status: ReversalPending, StripeTransferID: p.StripeTransferID, CreatedAt: now, UpdatedAt: now,
	}}, nil
}

// UnmarshalReversalFromDatabase rebuilds a stored reversal without validation.
func UnmarshalReversalFromDatabase(r ReversalRecord) TransferReversal { return TransferReversal{r: r} }

// Record returns a copy of the reversal's fields.
func (t TransferReversal) Record() ReversalRecord { return t.r }

// MarkSucceeded records Stripe's reversal.
func (t *TransferReversal) MarkSucceeded(stripeReversalID, balanceTxID string, now time.Time) error {
	if t.r.Status != ReversalPending && t.r.Status != ReversalCanceled {
		return &TransitionError{Entity: "transfer reversal " + t.r.ID, From: string(t.r.Status), To: string(ReversalSucceeded)}
	}
	t.r.Status = ReversalSucceeded
	t.r.StripeReversalID = stripeReversalID
	t.r.BalanceTransactionID = balanceTxID
	t.r.FailureReason = ""
	t.r.UpdatedAt = now
	return nil
}

// MarkFailed records that Stripe refused the reversal, typically because
// the connected account's balance cannot cover it.
func (t *TransferReversal) MarkFailed(reason string, now time.Time) error {
	if t.r.Status != ReversalPending {
		return &TransitionError{Entity: "transfer reversal " + t.r.ID, From: string(t.r.Status), To: string(ReversalFailed)}
	}
	t.r.Status = ReversalFailed
	t.r.FailureReason = reason
	t.r.UpdatedAt = now
	return nil
}

// Cancel drops a reversal that has not run, because the money it would
// take back was given back by a won dispute.
func (t *TransferReversal) Cancel(now time.Time) error {
	if t.r.Status != ReversalPending {
		return &TransitionError{Entity: "transfer reversal " + t.r.ID, From: string(t.r.Status), To: string(ReversalCanceled)}
	}
	t.r.Status = ReversalCanceled
	t.r.UpdatedAt = now
	return nil
}

// NewCompensationRefund refunds the whole captured amount of a payment
// whose task was cancelled or failed while Stripe captured it, so the
// customer never pays for a task that did not complete.
func NewCompensationRefund(id string, p PaymentRecord, actor string, now time.Time) (Refund, error) {
	if p.Status != PaymentCaptured || p.CapturedAmount <= 0 {
		return Refund{}, fmt.Errorf("payment %s is %s with %d captured; only a capture can be refunded", p.ID, p.Status, p.CapturedAmount)
	}
	money, err := NewMoney(p.CapturedAmount, p.Amount.Currency())
	if err != nil {
		return Refund{}, err
	}
	return Refund{r: RefundRecord{
		ID: id, PaymentID: p.ID, TaskID: p.TaskID, Amount: money, Reason: RefundRequestedByCustomer,
		Status: RefundPending, Actor: actor, CreatedAt: now, UpdatedAt: now,
	}}, nil
}
