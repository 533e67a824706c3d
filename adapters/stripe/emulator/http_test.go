package emulator_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/taskpod/billing/adapters/postgres/pgtest"
	"github.com/taskpod/billing/adapters/stripe/emulator"
)

// post sends a raw form POST with the test key and decodes the JSON body.
func (h *harness) post(path, form string) (int, http.Header, map[string]any) {
	h.t.Helper()
	req, err := http.NewRequest("POST", h.srv.URL+path, strings.NewReader(form))
	if err != nil {
		h.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer sk_test_raw")
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return h.do(req)
}

func (h *harness) get(pathAndQuery string) (int, map[string]any) {
	h.t.Helper()
	req, err := http.NewRequest("GET", h.srv.URL+pathAndQuery, nil)
	if err != nil {
		h.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer sk_test_raw")
	status, _, body := h.do(req)
	return status, body
}

func (h *harness) do(req *http.Request) (int, http.Header, map[string]any) {
	h.t.Helper()
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	var body map[string]any
	if err := json.Unmarshal(raw, &body); err != nil {
		h.t.Fatalf("decode %s: %v: %s", req.URL.Path, err, raw)
	}
	return res.StatusCode, res.Header, body
}

func TestBracketNotationAndExpand(t *testing.T) {
	h := newHarness(t, emulator.Config{})
	status, _, cus := h.post("/v1/customers", "email=a%40example.com&metadata[user_id]=u_9&metadata[plan]=pro")
	if status != 200 {
		t.Fatalf("create customer: %d %v", status, cus)
	}
	meta := cus["metadata"].(map[string]any)
	if meta["user_id"] != "u_9" || meta["plan"] != "pro" || cus["object"] != "customer" || cus["livemode"] != false {
		t.Errorf("customer = %v", cus)
	}

	status, _, cus = h.post("/v1/customers/"+cus["id"].(string), "metadata[plan]=")
	if status != 200 {
		t.Fatalf("update customer: %d %v", status, cus)
	}
	if meta := cus["metadata"].(map[string]any); len(meta) != 1 || meta["user_id"] != "u_9" {
		t.Errorf("metadata after unsetting plan = %v, want only user_id", meta)
	}

	form := url.Values{
		"amount": {"1200"}, "currency": {"usd"}, "customer": {cus["id"].(string)},
		"payment_method": {"pm_card_visa"}, "capture_method": {"manual"}, "confirm": {"true"},
		"payment_method_types[0]": {"card"}, "expand[]": {"latest_charge", "customer"},
	}
	status, _, pi := h.post("/v1/payment_intents", form.Encode())
	if status != 200 {
		t.Fatalf("create payment intent: %d %v", status, pi)
	}
	charge, ok := pi["latest_charge"].(map[string]any)
	if !ok || charge["object"] != "charge" || charge["captured"] != false {
		t.Errorf("latest_charge = %v, want an expanded uncaptured charge", pi["latest_charge"])
	}
	if expanded, ok := pi["customer"].(map[string]any); !ok || expanded["id"] != cus["id"] {
		t.Errorf("customer = %v, want the expanded customer", pi["customer"])
	}
	if _, ok := pi["created"].(float64); !ok {
		t.Errorf("created = %v, want unix seconds", pi["created"])
	}

	status, got := h.get("/v1/payment_intents/" + pi["id"].(string) + "?expand[0]=latest_charge.balance_transaction")
	if status != 200 {
		t.Fatalf("get payment intent: %d %v", status, got)
	}
	if ch := got["latest_charge"].(map[string]any); ch["balance_transaction"] != nil {
		t.Errorf("uncaptured charge balance_transaction = %v, want null", ch["balance_transaction"])
	}

	status, list := h.get("/v1/payment_intents?customer=" + cus["id"].(string) + "&limit=1")
	if status != 200 || list["object"] != "list" || list["has_more"] != false || list["url"] != "/v1/payment_intents" {
		t.Errorf("list = %d %v", status, list)
	}
}

func TestErrorShapes(t *testing.T) {
	h := newHarness(t, emulator.Config{})
	req, _ := http.NewRequest("POST", h.srv.URL+"/v1/customers", nil)
	status, _, body := h.do(req)
	errBody := body["error"].(map[string]any)
	if status != 401 || errBody["type"] != "invalid_request_error" || errBody["message"] == "" {
		t.Errorf("no key: %d %v", status, body)
	}

	status, _, body = h.post("/v1/customers", "nickname=x")
	errBody = body["error"].(map[string]any)
	if status != 400 || errBody["param"] != "nickname" {
		t.Errorf("unknown parameter: %d %v", status, body)
	}

	status, body = h.get("/v1/payment_intents/pi_missing")
	errBody = body["error"].(map[string]any)
	if status != 404 || errBody["code"] != "resource_missing" || errBody["type"] != "invalid_request_error" {
		t.Errorf("missing payment intent: %d %v", status, body)
	}

	status, body = h.get("/v1/invoices")
	if status != 404 {
		t.Errorf("unknown route: %d %v", status, body)
	}
}

func TestNewIsSafeConcurrently(t *testing.T) {
	pool := pgtest.Pool(t)
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = emulator.New(context.Background(), pool, emulator.Config{})
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("New #%d: %v", i, err)
		}
	}
}

func TestPublishableKeyConfirmsWithClientSecret(t *testing.T) {
	h := newHarness(t, emulator.Config{})
	status, _, pi := h.post("/v1/payment_intents", "amount=900&currency=usd&capture_method=manual")
	if status != 200 {
		t.Fatalf("create payment intent: %d %v", status, pi)
	}
	id, secret := pi["id"].(string), pi["client_secret"].(string)

	withKey := func(method, path, form, key string) (int, map[string]any) {
		req, err := http.NewRequest(method, h.srv.URL+path, strings.NewReader(form))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+key)
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		status, _, body := h.do(req)
		return status, body
	}

	if status, body := withKey("POST", "/v1/payment_intents", "amount=900&currency=usd", "pk_test_x"); status != 401 {
		t.Errorf("create with a publishable key: %d %v, want 401", status, body)
	}
	if status, body := withKey("POST", "/v1/payment_intents/"+id+"/confirm", "payment_method=pm_card_visa&client_secret=wrong", "pk_test_x"); status != 400 {
		t.Errorf("confirm with a wrong client_secret: %d %v, want 400", status, body)
	}
	status, body := withKey("POST", "/v1/payment_intents/"+id+"/confirm", "payment_method=pm_card_visa&client_secret="+url.QueryEscape(secret), "pk_test_x")
	if status != 200 || body["status"] != "requires_capture" {
		t.Errorf("confirm with the client_secret: %d %v, want requires_capture", status, body)
	}
	if status, body := withKey("GET", "/v1/payment_intents/"+id+"?client_secret="+url.QueryEscape(secret), "", "pk_test_x"); status != 200 || body["id"] != id {
		t.Errorf("get with the client_secret: %d %v", status, body)
	}
}
