package main

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestLogsCarryIDsNotSecrets runs a scenario at debug level with the real
// binary and checks the captured logs of the service and the emulator. Every
// line is JSON and the ids an operator searches by are fields. No token,
// client secret, webhook secret or Stripe key appears anywhere.
func TestLogsCarryIDsNotSecrets(t *testing.T) {
	random := make([]byte, 12)
	if _, err := rand.Read(random); err != nil {
		t.Fatal(err)
	}
	webhookSecret := "whsec_ops_" + hex.EncodeToString(random)
	e := newOpsEnv(t, "LOG_LEVEL=debug", "STRIPE_WEBHOOK_SECRET="+webhookSecret)
	e.env = append(e.env, "EMULATOR_WEBHOOK_URL="+e.apiURL+"/v1/stripe/webhooks")
	emulator := e.startEmulator()
	server := e.startServer()

	// secrets maps each value that must never be logged to what it is.
	secrets := map[string]string{
		webhookSecret:     "webhook secret",
		emulatorSecretKey: "the service's Stripe key",
		opsEmulatorKey:    "the browser-side Stripe key",
	}
	mint := func(role, subject string) string {
		token := e.mintToken(role, subject)
		secrets[token] = role + " token"
		return token
	}
	addClientSecret := func(what, clientSecret string) {
		if clientSecret == "" {
			t.Fatalf("%s: no clientSecret returned", what)
		}
		secrets[clientSecret] = what + " client secret"
		// The part after _secret_ alone is enough to confirm the intent.
		if _, part, ok := strings.Cut(clientSecret, "_secret_"); ok {
			secrets[part] = what + " client secret suffix"
		}
	}

	admin := mint("admin", "ops")
	auditor := mint("auditor", "audit_team")
	saver := mint("customer", "user_saver")
	newcomer := mint("customer", "user_newcomer")
	declined := mint("customer", "user_declined")
	agent := mint("agent", "agtLogs")

	e.createAgent(admin, "agtLogs", 100)
	addClientSecret("SetupIntent", e.saveCard(saver, "pm_card_visa"))
	addClientSecret("SetupIntent", e.saveCard(declined, "pm_card_chargeCustomerFail"))

	task := e.createTask(saver, "agtLogs", 100)
	taskID, paymentID := task.str("id"), task.str("payment.id")
	intentID := task.str("payment.stripePaymentIntentId")

	// No saved card: the customer gets a PaymentIntent to confirm.
	pending := e.createTask(newcomer, "agtLogs", 100)
	addClientSecret("PaymentIntent", pending.str("payment.clientSecret"))
	// A declined card also hands the customer a client secret.
	refused := e.createTask(declined, "agtLogs", 100)
	addClientSecret("declined PaymentIntent", refused.str("payment.clientSecret"))

	// One failed Stripe call, so the gateway's warning path is logged too.
	e.emulator(http.MethodPost, "/_emulator/faults", map[string]any{
		"method": "POST", "path": "/v1/payment_intents/*/capture", "status": 500, "rate": 1, "count": 1,
	})
	e.call(http.MethodPost, "/v1/tasks/"+taskID+"/complete", agent, map[string]any{}).expect(t, http.StatusOK, "complete")
	e.waitPayment(saver, taskID, "transferred")
	e.call(http.MethodGet, "/v1/ledger/entries?taskId="+taskID, auditor, nil).expect(t, http.StatusOK, "ledger entries")
	e.call(http.MethodGet, "/v1/tasks", agent, nil).expect(t, http.StatusOK, "agent task list")
	// The emulator signs its events with the same secret, so the service
	// verifies and records each of them.
	e.waitFor("Stripe events to arrive", 20*time.Second, func() bool {
		return e.scrape().sum("taskpod_billing_webhooks_received_total") >= 3
	})
	s := e.scrape()
	if rejected := s.sumWhere("taskpod_billing_webhooks_received_total", `type="unverified"`); rejected != 0 {
		t.Errorf("%v webhook deliveries rejected, want 0", rejected)
	}

	server.stop(10 * time.Second)
	emulator.stop(10 * time.Second)
	logs := map[string]string{"serve": server.out.String(), "stripe-emulator": emulator.out.String()}

	for name, log := range logs {
		for value, what := range secrets {
			if strings.Contains(log, value) {
				t.Errorf("billingd %s logged the %s", name, what)
			}
		}
	}

	var lines []map[string]any
	for i, line := range strings.Split(strings.TrimSpace(logs["serve"]), "\n") {
		var fields map[string]any
		if err := json.Unmarshal([]byte(line), &fields); err != nil {
			t.Errorf("serve log line %d is not JSON: %q", i+1, line)
			continue
		}
		lines = append(lines, fields)
	}
	has := func(want map[string]string) bool {
		for _, fields := range lines {
			matched := true
			for k, v := range want {
				if fields[k] != v {
					matched = false
					break
				}
			}
			if matched {
				return true
			}
		}
		return false
	}
	if !has(map[string]string{"task_id": taskID, "payment_id": paymentID}) {
		t.Errorf("no log line has task_id %s with payment_id %s", taskID, paymentID)
	}
	// The failed capture's warning names the PaymentIntent.
	if !has(map[string]string{"payment_intent_id": intentID}) {
		t.Errorf("no log line has the Stripe payment_intent_id %s", intentID)
	}
	requestLines := 0
	for _, fields := range lines {
		if fields["msg"] != "request" {
			continue
		}
		requestLines++
		if id, _ := fields["request_id"].(string); !strings.HasPrefix(id, "req_") {
			t.Errorf("request log line without a request_id: %v", fields)
		}
	}
	if requestLines == 0 {
		t.Errorf("no request log lines")
	}
}
