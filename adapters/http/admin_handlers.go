package http

import (
	"net/http"
	"time"

	"github.com/taskpod/billing/application"
	"github.com/taskpod/billing/ports"
)

// quarantineView is one outbox message the relay gave up on.
type quarantineView struct {
	ID            string     `json:"id"`
	MessageID     string     `json:"messageId"`
	PaymentID     string     `json:"paymentId"`
	Step          string     `json:"step"`
	RequestID     string     `json:"requestId,omitempty"`
	Attempts      int        `json:"attempts"`
	LastError     string     `json:"lastError"`
	QuarantinedAt time.Time  `json:"quarantinedAt"`
	RequeuedAt    *time.Time `json:"requeuedAt"`
	RequeuedBy    string     `json:"requeuedBy,omitempty"`
}

func quarantineOf(m ports.QuarantinedMessage) quarantineView {
	v := quarantineView{
		ID: m.ID, MessageID: m.MessageUUID, PaymentID: m.PaymentID, Step: string(m.Step), RequestID: m.RequestID,
		Attempts: m.Attempts, LastError: m.LastError, QuarantinedAt: m.QuarantinedAt, RequeuedBy: m.RequeuedBy,
	}
	if !m.RequeuedAt.IsZero() {
		t := m.RequeuedAt
		v.RequeuedAt = &t
	}
	return v
}

// listQuarantine serves GET /v1/admin/outbox/quarantine. status is open (the
// default), requeued or all; paymentId narrows the list to one payment.
func (s *Server) listQuarantine(w http.ResponseWriter, r *http.Request) {
	page, err := pageOf(r)
	if err != nil {
		writeError(w, r, err)
		return
	}
	q := r.URL.Query()
	filter := ports.QuarantineFilter{Status: ports.QuarantineStatus(q.Get("status")), PaymentID: q.Get("paymentId")}
	switch filter.Status {
	case "":
		filter.Status = ports.QuarantineOpen
	case ports.QuarantineOpen, ports.QuarantineRequeued, ports.QuarantineAll:
	default:
		writeError(w, r, badRequest("invalid_status", "status", "status must be open, requeued or all"))
		return
	}

	items, more, err := s.d.Admin.Admin.ListQuarantine(r.Context(), filter, page)
	if err != nil {
		writeError(w, r, err)
		return
	}
	out := list[quarantineView]{Data: []quarantineView{}, HasMore: more}
	for _, m := range items {
		out.Data = append(out.Data, quarantineOf(m))
	}
	writeJSON(w, http.StatusOK, out)
}

// requeueQuarantined serves POST /v1/admin/outbox/quarantine/{id}/requeue.
// Repeating it returns the entry as first requeued and queues nothing more.
func (s *Server) requeueQuarantined(w http.ResponseWriter, r *http.Request) {
	var body struct{}
	if err := decodeJSON(w, r, &body, true); err != nil {
		writeError(w, r, err)
		return
	}
	m, err := s.d.Admin.Admin.Requeue(r.Context(), actorOf(r), r.PathValue("id"))
	if err != nil {
		writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, quarantineOf(m))
}

// retryTransfer serves POST /v1/admin/payments/{id}/retry-transfer and
// returns the payment with its transfer queued again. The optional body
// {"stripeAccountId": "acct_..."} sends the transfer to another Connect
// account.
func (s *Server) retryTransfer(w http.ResponseWriter, r *http.Request) {
	var body struct {
		StripeAccountID string `json:"stripeAccountId"`
	}
	if err := decodeJSON(w, r, &body, true); err != nil {
		writeError(w, r, err)
		return
	}
	p, err := s.d.Admin.Admin.RetryTransfer(r.Context(), actorOf(r), r.PathValue("id"), body.StripeAccountID)
	if err != nil {
		writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusAccepted, paymentOf(p, application.RoleAdmin))
}
