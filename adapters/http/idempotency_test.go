package http

import (
	"bytes"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/taskpod/billing/adapters/postgres"
	"github.com/taskpod/billing/application"
	"github.com/taskpod/billing/ports"
)

const contractTaskBody = `{"title":"Analyze this meal","description":"Identify calories and macros","agentId":"habit","maxPriceCents":100}`

// paidCustomer sets up a paid agent "habit" (100 usd) and a customer with a
// saved Visa card, and returns the customer's token and Stripe id.
func paidCustomer(env *contractEnv, subject string) (token, stripeCustomerID string) {
	env.t.Helper()
	admin := env.token("admin", "ops")
	if env.countRows(`SELECT count(*) FROM agents WHERE id = 'habit'`) == 0 {
		env.createAgent(admin, "habit", 100, "usd")
	}
	token = env.token("customer", subject)
	stripeCustomerID, _ = env.saveCard(token, "pm_card_visa")
	return token, stripeCustomerID
}

func createTaskRequest(token, key, body string) contractRequest {
	req := contractRequest{Method: "POST", Path: "/v1/tasks", Token: token, Body: body}
	if key != "" {
		req.Header = map[string]string{"Idempotency-Key": key}
	}
	return req
}

func TestIdempotentTaskCreateReplaysFirstAnswer(t *testing.T) {
	env := newContractEnv(t)
	customer, stripeCustomer := paidCustomer(env, "user_replay")

	first := env.expect(http.StatusCreated, createTaskRequest(customer, "key-1", contractTaskBody))
	var task struct {
		ID      string
		Status  string
		Payment struct{ Status, StripePaymentIntentID string }
	}
	contractDecode(t, first.Body, &task)
	if task.Status != "matched" || task.Payment.Status != "authorized" {
		t.Fatalf("first answer: task %s payment %s, want matched and authorized", task.Status, task.Payment.Status)
	}
	if got := first.Header.Get("Idempotent-Replayed"); got != "" {
		t.Errorf("first answer has Idempotent-Replayed %q, want none", got)
	}

	// The same request re-serialized: other key order and spacing.
	reordered := `{ "maxPriceCents": 100, "agentId": "habit", "description": "Identify calories and macros", "title": "Analyze this meal" }`
	second := env.expect(http.StatusCreated, createTaskRequest(customer, "key-1", reordered))
	if !bytes.Equal(second.Body, first.Body) {
		t.Errorf("replayed body differs:\nfirst  %s\nsecond %s", first.Body, second.Body)
	}
	if got := second.Header.Get("Idempotent-Replayed"); got != "true" {
		t.Errorf("Idempotent-Replayed = %q, want true", got)
	}
	if got := second.Header.Get("Content-Type"); got != "application/json" {
		t.Errorf("replayed Content-Type = %q, want application/json", got)
	}
	if second.Header.Get("Request-Id") == first.Header.Get("Request-Id") {
		t.Error("the replay reused the first request's Request-Id; each delivery needs its own")
	}

	if n := env.countRows(`SELECT count(*) FROM tasks WHERE customer_id = 'user_replay'`); n != 1 {
		t.Errorf("%d tasks stored, want 1", n)
	}
	if n := env.countRows(`SELECT count(*) FROM payments WHERE customer_id = 'user_replay'`); n != 1 {
		t.Errorf("%d payments stored, want 1", n)
	}
	intents := env.paymentIntents(stripeCustomer)
	if len(intents) != 1 {
		t.Fatalf("%d PaymentIntents at Stripe, want 1 hold", len(intents))
	}
	if intents[0]["id"] != task.Payment.StripePaymentIntentID || intents[0]["status"] != "requires_capture" {
		t.Errorf("PaymentIntent %v is %v, want %s in requires_capture", intents[0]["id"], intents[0]["status"], task.Payment.StripePaymentIntentID)
	}

	changed := strings.Replace(contractTaskBody, "Analyze this meal", "Analyze another meal", 1)
	resp := env.expect(http.StatusUnprocessableEntity, createTaskRequest(customer, "key-1", changed))
	apiErr := resp.errorBody(t)
	if apiErr.Code != "idempotency_key_reused" || apiErr.Param != "Idempotency-Key" {
		t.Errorf("changed body: code %q param %q, want idempotency_key_reused on Idempotency-Key", apiErr.Code, apiErr.Param)
	}
	if apiErr.RequestID == "" || apiErr.RequestID != resp.Header.Get("Request-Id") {
		t.Errorf("error requestId %q, header %q; want the same non-empty id", apiErr.RequestID, resp.Header.Get("Request-Id"))
	}
	if n := env.countRows(`SELECT count(*) FROM tasks WHERE customer_id = 'user_replay'`); n != 1 {
		t.Errorf("%d tasks after the rejected body, want 1", n)
	}

	env.expect(http.StatusCreated, createTaskRequest(customer, "key-2", contractTaskBody))
	env.expect(http.StatusCreated, createTaskRequest(customer, "", contractTaskBody))
	if n := env.countRows(`SELECT count(*) FROM tasks WHERE customer_id = 'user_replay'`); n != 3 {
		t.Errorf("%d tasks after a new key and a keyless request, want 3", n)
	}
	if n := len(env.paymentIntents(stripeCustomer)); n != 3 {
		t.Errorf("%d PaymentIntents after three tasks, want 3", n)
	}
}

func TestIdempotentTaskCreateConcurrent(t *testing.T) {
	env := newContractEnv(t)
	customer, stripeCustomer := paidCustomer(env, "user_race")

	const callers = 8
	responses := make([]contractResponse, callers)
	errs := make([]error, callers)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			responses[i], errs[i] = env.sendE(createTaskRequest(customer, "race-key", contractTaskBody))
		}()
	}
	close(start)
	wg.Wait()

	var created [][]byte
	for i, resp := range responses {
		if errs[i] != nil {
			t.Fatalf("request %d: %v", i, errs[i])
		}
		switch resp.Status {
		case http.StatusCreated:
			created = append(created, resp.Body)
		case http.StatusConflict:
			if code := resp.errorBody(t).Code; code != "idempotency_key_in_use" {
				t.Errorf("request %d: 409 code %q, want idempotency_key_in_use", i, code)
			}
			if resp.Header.Get("Retry-After") == "" {
				t.Errorf("request %d: 409 without Retry-After", i)
			}
		default:
			t.Errorf("request %d: status %d %s, want 201 or 409", i, resp.Status, resp.Body)
		}
	}
	if len(created) == 0 {
		t.Fatal("no request created the task")
	}
	for i, body := range created[1:] {
		if !bytes.Equal(body, created[0]) {
			t.Errorf("201 answer %d differs from the first:\n%s\n%s", i+1, body, created[0])
		}
	}

	final := env.expect(http.StatusCreated, createTaskRequest(customer, "race-key", contractTaskBody))
	if !bytes.Equal(final.Body, created[0]) {
		t.Errorf("retry after the race answered %s, want %s", final.Body, created[0])
	}
	if n := env.countRows(`SELECT count(*) FROM tasks WHERE customer_id = 'user_race'`); n != 1 {
		t.Errorf("%d tasks stored, want 1", n)
	}
	if n := len(env.paymentIntents(stripeCustomer)); n != 1 {
		t.Errorf("%d PaymentIntents at Stripe, want 1", n)
	}
}

// A crash after the task was stored but before the key was completed leaves
// a claimed key. Once its lease ends, a retry finds the task.
func TestIdempotentTaskCreateAfterCrash(t *testing.T) {
	env := newContractEnv(t)
	customer, stripeCustomer := paidCustomer(env, "user_crash")

	id := postgres.IdempotencyKeyID{Scope: "customer:user_crash", Method: "POST", Path: "/v1/tasks", Key: "crash-key"}
	reserved := "task_reservedBeforeCrash01"
	_, err := env.keys.Claim(env.ctx, postgres.IdempotencyClaim{IdempotencyKeyID: id,
		RequestHash: canonicalBodyHash([]byte(contractTaskBody)), ResourceID: reserved, ClaimToken: "dead-process",
		Lease: time.Minute, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	ctx := application.WithActor(env.ctx, application.Actor{Role: application.RoleCustomer, Subject: "user_crash"})
	if _, err := env.tasks.Create(ctx, "user_crash", application.CreateTaskInput{
		ID: reserved, Title: "Analyze this meal", Description: "Identify calories and macros", AgentID: "habit", MaxPrice: 100,
	}); err != nil {
		t.Fatalf("create the task of the crashed request: %v", err)
	}

	held := env.expect(http.StatusConflict, createTaskRequest(customer, "crash-key", contractTaskBody))
	if code := held.errorBody(t).Code; code != "idempotency_key_in_use" {
		t.Errorf("retry during the lease: code %q, want idempotency_key_in_use", code)
	}

	if _, err := env.pool.Exec(env.ctx, `UPDATE idempotency_keys SET locked_until = now() - interval '1 second'
		WHERE idempotency_key = 'crash-key'`); err != nil {
		t.Fatal(err)
	}
	resp := env.expect(http.StatusCreated, createTaskRequest(customer, "crash-key", contractTaskBody))
	var task struct {
		ID      string
		Payment struct{ Status string }
	}
	contractDecode(t, resp.Body, &task)
	if task.ID != reserved || task.Payment.Status != "authorized" {
		t.Errorf("retry after the crash answered task %s payment %s, want %s authorized", task.ID, task.Payment.Status, reserved)
	}
	if resp.Header.Get("Idempotent-Replayed") != "true" {
		t.Error("retry after the crash is not marked Idempotent-Replayed")
	}
	if n := env.countRows(`SELECT count(*) FROM tasks WHERE customer_id = 'user_crash'`); n != 1 {
		t.Errorf("%d tasks stored, want 1", n)
	}
	if n := len(env.paymentIntents(stripeCustomer)); n != 1 {
		t.Errorf("%d PaymentIntents at Stripe, want 1", n)
	}

	again := env.expect(http.StatusCreated, createTaskRequest(customer, "crash-key", contractTaskBody))
	if !bytes.Equal(again.Body, resp.Body) {
		t.Errorf("the recovered answer was not stored: %s, then %s", resp.Body, again.Body)
	}
}

// While Stripe is down the response is 202 with the payment authorizing. A
// retry shows the current state, which is final once the relay is done.
func TestIdempotentTaskCreateDeferredHold(t *testing.T) {
	env := newContractEnv(t)
	customer, stripeCustomer := paidCustomer(env, "user_deferred")
	env.addFault(`{"method":"POST","path":"/v1/payment_intents","status":500,"rate":1,"count":1}`)

	first := env.expect(http.StatusAccepted, createTaskRequest(customer, "deferred-key", contractTaskBody))
	var task struct {
		ID      string
		Status  string
		Payment struct{ ID, Status string }
	}
	contractDecode(t, first.Body, &task)
	if task.Status != "pending_payment" || task.Payment.Status != "authorizing" {
		t.Fatalf("first answer: task %s payment %s, want pending_payment and authorizing", task.Status, task.Payment.Status)
	}

	retry := env.expect(http.StatusAccepted, createTaskRequest(customer, "deferred-key", contractTaskBody))
	if retry.Header.Get("Idempotent-Replayed") != "true" {
		t.Error("retry of a 202 is not marked Idempotent-Replayed")
	}

	// The relay's work, done here directly.
	if err := env.steps.Run(env.ctx, ports.OutboxMessage{PaymentID: task.Payment.ID, Step: "authorize"}); err != nil {
		t.Fatalf("run the authorize step: %v", err)
	}
	final := env.expect(http.StatusCreated, createTaskRequest(customer, "deferred-key", contractTaskBody))
	var done struct {
		ID      string
		Status  string
		Payment struct{ Status string }
	}
	contractDecode(t, final.Body, &done)
	if done.ID != task.ID || done.Status != "matched" || done.Payment.Status != "authorized" {
		t.Errorf("retry after the relay: task %s %s payment %s, want %s matched authorized", done.ID, done.Status, done.Payment.Status, task.ID)
	}
	if n := env.countRows(`SELECT count(*) FROM tasks WHERE customer_id = 'user_deferred'`); n != 1 {
		t.Errorf("%d tasks stored, want 1", n)
	}
	if n := len(env.paymentIntents(stripeCustomer)); n != 1 {
		t.Errorf("%d PaymentIntents at Stripe, want 1", n)
	}
}

func TestIdempotencyClientErrorFreesKey(t *testing.T) {
	env := newContractEnv(t)
	customer, _ := paidCustomer(env, "user_fix")

	missingTitle := `{"agentId":"habit","maxPriceCents":100}`
	resp := env.expect(http.StatusUnprocessableEntity, createTaskRequest(customer, "fix-key", missingTitle))
	if e := resp.errorBody(t); e.Code != "missing_field" || e.Param != "title" {
		t.Errorf("missing title: code %q param %q, want missing_field on title", e.Code, e.Param)
	}
	env.expect(http.StatusCreated, createTaskRequest(customer, "fix-key", contractTaskBody))
	if n := env.countRows(`SELECT count(*) FROM tasks WHERE customer_id = 'user_fix'`); n != 1 {
		t.Errorf("%d tasks stored, want 1", n)
	}
}

func TestIdempotencyScopedToCaller(t *testing.T) {
	env := newContractEnv(t)
	alice, _ := paidCustomer(env, "user_alice")
	bob, _ := paidCustomer(env, "user_bob")

	a := env.expect(http.StatusCreated, createTaskRequest(alice, "shared-key", contractTaskBody))
	b := env.expect(http.StatusCreated, createTaskRequest(bob, "shared-key", contractTaskBody))
	if b.Header.Get("Idempotent-Replayed") != "" || bytes.Equal(a.Body, b.Body) {
		t.Errorf("bob got alice's answer for the same key: %s", b.Body)
	}

	// Another token of the same customer shares the key.
	aliceAgain := env.token("customer", "user_alice")
	again := env.expect(http.StatusCreated, createTaskRequest(aliceAgain, "shared-key", contractTaskBody))
	if !bytes.Equal(again.Body, a.Body) {
		t.Errorf("a second token of alice got %s, want the stored %s", again.Body, a.Body)
	}
}

func TestIdempotencyOtherMethods(t *testing.T) {
	env := newContractEnv(t)
	admin := env.token("admin", "ops")
	env.createAgent(admin, "habit", 100, "usd")
	customer := env.token("customer", "user_methods")
	_, card := env.saveCard(customer, "pm_card_visa")
	key := map[string]string{"Idempotency-Key": "patch-1"}

	patch := contractRequest{Method: "PATCH", Path: "/v1/agents/habit", Token: admin, Body: `{"priceCents":150}`, Header: key}
	first := env.expect(http.StatusOK, patch)
	// A change made in between shows that the retry replays, not reruns.
	env.expect(http.StatusOK, contractRequest{Method: "PATCH", Path: "/v1/agents/habit", Token: admin, Body: `{"priceCents":200}`})
	second := env.expect(http.StatusOK, patch)
	if !bytes.Equal(first.Body, second.Body) || second.Header.Get("Idempotent-Replayed") != "true" {
		t.Errorf("PATCH retry answered %s (replayed %q), want the stored %s", second.Body, second.Header.Get("Idempotent-Replayed"), first.Body)
	}
	if price := env.countRows(`SELECT price_amount FROM agents WHERE id = 'habit'`); price != 200 {
		t.Errorf("agent price %d after the replay, want 200 from the unkeyed change", price)
	}

	remove := contractRequest{Method: "DELETE", Path: "/v1/billing/payment-methods/" + card, Token: customer,
		Header: map[string]string{"Idempotency-Key": "delete-1"}}
	env.expect(http.StatusNoContent, remove)
	replayed := env.expect(http.StatusNoContent, remove)
	if replayed.Header.Get("Idempotent-Replayed") != "true" {
		t.Error("DELETE retry is not marked Idempotent-Replayed")
	}
	unkeyed := env.expect(http.StatusNotFound, contractRequest{Method: "DELETE", Path: "/v1/billing/payment-methods/" + card, Token: customer})
	if code := unkeyed.errorBody(t).Code; code != "resource_missing" {
		t.Errorf("DELETE without a key after removal: code %q, want resource_missing", code)
	}

	get := contractRequest{Method: "GET", Path: "/v1/agents/habit", Token: admin, Header: map[string]string{"Idempotency-Key": "get-1"}}
	env.expect(http.StatusOK, get)
	if n := env.countRows(`SELECT count(*) FROM idempotency_keys WHERE idempotency_key = 'get-1'`); n != 0 {
		t.Errorf("a GET stored %d idempotency keys, want 0 because GET is safe to repeat", n)
	}
}

func TestIdempotencyKeyValidation(t *testing.T) {
	env := newContractEnv(t)
	customer, _ := paidCustomer(env, "user_badkey")

	for name, key := range map[string]string{
		"too long":          strings.Repeat("k", 256),
		"control character": "key\twith-tab",
		"non ASCII":         "clé",
	} {
		t.Run(name, func(t *testing.T) {
			resp := env.expect(http.StatusBadRequest, createTaskRequest(customer, key, contractTaskBody))
			if e := resp.errorBody(t); e.Code != "invalid_idempotency_key" || e.Param != "Idempotency-Key" {
				t.Errorf("code %q param %q, want invalid_idempotency_key on Idempotency-Key", e.Code, e.Param)
			}
		})
	}
	if n := env.countRows(`SELECT count(*) FROM tasks WHERE customer_id = 'user_badkey'`); n != 0 {
		t.Errorf("%d tasks created with invalid keys, want 0", n)
	}
	env.expect(http.StatusCreated, createTaskRequest(customer, strings.Repeat("k", 255), contractTaskBody))
}

func TestCanonicalBodyHash(t *testing.T) {
	same := [][2]string{
		{`{"a":1,"b":"x"}`, `{ "b" : "x", "a" : 1 }`},
		{`{"a":{"c":1,"d":2}}`, "{\"a\":{\"d\":2,\"c\":1}}\n"},
		{`{"s":"\u00e9"}`, `{"s":"é"}`},
		{``, ``},
	}
	for _, pair := range same {
		if !bytes.Equal(canonicalBodyHash([]byte(pair[0])), canonicalBodyHash([]byte(pair[1]))) {
			t.Errorf("%q and %q hash differently, want the same canonical hash", pair[0], pair[1])
		}
	}
	different := [][2]string{
		{`{"a":1}`, `{"a":2}`},
		{`{"a":100}`, `{"a":1e2}`},
		{`{"a":1}`, `{"a":"1"}`},
		{`{}`, ``},
		{`{"a":1} trailing`, `{"a":1}`},
	}
	for _, pair := range different {
		if bytes.Equal(canonicalBodyHash([]byte(pair[0])), canonicalBodyHash([]byte(pair[1]))) {
			t.Errorf("%q and %q hash alike, want different hashes", pair[0], pair[1])
		}
	}
}
