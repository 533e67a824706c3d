package emulator

import (
	"fmt"
	"net/http"
)

// Stripe error types, as in the "type" field of an error body.
const (
	errorTypeAPI            = "api_error"
	errorTypeCard           = "card_error"
	errorTypeIdempotency    = "idempotency_error"
	errorTypeInvalidRequest = "invalid_request_error"
)

// apiError is the body of Stripe's {"error": {...}} response body. The same shape is
// stored as a PaymentIntent's last_payment_error and a SetupIntent's
// last_setup_error.
type apiError struct {
	Type          string `json:"type"`
	Code          string `json:"code,omitempty"`
	DeclineCode   string `json:"decline_code,omitempty"`
	Message       string `json:"message"`
	Param         string `json:"param,omitempty"`
	DocURL        string `json:"doc_url,omitempty"`
	Charge        string `json:"charge,omitempty"`
	PaymentIntent any    `json:"payment_intent,omitempty"`
	SetupIntent   any    `json:"setup_intent,omitempty"`
	PaymentMethod any    `json:"payment_method,omitempty"`

	// status is the HTTP status code of the response.
	status int
	// keepEffects commits the request's transaction despite the error, as
	// for a card decline that moves a PaymentIntent back to
	// requires_payment_method. Other errors roll the transaction back.
	keepEffects bool
}

func (e *apiError) Error() string {
	return fmt.Sprintf("%s (%s): %s", e.Type, e.Code, e.Message)
}

// errorBody wraps an error as the JSON document Stripe returns.
func errorBody(e *apiError) map[string]any {
	return map[string]any{"error": e}
}

func invalidParam(param, message string) *apiError {
	return &apiError{status: http.StatusBadRequest, Type: errorTypeInvalidRequest, Param: param, Message: message}
}

func invalidRequest(code, param, message string) *apiError {
	return &apiError{status: http.StatusBadRequest, Type: errorTypeInvalidRequest, Code: code, Param: param, Message: message}
}

func missingParam(param string) *apiError {
	return invalidRequest("parameter_missing", param, "Missing required param: "+param+".")
}

// notFound is Stripe's resource_missing error for an unknown object id.
func notFound(objectType, id, param string) *apiError {
	return &apiError{
		status:  http.StatusNotFound,
		Type:    errorTypeInvalidRequest,
		Code:    "resource_missing",
		Param:   param,
		Message: fmt.Sprintf("No such %s: '%s'", objectType, id),
	}
}

func unexpectedState(message string) *apiError {
	return invalidRequest("payment_intent_unexpected_state", "", message)
}

func serverError(message string) *apiError {
	return &apiError{status: http.StatusInternalServerError, Type: errorTypeAPI, Message: message}
}
