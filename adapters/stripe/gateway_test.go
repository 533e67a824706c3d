package stripe

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/taskpod/billing/domain"
	"github.com/taskpod/billing/ports"
)

// recordedRequest is one request that fakeStripe received.
type recordedRequest struct {
	Method         string
	Path           string
	Form           url.Values // query for GET, body for POST
	IdempotencyKey string
	Authorization  string
}

// fakeStripe is a loopback HTTP server that records requests and replies
// through the respond function.
type fakeStripe struct {
	t      *testing.T
	server *httptest.Server

	mu       sync.Mutex
	requests []recordedRequest
	respond  func(w http.ResponseWriter, r *http.Request)
}

func newFakeStripe(t *testing.T, respond func(w http.ResponseWriter, r *http.Request)) *fakeStripe {
	t.Helper()
	f := &fakeStripe{t: t, respond: respond}
	f.server = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.server.Close)
	return f
}

func (f *fakeStripe) serve(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		f.t.Errorf("fake Stripe: parse form of %s %s: %v", r.Method, r.URL.Path, err)
	}
	f.mu.Lock()
	f.requests = append(f.requests, recordedRequest{
		Method:         r.Method,
		Path:           r.URL.Path,
		Form:           r.Form,
		IdempotencyKey: r.Header.Get("Idempotency-Key"),
		Authorization:  r.Header.Get("Authorization"),
	})
	f.mu.Unlock()
	f.respond(w, r)
}

func (f *fakeStripe) recorded() []recordedRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]recordedRequest(nil), f.requests...)
}

func (f *fakeStripe) gateway(t *testing.T) *Gateway {
	t.Helper()
	gw, err := New(Config{SecretKey: "sk_test_fake", APIBase: f.server.URL})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return gw
}

func writeJSON(w http.ResponseWriter, status int, body string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	fmt.Fprint(w, body)
}

const declinedIntentJSON = `{"id":"pi_declined","object":"payment_intent","status":"requires_payment_method",
	"amount":1000,"currency":"usd","customer":"cus_1","metadata":{"payment_id":"pay_1"},
	"last_payment_error":{"type":"card_error","code":"card_declined","decline_code":"insufficient_funds"}}`

func TestGatewayErrorMapping(t *testing.T) {
	cases := []struct {
		name        string
		status      int
		shouldRetry string // Stripe-Should-Retry header, if any
		body        string
		kind        ports.GatewayErrorKind
		code        string
		declineCode string
		notFound    bool
		intentID    string
	}{
		{
			name:   "card error with intent",
			status: 402,
			body: `{"error":{"type":"card_error","code":"card_declined","decline_code":"insufficient_funds",
				"message":"Your card has insufficient funds.","payment_intent":` + declinedIntentJSON + `}}`,
			kind: ports.GatewayCardError, code: "card_declined", declineCode: "insufficient_funds", intentID: "pi_declined",
		},
		{
			name:   "missing object",
			status: 404,
			body:   `{"error":{"type":"invalid_request_error","code":"resource_missing","message":"No such payment_intent: 'pi_x'"}}`,
			kind:   ports.GatewayInvalidRequest, code: "resource_missing", notFound: true,
		},
		{
			name:   "invalid parameter",
			status: 400,
			body:   `{"error":{"type":"invalid_request_error","code":"parameter_unknown","message":"Received unknown parameter: foo"}}`,
			kind:   ports.GatewayInvalidRequest, code: "parameter_unknown",
		},
		{
			name:   "reused idempotency key",
			status: 400,
			body:   `{"error":{"type":"idempotency_error","message":"Keys for idempotent requests can only be used with the same parameters"}}`,
			kind:   ports.GatewayIdempotencyError,
		},
		{
			name:   "key in use by a running request",
			status: 409,
			body:   `{"error":{"type":"invalid_request_error","code":"idempotency_key_in_use","message":"There is currently another in-progress request using this key"}}`,
			kind:   ports.GatewayAPIError, code: "idempotency_key_in_use",
		},
		{
			name:        "conflict marked retryable",
			status:      409,
			shouldRetry: "true",
			body:        `{"error":{"type":"invalid_request_error","code":"lock_timeout","message":"This object cannot be accessed right now"}}`,
			kind:        ports.GatewayAPIError, code: "lock_timeout",
		},
		{
			name:   "rate limit",
			status: 429,
			body:   `{"error":{"type":"invalid_request_error","code":"rate_limit","message":"Too many requests"}}`,
			kind:   ports.GatewayRateLimited, code: "rate_limit",
		},
		{
			name:   "rate limit without error object",
			status: 429,
			body:   `<html>slow down</html>`,
			kind:   ports.GatewayRateLimited,
		},
		{
			name:   "server error",
			status: 500,
			body:   `{"error":{"type":"api_error","message":"Something went wrong"}}`,
			kind:   ports.GatewayAPIError,
		},
		{
			name:   "proxy error page",
			status: 502,
			body:   `<html>bad gateway</html>`,
			kind:   ports.GatewayAPIError,
		},
		{
			name:   "undecodable success",
			status: 200,
			body:   `{"id":`,
			kind:   ports.GatewayAPIError,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fake := newFakeStripe(t, func(w http.ResponseWriter, r *http.Request) {
				if tc.shouldRetry != "" {
					w.Header().Set("Stripe-Should-Retry", tc.shouldRetry)
				}
				writeJSON(w, tc.status, tc.body)
			})
			_, err := fake.gateway(t).GetPaymentIntent(context.Background(), "pi_x")

			var ge *ports.GatewayError
			if !errors.As(err, &ge) {
				t.Fatalf("error = %v (%T), want *ports.GatewayError", err, err)
			}
			if ge.Kind != tc.kind {
				t.Errorf("Kind = %q, want %q", ge.Kind, tc.kind)
			}
			if ge.Code != tc.code {
				t.Errorf("Code = %q, want %q", ge.Code, tc.code)
			}
			if ge.DeclineCode != tc.declineCode {
				t.Errorf("DeclineCode = %q, want %q", ge.DeclineCode, tc.declineCode)
			}
			if ge.HTTPStatus != tc.status {
				t.Errorf("HTTPStatus = %d, want %d", ge.HTTPStatus, tc.status)
			}
			if got := errors.Is(err, ports.ErrGatewayNotFound); got != tc.notFound {
				t.Errorf("errors.Is(err, ErrGatewayNotFound) = %v, want %v", got, tc.notFound)
			}
			if tc.intentID == "" && ge.PaymentIntent != nil {
				t.Errorf("PaymentIntent = %+v, want nil", ge.PaymentIntent)
			}
			if tc.intentID != "" {
				if ge.PaymentIntent == nil {
					t.Fatalf("PaymentIntent is nil, want %s", tc.intentID)
				}
				if ge.PaymentIntent.ID != tc.intentID {
					t.Errorf("PaymentIntent.ID = %q, want %q", ge.PaymentIntent.ID, tc.intentID)
				}
				if ge.PaymentIntent.PaymentID != "pay_1" {
					t.Errorf("PaymentIntent.PaymentID = %q, want pay_1", ge.PaymentIntent.PaymentID)
				}
				if ge.PaymentIntent.LastDeclineCode != "insufficient_funds" {
					t.Errorf("PaymentIntent.LastDeclineCode = %q, want insufficient_funds", ge.PaymentIntent.LastDeclineCode)
				}
			}
			if n := len(fake.recorded()); n != 1 {
				t.Errorf("server received %d requests, want 1", n)
			}
		})
	}
}

func TestGatewayFailingCallSendsOneRequest(t *testing.T) {
	// stripe-go retries 500, 503 and 429 responses when its network retries
	// are on, and a mutating POST is a call it would repeat.
	for _, status := range []int{500, 503, 429} {
		t.Run(fmt.Sprint(status), func(t *testing.T) {
			fake := newFakeStripe(t, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Stripe-Should-Retry", "true")
				writeJSON(w, status, `{"error":{"type":"api_error","message":"try again"}}`)
			})
			_, err := fake.gateway(t).CreateCustomer(context.Background(),
				ports.CreateCustomerInput{UserID: "user_1", IdempotencyKey: "customer:user_1"})
			if !ports.IsRetryableGatewayError(err) {
				t.Fatalf("error = %v, want a retryable gateway error", err)
			}
			if n := len(fake.recorded()); n != 1 {
				t.Errorf("server received %d requests, want exactly 1", n)
			}
		})
	}
}

func TestGatewayNetworkError(t *testing.T) {
	t.Run("connection refused", func(t *testing.T) {
		listener, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := listener.Addr().String()
		listener.Close()

		gw, err := New(Config{SecretKey: "sk_test_fake", APIBase: "http://" + addr})
		if err != nil {
			t.Fatal(err)
		}
		_, err = gw.GetPaymentIntent(context.Background(), "pi_1")
		var ge *ports.GatewayError
		if !errors.As(err, &ge) || ge.Kind != ports.GatewayNetwork {
			t.Fatalf("error = %v, want a network gateway error", err)
		}
		if ge.Err == nil {
			t.Errorf("Err is nil, want the transport error")
		}
	})

	t.Run("client timeout", func(t *testing.T) {
		release := make(chan struct{})
		fake := newFakeStripe(t, func(w http.ResponseWriter, r *http.Request) {
			<-release
		})
		defer close(release)

		gw, err := New(Config{
			SecretKey:  "sk_test_fake",
			APIBase:    fake.server.URL,
			HTTPClient: &http.Client{Timeout: 50 * time.Millisecond},
		})
		if err != nil {
			t.Fatal(err)
		}
		_, err = gw.CreateCustomer(context.Background(), ports.CreateCustomerInput{UserID: "user_1", IdempotencyKey: "k1"})
		var ge *ports.GatewayError
		if !errors.As(err, &ge) || ge.Kind != ports.GatewayNetwork {
			t.Fatalf("error = %v, want a network gateway error", err)
		}
		var netErr net.Error
		if !errors.As(err, &netErr) || !netErr.Timeout() {
			t.Errorf("error chain has no timeout net.Error: %v", ge.Err)
		}
		if n := len(fake.recorded()); n != 1 {
			t.Errorf("server received %d requests, want exactly 1", n)
		}
	})

	t.Run("canceled context", func(t *testing.T) {
		fake := newFakeStripe(t, func(w http.ResponseWriter, r *http.Request) {
			writeJSON(w, 200, `{"id":"pi_1","object":"payment_intent"}`)
		})
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_, err := fake.gateway(t).GetPaymentIntent(ctx, "pi_1")
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("error = %v, want one wrapping context.Canceled", err)
		}
		if !ports.IsRetryableGatewayError(err) {
			t.Errorf("error = %v, want retryable", err)
		}
	})
}

func TestNewConfigChecks(t *testing.T) {
	if _, err := New(Config{}); err == nil {
		t.Error("New without a secret key returned no error")
	}
	if _, err := New(Config{SecretKey: "sk_test_x", APIBase: "127.0.0.1:12111"}); err == nil {
		t.Error("New with an APIBase without scheme returned no error")
	}
	if _, err := New(Config{SecretKey: "sk_test_x", APIBase: "http://127.0.0.1:12111"}); err != nil {
		t.Errorf("New with a valid config: %v", err)
	}
}

func TestMutatingCallsNeedIdempotencyKey(t *testing.T) {
	fake := newFakeStripe(t, func(w http.ResponseWriter, r *http.Request) {
		t.Errorf("unexpected request %s %s", r.Method, r.URL.Path)
	})
	gw := fake.gateway(t)
	ctx := context.Background()
	usd := domain.MustMoney(1000, "usd")

	calls := map[string]func() error{
		"create_customer": func() error {
			_, err := gw.CreateCustomer(ctx, ports.CreateCustomerInput{UserID: "user_1"})
			return err
		},
		"create_setup_intent": func() error {
			_, err := gw.CreateSetupIntent(ctx, "cus_1", "")
			return err
		},
		"detach_payment_method": func() error {
			return gw.DetachPaymentMethod(ctx, "pm_1", "")
		},
		"authorize": func() error {
			_, err := gw.Authorize(ctx, ports.AuthorizeInput{PaymentID: "pay_1", TaskID: "task_1", CustomerID: "cus_1", Amount: usd})
			return err
		},
		"capture": func() error {
			_, err := gw.Capture(ctx, "pi_1", 800, "")
			return err
		},
		"cancel_payment_intent": func() error {
			_, err := gw.CancelPaymentIntent(ctx, "pi_1", "")
			return err
		},
		"create_transfer": func() error {
			_, err := gw.CreateTransfer(ctx, ports.TransferInput{PaymentID: "pay_1", Amount: usd,
				DestinationAccount: "acct_1", SourceChargeID: "ch_1", TransferGroup: "task_1"})
			return err
		},
	}
	for name, call := range calls {
		t.Run(name, func(t *testing.T) {
			err := call()
			var ge *ports.GatewayError
			if !errors.As(err, &ge) {
				t.Fatalf("error = %v, want *ports.GatewayError", err)
			}
			if ge.Kind != ports.GatewayInvalidRequest {
				t.Errorf("Kind = %q, want invalid_request", ge.Kind)
			}
			if !strings.Contains(ge.Message, "idempotency key") {
				t.Errorf("Message = %q, want it to name the idempotency key", ge.Message)
			}
		})
	}
	if n := len(fake.recorded()); n != 0 {
		t.Errorf("server received %d requests, want 0", n)
	}
}

func TestAuthorizeRequest(t *testing.T) {
	captureBefore := time.Date(2030, 1, 8, 12, 0, 0, 0, time.UTC)
	fake := newFakeStripe(t, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, fmt.Sprintf(`{"id":"pi_1","object":"payment_intent","status":"requires_capture",
			"amount":500,"amount_capturable":500,"currency":"jpy","customer":"cus_1","payment_method":"pm_1",
			"metadata":{"payment_id":"pay_1","task_id":"task_1"},
			"latest_charge":{"id":"ch_1","object":"charge","payment_method_details":{"type":"card","card":{"capture_before":%d}}}}`,
			captureBefore.Unix()))
	})
	gw := fake.gateway(t)

	pi, err := gw.Authorize(context.Background(), ports.AuthorizeInput{
		PaymentID:       "pay_1",
		TaskID:          "task_1",
		CustomerID:      "cus_1",
		PaymentMethodID: "pm_1",
		Amount:          domain.MustMoney(500, "jpy"),
		IdempotencyKey:  "authorize:pay_1",
	})
	if err != nil {
		t.Fatalf("Authorize: %v", err)
	}

	reqs := fake.recorded()
	if len(reqs) != 1 {
		t.Fatalf("server received %d requests, want 1", len(reqs))
	}
	req := reqs[0]
	if req.Method != http.MethodPost || req.Path != "/v1/payment_intents" {
		t.Errorf("request = %s %s, want POST /v1/payment_intents", req.Method, req.Path)
	}
	if req.IdempotencyKey != "authorize:pay_1" {
		t.Errorf("Idempotency-Key = %q, want authorize:pay_1", req.IdempotencyKey)
	}
	if req.Authorization != "Bearer sk_test_fake" {
		t.Errorf("Authorization = %q, want the configured secret key", req.Authorization)
	}
	want := map[string]string{
		"amount":               "500", // JPY has no minor unit, so 500 is sent as 500
		"currency":             "jpy",
		"customer":             "cus_1",
		"capture_method":       "manual",
		"payment_method":       "pm_1",
		"confirm":              "true",
		"off_session":          "true",
		"transfer_group":       "task_1",
		"metadata[payment_id]": "pay_1",
		"metadata[task_id]":    "task_1",
		"expand[0]":            "latest_charge",
	}
	for key, value := range want {
		if got := req.Form.Get(key); got != value {
			t.Errorf("form %s = %q, want %q", key, got, value)
		}
	}
	if req.Form.Has("payment_method_types[0]") {
		t.Errorf("form has payment_method_types with a payment method: %v", req.Form)
	}

	if pi.Status != ports.PIRequiresCapture {
		t.Errorf("Status = %q, want requires_capture", pi.Status)
	}
	if pi.Amount != 500 || pi.Currency != "jpy" {
		t.Errorf("amount = %d %s, want 500 jpy", pi.Amount, pi.Currency)
	}
	if pi.LatestChargeID != "ch_1" {
		t.Errorf("LatestChargeID = %q, want ch_1", pi.LatestChargeID)
	}
	if !pi.CaptureBefore.Equal(captureBefore) {
		t.Errorf("CaptureBefore = %v, want %v", pi.CaptureBefore, captureBefore)
	}
	if pi.PaymentID != "pay_1" || pi.CustomerID != "cus_1" || pi.PaymentMethodID != "pm_1" {
		t.Errorf("ids = payment %q customer %q method %q, want pay_1 cus_1 pm_1", pi.PaymentID, pi.CustomerID, pi.PaymentMethodID)
	}
}

func TestAuthorizeWithoutPaymentMethod(t *testing.T) {
	fake := newFakeStripe(t, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, `{"id":"pi_2","object":"payment_intent","status":"requires_payment_method",
			"client_secret":"pi_2_secret_abc","amount":1000,"currency":"usd","customer":"cus_1"}`)
	})
	pi, err := fake.gateway(t).Authorize(context.Background(), ports.AuthorizeInput{
		PaymentID: "pay_2", TaskID: "task_2", CustomerID: "cus_1",
		Amount: domain.MustMoney(1000, "usd"), IdempotencyKey: "authorize:pay_2",
	})
	if err != nil {
		t.Fatalf("Authorize: %v", err)
	}
	form := fake.recorded()[0].Form
	if got := form.Get("payment_method_types[0]"); got != "card" {
		t.Errorf("payment_method_types[0] = %q, want card", got)
	}
	for _, key := range []string{"confirm", "off_session", "payment_method"} {
		if form.Has(key) {
			t.Errorf("form has %s = %q, want it absent for an unconfirmed intent", key, form.Get(key))
		}
	}
	if pi.ClientSecret != "pi_2_secret_abc" {
		t.Errorf("ClientSecret = %q, want pi_2_secret_abc", pi.ClientSecret)
	}
	if !pi.CaptureBefore.IsZero() {
		t.Errorf("CaptureBefore = %v, want zero without a charge", pi.CaptureBefore)
	}
}

func TestFindPaymentIntentFollowsPages(t *testing.T) {
	fake := newFakeStripe(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Form.Get("starting_after") == "" {
			writeJSON(w, 200, `{"object":"list","url":"/v1/payment_intents","has_more":true,"data":[
				{"id":"pi_a","object":"payment_intent","metadata":{"payment_id":"pay_other"}},
				{"id":"pi_b","object":"payment_intent","metadata":{}}]}`)
			return
		}
		writeJSON(w, 200, `{"object":"list","url":"/v1/payment_intents","has_more":false,"data":[
			{"id":"pi_c","object":"payment_intent","status":"requires_capture","metadata":{"payment_id":"pay_1"}}]}`)
	})
	gw := fake.gateway(t)

	pi, found, err := gw.FindPaymentIntent(context.Background(), "cus_1", "pay_1")
	if err != nil {
		t.Fatalf("FindPaymentIntent: %v", err)
	}
	if !found || pi.ID != "pi_c" {
		t.Fatalf("found = %v, id = %q, want pi_c from the second page", found, pi.ID)
	}

	reqs := fake.recorded()
	if len(reqs) != 2 {
		t.Fatalf("server received %d requests, want 2", len(reqs))
	}
	if got := reqs[0].Form.Get("customer"); got != "cus_1" {
		t.Errorf("customer = %q, want cus_1", got)
	}
	if got := reqs[1].Form.Get("starting_after"); got != "pi_b" {
		t.Errorf("second page starting_after = %q, want pi_b", got)
	}

	_, found, err = gw.FindPaymentIntent(context.Background(), "cus_1", "pay_missing")
	if err != nil {
		t.Fatalf("FindPaymentIntent for a missing payment: %v", err)
	}
	if found {
		t.Error("found = true for a payment id that no intent carries")
	}
}

func TestCaptureReadsBalanceTransaction(t *testing.T) {
	fake := newFakeStripe(t, func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.Method == http.MethodPost && r.URL.Path == "/v1/payment_intents/pi_1/capture":
			writeJSON(w, 200, `{"id":"pi_1","object":"payment_intent","status":"succeeded","amount_received":800,"latest_charge":"ch_1"}`)
		case r.Method == http.MethodGet && r.URL.Path == "/v1/charges/ch_1":
			writeJSON(w, 200, `{"id":"ch_1","object":"charge","amount":1000,"amount_captured":800,
				"balance_transaction":{"id":"txn_1","object":"balance_transaction","amount":800,"fee":53,"net":747}}`)
		default:
			writeJSON(w, 404, `{"error":{"type":"invalid_request_error","code":"resource_missing","message":"unexpected path"}}`)
		}
	})

	c, err := fake.gateway(t).Capture(context.Background(), "pi_1", 800, "capture:pay_1")
	if err != nil {
		t.Fatalf("Capture: %v", err)
	}
	want := ports.Capture{PaymentIntentID: "pi_1", ChargeID: "ch_1", BalanceTransactionID: "txn_1", Amount: 800, StripeFee: 53}
	if c != want {
		t.Errorf("Capture = %+v, want %+v", c, want)
	}

	reqs := fake.recorded()
	if len(reqs) != 2 {
		t.Fatalf("server received %d requests, want 2", len(reqs))
	}
	if got := reqs[0].Form.Get("amount_to_capture"); got != "800" {
		t.Errorf("amount_to_capture = %q, want 800", got)
	}
	if reqs[0].IdempotencyKey != "capture:pay_1" {
		t.Errorf("capture Idempotency-Key = %q, want capture:pay_1", reqs[0].IdempotencyKey)
	}
	if got := reqs[1].Form.Get("expand[0]"); got != "balance_transaction" {
		t.Errorf("charge expand[0] = %q, want balance_transaction", got)
	}
}

func TestGetCaptureRejectsUncapturedIntent(t *testing.T) {
	fake := newFakeStripe(t, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, `{"id":"pi_1","object":"payment_intent","status":"requires_capture","latest_charge":"ch_1"}`)
	})
	_, err := fake.gateway(t).GetCapture(context.Background(), "pi_1")
	var ge *ports.GatewayError
	if !errors.As(err, &ge) || ge.Kind != ports.GatewayInvalidRequest {
		t.Fatalf("error = %v, want an invalid_request gateway error", err)
	}
	if n := len(fake.recorded()); n != 1 {
		t.Errorf("server received %d requests, want 1 (no charge read)", n)
	}
}

func TestListPaymentMethodsFollowsPages(t *testing.T) {
	fake := newFakeStripe(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Form.Get("starting_after") == "" {
			writeJSON(w, 200, `{"object":"list","url":"/v1/payment_methods","has_more":true,"data":[
				{"id":"pm_a","object":"payment_method","type":"card","customer":"cus_1","created":1700000000,
				 "card":{"brand":"visa","last4":"4242","exp_month":12,"exp_year":2031}}]}`)
			return
		}
		writeJSON(w, 200, `{"object":"list","url":"/v1/payment_methods","has_more":false,"data":[
			{"id":"pm_b","object":"payment_method","type":"card","customer":"cus_1",
			 "card":{"brand":"mastercard","last4":"4444","exp_month":1,"exp_year":2032}}]}`)
	})

	methods, err := fake.gateway(t).ListPaymentMethods(context.Background(), "cus_1")
	if err != nil {
		t.Fatalf("ListPaymentMethods: %v", err)
	}
	want := []domain.PaymentMethod{
		{ID: "pm_a", CustomerID: "cus_1", Brand: "visa", Last4: "4242", ExpMonth: 12, ExpYear: 2031,
			CreatedAt: time.Unix(1700000000, 0).UTC()},
		{ID: "pm_b", CustomerID: "cus_1", Brand: "mastercard", Last4: "4444", ExpMonth: 1, ExpYear: 2032},
	}
	if len(methods) != len(want) {
		t.Fatalf("ListPaymentMethods returned %d cards, want %d: %+v", len(methods), len(want), methods)
	}
	for i := range want {
		if methods[i] != want[i] {
			t.Errorf("card %d = %+v, want %+v", i, methods[i], want[i])
		}
	}

	reqs := fake.recorded()
	if len(reqs) != 2 {
		t.Fatalf("server received %d requests, want 2", len(reqs))
	}
	if got := reqs[0].Form.Get("type"); got != "card" {
		t.Errorf("type = %q, want card", got)
	}
	if got := reqs[0].Form.Get("customer"); got != "cus_1" {
		t.Errorf("customer = %q, want cus_1", got)
	}
	if got := reqs[1].Form.Get("starting_after"); got != "pm_a" {
		t.Errorf("second page starting_after = %q, want pm_a", got)
	}
}

func TestFindTransferMatchesMetadata(t *testing.T) {
	fake := newFakeStripe(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Form.Get("starting_after") == "" {
			writeJSON(w, 200, `{"object":"list","url":"/v1/transfers","has_more":true,"data":[
				{"id":"tr_a","object":"transfer","amount":100,"metadata":{"payment_id":"pay_other"}}]}`)
			return
		}
		writeJSON(w, 200, `{"object":"list","url":"/v1/transfers","has_more":false,"data":[
			{"id":"tr_b","object":"transfer","amount":780,"metadata":{"payment_id":"pay_1"}}]}`)
	})
	gw := fake.gateway(t)

	tr, found, err := gw.FindTransfer(context.Background(), "task_1", "pay_1")
	if err != nil {
		t.Fatalf("FindTransfer: %v", err)
	}
	if !found {
		t.Fatal("found = false, want the transfer on the second page")
	}
	if tr != (ports.Transfer{ID: "tr_b", Amount: 780}) {
		t.Errorf("FindTransfer = %+v, want tr_b for 780", tr)
	}
	if got := fake.recorded()[0].Form.Get("transfer_group"); got != "task_1" {
		t.Errorf("transfer_group = %q, want task_1", got)
	}
}
