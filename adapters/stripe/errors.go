package stripe

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"

	stripego "github.com/stripe/stripe-go/v76"

	"github.com/taskpod/billing/ports"
)

// exchange records the response to the last HTTP request of one gateway
// call. stripe-go turns an undecodable response into an untyped error, so the
// transport stores the status here to distinguish a proxy's 502 from a lost
// connection.
type exchange struct {
	mu          sync.Mutex
	status      int  // HTTP status of the last response, or 0 when none arrived
	bodyFailed  bool // reading the last response body failed
	requestSent bool
	// shouldRetry is the Stripe-Should-Retry response header. stripe-go v76
	// retries when it is "true", and its source names lock timeouts as a
	// case where Stripe sends that.
	shouldRetry string
}

type exchangeKey struct{}

// withExchange returns a context that the recording transport fills in.
func withExchange(ctx context.Context) (context.Context, *exchange) {
	ex := &exchange{}
	return context.WithValue(ctx, exchangeKey{}, ex), ex
}

func (ex *exchange) snapshot() (status int, bodyFailed, requestSent bool) {
	ex.mu.Lock()
	defer ex.mu.Unlock()
	return ex.status, ex.bodyFailed, ex.requestSent
}

func (ex *exchange) stripeShouldRetry() bool {
	if ex == nil {
		return false
	}
	ex.mu.Lock()
	defer ex.mu.Unlock()
	return ex.shouldRetry == "true"
}

// recordingTransport stores the status and body read errors of each
// response in the exchange carried by the request's context, if any.
type recordingTransport struct {
	next http.RoundTripper
}

func (t *recordingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	next := t.next
	if next == nil {
		next = http.DefaultTransport
	}
	ex, _ := req.Context().Value(exchangeKey{}).(*exchange)
	if ex != nil {
		ex.mu.Lock()
		ex.status, ex.bodyFailed, ex.requestSent, ex.shouldRetry = 0, false, true, ""
		ex.mu.Unlock()
	}

	resp, err := next.RoundTrip(req)
	if err != nil || ex == nil {
		return resp, err
	}

	ex.mu.Lock()
	ex.status = resp.StatusCode
	ex.shouldRetry = resp.Header.Get("Stripe-Should-Retry")
	ex.mu.Unlock()
	resp.Body = &recordingBody{ReadCloser: resp.Body, ex: ex}
	return resp, nil
}

type recordingBody struct {
	io.ReadCloser
	ex *exchange
}

func (b *recordingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil && err != io.EOF {
		b.ex.mu.Lock()
		b.ex.bodyFailed = true
		b.ex.mu.Unlock()
	}
	return n, err
}

// toGatewayError classifies a failed stripe-go call. Stripe's error object
// decides when one was returned. Otherwise the recorded exchange
// distinguishes an HTTP failure from a transport failure.
func toGatewayError(err error, ex *exchange) *ports.GatewayError {
	var ge *ports.GatewayError
	if errors.As(err, &ge) {
		return ge
	}

	var se *stripego.Error
	if errors.As(err, &se) {
		ge := fromStripeError(se)
		// Stripe marks some 4xx conflicts as safe to retry, for example a
		// lock timeout. Their outcome is unknown like a 5xx's, so they must
		// not count as final.
		if ex.stripeShouldRetry() && (ge.Kind == ports.GatewayInvalidRequest || ge.Kind == ports.GatewayIdempotencyError) {
			ge.Kind = ports.GatewayAPIError
		}
		return ge
	}

	status, bodyFailed, requestSent := 0, false, false
	if ex != nil {
		status, bodyFailed, requestSent = ex.snapshot()
	}
	switch {
	case status == 0 || bodyFailed:
		// No complete response arrived: a refused connection, a timeout, a
		// canceled context or a body cut short. Stripe may still have acted.
		message := "no response from Stripe: " + err.Error()
		if !requestSent {
			message = "request to Stripe was not sent: " + err.Error()
		}
		return &ports.GatewayError{Kind: ports.GatewayNetwork, Message: message, HTTPStatus: status, Err: err}
	case status == http.StatusTooManyRequests:
		return &ports.GatewayError{Kind: ports.GatewayRateLimited, Message: "Stripe returned HTTP 429 without an error object", HTTPStatus: status}
	case status >= 500:
		return &ports.GatewayError{Kind: ports.GatewayAPIError, Message: fmt.Sprintf("Stripe returned HTTP %d without an error object", status), HTTPStatus: status}
	default:
		// A response arrived but could not be decoded, so whether Stripe
		// acted is unknown, as with a 5xx.
		return &ports.GatewayError{Kind: ports.GatewayAPIError, Message: fmt.Sprintf("undecodable Stripe response with HTTP %d", status), HTTPStatus: status}
	}
}

// fromStripeError maps Stripe's error object. The HTTP status decides first
// for 429 and 5xx because Stripe sends those with varying error types.
func fromStripeError(se *stripego.Error) *ports.GatewayError {
	ge := &ports.GatewayError{
		Code:        string(se.Code),
		DeclineCode: string(se.DeclineCode),
		Message:     se.Msg,
		HTTPStatus:  se.HTTPStatusCode,
	}

	switch {
	case se.HTTPStatusCode == http.StatusTooManyRequests || se.Code == stripego.ErrorCodeRateLimit:
		ge.Kind = ports.GatewayRateLimited
	case se.HTTPStatusCode >= 500:
		ge.Kind = ports.GatewayAPIError
	case se.Code == stripego.ErrorCodeIdempotencyKeyInUse:
		// Another request with the same key is still running, so its
		// result is unknown and a later retry replays it.
		ge.Kind = ports.GatewayAPIError
	case se.Type == stripego.ErrorTypeCard:
		ge.Kind = ports.GatewayCardError
		if se.PaymentIntent != nil && se.PaymentIntent.ID != "" {
			pi := convertPaymentIntent(se.PaymentIntent)
			ge.PaymentIntent = &pi
		}
	case se.Type == stripego.ErrorTypeIdempotency:
		ge.Kind = ports.GatewayIdempotencyError
	case se.Type == stripego.ErrorTypeInvalidRequest:
		ge.Kind = ports.GatewayInvalidRequest
	case se.Type == stripego.ErrorTypeAPI:
		ge.Kind = ports.GatewayAPIError
	case se.HTTPStatusCode >= 400:
		// An error type this package does not know, on a client error.
		ge.Kind = ports.GatewayInvalidRequest
	default:
		ge.Kind = ports.GatewayAPIError
	}

	if se.HTTPStatusCode == http.StatusNotFound {
		ge.Err = ports.ErrGatewayNotFound
	}
	return ge
}

// invalidInput reports a call rejected before any request was sent, for
// example one without an idempotency key. It is final, like Stripe's own
// invalid_request errors, and has no HTTP status.
func invalidInput(format string, args ...any) *ports.GatewayError {
	return &ports.GatewayError{Kind: ports.GatewayInvalidRequest, Message: fmt.Sprintf(format, args...)}
}
