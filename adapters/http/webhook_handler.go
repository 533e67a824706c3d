package http

import (
	"errors"
	"io"
	"log/slog"
	"net/http"

	"github.com/taskpod/billing/ports"
)

// maxWebhookBytes bounds a webhook body. Stripe's events carry one object
// snapshot and stay far below this.
const maxWebhookBytes = 1 << 20

// stripeWebhook verifies a Stripe event on its raw body and applies it. A
// request that fails verification gets 400 and is logged with the reason;
// Stripe shows the status in its dashboard and retries. A stored event,
// even one deferred for a retry, gets 200 so Stripe stops resending it.
func (s *Server) stripeWebhook(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxWebhookBytes))
	if err != nil {
		s.rejectWebhook(w, r, "body_unreadable", err)
		return
	}
	ev, err := s.d.Webhooks.Parser.Verify(body, r.Header.Get("Stripe-Signature"))
	if err != nil {
		s.rejectWebhook(w, r, rejectionCode(err), err)
		return
	}

	outcome, err := s.d.Webhooks.Webhooks.Receive(r.Context(), ev)
	if err != nil {
		writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"received": true, "eventId": ev.ID, "outcome": string(outcome)})
}

// rejectionCode maps a verification failure to a stable error code, also
// used as the outcome label of the webhook metric.
func rejectionCode(err error) string {
	switch {
	case errors.Is(err, ports.ErrWebhookNotSigned), errors.Is(err, ports.ErrWebhookBadHeader):
		return "signature_header_invalid"
	case errors.Is(err, ports.ErrWebhookBadSignature):
		return "signature_mismatch"
	case errors.Is(err, ports.ErrWebhookStale):
		return "timestamp_outside_tolerance"
	case errors.Is(err, ports.ErrWebhookAPIVersion):
		return "api_version_mismatch"
	case errors.Is(err, ports.ErrWebhookMalformed):
		return "event_malformed"
	case errors.Is(err, ports.ErrWebhookSecretsMissing):
		return "secret_missing"
	}
	return "body_unreadable"
}

func (s *Server) rejectWebhook(w http.ResponseWriter, r *http.Request, code string, err error) {
	s.d.Webhooks.Webhooks.Observe("unverified", "rejected_"+code)
	level := slog.LevelWarn
	if code == "secret_missing" {
		level = slog.LevelError
	}
	s.d.Log.Log(r.Context(), level, "stripe webhook rejected", "code", code, "reason", err.Error(),
		"content_length", r.ContentLength)
	writeJSON(w, http.StatusBadRequest, errorEnvelope{Error: &apiError{
		Type: typeInvalidRequest, Code: "webhook_" + code, Message: "webhook rejected: " + err.Error(),
		RequestID: requestID(r.Context()),
	}})
}
