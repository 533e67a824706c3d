package domain

import (
	"fmt"
	"time"
)

// PaymentStatus is the lifecycle state of a task's payment.
type PaymentStatus string

// Payment statuses, each mirroring a confirmed state at Stripe.
const (
	PaymentAuthorizing            PaymentStatus = "authorizing"
	PaymentRequiresCustomerAction PaymentStatus = "requires_customer_action"
	PaymentAuthorized             PaymentStatus = "authorized"
	// PaymentReauthorizing: the hold expired at Stripe and a new hold on
	// the customer's default card is being placed.
	PaymentReauthorizing PaymentStatus = "reauthorizing"
	PaymentCaptured      PaymentStatus = "captured"
	PaymentTransferred   PaymentStatus = "transferred"
	PaymentReleased      PaymentStatus = "released"
	PaymentFailed        PaymentStatus = "failed"
)

// paymentTransitions is the complete table of allowed payment state changes.
var paymentTransitions = map[PaymentStatus][]PaymentStatus{
	PaymentAuthorizing:            {PaymentAuthorized, PaymentRequiresCustomerAction, PaymentFailed, PaymentReleased},
	PaymentRequiresCustomerAction: {PaymentAuthorized, PaymentReleased, PaymentFailed},
	PaymentAuthorized:             {PaymentCaptured, PaymentReleased, PaymentReauthorizing},
	PaymentReauthorizing:          {PaymentAuthorized, PaymentReleased},
	PaymentCaptured:               {PaymentTransferred},
}

// CanPaymentMove reports whether the payment state machine allows from → to.
func CanPaymentMove(from, to PaymentStatus) bool {
	for _, s := range paymentTransitions[from] {
		if s == to {
			return true
		}
	}
	return false
}

// PaymentStatuses lists every payment status, for tests and documentation.
func PaymentStatuses() []PaymentStatus {
	return []PaymentStatus{PaymentAuthorizing, PaymentRequiresCustomerAction, PaymentAuthorized,
		PaymentReauthorizing, PaymentCaptured, PaymentTransferred, PaymentReleased, PaymentFailed}
}

// Step is one Stripe call that moves or holds money, run through the outbox.
type Step string

// Money-moving steps.
const (
	StepAuthorize Step = "authorize"
	StepCapture   Step = "capture"
	StepTransfer  Step = "transfer"
	StepRelease   Step = "release"
	// StepReauthorize places a new off-session hold on the default card
	// before or after the current hold expires.
	StepReauthorize Step = "reauthorize"
	// StepReleasePrevious cancels holds that a reauthorization replaced.
	StepReleasePrevious Step = "release_previous"
	// StepRefund refunds the payment's pending refunds, oldest first.
	StepRefund Step = "refund"
	// StepTransferReversal takes the agent's part of refunds and disputes
	// back from its Connect account, oldest first.
	StepTransferReversal Step = "transfer_reversal"
)

// ParseStep checks a step name read from an outbox message.
func ParseStep(s string) (Step, error) {
	switch Step(s) {
	case StepAuthorize, StepCapture, StepTransfer, StepRelease,
		StepReauthorize, StepReleasePrevious, StepRefund, StepTransferReversal:
		return Step(s), nil
	}
	return "", fmt.Errorf("unknown payment step %q", s)
}

// Payment is the money side of a paid task: one hold on the customer's card,
// at most one capture and at most one transfer to the agent.
type Payment struct {
	r PaymentRecord
}

// PaymentRecord carries a payment's fields for storage and presentation.
type PaymentRecord struct {
	ID, TaskID, CustomerID, AgentID string
	StripeCustomerID                string
	DestinationAccountID            string
	// Amount is the held amount; CaptureAmount, once set by completion, is
	// what will be captured (at most Amount).
	Amount        Money
	CaptureAmount Money
	FeeRate       BasisPoints
	Status        PaymentStatus
	AutoCharged   bool

	PaymentMethodID       string
	StripePaymentIntentID string
	ClientSecret          string
	DeclineCode           string
	FailureReason         string
	CaptureBefore         time.Time

	// Filled at capture: the amounts in minor units of Amount's currency.
	CapturedAmount       int64
	PlatformFee          int64
	AgentShare           int64
	StripeFee            int64
	StripeChargeID       string
	StripeBalanceTxID    string
	StripeTransferID     string
	TransferFailedReason string

	CreatedAt, UpdatedAt time.Time
}

// NewPayment starts a payment for a paid task in the authorizing state.
func NewPayment(id string, task Task, agent Agent, stripeCustomerID, paymentMethodID string, rate BasisPoints, now time.Time) (Payment, error) {
	if !agent.IsPaid() {
		return Payment{}, fmt.Errorf("agent %s is free: its tasks carry no payment", agent.ID)
	}
	if stripeCustomerID == "" {
		return Payment{}, fmt.Errorf("payment %s has no Stripe customer", id)
	}
	return Payment{r: PaymentRecord{
		ID: id, TaskID: task.ID(), CustomerID: task.CustomerID(), AgentID: agent.ID,
		StripeCustomerID: stripeCustomerID, DestinationAccountID: agent.ConnectAccountID,
		Amount: agent.Price, CaptureAmount: agent.Price, FeeRate: rate,
		Status: PaymentAuthorizing, AutoCharged: paymentMethodID != "",
		PaymentMethodID: paymentMethodID, CreatedAt: now, UpdatedAt: now,
	}}, nil
}

// UnmarshalPaymentFromDatabase rebuilds a stored payment without validation.
func UnmarshalPaymentFromDatabase(r PaymentRecord) Payment { return Payment{r: r} }

// Record returns a copy of the payment's fields.
func (p Payment) Record() PaymentRecord { return p.r }

func (p Payment) ID() string            { return p.r.ID }
func (p Payment) TaskID() string        { return p.r.TaskID }
func (p Payment) Status() PaymentStatus { return p.r.Status }
func (p Payment) Amount() Money         { return p.r.Amount }

// MarkAuthorized records a successful hold at Stripe.
func (p *Payment) MarkAuthorized(paymentIntentID, chargeID string, captureBefore, now time.Time) error {
	if err := p.moveTo(PaymentAuthorized, now); err != nil {
		return err
	}
	p.r.StripePaymentIntentID = paymentIntentID
	p.r.StripeChargeID = chargeID
	p.r.CaptureBefore = captureBefore
	p.r.DeclineCode = ""
	return nil
}

// RequireCustomerAction records that the customer must confirm the
// PaymentIntent themselves: there was no usable card, the card was declined,
// or the bank asked for authentication.
func (p *Payment) RequireCustomerAction(paymentIntentID, clientSecret, declineCode string, now time.Time) error {
	if err := p.moveTo(PaymentRequiresCustomerAction, now); err != nil {
		return err
	}
	p.r.StripePaymentIntentID = paymentIntentID
	p.r.ClientSecret = clientSecret
	p.r.DeclineCode = declineCode
	return nil
}

// SetCaptureAmount fixes the amount completion will capture: at least
// Stripe's minimum charge and at most the hold; the rest is released.
func (p *Payment) SetCaptureAmount(amount int64) error {
	cur := p.r.Amount.Currency()
	if amount > p.r.Amount.Amount() {
		return Invalid("finalAmountCents", "amount_above_hold",
			"finalAmountCents %d is above the held amount %d", amount, p.r.Amount.Amount())
	}
	if amount < cur.MinimumCharge() {
		return Invalid("finalAmountCents", "amount_too_small",
			"finalAmountCents %d is below Stripe's minimum charge of %d for %s", amount, cur.MinimumCharge(), cur)
	}
	p.r.CaptureAmount = MustMoney(amount, cur)
	return nil
}

// MarkCaptured records Stripe's capture and splits it into the platform fee
// and the agent's share.
func (p *Payment) MarkCaptured(captured int64, chargeID, balanceTxID string, stripeFee int64, now time.Time) error {
	amount, err := NewMoney(captured, p.r.Amount.Currency())
	if err != nil {
		return err
	}
	fee, share, err := PlatformFee(amount, p.r.FeeRate)
	if err != nil {
		return err
	}
	if err := p.moveTo(PaymentCaptured, now); err != nil {
		return err
	}
	p.r.CapturedAmount = captured
	p.r.PlatformFee = fee.Amount()
	p.r.AgentShare = share.Amount()
	p.r.StripeFee = stripeFee
	p.r.StripeChargeID = chargeID
	p.r.StripeBalanceTxID = balanceTxID
	return nil
}

// MarkTransferred records the transfer of the agent's share.
func (p *Payment) MarkTransferred(transferID string, now time.Time) error {
	if err := p.moveTo(PaymentTransferred, now); err != nil {
		return err
	}
	p.r.StripeTransferID = transferID
	p.r.TransferFailedReason = ""
	return nil
}

// MarkTransferFailed keeps the payment captured with the agent payable open,
// so an admin can retry the transfer.
func (p *Payment) MarkTransferFailed(reason string, now time.Time) error {
	if p.r.Status != PaymentCaptured {
		return &TransitionError{Entity: "payment " + p.r.ID, From: string(p.r.Status), To: "transfer_failed"}
	}
	p.r.TransferFailedReason = reason
	p.r.UpdatedAt = now
	return nil
}

// RetryTransfer clears a failed transfer's reason so the transfer step can
// run again, to destination when it is set and else to the same account.
// Only a captured payment whose transfer failed may retry.
func (p *Payment) RetryTransfer(destination string, now time.Time) error {
	if p.r.Status != PaymentCaptured || p.r.TransferFailedReason == "" {
		return &TransitionError{Entity: "payment " + p.r.ID, From: string(p.r.Status), To: "transfer_retry"}
	}
	if destination != "" {
		if !connectAccountPattern.MatchString(destination) {
			return Invalid("stripeAccountId", "invalid_account", "stripeAccountId must look like acct_123, got %q", destination)
		}
		p.r.DestinationAccountID = destination
	}
	p.r.TransferFailedReason = ""
	p.r.UpdatedAt = now
	return nil
}

// MarkReleased records that the hold was cancelled at Stripe, or that no hold
// was ever placed.
func (p *Payment) MarkReleased(reason string, now time.Time) error {
	if err := p.moveTo(PaymentReleased, now); err != nil {
		return err
	}
	p.r.FailureReason = reason
	return nil
}

// RenewHold replaces the hold with a new authorized PaymentIntent. From
// authorized it returns the replaced intent, whose hold is still live at
// Stripe and must be cancelled; from reauthorizing the old hold has already
// expired and the returned id is empty.
func (p *Payment) RenewHold(paymentIntentID, chargeID string, captureBefore, now time.Time) (replaced string, err error) {
	switch p.r.Status {
	case PaymentAuthorized:
		replaced = p.r.StripePaymentIntentID
	case PaymentReauthorizing:
		if err := p.moveTo(PaymentAuthorized, now); err != nil {
			return "", err
		}
	default:
		return "", &TransitionError{Entity: "payment " + p.r.ID, From: string(p.r.Status), To: "renewed hold"}
	}
	p.r.StripePaymentIntentID = paymentIntentID
	p.r.StripeChargeID = chargeID
	p.r.CaptureBefore = captureBefore
	p.r.FailureReason = ""
	p.r.UpdatedAt = now
	return replaced, nil
}

// StartReauthorization records that the hold expired at Stripe and a new
// one will be placed; until then nothing can be captured.
func (p *Payment) StartReauthorization(reason string, now time.Time) error {
	if err := p.moveTo(PaymentReauthorizing, now); err != nil {
		return err
	}
	p.r.FailureReason = reason
	return nil
}

// RecordDecline keeps the latest decline of a PaymentIntent that the
// customer still has to confirm.
func (p *Payment) RecordDecline(declineCode string, now time.Time) error {
	if p.r.Status != PaymentRequiresCustomerAction {
		return &TransitionError{Entity: "payment " + p.r.ID, From: string(p.r.Status), To: "declined"}
	}
	p.r.DeclineCode = declineCode
	p.r.UpdatedAt = now
	return nil
}

// MarkFailed records that the payment cannot proceed.
func (p *Payment) MarkFailed(reason string, now time.Time) error {
	if err := p.moveTo(PaymentFailed, now); err != nil {
		return err
	}
	p.r.FailureReason = reason
	return nil
}

func (p *Payment) moveTo(to PaymentStatus, now time.Time) error {
	if !CanPaymentMove(p.r.Status, to) {
		return &TransitionError{Entity: "payment " + p.r.ID, From: string(p.r.Status), To: string(to)}
	}
	p.r.Status = to
	p.r.UpdatedAt = now
	return nil
}

// HoldExpiryPolicy says what happens to an open task whose hold is about to
// expire, or has expired, at Stripe.
type HoldExpiryPolicy string

// Hold expiry policies.
const (
	// HoldExpiryReauthorize places a new off-session hold on the customer's
	// default card and releases the old one. Without a default card, or if
	// the new hold is declined, the task fails.
	HoldExpiryReauthorize HoldExpiryPolicy = "reauthorize"
	// HoldExpiryFail fails the task and releases the hold.
	HoldExpiryFail HoldExpiryPolicy = "fail"
)

// ParseHoldExpiryPolicy checks a policy name.
func ParseHoldExpiryPolicy(s string) (HoldExpiryPolicy, error) {
	switch HoldExpiryPolicy(s) {
	case HoldExpiryReauthorize, HoldExpiryFail:
		return HoldExpiryPolicy(s), nil
	}
	return "", fmt.Errorf("unknown hold expiry policy %q: use reauthorize or fail", s)
}
