package http_test

import (
	"context"
	"github.com/taskpod/billing/adapters/postgres"
	"net/http"
	"strings"
	"testing"
)

// transferredTask creates a task priced at price, completes it and waits
// until the agent's share is transferred.
func (e *webhookEnv) transferredTask(t *testing.T, price int64) (customer, taskID, paymentID, agent string, payment map[string]any) {
	t.Helper()
	customer, taskID, paymentID, _, agent = e.authorizedTask(t, price)
	agentToken := e.token(t, "agent", agent)
	if status, body := e.call(t, http.MethodPost, "/v1/tasks/"+taskID+"/complete", agentToken, map[string]any{}); status != http.StatusOK {
		t.Fatalf("complete: %d %v", status, body)
	}
	task := e.waitTask(t, customer, taskID, "completed", "transferred")
	return customer, taskID, paymentID, agent, paymentOfTask(task)
}

// balanceNet sums the net of the emulator's balance transactions whose
// source is one of sources: what moved through the platform's balance.
func (e *webhookEnv) balanceNet(t *testing.T, sources ...string) int64 {
	t.Helper()
	var sum int64
	for _, source := range sources {
		for _, txn := range e.objects(t, "balance_transaction", "source", source) {
			sum += int64(txn["net"].(float64))
		}
	}
	return sum
}

func ids(objects []map[string]any) []string {
	var out []string
	for _, o := range objects {
		out = append(out, o["id"].(string))
	}
	return out
}

func TestRefundLedgerMatchesEmulator(t *testing.T) {
	e := newWebhookEnv(t, webhookEnvOptions{})
	admin := e.token(t, "admin", "ops")
	_, taskID, paymentID, agent, payment := e.transferredTask(t, 300)
	if payment["platformFeeCents"] != float64(8) || payment["agentAmountCents"] != float64(292) {
		t.Fatalf("split = %v + %v, want 8 + 292", payment["platformFeeCents"], payment["agentAmountCents"])
	}

	// 100 of 300 returns half-up(8 × 100 ÷ 300) = 3 of the fee; the rest
	// returns the remaining 5, so the fee parts add up to the whole fee.
	steps := []struct {
		amount              any
		refunded, fee, part float64
	}{
		{amount: 100, refunded: 100, fee: 3, part: 97},
		{amount: nil, refunded: 200, fee: 5, part: 195},
	}
	for _, step := range steps {
		body := map[string]any{"reason": "requested_by_customer"}
		if step.amount != nil {
			body["amountCents"] = step.amount
		}
		status, refund := e.call(t, http.MethodPost, "/v1/tasks/"+taskID+"/refund", admin, body)
		if status != http.StatusCreated {
			t.Fatalf("refund: %d %v", status, refund)
		}
		waitFor(t, "refund "+refund["id"].(string)+" succeeded", func() bool {
			return e.scalar(t, `SELECT status FROM refunds WHERE id = $1`, refund["id"]) == "succeeded"
		})
		_, returns := e.call(t, http.MethodGet, "/v1/tasks/"+taskID+"/refunds", admin, nil)
		refunds := returns["refunds"].([]any)
		last := refunds[len(refunds)-1].(map[string]any)
		if last["amountCents"] != step.refunded || last["platformFeeReturnedCents"] != step.fee || last["agentPartCents"] != step.part {
			t.Errorf("refund = %v / fee %v / agent %v, want %v / %v / %v", last["amountCents"],
				last["platformFeeReturnedCents"], last["agentPartCents"], step.refunded, step.fee, step.part)
		}
	}
	waitFor(t, "both transfer reversals", func() bool {
		return e.scalar(t, `SELECT count(*)::text FROM transfer_reversals WHERE payment_id = $1 AND status = 'succeeded'`, paymentID) == "2"
	})

	status, over := e.call(t, http.MethodPost, "/v1/tasks/"+taskID+"/refund", admin, map[string]any{"amountCents": 1})
	if status != http.StatusConflict && status != http.StatusUnprocessableEntity {
		t.Errorf("refund of a fully refunded task: %d %v, want 409 or 422", status, over)
	}

	chargeID := e.scalar(t, `SELECT stripe_charge_id FROM payments WHERE id = $1`, paymentID)
	transferID := e.scalar(t, `SELECT stripe_transfer_id FROM payments WHERE id = $1`, paymentID)
	stripeRefunds := e.objects(t, "refund", "charge", chargeID)
	reversals := e.objects(t, "transfer_reversal", "transfer", transferID)
	var refunded, reversed int64
	for _, r := range stripeRefunds {
		refunded += int64(r["amount"].(float64))
	}
	for _, r := range reversals {
		reversed += int64(r["amount"].(float64))
	}
	if refunded != 300 || reversed != 292 {
		t.Fatalf("emulator refunded %d and reversed %d, want 300 and 292", refunded, reversed)
	}

	rows := e.ledger(t, paymentID)
	sources := append([]string{chargeID, transferID}, ids(stripeRefunds)...)
	sources = append(sources, ids(reversals)...)
	if got, want := balance(rows, "platform_cash"), e.balanceNet(t, sources...); got != want {
		t.Errorf("ledger platform_cash = %d, emulator balance transactions net %d", got, want)
	}
	refundCash, reversalCash := int64(0), int64(0)
	for _, r := range rows {
		switch {
		case r.kind == "refund" && r.account == "platform_cash":
			refundCash += r.amount
		case r.kind == "transfer_reversal" && r.account == "platform_cash":
			reversalCash += r.amount
		}
	}
	if refundCash != -refunded || reversalCash != reversed {
		t.Errorf("ledger refunds %d and reversals %d, want %d and %d", refundCash, reversalCash, -refunded, reversed)
	}
	for account, want := range map[string]int64{
		"platform_fee_revenue": 0, "agent_payable:" + agent: 0, "agent_receivable:" + agent: 0,
	} {
		if got := balance(rows, account); got != want {
			t.Errorf("%s = %d, want %d", account, got, want)
		}
	}

	// Both reversals took the whole share back, so the agent keeps nothing.
	earnings, err := postgres.NewLedgerReader(e.pool).AgentBalances(context.Background(), agent)
	if err != nil {
		t.Fatal(err)
	}
	if len(earnings) != 1 || earnings[0].Transferred != 0 {
		t.Errorf("agent balances = %+v after reversing all 292, want transferred 0", earnings)
	}
}

func TestRefundFailedReversalLeavesReceivable(t *testing.T) {
	e := newWebhookEnv(t, webhookEnvOptions{})
	admin := e.token(t, "admin", "ops")
	_, taskID, paymentID, agent, _ := e.transferredTask(t, 100)
	e.control(t, http.MethodPost, "/_emulator/connected-accounts/acct_"+agent+"/insufficient-funds", map[string]any{"enabled": true})

	status, refund := e.call(t, http.MethodPost, "/v1/tasks/"+taskID+"/refund", admin, map[string]any{"amountCents": 100})
	if status != http.StatusCreated {
		t.Fatalf("refund: %d %v", status, refund)
	}
	waitFor(t, "the transfer reversal to fail", func() bool {
		return e.scalar(t, `SELECT status FROM transfer_reversals WHERE payment_id = $1`, paymentID) == "failed"
	})

	_, returns := e.call(t, http.MethodGet, "/v1/tasks/"+taskID+"/refunds", admin, nil)
	reversal := returns["transferReversals"].([]any)[0].(map[string]any)
	if reversal["amountCents"] != float64(97) {
		t.Errorf("reversal amount = %v, want 97", reversal["amountCents"])
	}
	if reason, _ := reversal["failureReason"].(string); !strings.Contains(reason, "insufficient_funds") {
		t.Errorf("failure reason = %q, want insufficient_funds", reason)
	}

	chargeID := e.scalar(t, `SELECT stripe_charge_id FROM payments WHERE id = $1`, paymentID)
	transferID := e.scalar(t, `SELECT stripe_transfer_id FROM payments WHERE id = $1`, paymentID)
	stripeRefunds := e.objects(t, "refund", "charge", chargeID)
	if len(stripeRefunds) != 1 || stripeRefunds[0]["amount"] != float64(100) {
		t.Fatalf("emulator refunds = %v, want one of 100", stripeRefunds)
	}
	if n := len(e.objects(t, "transfer_reversal", "transfer", transferID)); n != 0 {
		t.Errorf("emulator transfer reversals = %d, want 0", n)
	}

	rows := e.ledger(t, paymentID)
	sources := append([]string{chargeID, transferID}, ids(stripeRefunds)...)
	if got, want := balance(rows, "platform_cash"), e.balanceNet(t, sources...); got != want {
		t.Errorf("ledger platform_cash = %d, emulator balance transactions net %d", got, want)
	}
	if got := balance(rows, "agent_receivable:"+agent); got != 97 {
		t.Errorf("agent receivable = %d, want 97 still owed by the agent", got)
	}
	if got := balance(rows, "platform_fee_revenue"); got != 0 {
		t.Errorf("fee revenue = %d, want 0 after a full refund", got)
	}
}

func TestDisputeClawbackThenWin(t *testing.T) {
	e := newWebhookEnv(t, webhookEnvOptions{clawback: true})
	_, _, paymentID, agent, _ := e.transferredTask(t, 100)
	chargeID := e.scalar(t, `SELECT stripe_charge_id FROM payments WHERE id = $1`, paymentID)
	transferID := e.scalar(t, `SELECT stripe_transfer_id FROM payments WHERE id = $1`, paymentID)

	dispute := e.control(t, http.MethodPost, "/_emulator/disputes", map[string]any{"charge": chargeID})
	disputeID := dispute["id"].(string)
	waitFor(t, "the clawback reversal", func() bool {
		return e.scalar(t, `SELECT status FROM transfer_reversals WHERE source_id = $1`, disputeID) == "succeeded"
	})
	rows := e.ledger(t, paymentID)
	if got := balance(rows, "dispute_losses"); got != 3 {
		t.Errorf("dispute losses while open = %d, want 3 (the fee part; the agent's 97 is clawed back)", got)
	}
	if got := balance(rows, "agent_receivable:"+agent); got != 0 {
		t.Errorf("agent receivable after the reversal = %d, want 0", got)
	}

	e.control(t, http.MethodPost, "/_emulator/disputes/"+disputeID+"/close", map[string]any{"status": "won"})
	waitFor(t, "the dispute won", func() bool {
		return e.scalar(t, `SELECT status FROM disputes WHERE id = $1`, disputeID) == "won"
	})
	rows = e.ledger(t, paymentID)
	reversals := e.objects(t, "transfer_reversal", "transfer", transferID)
	sources := append([]string{chargeID, transferID, disputeID}, ids(reversals)...)
	if got, want := balance(rows, "platform_cash"), e.balanceNet(t, sources...); got != want {
		t.Errorf("ledger platform_cash = %d, emulator balance transactions net %d", got, want)
	}
	for account, want := range map[string]int64{
		"dispute_losses": 0, "stripe_fee_expense": 33 + 1500, "agent_payable:" + agent: -97, "agent_receivable:" + agent: 0,
	} {
		if got := balance(rows, account); got != want {
			t.Errorf("%s = %d, want %d", account, got, want)
		}
	}
}

func TestDisputeEventsInReverseOrder(t *testing.T) {
	e := newWebhookEnv(t, webhookEnvOptions{clawback: false})
	_, _, paymentID, agent, _ := e.transferredTask(t, 100)
	chargeID := e.scalar(t, `SELECT stripe_charge_id FROM payments WHERE id = $1`, paymentID)

	e.control(t, http.MethodPost, "/_emulator/webhooks/pause", nil)
	dispute := e.control(t, http.MethodPost, "/_emulator/disputes", map[string]any{"charge": chargeID})
	disputeID := dispute["id"].(string)
	e.control(t, http.MethodPost, "/_emulator/disputes/"+disputeID+"/close", map[string]any{"status": "lost"})
	e.control(t, http.MethodPost, "/_emulator/webhooks/mode", map[string]any{"reverse": true})
	e.control(t, http.MethodPost, "/_emulator/webhooks/flush", nil)

	if got := e.scalar(t, `SELECT status FROM disputes WHERE id = $1`, disputeID); got != "lost" {
		t.Fatalf("dispute status = %q, want lost", got)
	}
	rows := e.ledger(t, paymentID)
	if got := countKind(rows, "dispute", "platform_cash"); got != 1 {
		t.Errorf("dispute postings = %d, want 1", got)
	}
	if got, want := balance(rows, "platform_cash"), e.balanceNet(t, chargeID, e.scalar(t, `SELECT stripe_transfer_id FROM payments WHERE id = $1`, paymentID), disputeID); got != want {
		t.Errorf("ledger platform_cash = %d, emulator balance transactions net %d", got, want)
	}
	if got := balance(rows, "dispute_losses"); got != 100 {
		t.Errorf("dispute losses = %d, want 100 without a clawback", got)
	}
	if got := balance(rows, "agent_receivable:"+agent); got != 0 {
		t.Errorf("agent receivable = %d, want 0 without a clawback", got)
	}
	if n := e.scalar(t, `SELECT count(*)::text FROM transfer_reversals WHERE payment_id = $1`, paymentID); n != "0" {
		t.Errorf("transfer reversals = %s, want 0 without a clawback", n)
	}
}

func TestRefundWithoutTransferReducesPayable(t *testing.T) {
	e := newWebhookEnv(t, webhookEnvOptions{})
	admin := e.token(t, "admin", "ops")
	agent := e.id("agent")
	// The emulator rejects transfers to acct_invalid, so the share stays payable.
	status, body := e.call(t, http.MethodPost, "/v1/agents", admin, map[string]any{
		"id": agent, "name": "Unpayable", "priceCents": 100, "currency": "usd", "stripeAccountId": "acct_invalid",
	})
	if status != http.StatusCreated {
		t.Fatalf("create agent: %d %v", status, body)
	}
	customer := e.token(t, "customer", e.id("user"))
	e.saveCard(t, customer, "pm_card_visa")
	taskID := e.createTask(t, customer, agent, 100)
	e.waitTask(t, customer, taskID, "matched", "authorized")
	if status, body := e.call(t, http.MethodPost, "/v1/tasks/"+taskID+"/complete", e.token(t, "agent", agent), map[string]any{}); status != http.StatusOK {
		t.Fatalf("complete: %d %v", status, body)
	}
	var payment map[string]any
	waitFor(t, "the transfer to fail", func() bool {
		payment = paymentOfTask(e.task(t, customer, taskID))
		return payment["status"] == "captured" && payment["transferFailedReason"] != nil
	})
	paymentID := payment["id"].(string)

	status, refund := e.call(t, http.MethodPost, "/v1/tasks/"+taskID+"/refund", admin, map[string]any{})
	if status != http.StatusCreated {
		t.Fatalf("refund: %d %v", status, refund)
	}
	waitFor(t, "the refund", func() bool {
		return e.scalar(t, `SELECT status FROM refunds WHERE payment_id = $1`, paymentID) == "succeeded"
	})
	rows := e.ledger(t, paymentID)
	for account, want := range map[string]int64{
		"agent_payable:" + agent: 0, "agent_receivable:" + agent: 0, "platform_fee_revenue": 0, "platform_cash": 67 - 100,
	} {
		if got := balance(rows, account); got != want {
			t.Errorf("%s = %d, want %d", account, got, want)
		}
	}
	if n := e.scalar(t, `SELECT count(*)::text FROM transfer_reversals WHERE payment_id = $1`, paymentID); n != "0" {
		t.Errorf("transfer reversals = %s, want 0 without a transfer", n)
	}
}
