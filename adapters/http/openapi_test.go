package http

import (
	"bytes"
	"context"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/legacy"
	stripego "github.com/stripe/stripe-go/v76"
	"github.com/stripe/stripe-go/v76/webhook"

	"github.com/taskpod/billing/domain"
	"github.com/taskpod/billing/ports"
)

// allRoles are the token roles; an operation's x-roles lists those allowed.
var allRoles = []string{"customer", "agent", "auditor", "admin"}

// loadSpec parses and validates the embedded OpenAPI document.
func loadSpec(t *testing.T) *openapi3.T {
	t.Helper()
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromData(OpenAPISpec())
	if err != nil {
		t.Fatalf("parse openapi.yaml: %v", err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		t.Fatalf("openapi.yaml is not a valid OpenAPI 3 document: %v", err)
	}
	return doc
}

// forbidUndocumentedFields sets additionalProperties: false on every object
// schema with properties, so a response field missing from the document
// fails validation. The published document leaves them open because fields
// may be added without a new API version.
func forbidUndocumentedFields(doc *openapi3.T) {
	seen := map[*openapi3.Schema]bool{}
	var walk func(ref *openapi3.SchemaRef)
	walk = func(ref *openapi3.SchemaRef) {
		if ref == nil || ref.Value == nil || seen[ref.Value] {
			return
		}
		s := ref.Value
		seen[s] = true
		if len(s.Properties) > 0 && s.AdditionalProperties.Has == nil && s.AdditionalProperties.Schema == nil {
			closed := false
			s.AdditionalProperties.Has = &closed
		}
		for _, p := range s.Properties {
			walk(p)
		}
		walk(s.Items)
		for _, sub := range s.AllOf {
			walk(sub)
		}
	}
	for _, ref := range doc.Components.Schemas {
		walk(ref)
	}
}

// operationKey names an operation as "METHOD /path/{param}".
func operationKey(method, path string) string { return method + " " + path }

// specWalker sends requests to the API, validates each request and response
// against the document, and records which statuses each operation returned.
type specWalker struct {
	t      *testing.T
	env    *contractEnv
	doc    *openapi3.T
	router routers.Router
	seen   map[string]map[int]bool
}

func newSpecWalker(t *testing.T, env *contractEnv) *specWalker {
	doc := loadSpec(t)
	forbidUndocumentedFields(doc)
	doc.Servers = openapi3.Servers{{URL: env.api.URL}}
	router, err := legacy.NewRouter(doc)
	if err != nil {
		t.Fatalf("build router: %v", err)
	}
	return &specWalker{t: t, env: env, doc: doc, router: router, seen: map[string]map[int]bool{}}
}

// ok sends a request that conforms to the document and expects status.
func (w *specWalker) ok(status int, req contractRequest) contractResponse {
	w.t.Helper()
	return w.call(status, req, true)
}

// fail sends a request, valid or not, that must fail with status and code.
func (w *specWalker) fail(status int, code string, req contractRequest) contractResponse {
	w.t.Helper()
	resp := w.call(status, req, false)
	if got := resp.errorBody(w.t).Code; got != code {
		w.t.Errorf("%s %s: code %q, want %q", req.Method, req.Path, got, code)
	}
	return resp
}

// call sends req and validates it; status 0 accepts any documented status.
func (w *specWalker) call(status int, req contractRequest, validateRequest bool) contractResponse {
	w.t.Helper()
	httpReq, err := w.env.newRequest(req)
	if err != nil {
		w.t.Fatal(err)
	}
	route, params, err := w.router.FindRoute(httpReq)
	if err != nil {
		w.t.Fatalf("%s %s is not in openapi.yaml: %v", req.Method, req.Path, err)
	}
	input := &openapi3filter.RequestValidationInput{Request: httpReq, PathParams: params, Route: route,
		Options: &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc}}
	if validateRequest {
		if err := openapi3filter.ValidateRequest(w.env.ctx, input); err != nil {
			w.t.Errorf("%s %s: the request does not match openapi.yaml: %v", req.Method, req.Path, err)
		}
	}

	resp := w.env.send(req)
	if status != 0 && resp.Status != status {
		w.t.Fatalf("%s %s = %d %s, want %d", req.Method, req.Path, resp.Status, resp.Body, status)
	}
	err = openapi3filter.ValidateResponse(w.env.ctx, &openapi3filter.ResponseValidationInput{
		RequestValidationInput: input, Status: resp.Status, Header: resp.Header,
		Body:    io.NopCloser(bytes.NewReader(resp.Body)),
		Options: &openapi3filter.Options{IncludeResponseStatus: true, MultiError: true},
	})
	if err != nil {
		w.t.Errorf("%s %s: the %d response does not match openapi.yaml: %v\nbody: %s", req.Method, req.Path, resp.Status, err, resp.Body)
	}

	key := operationKey(route.Method, route.Path)
	if w.seen[key] == nil {
		w.seen[key] = map[int]bool{}
	}
	w.seen[key][resp.Status] = true
	return resp
}

// operations lists every operation of the document.
func (w *specWalker) operations() map[string]*openapi3.Operation {
	out := map[string]*openapi3.Operation{}
	for path, item := range w.doc.Paths.Map() {
		for method, op := range item.Operations() {
			out[operationKey(method, path)] = op
		}
	}
	return out
}

// secured reports whether the operation needs a bearer token.
func (w *specWalker) secured(op *openapi3.Operation) bool {
	if op.Security != nil {
		return len(*op.Security) > 0
	}
	return len(w.doc.Security) > 0
}

// checkAuthOnEveryOperation calls every secured operation without a token
// (401) and with a token of each role x-roles does not list (403).
func (w *specWalker) checkAuthOnEveryOperation(tokens map[string]string) {
	w.t.Helper()
	for key, op := range w.operations() {
		if !w.secured(op) {
			continue
		}
		method, path, _ := strings.Cut(key, " ")
		concrete := strings.NewReplacer("{id}", "x_missing").Replace(path)
		w.fail(401, "missing_token", contractRequest{Method: method, Path: concrete})

		allowed := rolesOf(w.t, key, op)
		for _, role := range allRoles {
			req := contractRequest{Method: method, Path: concrete, Token: tokens[role]}
			if !slices.Contains(allowed, role) {
				w.fail(403, "forbidden", req)
				continue
			}
			// An allowed role passes the role check; the request may still
			// fail later, for example on the missing object.
			if resp := w.call(0, req, false); resp.Status == 401 || resp.Status == 403 {
				w.t.Errorf("%s with a %s token = %d, but x-roles allows %s", key, role, resp.Status, role)
			}
		}
	}
}

func rolesOf(t *testing.T, key string, op *openapi3.Operation) []string {
	raw, ok := op.Extensions["x-roles"].([]any)
	if !ok || len(raw) == 0 {
		t.Fatalf("%s: x-roles is missing; list the roles that may call it", key)
	}
	var roles []string
	for _, r := range raw {
		roles = append(roles, fmt.Sprint(r))
	}
	return roles
}

// checkCoverage fails for an operation that never returned a 2xx, or a
// secured one that never returned 401 and 403.
func (w *specWalker) checkCoverage() {
	w.t.Helper()
	for key, op := range w.operations() {
		statuses := w.seen[key]
		success := false
		for status := range statuses {
			success = success || status/100 == 2
		}
		if !success {
			w.t.Errorf("%s: no successful request in the walk; add its happy path", key)
		}
		if w.secured(op) && (!statuses[401] || (len(rolesOf(w.t, key, op)) < len(allRoles) && !statuses[403])) {
			w.t.Errorf("%s: 401 or 403 never checked", key)
		}
	}
}

// TestSpecWalk sends the happy path and the main error paths of every
// operation in openapi.yaml and validates each request and response.
func TestSpecWalk(t *testing.T) {
	env := newContractEnv(t)
	w := newSpecWalker(t, env)
	tokens := map[string]string{
		"admin": env.token("admin", "ops"), "auditor": env.token("auditor", "audit"),
		"customer": env.token("customer", "user_walk"), "agent": env.token("agent", "habit"),
	}
	admin, auditor, customer, agent := tokens["admin"], tokens["auditor"], tokens["customer"], tokens["agent"]

	w.ok(200, contractRequest{Method: "GET", Path: "/v1/openapi.yaml"})
	walkAgents(w, admin, customer)
	stripeCustomer, card := walkCards(w, customer)
	task, payment := walkTasks(w, customer, agent)

	w.ok(200, apiRequest("GET", "/v1/payments/"+payment, customer, ""))
	w.ok(200, apiRequest("GET", "/v1/payments/"+payment, agent, ""))
	w.fail(404, "resource_missing", apiRequest("GET", "/v1/payments/pay_missing", customer, ""))

	w.ok(200, apiRequest("GET", "/v1/ledger/entries?taskId="+task+"&limit=5", auditor, ""))
	w.fail(400, "invalid_cursor", apiRequest("GET", "/v1/ledger/entries?startingAfter=abc", auditor, ""))

	capturedTask, capturedPayment := walkAdmin(w, admin, customer)
	// The relay's work: the transfer the admin retried.
	if err := env.steps.Run(env.ctx, stepMessage(capturedPayment, "transfer")); err != nil {
		t.Fatalf("run the retried transfer: %v", err)
	}
	walkRefunds(w, admin, auditor, customer, capturedTask)
	walkLedger(w, admin, auditor, agent, capturedPayment)
	walkWebhook(w)

	w.ok(204, apiRequest("DELETE", "/v1/billing/payment-methods/"+card, customer, ""))
	w.fail(404, "resource_missing", apiRequest("DELETE", "/v1/billing/payment-methods/"+card, customer, ""))
	if n := len(env.paymentIntents(stripeCustomer)); n < 1 {
		t.Errorf("%d PaymentIntents at Stripe after the walk, want at least 1", n)
	}

	w.checkAuthOnEveryOperation(tokens)
	w.checkCoverage()
}

func walkAgents(w *specWalker, admin, customer string) {
	w.ok(201, apiRequest("POST", "/v1/agents", admin, `{"id":"habit","name":"Habit AI","priceCents":100,"currency":"usd","stripeAccountId":"acct_1HabitAI"}`))
	w.ok(201, apiRequest("POST", "/v1/agents", admin, `{"id":"free","name":"Free AI","priceCents":0,"currency":"usd"}`))
	w.fail(409, "resource_exists", apiRequest("POST", "/v1/agents", admin, `{"id":"habit","name":"Habit AI","priceCents":100,"currency":"usd","stripeAccountId":"acct_1HabitAI"}`))
	w.fail(422, "missing_field", apiRequest("POST", "/v1/agents", admin, `{"name":"No currency","priceCents":100}`))
	w.fail(400, "unknown_field", apiRequest("POST", "/v1/agents", admin, `{"name":"A","priceCents":1,"currency":"usd","colour":"red"}`))
	w.fail(415, "unsupported_media_type", contractRequest{Method: "POST", Path: "/v1/agents", Token: admin, Body: "name=A", ContentType: "text/plain"})

	w.ok(200, apiRequest("GET", "/v1/agents", admin, ""))
	first := w.ok(200, apiRequest("GET", "/v1/agents?limit=1", customer, ""))
	var page struct {
		Data    []struct{ ID string }
		HasMore bool
	}
	contractDecode(w.t, first.Body, &page)
	if len(page.Data) != 1 || !page.HasMore {
		w.t.Fatalf("first page of agents: %d items, hasMore %v; want 1 and true", len(page.Data), page.HasMore)
	}
	w.ok(200, apiRequest("GET", "/v1/agents?limit=1&startingAfter="+page.Data[0].ID, customer, ""))
	w.ok(200, apiRequest("GET", "/v1/agents?endingBefore="+page.Data[0].ID, customer, ""))
	w.fail(400, "invalid_limit", apiRequest("GET", "/v1/agents?limit=101", admin, ""))
	w.fail(422, "invalid_cursor", apiRequest("GET", "/v1/agents?startingAfter=nobody", admin, ""))

	w.ok(200, apiRequest("GET", "/v1/agents/habit", admin, ""))
	w.fail(404, "resource_missing", apiRequest("GET", "/v1/agents/nobody", admin, ""))
	w.ok(200, apiRequest("PATCH", "/v1/agents/habit", admin, `{"active":true,"priceCents":100}`))
	w.fail(404, "resource_missing", apiRequest("PATCH", "/v1/agents/nobody", admin, `{"active":false}`))
	w.fail(422, "invalid_amount", apiRequest("PATCH", "/v1/agents/habit", admin, `{"priceCents":-1}`))
	w.fail(400, "invalid_type", apiRequest("PATCH", "/v1/agents/habit", admin, `{"active":"yes"}`))
}

func walkCards(w *specWalker, customer string) (stripeCustomer, card string) {
	// An unconfirmed SetupIntent first, for the 422 below.
	pending := w.ok(200, apiRequest("POST", "/v1/billing/setup", customer, `{}`))
	var unconfirmed struct{ SetupIntentID string }
	contractDecode(w.t, pending.Body, &unconfirmed)
	w.fail(400, "unknown_field", apiRequest("POST", "/v1/billing/setup", customer, `{"customer":"cus_1"}`))
	w.env.addFault(`{"method":"POST","path":"/v1/setup_intents","dropResponseRate":1,"count":1}`)
	w.fail(503, "stripe_unavailable", apiRequest("POST", "/v1/billing/setup", customer, `{}`))

	resp := w.ok(200, apiRequest("POST", "/v1/billing/setup", customer, `{}`))
	var setup struct{ SetupIntentID, CustomerID string }
	contractDecode(w.t, resp.Body, &setup)
	w.env.emulatorCall("POST", "/v1/setup_intents/"+setup.SetupIntentID+"/confirm", "payment_method=pm_card_visa",
		"application/x-www-form-urlencoded")
	resp = w.ok(200, apiRequest("POST", "/v1/billing/confirm-setup", customer, `{"setupIntentId":"`+setup.SetupIntentID+`"}`))
	var saved struct{ ID string }
	contractDecode(w.t, resp.Body, &saved)
	w.fail(404, "resource_missing", apiRequest("POST", "/v1/billing/confirm-setup", customer, `{"setupIntentId":"seti_missing"}`))
	w.fail(422, "setup_intent_not_succeeded", apiRequest("POST", "/v1/billing/confirm-setup", customer, `{"setupIntentId":"`+unconfirmed.SetupIntentID+`"}`))
	w.fail(422, "missing_field", apiRequest("POST", "/v1/billing/confirm-setup", customer, `{}`))

	w.ok(200, apiRequest("GET", "/v1/billing/payment-methods", customer, ""))
	w.ok(200, apiRequest("PUT", "/v1/billing/default-payment-method", customer, `{"paymentMethodId":"`+saved.ID+`"}`))
	w.fail(404, "resource_missing", apiRequest("PUT", "/v1/billing/default-payment-method", customer, `{"paymentMethodId":"pm_missing"}`))
	w.fail(422, "invalid_id", apiRequest("PUT", "/v1/billing/default-payment-method", customer, `{"paymentMethodId":"card_1"}`))
	return setup.CustomerID, saved.ID
}

func walkTasks(w *specWalker, customer, agent string) (taskID, paymentID string) {
	create := func(key, body string) contractRequest {
		req := apiRequest("POST", "/v1/tasks", customer, body)
		req.Header = map[string]string{"Idempotency-Key": key}
		return req
	}
	body := func(price int) string {
		return `{"title":"Analyze this meal","description":"Identify calories and macros","agentId":"habit","maxPriceCents":` + strconv.Itoa(price) + `}`
	}

	resp := w.ok(201, create("walk-1", body(100)))
	replay := w.ok(201, create("walk-1", body(100)))
	if replay.Header.Get("Idempotent-Replayed") != "true" {
		w.t.Error("replayed POST /v1/tasks lacks Idempotent-Replayed: true")
	}
	w.fail(422, "idempotency_key_reused", create("walk-1", body(150)))
	var task struct {
		ID      string
		Payment struct{ ID string }
	}
	contractDecode(w.t, resp.Body, &task)

	w.env.addFault(`{"method":"POST","path":"/v1/payment_intents","status":500,"rate":1,"count":1}`)
	w.ok(202, create("walk-2", body(100)))
	w.ok(201, apiRequest("POST", "/v1/tasks", customer, `{"title":"Free","agentId":"free","maxPriceCents":0}`))
	w.fail(422, "price_above_max", apiRequest("POST", "/v1/tasks", customer, body(50)))
	w.fail(400, "invalid_json", apiRequest("POST", "/v1/tasks", customer, `{"title":`))
	w.fail(413, "body_too_large", apiRequest("POST", "/v1/tasks", customer, `{"title":"`+strings.Repeat("x", 70<<10)+`"}`))
	w.fail(415, "unsupported_media_type", contractRequest{Method: "POST", Path: "/v1/tasks", Token: customer, Body: "{}", ContentType: "text/plain"})

	w.ok(200, apiRequest("GET", "/v1/tasks?limit=2", customer, ""))
	w.ok(200, apiRequest("GET", "/v1/tasks", agent, ""))
	w.fail(400, "invalid_limit", apiRequest("GET", "/v1/tasks?limit=0", customer, ""))
	w.fail(422, "invalid_cursor", apiRequest("GET", "/v1/tasks?endingBefore=task_missing", customer, ""))
	w.ok(200, apiRequest("GET", "/v1/tasks/"+task.ID, customer, ""))
	w.fail(404, "resource_missing", apiRequest("GET", "/v1/tasks/task_missing", customer, ""))

	path := "/v1/tasks/" + task.ID
	w.fail(422, "amount_above_hold", apiRequest("POST", path+"/complete", agent, `{"finalAmountCents":1000}`))
	w.ok(200, apiRequest("POST", path+"/complete", agent, `{"finalAmountCents":80}`))
	w.fail(409, "invalid_state_transition", apiRequest("POST", path+"/complete", agent, ""))
	w.fail(404, "resource_missing", apiRequest("POST", "/v1/tasks/task_missing/complete", agent, ""))

	failed := w.ok(201, create("walk-3", body(100)))
	var other struct{ ID string }
	contractDecode(w.t, failed.Body, &other)
	w.ok(200, apiRequest("POST", "/v1/tasks/"+other.ID+"/fail", agent, `{"reason":"unreadable image"}`))
	w.fail(409, "invalid_state_transition", apiRequest("POST", "/v1/tasks/"+other.ID+"/fail", agent, ""))
	w.fail(400, "unknown_field", apiRequest("POST", "/v1/tasks/"+other.ID+"/fail", agent, `{"why":"x"}`))

	cancelled := w.ok(201, create("walk-4", body(100)))
	contractDecode(w.t, cancelled.Body, &other)
	w.ok(200, contractRequest{Method: "POST", Path: "/v1/tasks/" + other.ID + "/cancel", Token: customer})
	w.fail(409, "invalid_state_transition", apiRequest("POST", "/v1/tasks/"+other.ID+"/cancel", customer, `{}`))
	w.fail(404, "resource_missing", apiRequest("POST", "/v1/tasks/task_missing/cancel", customer, `{}`))
	return task.ID, task.Payment.ID
}

// walkAdmin runs a task whose transfer Stripe refuses and returns its ids.
func walkAdmin(w *specWalker, admin, customer string) (taskID, paymentID string) {
	env := w.env
	env.createAgent(admin, "broken", 100, "usd")
	w.ok(200, apiRequest("PATCH", "/v1/agents/broken", admin, `{"stripeAccountId":"acct_invalid"}`))
	resp := w.ok(201, apiRequest("POST", "/v1/tasks", customer, `{"title":"Transfer refused","agentId":"broken","maxPriceCents":100}`))
	var task struct {
		ID      string
		Payment struct{ ID string }
	}
	contractDecode(w.t, resp.Body, &task)
	brokenAgent := env.token("agent", "broken")
	w.ok(200, apiRequest("POST", "/v1/tasks/"+task.ID+"/complete", brokenAgent, ""))
	for _, step := range []string{"capture", "transfer"} {
		if err := env.steps.Run(env.ctx, stepMessage(task.Payment.ID, step)); err != nil {
			w.t.Fatalf("run the %s step: %v", step, err)
		}
	}

	refused := w.ok(200, apiRequest("GET", "/v1/payments/"+task.Payment.ID, customer, ""))
	var payment struct{ Status, TransferFailedReason string }
	contractDecode(w.t, refused.Body, &payment)
	if payment.Status != "captured" || payment.TransferFailedReason == "" {
		w.t.Fatalf("payment to acct_invalid is %s with transferFailedReason %q, want captured with a reason", payment.Status, payment.TransferFailedReason)
	}

	retry := "/v1/admin/payments/" + task.Payment.ID + "/retry-transfer"
	w.ok(202, apiRequest("POST", retry, admin, `{"stripeAccountId":"acct_1Fixed"}`))
	w.fail(409, "invalid_state_transition", apiRequest("POST", retry, admin, `{}`))
	w.fail(404, "resource_missing", apiRequest("POST", "/v1/admin/payments/pay_missing/retry-transfer", admin, `{}`))

	var id int64
	err := env.pool.QueryRow(env.ctx, `INSERT INTO outbox_quarantine (message_uuid, payment_id, step, attempts, last_error, payload)
		VALUES ('0b8e7c1e-0000-4000-8000-000000000001', $1, 'capture', 12, 'stripe api_error', '{}') RETURNING id`,
		task.Payment.ID).Scan(&id)
	if err != nil {
		w.t.Fatalf("insert a quarantined message: %v", err)
	}
	w.ok(200, apiRequest("GET", "/v1/admin/outbox/quarantine", admin, ""))
	w.ok(200, apiRequest("GET", "/v1/admin/outbox/quarantine?status=all&paymentId="+task.Payment.ID, admin, ""))
	w.fail(400, "invalid_status", apiRequest("GET", "/v1/admin/outbox/quarantine?status=closed", admin, ""))
	w.ok(200, contractRequest{Method: "POST", Path: fmt.Sprintf("/v1/admin/outbox/quarantine/oq_%d/requeue", id), Token: admin})
	w.fail(404, "resource_missing", apiRequest("POST", "/v1/admin/outbox/quarantine/oq_999999/requeue", admin, `{}`))
	return task.ID, task.Payment.ID
}

func walkLedger(w *specWalker, admin, auditor, agent, paymentID string) {
	w.ok(200, apiRequest("GET", "/v1/ledger/accounts?limit=3", auditor, ""))
	w.fail(400, "invalid_time", apiRequest("GET", "/v1/ledger/accounts?asOf=yesterday", auditor, ""))
	w.ok(200, apiRequest("GET", "/v1/ledger/accounts/customer_authorizations/balance", auditor, ""))
	w.fail(404, "resource_missing", apiRequest("GET", "/v1/ledger/accounts/no_such_account/balance", auditor, ""))
	w.ok(200, apiRequest("GET", "/v1/ledger/accounts/customer_authorizations/statement", auditor, ""))
	csv := apiRequest("GET", "/v1/ledger/accounts/customer_authorizations/statement?from=2020-01-01T00:00:00Z", auditor, "")
	csv.Header = map[string]string{"Accept": "text/csv"}
	w.ok(200, csv)
	w.fail(400, "invalid_time_range", apiRequest("GET", "/v1/ledger/accounts/platform_cash/statement?from=2026-02-01T00:00:00Z&to=2026-01-01T00:00:00Z", auditor, ""))
	w.ok(200, apiRequest("GET", "/v1/ledger/trial-balance", auditor, ""))
	w.fail(400, "invalid_time", apiRequest("GET", "/v1/ledger/trial-balance?asOf=1", auditor, ""))
	w.ok(200, apiRequest("GET", "/v1/ledger/head", auditor, ""))
	w.ok(200, apiRequest("GET", "/v1/ledger/verify", auditor, ""))
	w.ok(200, apiRequest("GET", "/v1/audit/events", auditor, ""))
	w.fail(400, "invalid_cursor", apiRequest("GET", "/v1/audit/events?startingAfter=x", auditor, ""))

	resp := w.ok(200, apiRequest("GET", "/v1/ledger/entries?paymentId="+paymentID, auditor, ""))
	var entries struct {
		Data []struct{ TransactionID, Kind string }
	}
	contractDecode(w.t, resp.Body, &entries)
	kinds := map[string]string{}
	for _, e := range entries.Data {
		kinds[e.Kind] = e.TransactionID
	}
	hold, settlement := kinds["hold"], kinds["settlement"]
	if hold == "" || settlement == "" {
		w.t.Fatalf("ledger of payment %s has kinds %v, want a hold and a settlement", paymentID, kinds)
	}
	w.ok(200, apiRequest("GET", "/v1/ledger/transactions/"+hold, auditor, ""))
	w.fail(404, "resource_missing", apiRequest("GET", "/v1/ledger/transactions/ltx_missing", auditor, ""))
	reverse := "/v1/ledger/transactions/" + settlement + "/reverse"
	w.ok(201, apiRequest("POST", reverse, admin, `{"reason":"settlement booked twice"}`))
	w.ok(200, apiRequest("POST", reverse, admin, `{"reason":"settlement booked twice"}`))
	w.fail(409, "transaction_not_reversible", apiRequest("POST", "/v1/ledger/transactions/"+hold+"/reverse", admin, `{"reason":"a hold"}`))
	w.fail(422, "missing_field", apiRequest("POST", reverse, admin, `{}`))
	w.fail(404, "resource_missing", apiRequest("POST", "/v1/ledger/transactions/ltx_missing/reverse", admin, `{"reason":"x"}`))

	w.ok(200, apiRequest("GET", "/v1/agents/broken/balance", admin, ""))
	w.ok(200, apiRequest("GET", "/v1/agents/habit/balance", agent, ""))
	w.fail(404, "resource_missing", apiRequest("GET", "/v1/agents/broken/balance", agent, ""))
}

func walkRefunds(w *specWalker, admin, auditor, customer, taskID string) {
	refund := "/v1/tasks/" + taskID + "/refund"
	w.ok(201, apiRequest("POST", refund, admin, `{"amountCents":40,"reason":"requested_by_customer"}`))
	w.fail(422, "amount_above_refundable", apiRequest("POST", refund, admin, `{"amountCents":1000}`))
	w.fail(422, "invalid_reason", apiRequest("POST", refund, admin, `{"reason":"changed my mind"}`))
	w.fail(404, "resource_missing", apiRequest("POST", "/v1/tasks/task_missing/refund", admin, `{}`))
	free := w.ok(201, apiRequest("POST", "/v1/tasks", customer, `{"title":"Free","agentId":"free","maxPriceCents":0}`))
	var task struct{ ID string }
	contractDecode(w.t, free.Body, &task)
	w.fail(409, "refund_not_possible", apiRequest("POST", "/v1/tasks/"+task.ID+"/refund", admin, `{}`))

	w.ok(200, apiRequest("GET", "/v1/tasks/"+taskID+"/refunds", admin, ""))
	w.ok(200, apiRequest("GET", "/v1/tasks/"+taskID+"/refunds", auditor, ""))
	w.fail(404, "resource_missing", apiRequest("GET", "/v1/tasks/task_missing/refunds", auditor, ""))
}

func walkWebhook(w *specWalker) {
	event := fmt.Sprintf(`{"id":"evt_contract_1","object":"event","api_version":%q,"created":%d,"type":"customer.created",`+
		`"data":{"object":{"id":"cus_contract","object":"customer"}}}`, stripego.APIVersion, time.Now().Unix())
	signed := webhook.GenerateTestSignedPayload(&webhook.UnsignedPayload{
		Payload: []byte(event), Secret: contractWebhookSecret, Timestamp: time.Now(),
	})
	deliver := func(signature string) contractRequest {
		return contractRequest{Method: "POST", Path: "/v1/stripe/webhooks", Body: event,
			Header: map[string]string{"Stripe-Signature": signature}}
	}
	w.ok(200, deliver(signed.Header))
	w.ok(200, deliver(signed.Header))
	w.fail(400, "webhook_signature_mismatch", deliver(fmt.Sprintf("t=%d,v1=%064x", time.Now().Unix(), 0)))
	w.fail(400, "webhook_signature_header_invalid", deliver(""))
}

// apiRequest is a request with a JSON body (none when body is empty).
func apiRequest(method, path, token, body string) contractRequest {
	return contractRequest{Method: method, Path: path, Token: token, Body: body}
}

func stepMessage(paymentID, step string) ports.OutboxMessage {
	return ports.OutboxMessage{PaymentID: paymentID, Step: domain.Step(step)}
}

// TestSpecListsEveryRoute compares the routes registered in the package's
// source with the document's operations, both ways.
func TestSpecListsEveryRoute(t *testing.T) {
	doc := loadSpec(t)
	documented := map[string]bool{}
	for path, item := range doc.Paths.Map() {
		for method := range item.Operations() {
			documented[operationKey(method, path)] = true
		}
	}
	registered := registeredRoutes(t)

	for _, route := range registered {
		if !documented[route] {
			t.Errorf("route %s is registered but missing from openapi.yaml", route)
		}
	}
	for route := range documented {
		if !slices.Contains(registered, route) {
			t.Errorf("openapi.yaml documents %s, which no file of the package registers", route)
		}
	}
}

// registeredRoutes returns the "METHOD /path" patterns passed as string
// literals to s.handle, s.mux.Handle and s.mux.HandleFunc in the package's
// non-test files.
func registeredRoutes(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	var routes []string
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		src, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		file, err := parser.ParseFile(fset, name, src, 0)
		if err != nil {
			t.Fatalf("parse %s: %v", name, err)
		}
		ast.Inspect(file, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok || len(call.Args) == 0 || !isRouteRegistration(call.Fun) {
				return true
			}
			lit, ok := call.Args[0].(*ast.BasicLit)
			if !ok || lit.Kind != token.STRING {
				return true
			}
			pattern, err := strconv.Unquote(lit.Value)
			if err == nil && strings.Contains(pattern, " ") {
				routes = append(routes, pattern)
			}
			return true
		})
	}
	sort.Strings(routes)
	if len(routes) < 10 {
		t.Fatalf("found only %d registered routes (%v); the source scan is broken", len(routes), routes)
	}
	return routes
}

func isRouteRegistration(fun ast.Expr) bool {
	sel, ok := fun.(*ast.SelectorExpr)
	if !ok {
		return false
	}
	switch sel.Sel.Name {
	case "handle":
		return true
	case "Handle", "HandleFunc":
		inner, ok := sel.X.(*ast.SelectorExpr)
		return ok && inner.Sel.Name == "mux"
	}
	return false
}
