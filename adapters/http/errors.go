package http

import (
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strconv"

	"github.com/taskpod/billing/application"
	"github.com/taskpod/billing/domain"
	"github.com/taskpod/billing/ports"
)

// Error types of the envelope, as in Stripe's API.
const (
	typeInvalidRequest = "invalid_request_error"
	typeAuthentication = "authentication_error"
	typePermission     = "permission_error"
	typeCard           = "card_error"
	typeAPI            = "api_error"
	typeRateLimit      = "rate_limit_error"
)

// apiError is the single error shape of the API.
type apiError struct {
	Status      int    `json:"-"`
	RetryAfter  int    `json:"-"`
	Type        string `json:"type"`
	Code        string `json:"code"`
	Message     string `json:"message"`
	Param       string `json:"param,omitempty"`
	DeclineCode string `json:"declineCode,omitempty"`
	RequestID   string `json:"requestId"`
}

func (e *apiError) Error() string { return e.Code + ": " + e.Message }

type errorEnvelope struct {
	Error *apiError `json:"error"`
}

func badRequest(code, param, message string) *apiError {
	return &apiError{Status: http.StatusBadRequest, Type: typeInvalidRequest, Code: code, Param: param, Message: message}
}

// toAPIError maps every error the use cases return to a status and a stable
// code. Anything unknown becomes a 500 whose body carries no internals.
func toAPIError(err error) *apiError {
	var ae *apiError
	var ve *domain.ValidationError
	var ge *ports.GatewayError
	switch {
	case errors.As(err, &ae):
		return ae
	case errors.As(err, &ve):
		return &apiError{Status: http.StatusUnprocessableEntity, Type: typeInvalidRequest, Code: ve.Code, Param: ve.Field, Message: ve.Message}
	case errors.Is(err, domain.ErrNotFound):
		return &apiError{Status: http.StatusNotFound, Type: typeInvalidRequest, Code: "resource_missing", Message: err.Error()}
	case errors.Is(err, domain.ErrInvalidTransition):
		return &apiError{Status: http.StatusConflict, Type: typeInvalidRequest, Code: "invalid_state_transition", Message: err.Error()}
	case errors.Is(err, domain.ErrConflict):
		// The cause is a unique violation whose text names tables and
		// constraints, so the body gets a fixed message.
		return &apiError{Status: http.StatusConflict, Type: typeInvalidRequest, Code: "resource_exists",
			Message: "an object with this id already exists; choose another id or read the existing object"}
	case errors.Is(err, application.ErrSetupNotSucceeded):
		return &apiError{Status: http.StatusUnprocessableEntity, Type: typeInvalidRequest, Code: "setup_intent_not_succeeded", Param: "setupIntentId", Message: err.Error()}
	case errors.As(err, &ge) && ge.Retryable():
		return &apiError{Status: http.StatusServiceUnavailable, RetryAfter: 5, Type: typeAPI, Code: "stripe_unavailable",
			Message: "Stripe could not be reached; nothing was changed, retry in a few seconds"}
	case errors.As(err, &ge) && ge.Kind == ports.GatewayCardError:
		return &apiError{Status: http.StatusPaymentRequired, Type: typeCard, Code: orDefault(ge.Code, "card_declined"),
			DeclineCode: ge.DeclineCode, Message: "the card was declined: " + orDefault(ge.Message, ge.Code)}
	case errors.As(err, &ge):
		return &apiError{Status: http.StatusBadGateway, Type: typeAPI, Code: "stripe_rejected",
			Message: "Stripe rejected the request: " + orDefault(ge.Message, ge.Code)}
	}
	return &apiError{Status: http.StatusInternalServerError, Type: typeAPI, Code: "internal_error",
		Message: "an internal error occurred; retry later and quote the request id if it persists"}
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// writeError sends the envelope and logs the failure once: server faults at
// Error with the cause, client mistakes at Info.
func writeError(w http.ResponseWriter, r *http.Request, err error) {
	ae := toAPIError(err)
	out := *ae
	out.RequestID = requestID(r.Context())
	if out.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(out.RetryAfter))
	}

	log := slog.Default()
	switch {
	case out.Status >= 500:
		log.ErrorContext(r.Context(), "request failed", "status", out.Status, "code", out.Code, "error", err)
	default:
		log.InfoContext(r.Context(), "request rejected", "status", out.Status, "code", out.Code, "param", out.Param, "message", out.Message)
	}
	writeJSON(w, out.Status, errorEnvelope{Error: &out})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	if err := enc.Encode(v); err != nil {
		slog.Default().Warn("write response failed", "error", err)
	}
}
