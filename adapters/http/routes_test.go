package http_test

import (
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
)

// assertError checks that res is the single error envelope with the given
// status, code and param, and that its requestId is the Request-Id header.
func assertError(t *testing.T, res response, status int, code, param string) {
	t.Helper()
	if res.status != status {
		t.Errorf("status = %d, want %d; body %s", res.status, status, res.raw)
	}
	if len(res.body) != 1 {
		t.Errorf("top-level keys = %v, want only error", res.body)
	}
	env, ok := res.body["error"].(map[string]any)
	if !ok {
		t.Fatalf("no error object in %s", res.raw)
	}
	if got, _ := env["code"].(string); got != code {
		t.Errorf("error.code = %q, want %q; body %s", got, code, res.raw)
	}
	if got, _ := env["param"].(string); got != param {
		t.Errorf("error.param = %q, want %q; body %s", got, param, res.raw)
	}
	if got, _ := env["type"].(string); got == "" {
		t.Errorf("error.type is empty: %s", res.raw)
	}
	if got, _ := env["message"].(string); got == "" {
		t.Errorf("error.message is empty: %s", res.raw)
	}
	requestID, _ := env["requestId"].(string)
	if !strings.HasPrefix(requestID, "req_") || requestID != res.requestID {
		t.Errorf("error.requestId = %q, Request-Id header = %q; want the same req_ id", requestID, res.requestID)
	}
}

// ---------------------------------------------------------------- shapes

func TestCardRoutesShapes(t *testing.T) {
	w := newWorld(t)
	s := w.s

	setup := s.call(t, http.MethodPost, "/v1/billing/setup", w.customer, map[string]any{})
	if setup.status != http.StatusOK {
		t.Fatalf("setup: %d %s", setup.status, setup.raw)
	}
	seti, secret, cus := str(setup.body, "setupIntentId"), str(setup.body, "clientSecret"), str(setup.body, "customerId")
	if !strings.HasPrefix(seti, "seti_") || !strings.HasPrefix(secret, seti+"_secret_") || !strings.HasPrefix(cus, "cus_") {
		t.Errorf("setup = %s, want seti_, its client secret and cus_", setup.raw)
	}
	again := s.call(t, http.MethodPost, "/v1/billing/setup", w.customer, nil)
	if again.status != http.StatusOK || str(again.body, "customerId") != cus || str(again.body, "setupIntentId") == seti {
		t.Errorf("second setup = %d %s, want the same customer and a new setup intent", again.status, again.raw)
	}
	if n := len(s.emulatorObjects(t, "customer", map[string]string{"id": cus})); n > 1 {
		t.Errorf("emulator holds %d customers with id %s", n, cus)
	}

	s.emulatorCall(t, http.MethodPost, "/v1/setup_intents/"+seti+"/confirm", url.Values{"payment_method": {"pm_card_visa"}})
	confirm := s.call(t, http.MethodPost, "/v1/billing/confirm-setup", w.customer, map[string]any{"setupIntentId": seti})
	if confirm.status != http.StatusOK {
		t.Fatalf("confirm-setup: %d %s", confirm.status, confirm.raw)
	}
	visa := str(confirm.body, "id")
	if !strings.HasPrefix(visa, "pm_") || str(confirm.body, "brand") != "visa" || str(confirm.body, "last4") != "4242" ||
		num(confirm.body, "expMonth") < 1 || num(confirm.body, "expYear") < 2025 || confirm.body["isDefault"] != true {
		t.Errorf("confirm-setup = %s, want a visa 4242 card with expiry, default", confirm.raw)
	}

	master := str(w.saveCard(t, w.customer, "pm_card_mastercard").body, "id")
	list := s.call(t, http.MethodGet, "/v1/billing/payment-methods", w.customer, nil)
	if list.status != http.StatusOK || str(list.body, "defaultPaymentMethodId") != master {
		t.Fatalf("list = %d %s, want the last saved card as default", list.status, list.raw)
	}
	cards, _ := list.body["paymentMethods"].([]any)
	if len(cards) != 2 {
		t.Fatalf("paymentMethods = %v, want 2", cards)
	}
	for _, c := range cards {
		card := c.(map[string]any)
		for _, key := range []string{"id", "brand", "last4", "expMonth", "expYear", "isDefault"} {
			if _, ok := card[key]; !ok {
				t.Errorf("card %v has no %s", card, key)
			}
		}
		if (card["id"] == master) != (card["isDefault"] == true) {
			t.Errorf("card %v: isDefault must be true exactly for %s", card, master)
		}
	}

	set := s.call(t, http.MethodPut, "/v1/billing/default-payment-method", w.customer, map[string]any{"paymentMethodId": visa})
	if set.status != http.StatusOK || str(set.body, "defaultPaymentMethodId") != visa {
		t.Errorf("set default = %d %s, want visa as default", set.status, set.raw)
	}

	del := s.call(t, http.MethodDelete, "/v1/billing/payment-methods/"+visa, w.customer, nil)
	if del.status != http.StatusNoContent || len(del.raw) != 0 {
		t.Errorf("delete = %d %q, want 204 with no body", del.status, del.raw)
	}
	list = s.call(t, http.MethodGet, "/v1/billing/payment-methods", w.customer, nil)
	if cards, _ := list.body["paymentMethods"].([]any); len(cards) != 1 {
		t.Errorf("after delete: %s, want one card", list.raw)
	}
	if v, present := list.body["defaultPaymentMethodId"]; !present || v != nil {
		t.Errorf("defaultPaymentMethodId = %v (present %v), want null after removing the default", v, present)
	}
	pms := s.emulatorObjects(t, "payment_method", map[string]string{"customer": cus})
	for _, pm := range pms {
		if pm["id"] == visa {
			t.Errorf("the removed card %s is still attached to %s at Stripe", visa, cus)
		}
	}
}

func TestAutoPayTaskShape(t *testing.T) {
	w := newWorld(t)
	w.saveCard(t, w.customer, "pm_card_visa")

	res := w.createTask(t, w.customer, w.agentID, 100)
	if res.status != http.StatusCreated {
		t.Fatalf("create task: %d %s", res.status, res.raw)
	}
	if !strings.HasPrefix(str(res.body, "id"), "task_") || str(res.body, "status") != "matched" {
		t.Errorf("task = %s, want a matched task_", res.raw)
	}
	if str(res.body, "assignedAgent.id") != w.agentID || str(res.body, "assignedAgent.name") != w.agentName {
		t.Errorf("assignedAgent = %v, want {%s, %s}", res.body["assignedAgent"], w.agentID, w.agentName)
	}
	if !strings.HasPrefix(str(res.body, "payment.id"), "pay_") || num(res.body, "payment.amountCents") != 100 ||
		field(res.body, "payment.autoCharged") != true {
		t.Errorf("payment = %v, want pay_ with amountCents 100 and autoCharged true", res.body["payment"])
	}
	if str(res.body, "payment.status") != "authorized" || str(res.body, "payment.currency") != "usd" {
		t.Errorf("payment = %v, want authorized in usd", res.body["payment"])
	}
	if _, has := res.body["payment"].(map[string]any)["clientSecret"]; has {
		t.Errorf("an auto-charged payment exposes a client secret: %v", res.body["payment"])
	}

	pi := str(res.body, "payment.stripePaymentIntentId")
	intents := w.s.emulatorObjects(t, "payment_intent", map[string]string{"id": pi})
	if len(intents) != 1 {
		t.Fatalf("emulator intents with id %s: %d", pi, len(intents))
	}
	intent := intents[0]
	if intent["status"] != "requires_capture" || num(intent, "amount") != 100 || intent["capture_method"] != "manual" ||
		intent["currency"] != "usd" {
		t.Errorf("intent = %v, want a manual-capture hold of 100 usd", intent)
	}

	agentView := w.s.call(t, http.MethodGet, "/v1/tasks/"+str(res.body, "id"), w.agent, nil)
	if agentView.status != http.StatusOK || str(agentView.body, "status") != "matched" {
		t.Errorf("agent's view = %d %s", agentView.status, agentView.raw)
	}
	list := w.s.call(t, http.MethodGet, "/v1/tasks", w.agent, nil)
	data, _ := list.body["data"].([]any)
	if list.status != http.StatusOK || len(data) != 1 || list.body["hasMore"] != false {
		t.Errorf("agent's list = %d %s, want one task and hasMore false", list.status, list.raw)
	}
}

func TestTaskWithoutCardHasClientSecret(t *testing.T) {
	w := newWorld(t)
	res := w.createTask(t, w.customer, w.agentID, 100)
	if res.status != http.StatusCreated {
		t.Fatalf("create task: %d %s", res.status, res.raw)
	}
	secret := str(res.body, "payment.clientSecret")
	if !strings.HasPrefix(secret, "pi_") || !strings.Contains(secret, "_secret_") {
		t.Errorf("payment.clientSecret = %q, want pi_..._secret_...", secret)
	}
	if str(res.body, "status") != "pending_payment" || str(res.body, "payment.status") != "requires_customer_action" ||
		field(res.body, "payment.autoCharged") != false || num(res.body, "payment.amountCents") != 100 {
		t.Errorf("task = %s, want pending_payment with a payment awaiting the customer", res.raw)
	}

	agentView := w.s.call(t, http.MethodGet, "/v1/tasks/"+str(res.body, "id"), w.agent, nil)
	if got := str(agentView.body, "payment.clientSecret"); got != "" {
		t.Errorf("the agent sees the customer's client secret %q", got)
	}
}

func TestDeclinedCardAsksCustomer(t *testing.T) {
	w := newWorld(t)
	w.saveCard(t, w.customer, "pm_card_chargeCustomerFail")
	res := w.createTask(t, w.customer, w.agentID, 100)
	if res.status != http.StatusCreated {
		t.Fatalf("create task: %d %s", res.status, res.raw)
	}
	if str(res.body, "status") != "pending_payment" || str(res.body, "payment.status") != "requires_customer_action" {
		t.Errorf("task = %s, want pending_payment awaiting the customer", res.raw)
	}
	if str(res.body, "payment.declineCode") == "" || str(res.body, "payment.clientSecret") == "" {
		t.Errorf("payment = %v, want a decline code and a client secret", res.body["payment"])
	}
	if field(res.body, "payment.autoCharged") != false {
		t.Errorf("autoCharged = %v, want false after a decline", field(res.body, "payment.autoCharged"))
	}
}

func TestFreeAgentTaskHasNullPayment(t *testing.T) {
	w := newWorld(t)
	free := w.s.uniqueID("free")
	w.createAgent(t, free, "Free AI", 0, "usd")

	res := w.createTask(t, w.customer, free, 0)
	if res.status != http.StatusCreated || str(res.body, "status") != "matched" {
		t.Fatalf("create free task: %d %s", res.status, res.raw)
	}
	if v, present := res.body["payment"]; !present || v != nil {
		t.Errorf("payment = %v (present %v), want null", v, present)
	}
}

// ---------------------------------------------------------------- money at the emulator

// ledgerOf returns the ledger entries of a task through the auditor API.
func (w *world) ledgerOf(t *testing.T, taskID string) []map[string]any {
	t.Helper()
	res := w.s.call(t, http.MethodGet, "/v1/ledger/entries?limit=500&taskId="+url.QueryEscape(taskID), w.auditor, nil)
	if res.status != http.StatusOK {
		t.Fatalf("ledger entries: %d %s", res.status, res.raw)
	}
	data, _ := res.body["data"].([]any)
	out := make([]map[string]any, 0, len(data))
	for _, d := range data {
		out = append(out, d.(map[string]any))
	}
	return out
}

// assertLedgerBalances checks that every ledger transaction of the
// entries sums to zero per currency, and returns the posted balance of
// each account in currency.
func assertLedgerBalances(t *testing.T, entries []map[string]any, currency string) map[string]int64 {
	t.Helper()
	sums := map[string]int64{}
	posted := map[string]int64{}
	for _, e := range entries {
		key := str(e, "transactionId") + " " + str(e, "currency")
		sums[key] += num(e, "amountCents")
		if e["pending"] != true && str(e, "currency") == currency {
			posted[str(e, "account")] += num(e, "amountCents")
		}
	}
	for key, sum := range sums {
		if sum != 0 {
			t.Errorf("ledger transaction %s sums to %d", key, sum)
		}
	}
	return posted
}

func kindsOf(entries []map[string]any) map[string]bool {
	kinds := map[string]bool{}
	for _, e := range entries {
		kinds[str(e, "kind")] = true
	}
	return kinds
}

func TestCompletionTransfersAgentShare(t *testing.T) {
	w := newWorld(t)
	w.saveCard(t, w.customer, "pm_card_visa")
	created := w.createTask(t, w.customer, w.agentID, 100)
	taskID, paymentID := str(created.body, "id"), str(created.body, "payment.id")

	done := w.s.call(t, http.MethodPost, "/v1/tasks/"+taskID+"/complete", w.agent, map[string]any{})
	if done.status != http.StatusOK || str(done.body, "status") != "completed" {
		t.Fatalf("complete: %d %s", done.status, done.raw)
	}

	p := w.waitForPayment(t, w.customer, paymentID, "transferred")
	captured, fee, share := num(p, "capturedAmountCents"), num(p, "platformFeeCents"), num(p, "agentAmountCents")
	if captured != 100 || fee != 3 || share != 97 {
		t.Errorf("captured %d fee %d agent %d, want 100/3/97", captured, fee, share)
	}

	transfers := w.s.emulatorObjects(t, "transfer", map[string]string{"transfer_group": taskID})
	if len(transfers) != 1 {
		t.Fatalf("emulator transfers in group %s: %d, want 1", taskID, len(transfers))
	}
	tr := transfers[0]
	if num(tr, "amount") != captured-fee || tr["currency"] != "usd" || str(tr, "id") != str(p, "stripeTransferId") {
		t.Errorf("transfer = %v, want %d usd recorded as %s", tr, captured-fee, str(p, "stripeTransferId"))
	}
	if str(tr, "destination") != "acct_1"+strings.ReplaceAll(w.agentID, "_", "") {
		t.Errorf("transfer destination = %v", tr["destination"])
	}
	intent := w.s.emulatorObjects(t, "payment_intent", map[string]string{"id": str(p, "stripePaymentIntentId")})[0]
	if intent["status"] != "succeeded" || num(intent, "amount_received") != 100 {
		t.Errorf("intent = %v, want succeeded with 100 received", intent)
	}
	if src := str(tr, "source_transaction"); src == "" || src != str(intent, "latest_charge") {
		t.Errorf("transfer source %q, want the intent's charge %q", src, str(intent, "latest_charge"))
	}

	entries := w.ledgerOf(t, taskID)
	kinds := kindsOf(entries)
	for _, k := range []string{"hold", "capture", "settlement", "transfer"} {
		if !kinds[k] {
			t.Errorf("ledger of the task has no %s entry; kinds %v", k, kinds)
		}
	}
	posted := assertLedgerBalances(t, entries, "usd")
	if posted["customer_authorizations"] != 0 || posted["agent_payable:"+w.agentID] != 0 || posted["platform_fee_revenue"] != -3 {
		t.Errorf("posted balances = %v, want authorization and payable settled and fee revenue -3", posted)
	}
	stripeFee := posted["stripe_fee_expense"]
	if stripeFee <= 0 || posted["platform_cash"] != 100-stripeFee-97 {
		t.Errorf("platform cash %d with Stripe fee %d, want %d", posted["platform_cash"], stripeFee, 100-stripeFee-97)
	}
}

func TestPartialCompletionCapturesLess(t *testing.T) {
	w := newWorld(t)
	w.saveCard(t, w.customer, "pm_card_visa")
	created := w.createTask(t, w.customer, w.otherAgentID, 300)
	taskID, paymentID := str(created.body, "id"), str(created.body, "payment.id")

	done := w.s.call(t, http.MethodPost, "/v1/tasks/"+taskID+"/complete", w.otherAgent, map[string]any{"finalAmountCents": 120})
	if done.status != http.StatusOK {
		t.Fatalf("complete: %d %s", done.status, done.raw)
	}
	p := w.waitForPayment(t, w.customer, paymentID, "transferred")
	if num(p, "capturedAmountCents") != 120 || num(p, "platformFeeCents") != 3 || num(p, "agentAmountCents") != 117 {
		t.Errorf("payment = %v, want 120 captured, fee 3, agent 117", p)
	}
	transfers := w.s.emulatorObjects(t, "transfer", map[string]string{"transfer_group": taskID})
	if len(transfers) != 1 || num(transfers[0], "amount") != 117 {
		t.Errorf("transfers = %v, want one of 117", transfers)
	}
	intent := w.s.emulatorObjects(t, "payment_intent", map[string]string{"id": str(p, "stripePaymentIntentId")})[0]
	if num(intent, "amount_received") != 120 {
		t.Errorf("amount_received = %v, want 120 of the 300 held", intent["amount_received"])
	}
	posted := assertLedgerBalances(t, w.ledgerOf(t, taskID), "usd")
	if posted["customer_authorizations"] != 0 || posted["agent_payable:"+w.otherAgentID] != 0 {
		t.Errorf("posted balances = %v, want authorization and payable at zero", posted)
	}
}

func TestZeroDecimalCurrencyEndToEnd(t *testing.T) {
	w := newWorld(t)
	yen := w.s.uniqueID("yen")
	w.createAgent(t, yen, "Yen AI", 1000, "jpy")
	w.saveCard(t, w.customer, "pm_card_visa")

	created := w.createTask(t, w.customer, yen, 1000)
	if created.status != http.StatusCreated || str(created.body, "payment.currency") != "jpy" || num(created.body, "payment.amountCents") != 1000 {
		t.Fatalf("create jpy task: %d %s", created.status, created.raw)
	}
	intent := w.s.emulatorObjects(t, "payment_intent", map[string]string{"id": str(created.body, "payment.stripePaymentIntentId")})[0]
	if num(intent, "amount") != 1000 || intent["currency"] != "jpy" {
		t.Errorf("intent = %v, want ¥1000 (not multiplied by 100)", intent)
	}

	yenToken := w.s.token(t, "agent", yen)
	taskID := str(created.body, "id")
	if res := w.s.call(t, http.MethodPost, "/v1/tasks/"+taskID+"/complete", yenToken, nil); res.status != http.StatusOK {
		t.Fatalf("complete: %d %s", res.status, res.raw)
	}
	p := w.waitForPayment(t, w.customer, str(created.body, "payment.id"), "transferred")
	if num(p, "platformFeeCents") != 25 || num(p, "agentAmountCents") != 975 {
		t.Errorf("payment = %v, want fee 25 and agent 975 yen", p)
	}
	transfers := w.s.emulatorObjects(t, "transfer", map[string]string{"transfer_group": taskID})
	if len(transfers) != 1 || num(transfers[0], "amount") != 975 || transfers[0]["currency"] != "jpy" {
		t.Errorf("transfers = %v, want ¥975", transfers)
	}
	assertLedgerBalances(t, w.ledgerOf(t, taskID), "jpy")
}

func TestUnreachableStripeDefersHoldToRelay(t *testing.T) {
	w := newWorld(t)
	w.saveCard(t, w.customer, "pm_card_visa")
	// The next PaymentIntent creation fails with a 500 and no effect; the
	// control API removes the rule after that one failure.
	w.s.emulatorControl(t, http.MethodPost, "/_emulator/faults",
		map[string]any{"method": "POST", "path": "/v1/payment_intents", "status": 500, "rate": 1, "count": 1})
	t.Cleanup(func() { w.s.emulatorControl(t, http.MethodDelete, "/_emulator/faults", nil) })

	res := w.createTask(t, w.customer, w.agentID, 100)
	if res.status != http.StatusAccepted || str(res.body, "payment.status") != "authorizing" || str(res.body, "status") != "pending_payment" {
		t.Fatalf("create task while Stripe fails: %d %s, want 202 with the payment authorizing", res.status, res.raw)
	}

	p := w.waitForPayment(t, w.customer, str(res.body, "payment.id"), "authorized")
	task := w.s.call(t, http.MethodGet, "/v1/tasks/"+str(res.body, "id"), w.customer, nil)
	if str(task.body, "status") != "matched" {
		t.Errorf("task after the relay placed the hold = %s, want matched", task.raw)
	}
	holds := 0
	for _, pi := range w.s.emulatorObjects(t, "payment_intent", nil) {
		if str(pi, "metadata.payment_id") == str(p, "id") {
			holds++
		}
	}
	if holds != 1 {
		t.Errorf("the emulator holds %d intents for payment %s, want 1", holds, str(p, "id"))
	}
}

// Completions and cancellations race over HTTP on one task. The row locks
// of PostgreSQL must let exactly one win, and only its money step may run.
func TestConcurrentCloseOverHTTP(t *testing.T) {
	w := newWorld(t)
	w.saveCard(t, w.customer, "pm_card_visa")
	created := w.createTask(t, w.customer, w.agentID, 100)
	taskID, paymentID := str(created.body, "id"), str(created.body, "payment.id")

	const workers = 12
	statuses := make([]int, workers)
	errs := make([]error, workers)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			path, token := "/v1/tasks/"+taskID+"/complete", w.agent
			if i%2 == 1 {
				path, token = "/v1/tasks/"+taskID+"/cancel", w.customer
			}
			req, err := http.NewRequest(http.MethodPost, w.s.api.URL+path, nil)
			if err != nil {
				errs[i] = err
				return
			}
			req.Header.Set("Authorization", "Bearer "+token)
			<-start
			res, err := w.s.client.Do(req)
			if err != nil {
				errs[i] = err
				return
			}
			res.Body.Close()
			statuses[i] = res.StatusCode
		}()
	}
	close(start)
	wg.Wait()

	wins := 0
	for i := range workers {
		switch {
		case errs[i] != nil:
			t.Errorf("worker %d: %v", i, errs[i])
		case statuses[i] == http.StatusOK:
			wins++
		case statuses[i] != http.StatusConflict:
			t.Errorf("worker %d: status %d, want 200 or 409", i, statuses[i])
		}
	}
	if wins != 1 {
		t.Fatalf("%d requests closed the task, want exactly 1", wins)
	}

	task := w.s.call(t, http.MethodGet, "/v1/tasks/"+taskID, w.customer, nil)
	final := "released"
	if str(task.body, "status") == "completed" {
		final = "transferred"
	}
	p := w.waitForPayment(t, w.customer, paymentID, final)
	intent := w.s.emulatorObjects(t, "payment_intent", map[string]string{"id": str(p, "stripePaymentIntentId")})[0]
	transfers := w.s.emulatorObjects(t, "transfer", map[string]string{"transfer_group": taskID})
	if final == "transferred" && (intent["status"] != "succeeded" || len(transfers) != 1) {
		t.Errorf("completed task: intent %v and %d transfers, want succeeded and 1", intent["status"], len(transfers))
	}
	if final == "released" && (intent["status"] != "canceled" || len(transfers) != 0) {
		t.Errorf("cancelled task: intent %v and %d transfers, want canceled and none", intent["status"], len(transfers))
	}
	assertLedgerBalances(t, w.ledgerOf(t, taskID), "usd")
}

func TestCancelReleasesHoldAtStripe(t *testing.T) {
	w := newWorld(t)
	w.saveCard(t, w.customer, "pm_card_visa")
	created := w.createTask(t, w.customer, w.agentID, 100)
	taskID, paymentID := str(created.body, "id"), str(created.body, "payment.id")

	res := w.s.call(t, http.MethodPost, "/v1/tasks/"+taskID+"/cancel", w.customer, nil)
	if res.status != http.StatusOK || str(res.body, "status") != "cancelled" {
		t.Fatalf("cancel: %d %s", res.status, res.raw)
	}
	p := w.waitForPayment(t, w.customer, paymentID, "released")
	if num(p, "capturedAmountCents") != 0 {
		t.Errorf("captured %d after cancel", num(p, "capturedAmountCents"))
	}
	intent := w.s.emulatorObjects(t, "payment_intent", map[string]string{"id": str(p, "stripePaymentIntentId")})[0]
	if intent["status"] != "canceled" || num(intent, "amount_received") != 0 {
		t.Errorf("intent = %v, want canceled with nothing received", intent)
	}
	if tr := w.s.emulatorObjects(t, "transfer", map[string]string{"transfer_group": taskID}); len(tr) != 0 {
		t.Errorf("transfers after cancel: %v", tr)
	}

	entries := w.ledgerOf(t, taskID)
	kinds := kindsOf(entries)
	if !kinds["hold"] || kinds["capture"] || kinds["transfer"] {
		t.Errorf("ledger kinds = %v, want the hold and no capture or transfer", kinds)
	}
	for account, balance := range assertLedgerBalances(t, entries, "usd") {
		if balance != 0 {
			t.Errorf("after cancel %s holds %d, want 0", account, balance)
		}
	}
}

func TestAgentFailReleasesHold(t *testing.T) {
	w := newWorld(t)
	w.saveCard(t, w.customer, "pm_card_visa")
	created := w.createTask(t, w.customer, w.agentID, 100)

	res := w.s.call(t, http.MethodPost, "/v1/tasks/"+str(created.body, "id")+"/fail", w.agent, map[string]any{"reason": "image unreadable"})
	if res.status != http.StatusOK || str(res.body, "status") != "failed" {
		t.Fatalf("fail: %d %s", res.status, res.raw)
	}
	p := w.waitForPayment(t, w.agent, str(created.body, "payment.id"), "released")
	intent := w.s.emulatorObjects(t, "payment_intent", map[string]string{"id": str(p, "stripePaymentIntentId")})[0]
	if intent["status"] != "canceled" {
		t.Errorf("intent status = %v, want canceled", intent["status"])
	}
}

// ---------------------------------------------------------------- 401 and 403

// route is one documented route with a valid request and a role that may
// not call it.
type route struct {
	method, path string
	body         any
	wrongRole    string
}

func documentedRoutes() []route {
	return []route{
		{http.MethodPost, "/v1/billing/setup", map[string]any{}, "agent"},
		{http.MethodPost, "/v1/billing/confirm-setup", map[string]any{"setupIntentId": "seti_x"}, "admin"},
		{http.MethodGet, "/v1/billing/payment-methods", nil, "auditor"},
		{http.MethodPut, "/v1/billing/default-payment-method", map[string]any{"paymentMethodId": "pm_x"}, "agent"},
		{http.MethodDelete, "/v1/billing/payment-methods/pm_x", nil, "admin"},
		{http.MethodPost, "/v1/tasks", map[string]any{"title": "t", "agentId": "a", "maxPriceCents": 1}, "agent"},
		{http.MethodGet, "/v1/tasks", nil, "auditor"},
		{http.MethodGet, "/v1/tasks/task_x", nil, "admin"},
		{http.MethodPost, "/v1/tasks/task_x/complete", map[string]any{}, "customer"},
		{http.MethodPost, "/v1/tasks/task_x/fail", map[string]any{}, "customer"},
		{http.MethodPost, "/v1/tasks/task_x/cancel", map[string]any{}, "agent"},
		{http.MethodGet, "/v1/payments/pay_x", nil, "auditor"},
		{http.MethodGet, "/v1/agents", nil, "agent"},
		{http.MethodPost, "/v1/agents", map[string]any{"name": "n", "priceCents": 0, "currency": "usd"}, "customer"},
		{http.MethodGet, "/v1/agents/a", nil, "customer"},
		{http.MethodPatch, "/v1/agents/a", map[string]any{"active": true}, "auditor"},
		{http.MethodGet, "/v1/ledger/entries", nil, "customer"},
	}
}

func TestEveryRouteRejectsMissingToken(t *testing.T) {
	w := newWorld(t)
	for _, r := range documentedRoutes() {
		t.Run(r.method+" "+r.path, func(t *testing.T) {
			assertError(t, w.s.call(t, r.method, r.path, "", r.body), http.StatusUnauthorized, "missing_token", "")
		})
	}
}

func TestEveryRouteRejectsUnknownToken(t *testing.T) {
	w := newWorld(t)
	for _, r := range documentedRoutes() {
		t.Run(r.method+" "+r.path, func(t *testing.T) {
			res := w.s.call(t, r.method, r.path, "tpk_NotARealTokenButWellFormed0000000000000", r.body)
			assertError(t, res, http.StatusUnauthorized, "invalid_token", "")
		})
	}
}

func TestEveryRouteRejectsWrongRole(t *testing.T) {
	w := newWorld(t)
	tokens := map[string]string{"customer": w.customer, "agent": w.agent, "admin": w.admin, "auditor": w.auditor}
	for _, r := range documentedRoutes() {
		t.Run(r.method+" "+r.path, func(t *testing.T) {
			assertError(t, w.s.call(t, r.method, r.path, tokens[r.wrongRole], r.body), http.StatusForbidden, "forbidden", "")
		})
	}
}

func TestMalformedAuthorizationHeader(t *testing.T) {
	w := newWorld(t)
	for _, header := range []string{"Basic dXNlcjpwYXNz", "Bearer", "Bearer    ", w.customer} {
		req, err := http.NewRequest(http.MethodGet, w.s.api.URL+"/v1/tasks", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", header)
		assertError(t, w.s.do(t, req), http.StatusUnauthorized, "missing_token", "")
	}
}

// ---------------------------------------------------------------- 400

// bodyRoute is a route that takes a JSON body, with a token allowed to
// call it and a body of the wrong type for one field.
type bodyRoute struct {
	method, path string
	token        string
	wrongType    string
	wrongParam   string
	wrongCode    string
}

func TestEveryBodyRouteRejectsBadJSON(t *testing.T) {
	w := newWorld(t)
	routes := []bodyRoute{
		{http.MethodPost, "/v1/billing/setup", w.customer, `[1]`, "", "invalid_json"},
		{http.MethodPost, "/v1/billing/confirm-setup", w.customer, `{"setupIntentId": 5}`, "setupIntentId", "invalid_type"},
		{http.MethodPut, "/v1/billing/default-payment-method", w.customer, `{"paymentMethodId": true}`, "paymentMethodId", "invalid_type"},
		{http.MethodPost, "/v1/tasks", w.customer, `{"title": "t", "agentId": "a", "maxPriceCents": "100"}`, "maxPriceCents", "invalid_type"},
		{http.MethodPost, "/v1/tasks/task_x/complete", w.agent, `{"finalAmountCents": "80"}`, "finalAmountCents", "invalid_type"},
		{http.MethodPost, "/v1/tasks/task_x/fail", w.agent, `{"reason": 5}`, "reason", "invalid_type"},
		{http.MethodPost, "/v1/tasks/task_x/cancel", w.customer, `"cancel"`, "", "invalid_json"},
		{http.MethodPost, "/v1/agents", w.admin, `{"name": "n", "priceCents": 1.5, "currency": "usd"}`, "priceCents", "invalid_type"},
		{http.MethodPatch, "/v1/agents/a", w.admin, `{"active": "yes"}`, "active", "invalid_type"},
	}
	for _, r := range routes {
		t.Run(r.method+" "+r.path, func(t *testing.T) {
			assertError(t, w.s.call(t, r.method, r.path, r.token, `{"title": `), http.StatusBadRequest, "invalid_json", "")
			assertError(t, w.s.call(t, r.method, r.path, r.token, `{"surprise": 1}`), http.StatusBadRequest, "unknown_field", "surprise")
			assertError(t, w.s.call(t, r.method, r.path, r.token, r.wrongType), http.StatusBadRequest, r.wrongCode, r.wrongParam)
			assertError(t, w.s.call(t, r.method, r.path, r.token, `{} {}`), http.StatusBadRequest, "invalid_json", "")

			req, err := http.NewRequest(r.method, w.s.api.URL+r.path, strings.NewReader(`{}`))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Authorization", "Bearer "+r.token)
			req.Header.Set("Content-Type", "text/plain")
			assertError(t, w.s.do(t, req), http.StatusUnsupportedMediaType, "unsupported_media_type", "")
		})
	}
}

func TestOversizedBodyIsRejected(t *testing.T) {
	w := newWorld(t)
	body := `{"title": "t", "description": "` + strings.Repeat("x", 70<<10) + `", "agentId": "a", "maxPriceCents": 1}`
	assertError(t, w.s.call(t, http.MethodPost, "/v1/tasks", w.customer, body), http.StatusRequestEntityTooLarge, "body_too_large", "")
}

func TestListRoutesRejectBadQuery(t *testing.T) {
	w := newWorld(t)
	cases := []struct {
		path, token, code, param string
	}{
		{"/v1/tasks?limit=abc", w.customer, "invalid_limit", "limit"},
		{"/v1/tasks?limit=0", w.agent, "invalid_limit", "limit"},
		{"/v1/tasks?limit=101", w.customer, "invalid_limit", "limit"},
		{"/v1/agents?limit=-1", w.admin, "invalid_limit", "limit"},
		{"/v1/ledger/entries?limit=501", w.auditor, "invalid_limit", "limit"},
		{"/v1/ledger/entries?startingAfter=bogus", w.auditor, "invalid_cursor", "startingAfter"},
		{"/v1/ledger/entries?endingBefore=le_0", w.auditor, "invalid_cursor", "endingBefore"},
	}
	for _, c := range cases {
		t.Run(c.path, func(t *testing.T) {
			assertError(t, w.s.call(t, http.MethodGet, c.path, c.token, nil), http.StatusBadRequest, c.code, c.param)
		})
	}
}

// ---------------------------------------------------------------- 404

func TestOtherCustomersObjectsAreNotFound(t *testing.T) {
	w := newWorld(t)
	card := str(w.saveCard(t, w.customer, "pm_card_visa").body, "id")
	created := w.createTask(t, w.customer, w.agentID, 100)
	taskID, paymentID := str(created.body, "id"), str(created.body, "payment.id")
	w.saveCard(t, w.other, "pm_card_mastercard")
	setup := w.s.call(t, http.MethodPost, "/v1/billing/setup", w.customer, nil)
	seti := str(setup.body, "setupIntentId")
	w.s.emulatorCall(t, http.MethodPost, "/v1/setup_intents/"+seti+"/confirm", url.Values{"payment_method": {"pm_card_visa"}})

	cases := []struct {
		name, method, path, token string
		body                      any
	}{
		{"get task", http.MethodGet, "/v1/tasks/" + taskID, w.other, nil},
		{"cancel task", http.MethodPost, "/v1/tasks/" + taskID + "/cancel", w.other, nil},
		{"get payment", http.MethodGet, "/v1/payments/" + paymentID, w.other, nil},
		{"get payment as other agent", http.MethodGet, "/v1/payments/" + paymentID, w.otherAgent, nil},
		{"complete as other agent", http.MethodPost, "/v1/tasks/" + taskID + "/complete", w.otherAgent, nil},
		{"fail as other agent", http.MethodPost, "/v1/tasks/" + taskID + "/fail", w.otherAgent, nil},
		{"remove card", http.MethodDelete, "/v1/billing/payment-methods/" + card, w.other, nil},
		{"default card", http.MethodPut, "/v1/billing/default-payment-method", w.other, map[string]any{"paymentMethodId": card}},
		{"confirm setup", http.MethodPost, "/v1/billing/confirm-setup", w.other, map[string]any{"setupIntentId": seti}},
		{"missing task", http.MethodGet, "/v1/tasks/task_missing", w.customer, nil},
		{"missing agent", http.MethodGet, "/v1/agents/no_such_agent", w.admin, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			assertError(t, w.s.call(t, c.method, c.path, c.token, c.body), http.StatusNotFound, "resource_missing", "")
		})
	}

	// Nothing the other callers tried changed the owner's objects.
	own := w.s.call(t, http.MethodGet, "/v1/tasks/"+taskID, w.customer, nil)
	if str(own.body, "status") != "matched" || str(own.body, "payment.status") != "authorized" {
		t.Errorf("owner's task = %s, want matched and authorized", own.raw)
	}
	list := w.s.call(t, http.MethodGet, "/v1/billing/payment-methods", w.customer, nil)
	if str(list.body, "defaultPaymentMethodId") != card {
		t.Errorf("owner's default = %s, want %s", list.raw, card)
	}
}

func TestUnknownRouteUsesEnvelope(t *testing.T) {
	w := newWorld(t)
	assertError(t, w.s.call(t, http.MethodGet, "/v1/nothing-here", w.customer, nil), http.StatusNotFound, "route_not_found", "")
}

// ---------------------------------------------------------------- 409 and 422

func TestValidationErrors(t *testing.T) {
	w := newWorld(t)
	w.saveCard(t, w.customer, "pm_card_visa")
	inactive := w.s.uniqueID("off")
	w.createAgent(t, inactive, "Off AI", 100, "usd")
	if res := w.s.call(t, http.MethodPatch, "/v1/agents/"+inactive, w.admin, map[string]any{"active": false}); res.status != http.StatusOK {
		t.Fatalf("deactivate agent: %d %s", res.status, res.raw)
	}
	unconfirmed := str(w.s.call(t, http.MethodPost, "/v1/billing/setup", w.customer, nil).body, "setupIntentId")

	cases := []struct {
		name, method, path, token string
		body                      any
		code, param               string
	}{
		{"price above max", http.MethodPost, "/v1/tasks", w.customer,
			map[string]any{"title": "t", "agentId": w.agentID, "maxPriceCents": 99}, "price_above_max", "maxPriceCents"},
		{"unknown agent", http.MethodPost, "/v1/tasks", w.customer,
			map[string]any{"title": "t", "agentId": "no_such_agent", "maxPriceCents": 100}, "agent_not_found", "agentId"},
		{"inactive agent", http.MethodPost, "/v1/tasks", w.customer,
			map[string]any{"title": "t", "agentId": inactive, "maxPriceCents": 100}, "agent_inactive", "agentId"},
		{"missing title", http.MethodPost, "/v1/tasks", w.customer,
			map[string]any{"agentId": w.agentID, "maxPriceCents": 100}, "missing_field", "title"},
		{"missing max price", http.MethodPost, "/v1/tasks", w.customer,
			map[string]any{"title": "t", "agentId": w.agentID}, "missing_field", "maxPriceCents"},
		{"unsupported currency", http.MethodPost, "/v1/agents", w.admin,
			map[string]any{"name": "n", "priceCents": 100, "currency": "eur", "stripeAccountId": "acct_1X"}, "unsupported_currency", "currency"},
		{"unknown currency", http.MethodPost, "/v1/agents", w.admin,
			map[string]any{"name": "n", "priceCents": 100, "currency": "xyz", "stripeAccountId": "acct_1X"}, "unsupported_currency", "currency"},
		{"price below minimum", http.MethodPost, "/v1/agents", w.admin,
			map[string]any{"name": "n", "priceCents": 49, "currency": "usd", "stripeAccountId": "acct_1X"}, "amount_too_small", "priceCents"},
		{"reprice below minimum", http.MethodPatch, "/v1/agents/" + w.agentID, w.admin,
			map[string]any{"priceCents": 10}, "amount_too_small", "priceCents"},
		{"paid agent without account", http.MethodPost, "/v1/agents", w.admin,
			map[string]any{"name": "n", "priceCents": 100, "currency": "usd"}, "missing_account", "stripeAccountId"},
		{"setup intent not confirmed", http.MethodPost, "/v1/billing/confirm-setup", w.customer,
			map[string]any{"setupIntentId": unconfirmed}, "setup_intent_not_succeeded", "setupIntentId"},
		{"setup intent id malformed", http.MethodPost, "/v1/billing/confirm-setup", w.customer,
			map[string]any{"setupIntentId": "pi_123"}, "invalid_id", "setupIntentId"},
		{"payment method id missing", http.MethodPut, "/v1/billing/default-payment-method", w.customer,
			map[string]any{}, "missing_field", "paymentMethodId"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			assertError(t, w.s.call(t, c.method, c.path, c.token, c.body), http.StatusUnprocessableEntity, c.code, c.param)
		})
	}

	agent := w.s.call(t, http.MethodGet, "/v1/agents/"+w.agentID, w.admin, nil)
	if num(agent.body, "priceCents") != 100 {
		t.Errorf("agent price after a rejected change = %v, want 100", agent.body["priceCents"])
	}
}

func TestFinalAmountOutsideHold(t *testing.T) {
	w := newWorld(t)
	w.saveCard(t, w.customer, "pm_card_visa")
	taskID := str(w.createTask(t, w.customer, w.agentID, 100).body, "id")
	path := "/v1/tasks/" + taskID + "/complete"

	assertError(t, w.s.call(t, http.MethodPost, path, w.agent, map[string]any{"finalAmountCents": 101}),
		http.StatusUnprocessableEntity, "amount_above_hold", "finalAmountCents")
	assertError(t, w.s.call(t, http.MethodPost, path, w.agent, map[string]any{"finalAmountCents": 49}),
		http.StatusUnprocessableEntity, "amount_too_small", "finalAmountCents")

	task := w.s.call(t, http.MethodGet, "/v1/tasks/"+taskID, w.customer, nil)
	if str(task.body, "status") != "matched" || str(task.body, "payment.status") != "authorized" {
		t.Errorf("task after rejected completions = %s, want matched and authorized", task.raw)
	}
}

func TestInvalidTransitionIsConflict(t *testing.T) {
	w := newWorld(t)
	w.saveCard(t, w.customer, "pm_card_visa")
	taskID := str(w.createTask(t, w.customer, w.agentID, 100).body, "id")
	if res := w.s.call(t, http.MethodPost, "/v1/tasks/"+taskID+"/cancel", w.customer, nil); res.status != http.StatusOK {
		t.Fatalf("cancel: %d %s", res.status, res.raw)
	}

	assertError(t, w.s.call(t, http.MethodPost, "/v1/tasks/"+taskID+"/complete", w.agent, nil),
		http.StatusConflict, "invalid_state_transition", "")
	assertError(t, w.s.call(t, http.MethodPost, "/v1/tasks/"+taskID+"/cancel", w.customer, nil),
		http.StatusConflict, "invalid_state_transition", "")
}

func TestLedgerEntriesShape(t *testing.T) {
	w := newWorld(t)
	w.saveCard(t, w.customer, "pm_card_visa")
	taskID := str(w.createTask(t, w.customer, w.agentID, 100).body, "id")

	res := w.s.call(t, http.MethodGet, "/v1/ledger/entries?taskId="+taskID, w.auditor, nil)
	if res.status != http.StatusOK || res.body["hasMore"] != false {
		t.Fatalf("ledger entries: %d %s", res.status, res.raw)
	}
	data, _ := res.body["data"].([]any)
	if len(data) != 3 {
		t.Fatalf("entries = %d, want the three lines of the hold", len(data))
	}
	for _, d := range data {
		e := d.(map[string]any)
		if str(e, "kind") != "hold" || e["pending"] != true || str(e, "taskId") != taskID || !strings.HasPrefix(str(e, "id"), "le_") {
			t.Errorf("entry = %v, want a pending hold line of the task", e)
		}
		wantDirection := "debit"
		if num(e, "amountCents") < 0 {
			wantDirection = "credit"
		}
		if str(e, "direction") != wantDirection {
			t.Errorf("entry %v: direction %q, want %q", e["id"], e["direction"], wantDirection)
		}
	}
	assertLedgerBalances(t, w.ledgerOf(t, taskID), "usd")
}
