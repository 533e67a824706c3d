package main

import (
	"net/http"
	"testing"
	"time"
)

// TestMetricsScenarioCounts runs a scenario against the real binary and
// checks the exact values that /metrics reports: two customers save cards,
// three tasks complete (one with a partial capture, one whose first capture
// Stripe fails), one fails and one is cancelled.
func TestMetricsScenarioCounts(t *testing.T) {
	e := newOpsEnv(t)
	e.startEmulator()
	e.startServer()

	admin := e.mintToken("admin", "ops")
	alice := e.mintToken("customer", "user_alice")
	bob := e.mintToken("customer", "user_bob")
	cheap := e.mintToken("agent", "agtCheap")
	dear := e.mintToken("agent", "agtDear")

	e.createAgent(admin, "agtCheap", 100)
	e.createAgent(admin, "agtDear", 300)
	e.saveCard(alice, "pm_card_visa")
	e.saveCard(bob, "pm_card_mastercard")

	// A price above the customer's maximum is rejected before any payment.
	e.call(http.MethodPost, "/v1/tasks", alice, map[string]any{"title": "too dear", "agentId": "agtDear", "maxPriceCents": 100}).
		expect(t, http.StatusUnprocessableEntity, "task above max price")

	// An unknown path is counted under the catch-all route, not its own path.
	e.call(http.MethodGet, "/v1/no-such-route/task_123", alice, nil).expect(t, http.StatusNotFound, "unknown route")

	full := e.createTask(alice, "agtCheap", 100).str("id")
	partial := e.createTask(bob, "agtDear", 300).str("id")
	retried := e.createTask(alice, "agtDear", 300).str("id")
	failed := e.createTask(bob, "agtCheap", 100).str("id")
	cancelled := e.createTask(alice, "agtDear", 300).str("id")

	e.call(http.MethodPost, "/v1/tasks/"+full+"/complete", cheap, map[string]any{}).expect(t, http.StatusOK, "complete")
	e.waitPayment(alice, full, "transferred")
	e.call(http.MethodPost, "/v1/tasks/"+partial+"/complete", dear, map[string]any{"finalAmountCents": 250}).
		expect(t, http.StatusOK, "complete partially")
	e.waitPayment(bob, partial, "transferred")

	// Stripe answers the next capture with a 500 and no effect; the relay
	// retries it with a new message.
	e.emulator(http.MethodPost, "/_emulator/faults", map[string]any{
		"method": "POST", "path": "/v1/payment_intents/*/capture", "status": 500, "rate": 1, "count": 1,
	})
	e.call(http.MethodPost, "/v1/tasks/"+retried+"/complete", dear, map[string]any{}).expect(t, http.StatusOK, "complete")
	e.waitPayment(alice, retried, "transferred")

	e.call(http.MethodPost, "/v1/tasks/"+failed+"/fail", cheap, map[string]any{}).expect(t, http.StatusOK, "fail")
	e.call(http.MethodPost, "/v1/tasks/"+cancelled+"/cancel", alice, nil).expect(t, http.StatusOK, "cancel")
	e.waitPayment(bob, failed, "released")
	e.waitPayment(alice, cancelled, "released")

	// A payment's state commits before the relay acknowledges its message,
	// so wait for the outbox to empty before reading the counters.
	var s opsScrape
	e.waitFor("the outbox to drain", 20*time.Second, func() bool {
		s = e.scrape()
		return s.values["taskpod_billing_outbox_pending_messages{}"] == 0
	})

	checks := []struct {
		name   string
		labels []string
		want   float64
	}{
		{"taskpod_billing_http_requests_total", []string{"route", "POST /v1/tasks", "method", "POST", "status_class", "2xx"}, 5},
		{"taskpod_billing_http_requests_total", []string{"route", "POST /v1/tasks", "method", "POST", "status_class", "4xx"}, 1},
		{"taskpod_billing_http_requests_total", []string{"route", "POST /v1/tasks/{id}/complete", "method", "POST", "status_class", "2xx"}, 3},
		{"taskpod_billing_http_requests_total", []string{"route", "POST /v1/tasks/{id}/fail", "method", "POST", "status_class", "2xx"}, 1},
		{"taskpod_billing_http_requests_total", []string{"route", "POST /v1/tasks/{id}/cancel", "method", "POST", "status_class", "2xx"}, 1},
		{"taskpod_billing_http_requests_total", []string{"route", "POST /v1/billing/setup", "method", "POST", "status_class", "2xx"}, 2},
		{"taskpod_billing_http_requests_total", []string{"route", "POST /v1/billing/confirm-setup", "method", "POST", "status_class", "2xx"}, 2},
		{"taskpod_billing_http_requests_total", []string{"route", "POST /v1/agents", "method", "POST", "status_class", "2xx"}, 2},
		{"taskpod_billing_http_requests_total", []string{"route", "/", "method", "GET", "status_class", "4xx"}, 1},
		{"taskpod_billing_http_request_duration_seconds_count", []string{"route", "POST /v1/tasks", "method", "POST"}, 6},

		{"taskpod_billing_payment_transitions_total", []string{"to", "authorized"}, 5},
		{"taskpod_billing_payment_transitions_total", []string{"to", "captured"}, 3},
		{"taskpod_billing_payment_transitions_total", []string{"to", "transferred"}, 3},
		{"taskpod_billing_payment_transitions_total", []string{"to", "released"}, 2},
		{"taskpod_billing_payment_transitions_total", []string{"to", "failed"}, 0},
		{"taskpod_billing_payment_transitions_total", []string{"to", "expired"}, 0},
		{"taskpod_billing_payment_transitions_total", []string{"to", "refunded"}, 0},
		// Holds: 100 + 300 + 300 + 100 + 300. Captures: 100 + 250 + 300.
		// Agent shares after the 2.5 % fee: 97 + 244 + 292. Releases: 100 + 300.
		{"taskpod_billing_payment_amount_minor_units_total", []string{"to", "authorized", "currency", "usd"}, 1100},
		{"taskpod_billing_payment_amount_minor_units_total", []string{"to", "captured", "currency", "usd"}, 650},
		{"taskpod_billing_payment_amount_minor_units_total", []string{"to", "transferred", "currency", "usd"}, 633},
		{"taskpod_billing_payment_amount_minor_units_total", []string{"to", "released", "currency", "usd"}, 400},
		{"taskpod_billing_payment_amount_minor_units_total", []string{"to", "refunded", "currency", "usd"}, 0},

		{"taskpod_billing_stripe_requests_total", []string{"operation", "create_customer", "outcome", "success"}, 2},
		{"taskpod_billing_stripe_requests_total", []string{"operation", "create_setup_intent", "outcome", "success"}, 2},
		{"taskpod_billing_stripe_requests_total", []string{"operation", "authorize", "outcome", "success"}, 5},
		{"taskpod_billing_stripe_requests_total", []string{"operation", "capture", "outcome", "success"}, 3},
		{"taskpod_billing_stripe_requests_total", []string{"operation", "capture", "outcome", "api_error"}, 1},
		{"taskpod_billing_stripe_requests_total", []string{"operation", "create_transfer", "outcome", "success"}, 3},
		{"taskpod_billing_stripe_requests_total", []string{"operation", "cancel_payment_intent", "outcome", "success"}, 2},
		{"taskpod_billing_stripe_requests_total", []string{"operation", "authorize", "outcome", "card_error"}, 0},

		{"taskpod_billing_outbox_relay_attempts_total", []string{"step", "authorize", "outcome", "success"}, 5},
		{"taskpod_billing_outbox_relay_attempts_total", []string{"step", "capture", "outcome", "success"}, 3},
		{"taskpod_billing_outbox_relay_attempts_total", []string{"step", "capture", "outcome", "retry"}, 1},
		{"taskpod_billing_outbox_relay_attempts_total", []string{"step", "transfer", "outcome", "success"}, 3},
		{"taskpod_billing_outbox_relay_attempts_total", []string{"step", "release", "outcome", "success"}, 2},
		{"taskpod_billing_outbox_relay_attempts_total", []string{"step", "transfer", "outcome", "retry"}, 0},
		{"taskpod_billing_outbox_relay_attempts_total", []string{"step", "release", "outcome", "retry"}, 0},
		{"taskpod_billing_outbox_relay_attempts_total", []string{"step", "capture", "outcome", "quarantined"}, 0},
		{"taskpod_billing_relay_handler_execution_time_seconds_count", []string{"handler_name", "payment_steps", "success", "false"}, 0},

		{"taskpod_billing_outbox_pending_messages", nil, 0},
		{"taskpod_billing_outbox_oldest_pending_age_seconds", nil, 0},
		{"taskpod_billing_outbox_quarantined_messages", nil, 0},
		{"taskpod_billing_ledger_imbalance_minor_units", []string{"currency", "usd"}, 0},
		{"taskpod_billing_holds_near_expiry", nil, 0},
	}
	for _, c := range checks {
		if got := s.value(t, c.name, c.labels...); got != c.want {
			t.Errorf("%s %v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}

	// The relay may meet an authorize message while the API request that
	// wrote it still holds the step's lease, and retries it; how often
	// depends on timing. Watermill's own middleware must still have seen
	// exactly the messages the relay counted.
	handled := s.value(t, "taskpod_billing_relay_handler_execution_time_seconds_count", "handler_name", "payment_steps", "success", "true")
	if relayed := s.sum("taskpod_billing_outbox_relay_attempts_total"); handled != relayed || handled < 14 {
		t.Errorf("Watermill handled %v messages and the relay counted %v, want equal and at least 14", handled, relayed)
	}
}
