package http_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/taskpod/billing/domain"
)

// expiryWindow is past the emulator's capture window for off-session holds
// (4 days 18 hours, as Stripe documents for Visa merchant-initiated holds).
const expiryWindow = 5 * 24 * 60 * 60

// authorizedTask saves a card and creates a task whose hold is placed
// off-session; it returns the customer token, task, payment and intent ids.
func (e *webhookEnv) authorizedTask(t *testing.T, price int64) (customer, taskID, paymentID, intentID, agent string) {
	t.Helper()
	admin := e.token(t, "admin", "ops")
	agent, _ = e.paidAgent(t, admin, price)
	customer = e.token(t, "customer", e.id("user"))
	e.saveCard(t, customer, "pm_card_visa")
	taskID = e.createTask(t, customer, agent, price)
	task := e.waitTask(t, customer, taskID, "matched", "authorized")
	p := paymentOfTask(task)
	return customer, taskID, p["id"].(string), p["stripePaymentIntentId"].(string), agent
}

// moveClocks moves the scheduler's clock and the emulator's to at.
func (e *webhookEnv) moveClocks(t *testing.T, at time.Time) {
	t.Helper()
	e.clock.set(at)
	e.control(t, http.MethodPost, "/_emulator/clock/advance", map[string]any{"seconds": int64(time.Until(at).Seconds())})
}

// liveHolds counts the customer's PaymentIntents holding money at Stripe.
func (e *webhookEnv) liveHolds(t *testing.T, paymentID string) int {
	t.Helper()
	n := 0
	for _, pi := range e.objects(t, "payment_intent", "status", "requires_capture") {
		if md, _ := pi["metadata"].(map[string]any); md["payment_id"] == paymentID {
			n++
		}
	}
	return n
}

func TestHoldExpiryFailsTaskWithVoid(t *testing.T) {
	e := newWebhookEnv(t, webhookEnvOptions{policy: domain.HoldExpiryFail})
	customer, taskID, paymentID, _, _ := e.authorizedTask(t, 100)

	e.control(t, http.MethodPost, "/_emulator/clock/advance", map[string]any{"seconds": expiryWindow})

	task := e.waitTask(t, customer, taskID, "failed", "released")
	if got := paymentOfTask(task)["failureReason"]; got != "authorization expired before capture" {
		t.Errorf("failureReason = %v, want the expiry", got)
	}
	rows := e.ledger(t, paymentID)
	if got := countKind(rows, "void", ""); got != 1 {
		t.Errorf("void postings = %d, want 1; ledger %v", got, rows)
	}
	if n := e.openHolds(t, paymentID); n != 0 {
		t.Errorf("open holds = %d, want 0", n)
	}
	if n := e.liveHolds(t, paymentID); n != 0 {
		t.Errorf("live holds at Stripe = %d, want 0", n)
	}
}

func TestHoldExpiryReauthorizesOpenTask(t *testing.T) {
	e := newWebhookEnv(t, webhookEnvOptions{policy: domain.HoldExpiryReauthorize})
	customer, taskID, paymentID, oldIntent, agent := e.authorizedTask(t, 100)

	e.control(t, http.MethodPost, "/_emulator/clock/advance", map[string]any{"seconds": expiryWindow})

	var task map[string]any
	waitFor(t, "a new hold", func() bool {
		task = e.task(t, customer, taskID)
		p := paymentOfTask(task)
		return p["status"] == "authorized" && p["stripePaymentIntentId"] != oldIntent
	})
	if task["status"] != "matched" {
		t.Errorf("task status = %v, want matched", task["status"])
	}
	rows := e.ledger(t, paymentID)
	if got := countKind(rows, "hold", "customer_authorizations"); got != 2 {
		t.Errorf("hold postings = %d, want 2 (expired and new)", got)
	}
	if got := countKind(rows, "void", ""); got != 1 {
		t.Errorf("void postings = %d, want 1", got)
	}
	if n := e.openHolds(t, paymentID); n != 1 {
		t.Errorf("open holds = %d, want 1", n)
	}
	if n := e.liveHolds(t, paymentID); n != 1 {
		t.Errorf("live holds at Stripe = %d, want 1", n)
	}

	agentToken := e.token(t, "agent", agent)
	if status, body := e.call(t, http.MethodPost, "/v1/tasks/"+taskID+"/complete", agentToken, map[string]any{}); status != http.StatusOK {
		t.Fatalf("complete: %d %v", status, body)
	}
	task = e.waitTask(t, customer, taskID, "completed", "transferred")
	if got := paymentOfTask(task)["capturedAmountCents"]; got != float64(100) {
		t.Errorf("captured = %v, want 100", got)
	}
}

func TestCompletionAfterExpiryNeedsNewHold(t *testing.T) {
	cases := []struct {
		policy      domain.HoldExpiryPolicy
		payment     string
		captured    float64
		newIntent   bool
		liveHolds   int
		transferred bool
	}{
		{policy: domain.HoldExpiryReauthorize, payment: "transferred", captured: 100, newIntent: true},
		{policy: domain.HoldExpiryFail, payment: "released", captured: 0},
	}
	for _, tc := range cases {
		t.Run(string(tc.policy), func(t *testing.T) {
			e := newWebhookEnv(t, webhookEnvOptions{policy: tc.policy, noRelay: true})
			customer, taskID, paymentID, oldIntent, agent := e.authorizedTask(t, 100)

			// The capture is queued but does not run before the hold expires.
			agentToken := e.token(t, "agent", agent)
			if status, body := e.call(t, http.MethodPost, "/v1/tasks/"+taskID+"/complete", agentToken, map[string]any{}); status != http.StatusOK {
				t.Fatalf("complete: %d %v", status, body)
			}
			e.control(t, http.MethodPost, "/_emulator/clock/advance", map[string]any{"seconds": expiryWindow})
			waitFor(t, "the expiry event applied", func() bool {
				return e.scalar(t, `SELECT status FROM stripe_events WHERE type = 'payment_intent.canceled'`) == "processed"
			})
			e.startRelay(t)

			task := e.waitTask(t, customer, taskID, "completed", tc.payment)
			p := paymentOfTask(task)
			if p["capturedAmountCents"] != tc.captured {
				t.Errorf("captured = %v, want %v", p["capturedAmountCents"], tc.captured)
			}
			if tc.newIntent && p["stripePaymentIntentId"] == oldIntent {
				t.Errorf("captured the expired intent %s", oldIntent)
			}
			rows := e.ledger(t, paymentID)
			if got := balance(rows, "agent_payable:"+agent); got != 0 {
				t.Errorf("agent payable = %d, want 0", got)
			}
			if n := e.openHolds(t, paymentID); n != 0 {
				t.Errorf("open holds = %d, want 0", n)
			}
		})
	}
}

func TestHoldRenewalKeepsOneLiveHold(t *testing.T) {
	e := newWebhookEnv(t, webhookEnvOptions{policy: domain.HoldExpiryReauthorize})
	customer, taskID, paymentID, oldIntent, _ := e.authorizedTask(t, 100)
	deadline, err := time.Parse(time.RFC3339, paymentOfTask(e.task(t, customer, taskID))["captureBefore"].(string))
	if err != nil {
		t.Fatalf("parse captureBefore: %v", err)
	}

	// The scheduler and Stripe both move to 23 hours before the deadline.
	e.moveClocks(t, deadline.Add(-23*time.Hour))
	res, err := e.expiry.Sweep(context.Background())
	if err != nil {
		t.Fatalf("sweep: %v", err)
	}
	if res.HoldsRenewed != 1 {
		t.Fatalf("holds renewed = %d, want 1", res.HoldsRenewed)
	}

	waitFor(t, "the replaced hold released", func() bool {
		return e.scalar(t, `SELECT released_at::text FROM replaced_holds WHERE payment_intent_id = $1`, oldIntent) != ""
	})
	task := e.task(t, customer, taskID)
	p := paymentOfTask(task)
	if task["status"] != "matched" || p["status"] != "authorized" {
		t.Fatalf("task %v with payment %v, want matched and authorized", task["status"], p["status"])
	}
	if p["stripePaymentIntentId"] == oldIntent {
		t.Errorf("payment still on the old intent %s", oldIntent)
	}
	if n := e.liveHolds(t, paymentID); n != 1 {
		t.Errorf("live holds at Stripe = %d, want 1", n)
	}
	if n := e.openHolds(t, paymentID); n != 1 {
		t.Errorf("open holds in the ledger = %d, want 1", n)
	}

	// A second sweep at the same time finds nothing to renew.
	res, err = e.expiry.Sweep(context.Background())
	if err != nil || res.HoldsRenewed != 0 {
		t.Errorf("second sweep renewed %d, err %v; want 0", res.HoldsRenewed, err)
	}
}

func TestHoldRenewalWithoutCardFailsTask(t *testing.T) {
	e := newWebhookEnv(t, webhookEnvOptions{policy: domain.HoldExpiryReauthorize})
	customer, taskID, paymentID, _, _ := e.authorizedTask(t, 100)
	deadline, _ := time.Parse(time.RFC3339, paymentOfTask(e.task(t, customer, taskID))["captureBefore"].(string))
	_, cards := e.call(t, http.MethodGet, "/v1/billing/payment-methods", customer, nil)
	card := cards["defaultPaymentMethodId"].(string)
	if status, body := e.call(t, http.MethodDelete, "/v1/billing/payment-methods/"+card, customer, nil); status != http.StatusNoContent {
		t.Fatalf("remove card: %d %v", status, body)
	}

	e.moveClocks(t, deadline.Add(-23*time.Hour))
	if _, err := e.expiry.Sweep(context.Background()); err != nil {
		t.Fatalf("sweep: %v", err)
	}
	e.waitTask(t, customer, taskID, "failed", "released")
	if n := e.openHolds(t, paymentID); n != 0 {
		t.Errorf("open holds = %d, want 0", n)
	}
	if n := e.liveHolds(t, paymentID); n != 0 {
		t.Errorf("live holds at Stripe = %d, want 0", n)
	}
}

func TestAbandonedPaymentCancelsTask(t *testing.T) {
	e := newWebhookEnv(t, webhookEnvOptions{})
	admin := e.token(t, "admin", "ops")
	agent, _ := e.paidAgent(t, admin, 100)
	customer := e.token(t, "customer", e.id("user"))
	taskID, _, intentID := e.pendingTask(t, customer, agent)

	e.clock.set(time.Now().Add(25 * time.Hour))
	res, err := e.expiry.Sweep(context.Background())
	if err != nil {
		t.Fatalf("sweep: %v", err)
	}
	if res.TasksAbandoned != 1 {
		t.Fatalf("tasks abandoned = %d, want 1", res.TasksAbandoned)
	}
	e.waitTask(t, customer, taskID, "cancelled", "released")
	waitFor(t, "the payment intent canceled", func() bool {
		for _, pi := range e.objects(t, "payment_intent", "status", "canceled") {
			if pi["id"] == intentID {
				return true
			}
		}
		return false
	})
}
