package emulator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// route is one Stripe API endpoint. pattern uses net/http's {id} wildcards.
type route struct {
	method  string
	pattern string
	handle  func(*call) (any, error)
	// publishable allows a pk_test_ key, as Stripe.js uses to read and
	// confirm an intent with its client_secret.
	publishable bool
}

func (e *Emulator) apiRoutes() []route {
	return []route{
		{"POST", "/v1/customers", e.createCustomer, false},
		{"GET", "/v1/customers/{id}", e.getCustomer, false},
		{"POST", "/v1/customers/{id}", e.updateCustomer, false},
		{"GET", "/v1/customers/{id}/payment_methods", e.listCustomerPaymentMethods, false},

		{"POST", "/v1/setup_intents", e.createSetupIntent, false},
		{"GET", "/v1/setup_intents/{id}", e.getSetupIntent, true},
		{"POST", "/v1/setup_intents/{id}/confirm", e.confirmSetupIntent, true},

		{"GET", "/v1/payment_methods", e.listPaymentMethods, false},
		{"GET", "/v1/payment_methods/{id}", e.getPaymentMethod, false},
		{"POST", "/v1/payment_methods/{id}/attach", e.attachPaymentMethod, false},
		{"POST", "/v1/payment_methods/{id}/detach", e.detachPaymentMethod, false},

		{"POST", "/v1/payment_intents", e.createPaymentIntent, false},
		{"GET", "/v1/payment_intents", e.listPaymentIntents, false},
		{"GET", "/v1/payment_intents/{id}", e.getPaymentIntent, true},
		{"POST", "/v1/payment_intents/{id}/confirm", e.confirmPaymentIntentRoute, true},
		{"POST", "/v1/payment_intents/{id}/capture", e.capturePaymentIntent, false},
		{"POST", "/v1/payment_intents/{id}/cancel", e.cancelPaymentIntentRoute, false},

		{"GET", "/v1/charges/{id}", e.getCharge, false},
		{"GET", "/v1/balance_transactions/{id}", e.getBalanceTransaction, false},

		{"POST", "/v1/transfers", e.createTransfer, false},
		{"GET", "/v1/transfers", e.listTransfers, false},
		{"GET", "/v1/transfers/{id}", e.getTransfer, false},
		{"POST", "/v1/transfers/{id}/reversals", e.createTransferReversal, false},
		{"GET", "/v1/transfers/{id}/reversals", e.listTransferReversals, false},
		{"GET", "/v1/transfers/{id}/reversals/{reversal}", e.getTransferReversal, false},

		{"POST", "/v1/refunds", e.createRefund, false},
		{"GET", "/v1/refunds", e.listRefunds, false},
		{"GET", "/v1/refunds/{id}", e.getRefund, false},
	}
}

func (e *Emulator) routes() *http.ServeMux {
	mux := http.NewServeMux()
	for _, rt := range e.apiRoutes() {
		mux.Handle(rt.method+" "+rt.pattern, e.apiHandler(rt))
	}
	mux.HandleFunc("/v1/", func(w http.ResponseWriter, r *http.Request) {
		if _, ok := apiKeyOf(r); !ok {
			writeJSON(w, http.StatusUnauthorized, errorBody(unauthorized()), nil)
			return
		}
		msg := fmt.Sprintf("Unrecognized request URL (%s: %s). The Stripe emulator does not implement this endpoint.", r.Method, r.URL.Path)
		writeJSON(w, http.StatusNotFound, errorBody(&apiError{Type: errorTypeInvalidRequest, Message: msg}), nil)
	})
	e.controlRoutes(mux)
	return mux
}

// apiKeyOf returns the secret key of "Authorization: Bearer sk_test_...".
func apiKeyOf(r *http.Request) (string, bool) {
	key := bearerKey(r)
	return key, strings.HasPrefix(key, "sk_test_")
}

func bearerKey(r *http.Request) string {
	key, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		return ""
	}
	return strings.TrimSpace(key)
}

func unauthorized() *apiError {
	return &apiError{
		status:  http.StatusUnauthorized,
		Type:    errorTypeInvalidRequest,
		Message: "Invalid API Key provided. The Stripe emulator accepts any test secret key that starts with sk_test_, sent as 'Authorization: Bearer sk_test_...'. A pk_test_ key with client_secret may only read and confirm PaymentIntents and SetupIntents.",
	}
}

// response is an HTTP response ready to write, either fresh or replayed from the
// idempotency store.
type response struct {
	status   int
	body     []byte
	replayed bool
	// rejected marks an error whose transaction rolls back and whose response
	// is not stored under the idempotency key.
	rejected bool
}

func (e *Emulator) apiHandler(rt route) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		apiKey, ok := apiKeyOf(r)
		publishable := false
		if !ok && rt.publishable && strings.HasPrefix(bearerKey(r), "pk_test_") {
			apiKey, ok, publishable = bearerKey(r), true, true
		}
		if !ok {
			writeJSON(w, http.StatusUnauthorized, errorBody(unauthorized()), nil)
			return
		}
		values, err := requestValues(r)
		if err != nil {
			writeJSON(w, http.StatusBadRequest, errorBody(invalidParam("", "Invalid request body: "+err.Error())), nil)
			return
		}
		p, err := parseParams(values)
		if err != nil {
			writeJSON(w, http.StatusBadRequest, errorBody(invalidParam("", err.Error())), nil)
			return
		}
		ctx := r.Context()
		e.countRequest(ctx, r.Method, r.URL.Path)

		fault := e.faults.decide(r.Method, r.URL.Path)
		if fault.latency > 0 {
			select {
			case <-time.After(fault.latency):
			case <-ctx.Done():
				return
			}
		}
		if err := e.expireAuthorizations(ctx); err != nil {
			e.log.Error("expire authorizations failed", "error", err)
		}

		res := e.execute(ctx, rt, r, apiKey, publishable, p, values, fault)
		if fault.drop {
			e.log.Info("fault injection dropped a response", "method", r.Method, "path", r.URL.Path, "fault_id", fault.id, "status", res.status)
			dropConnection(w)
			return
		}
		header := http.Header{}
		if key := idempotencyKeyOf(r); key != "" {
			header.Set("Idempotency-Key", key)
		}
		if res.replayed {
			header.Set("Idempotent-Replayed", "true")
		}
		writeRaw(w, res.status, res.body, header)
	})
}

// requestValues returns the form body of a POST or the query of a GET.
func requestValues(r *http.Request) (url.Values, error) {
	if r.Method == http.MethodGet || r.Method == http.MethodDelete {
		return r.URL.Query(), nil
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		return nil, err
	}
	values, err := url.ParseQuery(string(body))
	if err != nil {
		return nil, err
	}
	// Stripe also reads parameters from the query string of a POST.
	for k, v := range r.URL.Query() {
		values[k] = append(values[k], v...)
	}
	return values, nil
}

// execute runs one request in one transaction: the idempotency lookup, the
// injected fault or the handler, the stored response and the counters
// commit together.
func (e *Emulator) execute(ctx context.Context, rt route, r *http.Request, apiKey string, publishable bool, p *params, values url.Values, fault faultOutcome) response {
	tx, err := e.pool.Begin(ctx)
	if err != nil {
		return e.internalError(err, "begin transaction")
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // a no-op after Commit

	now, err := e.clockNow(ctx, tx)
	if err != nil {
		return e.internalError(err, "read clock")
	}

	var idem *idempotencyRequest
	if key := idempotencyKeyOf(r); key != "" && r.Method == http.MethodPost {
		idem = &idempotencyRequest{apiKey: apiKey, key: key, method: r.Method, path: r.URL.Path, paramsHash: hashParams(values)}
		if len(key) > 255 {
			return errorResponse(invalidRequest("", "", "Idempotency-Key must be at most 255 characters long."))
		}
		stored, err := idem.begin(ctx, tx, now)
		if err != nil {
			return e.internalError(err, "look up idempotency key")
		}
		if stored != nil {
			if stored.replayed {
				if err := e.countReplay(ctx, tx, r.Method, r.URL.Path); err != nil {
					return e.internalError(err, "count replay")
				}
				if err := tx.Commit(ctx); err != nil {
					return e.internalError(err, "commit replay")
				}
			}
			return *stored
		}
	}

	if fault.fail {
		e.log.Info("fault injection failed a request", "method", r.Method, "path", r.URL.Path, "fault_id", fault.id, "status", fault.status)
		res := errorResponse(&apiError{status: fault.status, Type: errorTypeAPI, Message: "An injected fault made the Stripe emulator fail this request; it had no effect."})
		if idem != nil {
			if err := idem.store(ctx, tx, now, res); err != nil {
				return e.internalError(err, "store idempotent response")
			}
		}
		if err := tx.Commit(ctx); err != nil {
			return e.internalError(err, "commit injected fault")
		}
		return res
	}

	c := &call{ctx: ctx, e: e, tx: tx, now: now, p: p, r: r, publishable: publishable}
	res, err := e.runHandler(c, rt)
	if err != nil {
		res = e.internalError(err, rt.method+" "+rt.pattern)
		tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // the request already failed
		if idem != nil {
			// The failed transaction is gone; the 500 is stored on its own,
			// so a retry under the same key replays it as Stripe does.
			if err := e.storeAlone(ctx, idem, res); err != nil {
				e.log.Error("store idempotent 500 failed", "error", err, "idempotency_key", idem.key)
			}
		}
		return res
	}
	if res.rejected {
		// The transaction rolls back and nothing is stored, so a corrected
		// request may reuse the key.
		return res
	}
	if idem != nil {
		if err := idem.store(ctx, tx, now, res); err != nil {
			return e.internalError(err, "store idempotent response")
		}
	}
	if err := e.countMutation(ctx, tx, r.Method, r.URL.Path); err != nil {
		return e.internalError(err, "count mutation")
	}
	if err := c.flushEvents(); err != nil {
		return e.internalError(err, "store events")
	}
	if err := tx.Commit(ctx); err != nil {
		return e.internalError(err, "commit")
	}
	e.hooks.wake()
	return res
}

// runHandler calls the route's handler and renders its result. A returned
// error is an internal failure; Stripe errors come back as responses.
func (e *Emulator) runHandler(c *call, rt route) (response, error) {
	result, err := rt.handle(c)
	var ae *apiError
	if errors.As(err, &ae) {
		res := errorResponse(ae)
		res.rejected = !ae.keepEffects
		return res, nil
	}
	if err != nil {
		return response{}, err
	}
	body, err := c.render(result)
	if errors.As(err, &ae) {
		res := errorResponse(ae)
		res.rejected = true
		return res, nil
	}
	if err != nil {
		return response{}, err
	}
	return response{status: http.StatusOK, body: body}, nil
}

func errorResponse(ae *apiError) response {
	body, err := json.Marshal(errorBody(ae))
	if err != nil {
		body = []byte(`{"error":{"type":"api_error","message":"encode error body failed"}}`)
	}
	status := ae.status
	if status == 0 {
		status = http.StatusBadRequest
	}
	return response{status: status, body: body}
}

func (e *Emulator) internalError(err error, step string) response {
	e.log.Error("request failed", "step", step, "error", err)
	return errorResponse(serverError("The Stripe emulator failed to " + step + ": " + err.Error()))
}

// storeAlone saves a response under its idempotency key in a transaction of
// its own.
func (e *Emulator) storeAlone(ctx context.Context, idem *idempotencyRequest, res response) error {
	ctx = context.WithoutCancel(ctx)
	return pgx.BeginFunc(ctx, e.pool, func(tx pgx.Tx) error {
		now, err := e.clockNow(ctx, tx)
		if err != nil {
			return err
		}
		return idem.store(ctx, tx, now, res)
	})
}

// dropConnection ends the exchange without a usable response, so the client
// sees a network error after the request took effect. It sends a response
// head that promises a body and then closes the connection. A close before
// any byte would not do: net/http's Transport silently resends a request that
// carries an Idempotency-Key when a reused connection closes that way, and
// the client would see the replay instead of the error.
func dropConnection(w http.ResponseWriter) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		panic(http.ErrAbortHandler)
	}
	conn, buf, err := hj.Hijack()
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	defer conn.Close()
	buf.WriteString("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 4096\r\n\r\n{")
	buf.Flush() //nolint:errcheck // the connection closes either way
}

func writeJSON(w http.ResponseWriter, status int, v any, header http.Header) {
	body, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		body = []byte(`{"error":{"type":"api_error","message":"encode response failed"}}`)
	}
	writeRaw(w, status, body, header)
}

func writeRaw(w http.ResponseWriter, status int, body []byte, header http.Header) {
	h := w.Header()
	for k, v := range header {
		h[k] = v
	}
	h.Set("Content-Type", "application/json")
	h.Set("Request-Id", "req_"+randomToken(14))
	h.Set("Stripe-Version", APIVersion)
	w.WriteHeader(status)
	w.Write(body) //nolint:errcheck // the client may be gone
}
