package http

import (
	"errors"
	"net/http"
	"time"

	"github.com/taskpod/billing/application"
	"github.com/taskpod/billing/domain"
)

// refundView is one refund. *Cents fields are minor units of Currency.
type refundView struct {
	ID               string    `json:"id"`
	TaskID           string    `json:"taskId"`
	PaymentID        string    `json:"paymentId"`
	AmountCents      int64     `json:"amountCents"`
	Currency         string    `json:"currency"`
	Reason           string    `json:"reason"`
	Status           string    `json:"status"`
	FeeReturnedCents int64     `json:"platformFeeReturnedCents"`
	AgentPartCents   int64     `json:"agentPartCents"`
	External         bool      `json:"external"`
	StripeRefundID   string    `json:"stripeRefundId,omitempty"`
	FailureReason    string    `json:"failureReason,omitempty"`
	CreatedAt        time.Time `json:"createdAt"`
	UpdatedAt        time.Time `json:"updatedAt"`
}

func refundOf(r domain.RefundRecord) refundView {
	return refundView{
		ID: r.ID, TaskID: r.TaskID, PaymentID: r.PaymentID, AmountCents: r.Amount.Amount(), Currency: string(r.Amount.Currency()),
		Reason: string(r.Reason), Status: string(r.Status), FeeReturnedCents: r.FeeReturned, AgentPartCents: r.AgentPart,
		External: r.External, StripeRefundID: r.StripeRefundID, FailureReason: r.FailureReason,
		CreatedAt: r.CreatedAt, UpdatedAt: r.UpdatedAt,
	}
}

// reversalView is one transfer reversal; a failed one is what the agent
// still owes the platform.
type reversalView struct {
	ID               string    `json:"id"`
	SourceID         string    `json:"sourceId"`
	AgentID          string    `json:"agentId"`
	AmountCents      int64     `json:"amountCents"`
	Currency         string    `json:"currency"`
	Status           string    `json:"status"`
	StripeTransferID string    `json:"stripeTransferId"`
	StripeReversalID string    `json:"stripeReversalId,omitempty"`
	FailureReason    string    `json:"failureReason,omitempty"`
	CreatedAt        time.Time `json:"createdAt"`
	UpdatedAt        time.Time `json:"updatedAt"`
}

type disputeView struct {
	ID               string     `json:"id"`
	ChargeID         string     `json:"chargeId"`
	AmountCents      int64      `json:"amountCents"`
	Currency         string     `json:"currency"`
	DisputeFeeCents  int64      `json:"disputeFeeCents"`
	Reason           string     `json:"reason"`
	Status           string     `json:"status"`
	FeeReturnedCents int64      `json:"platformFeeReturnedCents"`
	AgentPartCents   int64      `json:"agentPartCents"`
	AgentSide        string     `json:"agentSide"`
	CreatedAt        time.Time  `json:"createdAt"`
	ClosedAt         *time.Time `json:"closedAt,omitempty"`
}

type returnsView struct {
	PaymentID string         `json:"paymentId"`
	Refunds   []refundView   `json:"refunds"`
	Reversals []reversalView `json:"transferReversals"`
	Disputes  []disputeView  `json:"disputes"`
}

func returnsOf(r application.PaymentReturns) returnsView {
	out := returnsView{PaymentID: r.Payment.ID, Refunds: []refundView{}, Reversals: []reversalView{}, Disputes: []disputeView{}}
	for _, rf := range r.Refunds {
		out.Refunds = append(out.Refunds, refundOf(rf))
	}
	for _, rv := range r.Reversals {
		out.Reversals = append(out.Reversals, reversalView{
			ID: rv.ID, SourceID: rv.SourceID, AgentID: rv.AgentID, AmountCents: rv.Amount.Amount(),
			Currency: string(rv.Amount.Currency()), Status: string(rv.Status), StripeTransferID: rv.StripeTransferID,
			StripeReversalID: rv.StripeReversalID, FailureReason: rv.FailureReason, CreatedAt: rv.CreatedAt, UpdatedAt: rv.UpdatedAt,
		})
	}
	for _, d := range r.Disputes {
		v := disputeView{
			ID: d.ID, ChargeID: d.ChargeID, AmountCents: d.Amount.Amount(), Currency: string(d.Amount.Currency()),
			DisputeFeeCents: d.StripeFee, Reason: d.Reason, Status: string(d.Status), FeeReturnedCents: d.FeeReturned,
			AgentPartCents: d.AgentPart, AgentSide: string(d.AgentSide), CreatedAt: d.CreatedAt,
		}
		if !d.ClosedAt.IsZero() {
			closed := d.ClosedAt
			v.ClosedAt = &closed
		}
		out.Disputes = append(out.Disputes, v)
	}
	return out
}

// refundTask refunds part or all of a task's captured payment and returns
// 201 with the refund. Its status stays pending when Stripe did not reply in
// time, and the relay finishes it.
func (s *Server) refundTask(w http.ResponseWriter, r *http.Request) {
	var body struct {
		AmountCents *int64  `json:"amountCents"`
		Reason      *string `json:"reason"`
	}
	if err := decodeJSON(w, r, &body, true); err != nil {
		writeError(w, r, err)
		return
	}
	in := application.RefundInput{Amount: body.AmountCents}
	if body.Reason != nil {
		in.Reason = *body.Reason
	}
	rf, err := s.d.Webhooks.Refunds.Request(r.Context(), actorOf(r), r.PathValue("id"), in)
	if errors.Is(err, domain.ErrConflict) {
		err = &apiError{Status: http.StatusConflict, Type: typeInvalidRequest, Code: "refund_not_possible", Message: err.Error()}
	}
	if err != nil {
		writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, refundOf(rf))
}

// listTaskReturns shows an admin or auditor a task's refunds, transfer
// reversals and disputes.
func (s *Server) listTaskReturns(w http.ResponseWriter, r *http.Request) {
	out, err := s.d.Webhooks.Refunds.Returns(r.Context(), r.PathValue("id"))
	if err != nil {
		writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, returnsOf(out))
}
