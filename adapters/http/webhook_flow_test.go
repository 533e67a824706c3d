package http_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/taskpod/billing/domain"
	"github.com/taskpod/billing/ports"
)

// pendingTask creates a task for a customer without a card and returns the
// task id, the payment id and the PaymentIntent the customer must confirm.
func (e *webhookEnv) pendingTask(t *testing.T, customer, agent string) (taskID, paymentID, intentID string) {
	t.Helper()
	taskID = e.createTask(t, customer, agent, 100)
	task := e.waitTask(t, customer, taskID, "pending_payment", "requires_customer_action")
	p := paymentOfTask(task)
	secret, _ := p["clientSecret"].(string)
	intentID, _, _ = strings.Cut(secret, "_secret_")
	if !strings.HasPrefix(intentID, "pi_") {
		t.Fatalf("payment %v has no client secret", p)
	}
	return taskID, p["id"].(string), intentID
}

// storedEvent returns the newest event of a type the emulator stored.
func (e *webhookEnv) storedEvent(t *testing.T, eventType string) []byte {
	t.Helper()
	out := e.control(t, http.MethodGet, "/_emulator/events?type="+eventType, nil)
	events := out["data"].([]any)
	if len(events) == 0 {
		t.Fatalf("the emulator stored no %s event", eventType)
	}
	raw, err := json.Marshal(events[len(events)-1].(map[string]any)["event"])
	if err != nil {
		t.Fatalf("encode event: %v", err)
	}
	return raw
}

func TestWebhookClientSecretPathMatchesTask(t *testing.T) {
	e := newWebhookEnv(t, webhookEnvOptions{})
	admin := e.token(t, "admin", "ops")
	agent, _ := e.paidAgent(t, admin, 100)
	customer := e.token(t, "customer", e.id("user"))
	taskID, paymentID, intentID := e.pendingTask(t, customer, agent)

	e.stripeCall(t, http.MethodPost, "/v1/payment_intents/"+intentID+"/confirm", map[string]string{"payment_method": "pm_card_visa"})

	task := e.waitTask(t, customer, taskID, "matched", "authorized")
	if p := paymentOfTask(task); p["captureBefore"] == nil {
		t.Errorf("authorized payment has no captureBefore: %v", p)
	}
	rows := e.ledger(t, paymentID)
	if got := countKind(rows, "hold", "customer_authorizations"); got != 1 {
		t.Fatalf("hold postings = %d, want 1; ledger %v", got, rows)
	}
	want := map[string]int64{"customer_authorizations": 100, "agent_payable:" + agent: -97, "platform_fee_revenue": -3}
	for _, r := range rows {
		if r.kind == "hold" && (!r.pending || r.amount != want[r.account]) {
			t.Errorf("hold entry %s %d pending=%v, want %d pending", r.account, r.amount, r.pending, want[r.account])
		}
	}
	if n := e.openHolds(t, paymentID); n != 1 {
		t.Errorf("open holds = %d, want 1", n)
	}
	if n := e.counts.get("payment_intent.amount_capturable_updated/applied"); n != 1 {
		t.Errorf("applied amount_capturable_updated events = %d, want 1", n)
	}
}

func TestWebhookDuplicateDeliveredConcurrently(t *testing.T) {
	e := newWebhookEnv(t, webhookEnvOptions{})
	admin := e.token(t, "admin", "ops")
	agent, _ := e.paidAgent(t, admin, 100)
	customer := e.token(t, "customer", e.id("user"))
	taskID, paymentID, intentID := e.pendingTask(t, customer, agent)

	e.control(t, http.MethodPost, "/_emulator/webhooks/pause", nil)
	e.stripeCall(t, http.MethodPost, "/v1/payment_intents/"+intentID+"/confirm", map[string]string{"payment_method": "pm_card_visa"})
	body := e.storedEvent(t, "payment_intent.amount_capturable_updated")

	const senders = 8
	outcomes := make([]string, senders)
	statuses := make([]int, senders)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			req, _ := http.NewRequest(http.MethodPost, e.api.URL+"/v1/stripe/webhooks", strings.NewReader(string(body)))
			req.Header.Set("Stripe-Signature", sign(whSecret, time.Now(), body))
			res, err := e.client.Do(req)
			if err != nil {
				return
			}
			defer res.Body.Close()
			var out map[string]any
			_ = json.NewDecoder(res.Body).Decode(&out)
			statuses[i] = res.StatusCode
			outcomes[i], _ = out["outcome"].(string)
		}()
	}
	close(start)
	wg.Wait()

	applied, duplicates := 0, 0
	for i := range senders {
		if statuses[i] != http.StatusOK {
			t.Errorf("delivery %d: status %d, want 200", i, statuses[i])
		}
		switch outcomes[i] {
		case "applied":
			applied++
		case "duplicate":
			duplicates++
		}
	}
	if applied != 1 || duplicates != senders-1 {
		t.Fatalf("outcomes %v: want 1 applied and %d duplicate", outcomes, senders-1)
	}
	e.waitTask(t, customer, taskID, "matched", "authorized")
	rows := e.ledger(t, paymentID)
	if got := countKind(rows, "hold", "customer_authorizations"); got != 1 {
		t.Errorf("hold postings = %d, want 1", got)
	}

	// The emulator's own delivery of the same event changes nothing either.
	e.control(t, http.MethodPost, "/_emulator/webhooks/flush", nil)
	if got := countKind(e.ledger(t, paymentID), "hold", "customer_authorizations"); got != 1 {
		t.Errorf("hold postings after the emulator's delivery = %d, want 1", got)
	}
	if got := e.scalar(t, `SELECT count(*)::text FROM stripe_events WHERE type = 'payment_intent.amount_capturable_updated'`); got != "1" {
		t.Errorf("stored amount_capturable_updated events = %s, want 1", got)
	}
}

func TestWebhookReverseOrderEndsAuthorized(t *testing.T) {
	e := newWebhookEnv(t, webhookEnvOptions{})
	admin := e.token(t, "admin", "ops")
	agent, _ := e.paidAgent(t, admin, 100)
	customer := e.token(t, "customer", e.id("user"))
	taskID, paymentID, intentID := e.pendingTask(t, customer, agent)

	// A declined attempt, then a successful one, delivered newest first:
	// a handler trusting the payload would record the decline last.
	e.control(t, http.MethodPost, "/_emulator/webhooks/pause", nil)
	e.stripeCall(t, http.MethodPost, "/v1/payment_intents/"+intentID+"/confirm", map[string]string{"payment_method": "pm_card_chargeDeclined"})
	e.stripeCall(t, http.MethodPost, "/v1/payment_intents/"+intentID+"/confirm", map[string]string{"payment_method": "pm_card_visa"})
	e.control(t, http.MethodPost, "/_emulator/webhooks/mode", map[string]any{"reverse": true})
	out := e.control(t, http.MethodPost, "/_emulator/webhooks/flush", nil)
	if out["delivered"].(float64) < 2 {
		t.Fatalf("flush delivered %v events, want at least 2", out["delivered"])
	}

	task := e.waitTask(t, customer, taskID, "matched", "authorized")
	if p := paymentOfTask(task); p["declineCode"] != nil {
		t.Errorf("authorized payment shows declineCode %v", p["declineCode"])
	}
	if n := e.openHolds(t, paymentID); n != 1 {
		t.Errorf("open holds = %d, want 1", n)
	}
	failed := e.scalar(t, `SELECT status FROM stripe_events WHERE type = 'payment_intent.payment_failed'`)
	if failed != "processed" {
		t.Errorf("payment_failed event status = %q, want processed", failed)
	}
}

func TestWebhookEventWaitsForPayment(t *testing.T) {
	e := newWebhookEnv(t, webhookEnvOptions{noRelay: true})
	admin := e.token(t, "admin", "ops")
	agentID, _ := e.paidAgent(t, admin, 100)
	user := e.id("user")
	customer := e.token(t, "customer", user)
	_, setup := e.call(t, http.MethodPost, "/v1/billing/setup", customer, map[string]any{})
	stripeCustomer := setup["customerId"].(string)

	// Stripe already holds a PaymentIntent for a payment whose task is
	// still being created.
	const paymentID = "pay_createdlater"
	pi := e.stripeCall(t, http.MethodPost, "/v1/payment_intents", map[string]string{
		"amount": "100", "currency": "usd", "customer": stripeCustomer, "capture_method": "manual",
		"payment_method_types[]": "card", "metadata[payment_id]": paymentID,
	})
	intentID := pi["id"].(string)
	e.stripeCall(t, http.MethodPost, "/v1/payment_intents/"+intentID+"/confirm", map[string]string{"payment_method": "pm_card_visa"})

	waitFor(t, "the event stored as pending", func() bool {
		return e.scalar(t, `SELECT status FROM stripe_events WHERE type = 'payment_intent.amount_capturable_updated'`) == "pending"
	})

	ctx := context.Background()
	err := e.store.InTx(ctx, func(ctx context.Context, tx ports.Tx) error {
		agent, err := tx.Agents().Get(ctx, agentID)
		if err != nil {
			return err
		}
		now := time.Now()
		task, err := domain.NewTask(domain.NewTaskInput{ID: "task_createdlater", CustomerID: user, Title: "late",
			MaxPrice: 100, Agent: agent, Now: now})
		if err != nil {
			return err
		}
		payment, err := domain.NewPayment(paymentID, task, agent, stripeCustomer, "", 250, now)
		if err != nil {
			return err
		}
		task.AttachPayment(paymentID)
		if err := tx.Tasks().Insert(ctx, task); err != nil {
			return err
		}
		return tx.Payments().Insert(ctx, payment)
	})
	if err != nil {
		t.Fatalf("store the task: %v", err)
	}

	e.clock.set(time.Now().Add(time.Hour))
	attempted, err := e.webhooks.RetryDue(ctx, 10)
	if err != nil || attempted != 1 {
		t.Fatalf("RetryDue = %d, %v; want 1 event attempted", attempted, err)
	}
	task := e.task(t, customer, "task_createdlater")
	if task["status"] != "matched" || paymentOfTask(task)["status"] != "authorized" {
		t.Fatalf("task %v, payment %v; want matched and authorized", task["status"], paymentOfTask(task)["status"])
	}
	if got := paymentOfTask(task)["stripePaymentIntentId"]; got != intentID {
		t.Errorf("payment intent = %v, want %s", got, intentID)
	}
	if n := e.openHolds(t, paymentID); n != 1 {
		t.Errorf("open holds = %d, want 1", n)
	}
	if got := e.scalar(t, `SELECT status FROM stripe_events WHERE type = 'payment_intent.amount_capturable_updated'`); got != "processed" {
		t.Errorf("event status = %q, want processed", got)
	}
}

func TestWebhookCancelWhileCapturableReleasesHold(t *testing.T) {
	e := newWebhookEnv(t, webhookEnvOptions{noRelay: true})
	admin := e.token(t, "admin", "ops")
	agent, _ := e.paidAgent(t, admin, 100)
	customer := e.token(t, "customer", e.id("user"))
	taskID, paymentID, intentID := e.pendingTask(t, customer, agent)

	e.control(t, http.MethodPost, "/_emulator/webhooks/pause", nil)
	e.stripeCall(t, http.MethodPost, "/v1/payment_intents/"+intentID+"/confirm", map[string]string{"payment_method": "pm_card_visa"})
	if status, body := e.call(t, http.MethodPost, "/v1/tasks/"+taskID+"/cancel", customer, nil); status != http.StatusOK {
		t.Fatalf("cancel: %d %v", status, body)
	}
	e.control(t, http.MethodPost, "/_emulator/webhooks/resume", nil)
	e.waitTask(t, customer, taskID, "cancelled", "authorized")

	e.startRelay(t)
	e.waitTask(t, customer, taskID, "cancelled", "released")
	rows := e.ledger(t, paymentID)
	if got := countKind(rows, "hold", "customer_authorizations"); got != 1 {
		t.Errorf("hold postings = %d, want 1", got)
	}
	if got := countKind(rows, "void", ""); got != 1 {
		t.Errorf("void postings = %d, want 1; ledger %v", got, rows)
	}
	if n := e.openHolds(t, paymentID); n != 0 {
		t.Errorf("open holds = %d, want 0", n)
	}
	intents := e.objects(t, "payment_intent", "status", "canceled")
	found := false
	for _, pi := range intents {
		found = found || pi["id"] == intentID
	}
	if !found {
		t.Errorf("payment intent %s is not canceled at the emulator", intentID)
	}
}

func TestWebhookSavesAndRemovesCard(t *testing.T) {
	e := newWebhookEnv(t, webhookEnvOptions{noRelay: true})
	customer := e.token(t, "customer", e.id("user"))
	_, setup := e.call(t, http.MethodPost, "/v1/billing/setup", customer, map[string]any{})
	seti := setup["setupIntentId"].(string)

	// The client confirms with Stripe and never calls confirm-setup.
	e.stripeCall(t, http.MethodPost, "/v1/setup_intents/"+seti+"/confirm", map[string]string{"payment_method": "pm_card_visa"})
	var cards map[string]any
	waitFor(t, "the card saved from setup_intent.succeeded", func() bool {
		_, cards = e.call(t, http.MethodGet, "/v1/billing/payment-methods", customer, nil)
		return len(cards["paymentMethods"].([]any)) == 1
	})
	card := cards["paymentMethods"].([]any)[0].(map[string]any)
	if card["isDefault"] != true || cards["defaultPaymentMethodId"] != card["id"] {
		t.Errorf("saved card %v is not the default (%v)", card, cards["defaultPaymentMethodId"])
	}

	// Detached at Stripe, for example in the Dashboard.
	e.stripeCall(t, http.MethodPost, "/v1/payment_methods/"+card["id"].(string)+"/detach", nil)
	waitFor(t, "the card removed after payment_method.detached", func() bool {
		_, cards = e.call(t, http.MethodGet, "/v1/billing/payment-methods", customer, nil)
		return len(cards["paymentMethods"].([]any)) == 0
	})
	if cards["defaultPaymentMethodId"] != nil {
		t.Errorf("default card = %v after its removal, want none", cards["defaultPaymentMethodId"])
	}
}
