package domain

import (
	"fmt"
	"time"
)

// DisputeStatus is what TaskPod tracks of a Stripe dispute: open until the
// card network decides, then won or lost.
type DisputeStatus string

// Dispute statuses.
const (
	DisputeOpen DisputeStatus = "open"
	DisputeWon  DisputeStatus = "won"
	DisputeLost DisputeStatus = "lost"
)

// DisputeAgentSide says where a dispute's agent part is booked.
type DisputeAgentSide string

// Where the agent part of a dispute goes.
const (
	// DisputeClawbackReversal reverses the agent part from its transfer,
	// like a refund.
	DisputeClawbackReversal DisputeAgentSide = "reversal"
	// DisputeClawbackPayable reduces what the platform still owes the agent,
	// because the share was never transferred.
	DisputeClawbackPayable DisputeAgentSide = "payable"
	// DisputePlatformLoss leaves the agent's share with the agent; the
	// platform books the whole loss.
	DisputePlatformLoss DisputeAgentSide = "platform_loss"
)

// Dispute is a chargeback on a captured payment. Stripe withdraws the
// disputed amount and its dispute fee from the platform when it opens, and
// gives the amount back if the dispute is won.
type Dispute struct {
	r DisputeRecord
}

// DisputeRecord carries a dispute's fields. Amounts are minor units of
// Amount's currency.
type DisputeRecord struct {
	// ID is Stripe's dispute id (dp_...).
	ID, PaymentID, TaskID, ChargeID string
	Amount                          Money
	// StripeFee is the dispute fee Stripe withdrew, which it keeps even
	// when the dispute is won.
	StripeFee   int64
	Reason      string
	Status      DisputeStatus
	FeeReturned int64
	AgentPart   int64
	AgentSide   DisputeAgentSide
	CreatedAt   time.Time
	ClosedAt    time.Time
	UpdatedAt   time.Time
}

// NewDispute records an opened dispute with its split between the platform
// fee and the agent, computed by SplitReturn.
func NewDispute(id string, p PaymentRecord, chargeID string, amount, stripeFee int64, reason string,
	feePart, agentPart int64, side DisputeAgentSide, now time.Time) (Dispute, error) {
	money, err := NewMoney(amount, p.Amount.Currency())
	if err != nil {
		return Dispute{}, err
	}
	if stripeFee < 0 || feePart+agentPart != amount {
		return Dispute{}, fmt.Errorf("dispute %s: fee %d, parts %d + %d do not fit the amount %d", id, stripeFee, feePart, agentPart, amount)
	}
	return Dispute{r: DisputeRecord{
		ID: id, PaymentID: p.ID, TaskID: p.TaskID, ChargeID: chargeID, Amount: money, StripeFee: stripeFee,
		Reason: reason, Status: DisputeOpen, FeeReturned: feePart, AgentPart: agentPart, AgentSide: side,
		CreatedAt: now, UpdatedAt: now,
	}}, nil
}

// UnmarshalDisputeFromDatabase rebuilds a stored dispute without validation.
func UnmarshalDisputeFromDatabase(r DisputeRecord) Dispute { return Dispute{r: r} }

// Record returns a copy of the dispute's fields.
func (d Dispute) Record() DisputeRecord { return d.r }

// Win records that the dispute was decided for the platform: Stripe gave
// the amount back, and the split booked when it opened is undone.
func (d *Dispute) Win(now time.Time) error {
	if d.r.Status != DisputeOpen {
		return &TransitionError{Entity: "dispute " + d.r.ID, From: string(d.r.Status), To: string(DisputeWon)}
	}
	d.r.Status = DisputeWon
	d.r.ClosedAt = now
	d.r.UpdatedAt = now
	return nil
}

// Lose records that the dispute was decided for the customer; the money
// withdrawn when it opened stays withdrawn.
func (d *Dispute) Lose(now time.Time) error {
	if d.r.Status != DisputeOpen {
		return &TransitionError{Entity: "dispute " + d.r.ID, From: string(d.r.Status), To: string(DisputeLost)}
	}
	d.r.Status = DisputeLost
	d.r.ClosedAt = now
	d.r.UpdatedAt = now
	return nil
}
