package http

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/taskpod/billing/ports"
)

// errorCase is one request that must fail with a given status and code.
type errorCase struct {
	name   string
	req    contractRequest
	status int
	code   string
	param  string
}

// checkErrorCase sends the request and checks the envelope: status, code,
// param, type, and a requestId equal to the Request-Id header.
func checkErrorCase(t *testing.T, env *contractEnv, c errorCase) contractResponse {
	t.Helper()
	resp := env.send(c.req)
	if resp.Status != c.status {
		t.Fatalf("status %d body %s, want %d", resp.Status, resp.Body, c.status)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q, want application/json", ct)
	}
	e := resp.errorBody(t)
	if e.Code != c.code {
		t.Errorf("code %q, want %q (message %q)", e.Code, c.code, e.Message)
	}
	if e.Param != c.param {
		t.Errorf("param %q, want %q", e.Param, c.param)
	}
	if e.Type == "" || e.Message == "" {
		t.Errorf("type %q message %q, want both set", e.Type, e.Message)
	}
	if id := resp.Header.Get("Request-Id"); id == "" || e.RequestID != id {
		t.Errorf("requestId %q, Request-Id header %q; want the same non-empty id", e.RequestID, id)
	}
	return resp
}

func TestErrorEnvelopeOnEveryErrorPath(t *testing.T) {
	env := newContractEnv(t)
	admin := env.token("admin", "ops")
	env.createAgent(admin, "habit", 100, "usd")
	customer := env.token("customer", "user_errors")
	agent := env.token("agent", "habit")

	task := func(body string) contractRequest {
		return contractRequest{Method: "POST", Path: "/v1/tasks", Token: customer, Body: body}
	}
	newAgent := func(body string) contractRequest {
		return contractRequest{Method: "POST", Path: "/v1/agents", Token: admin, Body: body}
	}
	cases := []errorCase{
		{"malformed JSON", task(`{"title":`), 400, "invalid_json", ""},
		{"not an object", task(`[1,2]`), 400, "invalid_json", ""},
		{"trailing data", task(`{"title":"a"} {}`), 400, "invalid_json", ""},
		{"string for integer", task(`{"title":"a","agentId":"habit","maxPriceCents":"100"}`), 400, "invalid_type", "maxPriceCents"},
		{"fraction for integer", task(`{"title":"a","agentId":"habit","maxPriceCents":1.5}`), 400, "invalid_type", "maxPriceCents"},
		{"integer overflow", task(`{"title":"a","agentId":"habit","maxPriceCents":99999999999999999999}`), 400, "invalid_type", "maxPriceCents"},
		{"number for string", task(`{"title":7,"agentId":"habit","maxPriceCents":100}`), 400, "invalid_type", "title"},
		{"unknown field", task(`{"title":"a","agentId":"habit","maxPriceCents":100,"colour":"red"}`), 400, "unknown_field", "colour"},
		{"empty body", task(``), 400, "missing_body", ""},
		{"missing title", task(`{"agentId":"habit","maxPriceCents":100}`), 422, "missing_field", "title"},
		{"missing agent", task(`{"title":"a","maxPriceCents":100}`), 422, "missing_field", "agentId"},
		{"missing price", task(`{"title":"a","agentId":"habit"}`), 422, "missing_field", "maxPriceCents"},
		{"negative price", task(`{"title":"a","agentId":"habit","maxPriceCents":-1}`), 422, "invalid_amount", "maxPriceCents"},
		{"price below agent's", task(`{"title":"a","agentId":"habit","maxPriceCents":50}`), 422, "price_above_max", "maxPriceCents"},
		{"unknown agent", task(`{"title":"a","agentId":"nobody","maxPriceCents":100}`), 422, "agent_not_found", "agentId"},
		{"empty title", task(`{"title":"","agentId":"habit","maxPriceCents":100}`), 422, "invalid_title", "title"},
		{"oversized body", task(`{"title":"a","description":"` + strings.Repeat("x", 70<<10) + `"}`), 413, "body_too_large", ""},
		{"text content type", contractRequest{Method: "POST", Path: "/v1/tasks", Token: customer, Body: `{"title":"a"}`, ContentType: "text/plain"},
			415, "unsupported_media_type", ""},
		{"form content type", contractRequest{Method: "POST", Path: "/v1/tasks", Token: customer, Body: `title=a`, ContentType: "application/x-www-form-urlencoded"},
			415, "unsupported_media_type", ""},
		{"unsupported currency", newAgent(`{"name":"A","priceCents":100,"currency":"xyz","stripeAccountId":"acct_1"}`), 422, "unsupported_currency", "currency"},
		{"currency not enabled", newAgent(`{"name":"A","priceCents":100,"currency":"eur","stripeAccountId":"acct_1"}`), 422, "unsupported_currency", "currency"},
		{"negative agent price", newAgent(`{"name":"A","priceCents":-5,"currency":"usd","stripeAccountId":"acct_1"}`), 422, "invalid_amount", "priceCents"},
		{"missing currency", newAgent(`{"name":"A","priceCents":100}`), 422, "missing_field", "currency"},
		{"price above Stripe's maximum", newAgent(`{"name":"A","priceCents":100000000,"currency":"usd","stripeAccountId":"acct_1"}`), 422, "amount_too_large", "priceCents"},
		{"price overflows int64", newAgent(`{"name":"A","priceCents":9223372036854775808,"currency":"usd"}`), 400, "invalid_type", "priceCents"},
		{"duplicate agent", newAgent(`{"id":"habit","name":"A","priceCents":100,"currency":"usd","stripeAccountId":"acct_1"}`), 409, "resource_exists", ""},
		{"no token", contractRequest{Method: "GET", Path: "/v1/tasks"}, 401, "missing_token", ""},
		{"unknown token", contractRequest{Method: "GET", Path: "/v1/tasks", Token: "tpk_unknown"}, 401, "invalid_token", ""},
		{"wrong role", contractRequest{Method: "POST", Path: "/v1/tasks", Token: agent, Body: `{}`}, 403, "forbidden", ""},
		{"unknown task", contractRequest{Method: "GET", Path: "/v1/tasks/task_missing", Token: customer}, 404, "resource_missing", ""},
		{"unknown route", contractRequest{Method: "GET", Path: "/v1/nothing", Token: customer}, 404, "route_not_found", ""},
		{"limit zero", contractRequest{Method: "GET", Path: "/v1/tasks?limit=0", Token: customer}, 400, "invalid_limit", "limit"},
		{"limit not a number", contractRequest{Method: "GET", Path: "/v1/tasks?limit=ten", Token: customer}, 400, "invalid_limit", "limit"},
		{"unknown cursor", contractRequest{Method: "GET", Path: "/v1/tasks?startingAfter=task_missing", Token: customer}, 422, "invalid_cursor", "startingAfter"},
		{"both cursors", contractRequest{Method: "GET", Path: "/v1/agents?startingAfter=a&endingBefore=b", Token: admin}, 400, "invalid_pagination", "endingBefore"},
		{"confirm without setup intent", contractRequest{Method: "POST", Path: "/v1/billing/confirm-setup", Token: customer, Body: `{}`},
			422, "missing_field", "setupIntentId"},
		{"confirm with a card id", contractRequest{Method: "POST", Path: "/v1/billing/confirm-setup", Token: customer, Body: `{"setupIntentId":"pm_1"}`},
			422, "invalid_id", "setupIntentId"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			resp := checkErrorCase(t, env, c)
			for _, internal := range []string{"SQLSTATE", "constraint", "pgx", "duplicate key"} {
				if strings.Contains(string(resp.Body), internal) {
					t.Errorf("body %s shows database internals (%q)", resp.Body, internal)
				}
			}
		})
	}
	if n := env.countRows(`SELECT count(*) FROM tasks`); n != 0 {
		t.Errorf("%d tasks stored by rejected requests, want 0", n)
	}
}

func TestConflictOnForbiddenTransition(t *testing.T) {
	env := newContractEnv(t)
	admin := env.token("admin", "ops")
	env.createAgent(admin, "free", 0, "usd")
	customer := env.token("customer", "user_twice")
	resp := env.expect(http.StatusCreated, contractRequest{Method: "POST", Path: "/v1/tasks", Token: customer,
		Body: `{"title":"a","agentId":"free","maxPriceCents":0}`})
	var task struct{ ID string }
	contractDecode(t, resp.Body, &task)

	cancel := contractRequest{Method: "POST", Path: "/v1/tasks/" + task.ID + "/cancel", Token: customer}
	env.expect(http.StatusOK, cancel)
	checkErrorCase(t, env, errorCase{req: cancel, status: 409, code: "invalid_state_transition"})
}

// Card set-up cannot defer its Stripe call, so an unreachable Stripe is a
// 503 with Retry-After and nothing saved.
func TestStripeDownOnCardSetupIs503(t *testing.T) {
	env := newContractEnv(t)
	customer := env.token("customer", "user_down")
	// The response is lost on the way back, so the outcome is unknown to
	// the service, as when a network link to Stripe fails.
	env.addFault(`{"method":"POST","path":"/v1/customers","dropResponseRate":1,"count":1}`)

	resp := checkErrorCase(t, env, errorCase{req: contractRequest{Method: "POST", Path: "/v1/billing/setup", Token: customer, Body: `{}`},
		status: 503, code: "stripe_unavailable"})
	if got := resp.Header.Get("Retry-After"); got != "5" {
		t.Errorf("Retry-After %q, want 5", got)
	}
	if n := env.countRows(`SELECT count(*) FROM customers WHERE stripe_customer_id IS NOT NULL`); n != 0 {
		t.Errorf("%d customers linked to Stripe after the failure, want 0", n)
	}
	env.expect(http.StatusOK, contractRequest{Method: "POST", Path: "/v1/billing/setup", Token: customer, Body: `{}`})
}

// A declined saved card on POST /v1/tasks keeps the documented fallback:
// 201 with the task pending payment, a client secret and the decline code.
func TestDeclinedCardFallsBackTo201(t *testing.T) {
	env := newContractEnv(t)
	admin := env.token("admin", "ops")
	env.createAgent(admin, "habit", 100, "usd")
	customer := env.token("customer", "user_declined")
	env.saveCard(customer, "pm_card_chargeCustomerFail")

	resp := env.expect(http.StatusCreated, contractRequest{Method: "POST", Path: "/v1/tasks", Token: customer, Body: contractTaskBody})
	var task struct {
		Status  string
		Payment struct {
			Status, ClientSecret, DeclineCode string
			AutoCharged                       bool
		}
	}
	contractDecode(t, resp.Body, &task)
	if task.Status != "pending_payment" || task.Payment.Status != "requires_customer_action" {
		t.Errorf("task %s payment %s, want pending_payment and requires_customer_action", task.Status, task.Payment.Status)
	}
	if !strings.Contains(task.Payment.ClientSecret, "_secret_") {
		t.Errorf("clientSecret %q, want a PaymentIntent client secret", task.Payment.ClientSecret)
	}
	if task.Payment.DeclineCode == "" || task.Payment.AutoCharged {
		t.Errorf("declineCode %q autoCharged %v, want a decline code and false", task.Payment.DeclineCode, task.Payment.AutoCharged)
	}
}

// failingAuth fails like a database outage whose message must not reach
// the client.
type failingAuth struct{}

func (failingAuth) Authenticate(context.Context, string) (Principal, error) {
	return Principal{}, errors.New("dial tcp 10.0.0.7:5432: password authentication failed for user billing_secret")
}

func TestInternalErrorHidesCause(t *testing.T) {
	env := newContractEnv(t, func(d *Deps) { d.Auth = failingAuth{} })
	resp := checkErrorCase(t, env, errorCase{req: contractRequest{Method: "GET", Path: "/v1/tasks", Token: "tpk_any"},
		status: 500, code: "internal_error"})
	for _, secret := range []string{"10.0.0.7", "password", "billing_secret", "dial tcp"} {
		if strings.Contains(string(resp.Body), secret) {
			t.Errorf("500 body %s leaks %q", resp.Body, secret)
		}
	}
}

func TestStatusMapping(t *testing.T) {
	cases := []struct {
		name        string
		err         error
		status      int
		code        string
		declineCode string
		retryAfter  int
	}{
		{"card declined without fallback", &ports.GatewayError{Kind: ports.GatewayCardError, Code: "card_declined", DeclineCode: "insufficient_funds"},
			402, "card_declined", "insufficient_funds", 0},
		{"Stripe unreachable", &ports.GatewayError{Kind: ports.GatewayNetwork}, 503, "stripe_unavailable", "", 5},
		{"Stripe rejects", &ports.GatewayError{Kind: ports.GatewayInvalidRequest, Code: "parameter_invalid_integer"}, 502, "stripe_rejected", "", 0},
		{"unknown failure", fmt.Errorf("wrapped: %w", errors.New("boom")), 500, "internal_error", "", 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := toAPIError(c.err)
			if got.Status != c.status || got.Code != c.code {
				t.Errorf("status %d code %q, want %d %q", got.Status, got.Code, c.status, c.code)
			}
			if got.DeclineCode != c.declineCode {
				t.Errorf("declineCode %q, want %q", got.DeclineCode, c.declineCode)
			}
			if got.RetryAfter != c.retryAfter {
				t.Errorf("RetryAfter %d, want %d", got.RetryAfter, c.retryAfter)
			}
		})
	}
}

func TestRevokedAndExpiredTokensGet401(t *testing.T) {
	env := newContractEnv(t)
	revokedID, revoked, err := env.tokens.Create(env.ctx, "customer", "user_old", nil)
	if err != nil {
		t.Fatal(err)
	}
	expiry := time.Now().Add(time.Hour)
	expiredID, expired, err := env.tokens.Create(env.ctx, "customer", "user_old", &expiry)
	if err != nil {
		t.Fatal(err)
	}
	list := contractRequest{Method: "GET", Path: "/v1/tasks"}

	for _, token := range []string{revoked, expired} {
		list.Token = token
		env.expect(http.StatusOK, list)
	}
	if err := env.tokens.Revoke(env.ctx, revokedID); err != nil {
		t.Fatal(err)
	}
	if _, err := env.pool.Exec(env.ctx, `UPDATE api_tokens SET expires_at = now() - interval '1 second' WHERE id = $1`, expiredID); err != nil {
		t.Fatal(err)
	}
	for name, token := range map[string]string{"revoked": revoked, "expired": expired} {
		t.Run(name, func(t *testing.T) {
			list.Token = token
			checkErrorCase(t, env, errorCase{req: list, status: 401, code: "invalid_token"})
		})
	}
}
