package http

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/taskpod/billing/adapters/postgres"
	"github.com/taskpod/billing/domain"
)

type entriesPage struct {
	Data    []entryView `json:"data"`
	HasMore bool        `json:"hasMore"`
}

// TestConcurrentPostingsAndPagedReader has many writers post complete
// payments (hold, capture with settlement, transfer) on distinct tasks, all
// crediting platform_fee_revenue, while one client pages through
// /v1/ledger/entries and another reads the trial balance. Every posting
// must succeed without a deadlock retry, the trial balance must stay
// balanced, and the pager must see every entry exactly once.
func TestConcurrentPostingsAndPagedReader(t *testing.T) {
	env := newAuditEnv(t)
	sealCtx, stopSealer := context.WithCancel(env.ctx)
	sealerDone := make(chan struct{})
	go func() {
		defer close(sealerDone)
		_ = postgres.NewSealer(env.pool, 10*time.Millisecond, nil, discardLog()).Run(sealCtx)
	}()

	const writers, paymentsEach = 12, 5
	writersDone := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, writers*paymentsEach*3+100)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			agent := []string{auditAgentA, auditAgentB}[w%2]
			for range paymentsEach {
				p := newAuditPayment(t, agent, 100, 100, 33, "usd")
				for _, step := range [][]domain.LedgerTransaction{{p.hold}, {p.capture, p.settlement}, {p.transfer}} {
					if err := env.post(step...); err != nil {
						errs <- fmt.Errorf("post %s: %w", step[0].Kind, err)
						return
					}
				}
			}
		}()
	}
	go func() {
		wg.Wait()
		close(writersDone)
	}()

	var readers sync.WaitGroup
	seen := map[string]int{}
	readers.Add(2)
	go func() {
		defer readers.Done()
		pageUntilQuiet(env, writersDone, seen, errs)
	}()
	go func() {
		defer readers.Done()
		checkTrialBalanceUntil(env, writersDone, errs)
	}()
	readers.Wait()
	stopSealer()
	<-sealerDone
	close(errs)
	for err := range errs {
		t.Error(err)
	}

	if n := env.retries.Load(); n != 0 {
		t.Errorf("the store retried %d units of work after deadlocks or serialization failures, want 0", n)
	}
	var stored int
	if err := env.pool.QueryRow(env.ctx, `SELECT count(*) FROM ledger_entries`).Scan(&stored); err != nil {
		t.Fatal(err)
	}
	// A 100-cent payment: hold 3 entries, capture 3, settlement 3, transfer 2.
	if want := writers * paymentsEach * 11; stored != want {
		t.Errorf("%d entries stored, want %d", stored, want)
	}
	if len(seen) != stored {
		t.Errorf("the pager saw %d distinct entries of %d stored", len(seen), stored)
	}
	for id, n := range seen {
		if n != 1 {
			t.Errorf("the pager saw entry %s %d times", id, n)
		}
	}

	var tb trialBalanceView
	env.expect(http.StatusOK, "GET", "/v1/ledger/trial-balance", auditAuditorToken, "", &tb)
	if !tb.Balanced || len(tb.Currencies) != 1 || tb.Currencies[0].DebitsCents != tb.Currencies[0].CreditsCents {
		t.Errorf("final trial balance = %+v, want balanced usd columns", tb)
	}
	var fee accountBalanceView
	env.expect(http.StatusOK, "GET", "/v1/ledger/accounts/platform_fee_revenue/balance", auditAuditorToken, "", &fee)
	if len(fee.Balances) != 1 || fee.Balances[0].PostedCents != writers*paymentsEach*3 {
		t.Errorf("platform_fee_revenue = %+v, want %d posted", fee.Balances, writers*paymentsEach*3)
	}
}

// pageUntilQuiet follows startingAfter cursors and counts every entry id,
// until a page fetched after the writers finished reports no more entries.
func pageUntilQuiet(env *auditEnv, writersDone <-chan struct{}, seen map[string]int, errs chan<- error) {
	cursor := ""
	for {
		finished := false
		select {
		case <-writersDone:
			finished = true
		default:
		}
		path := "/v1/ledger/entries?limit=7"
		if cursor != "" {
			path += "&startingAfter=" + cursor
		}
		status, body, err := env.call("GET", path, auditAuditorToken, "")
		if err != nil || status != http.StatusOK {
			errs <- fmt.Errorf("GET %s = %d %s (%v)", path, status, body, err)
			return
		}
		var page entriesPage
		if err := json.Unmarshal(body, &page); err != nil {
			errs <- err
			return
		}
		for _, e := range page.Data {
			seen[e.ID]++
		}
		if len(page.Data) > 0 {
			cursor = page.Data[len(page.Data)-1].ID
		}
		if finished && !page.HasMore {
			return
		}
	}
}

// checkTrialBalanceUntil reads the trial balance until the writers finish
// and reports any unbalanced response.
func checkTrialBalanceUntil(env *auditEnv, writersDone <-chan struct{}, errs chan<- error) {
	for {
		select {
		case <-writersDone:
			return
		default:
		}
		status, body, err := env.call("GET", "/v1/ledger/trial-balance", auditAuditorToken, "")
		if err != nil || status != http.StatusOK {
			errs <- fmt.Errorf("trial balance = %d %s (%v)", status, body, err)
			return
		}
		var tb trialBalanceView
		if err := json.Unmarshal(body, &tb); err != nil {
			errs <- err
			return
		}
		if !tb.Balanced {
			errs <- fmt.Errorf("trial balance not balanced during writes: %s", body)
			return
		}
	}
}

func TestReversalIsIdempotentAndAudited(t *testing.T) {
	env := newAuditEnv(t)
	p := newAuditPayment(t, auditAgentA, 100, 100, 33, "usd")
	env.mustPost(p.hold)
	env.mustPost(p.capture, p.settlement)
	env.mustPost(p.transfer)
	path := "/v1/ledger/transactions/" + p.transfer.ID + "/reverse"

	status, body, _ := env.call("POST", path, auditAdminToken, `{}`)
	if status != http.StatusUnprocessableEntity || auditErrorCode(t, body) != "missing_field" {
		t.Errorf("reverse without a reason = %d %s, want 422 missing_field", status, body)
	}
	if status, _, _ := env.call("POST", path, auditAuditorToken, `{"reason": "x"}`); status != http.StatusForbidden {
		t.Errorf("reverse with an auditor token = %d, want 403", status)
	}

	var first, second transactionView
	env.expect(http.StatusCreated, "POST", path, auditAdminToken, `{"reason": "transfer was recorded twice"}`, &first)
	if first.Kind != "reversal" || first.ReversesID != p.transfer.ID || first.Reason != "transfer was recorded twice" || first.Actor != auditAdminToken {
		t.Errorf("reversal = %+v, want a reversal of %s with the reason and the admin's token as actor", first, p.transfer.ID)
	}
	if len(first.Entries) != 2 || first.Entries[0].AmountCents != -p.transfer.Entries[0].Amount {
		t.Errorf("reversal entries = %+v, want the transfer's entries mirrored", first.Entries)
	}
	env.expect(http.StatusOK, "POST", path, auditAdminToken, `{"reason": "asked again"}`, &second)
	if second.ID != first.ID {
		t.Errorf("second reverse returned %s, want the existing reversal %s", second.ID, first.ID)
	}

	var events struct {
		Data []auditEventView `json:"data"`
	}
	env.expect(http.StatusOK, "GET", "/v1/audit/events?action=ledger.transaction_reversed", auditAuditorToken, "", &events)
	if len(events.Data) != 1 || events.Data[0].Subject != p.transfer.ID || events.Data[0].Details["reversalId"] != first.ID {
		t.Errorf("audit events = %+v, want one naming %s and its reversal %s", events.Data, p.transfer.ID, first.ID)
	}

	var balance agentBalanceView
	env.expect(http.StatusOK, "GET", "/v1/agents/"+auditAgentA+"/balance", auditAdminToken, "", &balance)
	if len(balance.Balances) != 1 || balance.Balances[0].PostedCents != 97 || balance.Balances[0].TransferredCents != 0 {
		t.Errorf("agent balance after the transfer's reversal = %+v, want 97 payable and 0 transferred", balance.Balances)
	}
}

func TestReversalRejectsHoldsAndOverdrafts(t *testing.T) {
	env := newAuditEnv(t)
	p := newAuditPayment(t, auditAgentA, 100, 100, 33, "usd")
	env.mustPost(p.hold)
	env.mustPost(p.capture, p.settlement)

	cases := []struct {
		name, id, code string
		status         int
	}{
		{"hold", p.hold.ID, "transaction_not_reversible", http.StatusConflict},
		// The settlement already cleared the authorization the capture posted.
		{"capture before its settlement", p.capture.ID, "reversal_overdraws_account", http.StatusConflict},
		{"unknown transaction", "ltx_missing", "resource_missing", http.StatusNotFound},
	}
	for _, tc := range cases {
		status, body, err := env.call("POST", "/v1/ledger/transactions/"+tc.id+"/reverse", auditAdminToken, `{"reason": "test"}`)
		if err != nil {
			t.Fatal(err)
		}
		if status != tc.status || auditErrorCode(t, body) != tc.code {
			t.Errorf("reverse %s = %d %s, want %d %s", tc.name, status, body, tc.status, tc.code)
		}
	}

	env.expect(http.StatusCreated, "POST", "/v1/ledger/transactions/"+p.settlement.ID+"/reverse", auditAdminToken, `{"reason": "wrong fee"}`, nil)
	env.expect(http.StatusCreated, "POST", "/v1/ledger/transactions/"+p.capture.ID+"/reverse", auditAdminToken, `{"reason": "not captured"}`, nil)
	var auth accountBalanceView
	env.expect(http.StatusOK, "GET", "/v1/ledger/accounts/customer_authorizations/balance", auditAuditorToken, "", &auth)
	if len(auth.Balances) != 1 || auth.Balances[0].PostedCents != 0 {
		t.Errorf("customer_authorizations after both reversals = %+v, want 0", auth.Balances)
	}
}

// TestConcurrentReversalsCreateOne reverses one transaction from many
// requests at once: one creates the reversal, the others return it.
func TestConcurrentReversalsCreateOne(t *testing.T) {
	env := newAuditEnv(t)
	p := newAuditPayment(t, auditAgentA, 100, 100, 33, "usd")
	env.mustPost(p.hold)
	env.mustPost(p.capture, p.settlement)

	const requests = 8
	type result struct {
		status int
		id     string
		err    error
	}
	results := make(chan result, requests)
	var wg sync.WaitGroup
	for range requests {
		wg.Add(1)
		go func() {
			defer wg.Done()
			status, body, err := env.call("POST", "/v1/ledger/transactions/"+p.settlement.ID+"/reverse", auditAdminToken, `{"reason": "race"}`)
			var v transactionView
			if err == nil {
				err = json.Unmarshal(body, &v)
			}
			results <- result{status, v.ID, err}
		}()
	}
	wg.Wait()
	close(results)

	created, ids := 0, map[string]bool{}
	for r := range results {
		if r.err != nil {
			t.Fatal(r.err)
		}
		switch r.status {
		case http.StatusCreated:
			created++
		case http.StatusOK:
		default:
			t.Errorf("a concurrent reverse returned %d", r.status)
		}
		ids[r.id] = true
	}
	if created != 1 || len(ids) != 1 {
		t.Errorf("%d requests created a reversal and %d distinct ids came back, want 1 and 1", created, len(ids))
	}
	var stored int
	if err := env.pool.QueryRow(env.ctx, `SELECT count(*) FROM ledger_transactions WHERE reverses_id = $1`, p.settlement.ID).Scan(&stored); err != nil {
		t.Fatal(err)
	}
	if stored != 1 {
		t.Errorf("%d reversals stored, want 1", stored)
	}
}

func TestAgentBalanceVisibility(t *testing.T) {
	env := newAuditEnv(t)
	transferred := newAuditPayment(t, auditAgentA, 1000, 1000, 59, "usd")
	env.mustPost(transferred.hold)
	env.mustPost(transferred.capture, transferred.settlement)
	env.mustPost(transferred.transfer)
	captured := newAuditPayment(t, auditAgentA, 400, 300, 39, "usd")
	env.mustPost(captured.hold)
	env.mustPost(captured.capture, captured.settlement)
	pending := newAuditPayment(t, auditAgentA, 5000, 5000, 180, "jpy")
	env.mustPost(pending.hold)
	released := newAuditPayment(t, auditAgentA, 200, 200, 36, "usd")
	env.mustPost(released.hold)
	env.mustPost(released.vd)

	var own agentBalanceView
	env.expect(http.StatusOK, "GET", "/v1/agents/"+auditAgentA+"/balance", auditAgentAToken, "", &own)
	want := []agentCurrencyBalanceView{
		{Currency: "jpy", PendingCents: pending.record.Amount.Amount() - 125, PostedCents: 0, TransferredCents: 0},
		{Currency: "usd", PendingCents: 0, PostedCents: captured.record.AgentShare, TransferredCents: transferred.record.AgentShare},
	}
	if own.AgentID != auditAgentA || fmt.Sprint(own.Balances) != fmt.Sprint(want) {
		t.Errorf("own balance = %+v, want %+v", own, want)
	}

	for _, tc := range []struct {
		name, path, token string
		status            int
	}{
		{"another agent's balance", "/v1/agents/" + auditAgentA + "/balance", auditAgentBToken, http.StatusNotFound},
		{"admin reads any agent", "/v1/agents/" + auditAgentB + "/balance", auditAdminToken, http.StatusOK},
		{"admin reads an unknown agent", "/v1/agents/nobody/balance", auditAdminToken, http.StatusNotFound},
		{"customer", "/v1/agents/" + auditAgentA + "/balance", auditCustomerToken, http.StatusForbidden},
		{"no token", "/v1/agents/" + auditAgentA + "/balance", "", http.StatusUnauthorized},
	} {
		if status, body, _ := env.call("GET", tc.path, tc.token, ""); status != tc.status {
			t.Errorf("%s = %d %s, want %d", tc.name, status, body, tc.status)
		}
	}
}

func TestBalancesAsOfAndTrialBalance(t *testing.T) {
	env := newAuditEnv(t)
	p := newAuditPayment(t, auditAgentA, 100, 100, 33, "usd")
	env.mustPost(p.hold)
	afterHold := time.Now().UTC()
	time.Sleep(2 * time.Millisecond)
	env.mustPost(p.capture, p.settlement)
	env.mustPost(p.transfer)

	var held accountBalanceView
	env.expect(http.StatusOK, "GET", "/v1/ledger/accounts/"+url.PathEscape("agent_payable:"+auditAgentA)+"/balance?asOf="+afterHold.Format(time.RFC3339Nano),
		auditAuditorToken, "", &held)
	if len(held.Balances) != 1 || held.Balances[0].PendingCents != 97 || held.Balances[0].PostedCents != 0 || held.Balances[0].AvailableCents != 0 {
		t.Errorf("payable as of the hold = %+v, want 97 pending, 0 posted and 0 available", held.Balances)
	}
	if held.NormalBalance != "credit" || held.Type != "liability" {
		t.Errorf("payable is %s-normal %s, want a credit-normal liability", held.NormalBalance, held.Type)
	}

	var cash accountBalanceView
	env.expect(http.StatusOK, "GET", "/v1/ledger/accounts/platform_cash/balance", auditAuditorToken, "", &cash)
	if len(cash.Balances) != 1 || cash.Balances[0].PostedCents != 67-97 {
		t.Errorf("platform_cash = %+v, want 67 settled less 97 transferred", cash.Balances)
	}

	var accounts struct {
		Data    []accountView `json:"data"`
		HasMore bool          `json:"hasMore"`
	}
	env.expect(http.StatusOK, "GET", "/v1/ledger/accounts?limit=2", auditAuditorToken, "", &accounts)
	if len(accounts.Data) != 2 || !accounts.HasMore || accounts.Data[0].ID != "agent_payable:"+auditAgentA {
		t.Errorf("first page of accounts = %+v, want 2 accounts from agent_payable:%s and more", accounts, auditAgentA)
	}

	var tb trialBalanceView
	env.expect(http.StatusOK, "GET", "/v1/ledger/trial-balance", auditAuditorToken, "", &tb)
	// Debit column: stripe_fee_expense 33. Credit column: platform_cash 30
	// (67 settled, 97 transferred) and platform_fee_revenue 3.
	if !tb.Balanced || len(tb.Currencies) != 1 || tb.Currencies[0].DebitsCents != 33 || tb.Currencies[0].CreditsCents != 33 {
		t.Errorf("trial balance = %+v, want balanced usd columns of 33", tb)
	}

	for path, code := range map[string]string{
		"/v1/ledger/trial-balance?asOf=yesterday":                   "invalid_time",
		"/v1/ledger/accounts/platform_cash/balance?asOf=2026-13-01": "invalid_time",
		"/v1/ledger/accounts/no_such_account/balance":               "resource_missing",
	} {
		status, body, _ := env.call("GET", path, auditAuditorToken, "")
		if status < 400 || auditErrorCode(t, body) != code {
			t.Errorf("GET %s = %d %s, want error %s", path, status, body, code)
		}
	}
}

func TestEntriesFiltersExposeWhoWhatWhy(t *testing.T) {
	env := newAuditEnv(t)
	p := newAuditPayment(t, auditAgentA, 100, 100, 33, "usd")
	env.mustPost(p.hold)
	env.mustPost(p.capture, p.settlement)
	between := time.Now().UTC()
	time.Sleep(2 * time.Millisecond)
	env.mustPost(p.transfer)
	other := newAuditPayment(t, auditAgentB, 100, 100, 33, "usd")
	env.mustPost(other.hold)

	list := func(query string) []entryView {
		t.Helper()
		var page entriesPage
		env.expect(http.StatusOK, "GET", "/v1/ledger/entries?"+query, auditAuditorToken, "", &page)
		return page.Data
	}
	byTransfer := list("stripeId=" + p.transfer.Meta.Stripe.TransferID)
	if len(byTransfer) != 2 || byTransfer[0].TransactionID != p.transfer.ID {
		t.Errorf("stripeId=tr_ returned %d entries, want the transfer's 2", len(byTransfer))
	}
	if e := byTransfer[0]; e.Actor != "system:relay" || e.Reason != "transfer" || e.RequestID == "" || e.TaskID != p.record.TaskID ||
		e.PaymentID != p.record.ID || e.Stripe.TransferID != p.transfer.Meta.Stripe.TransferID || e.RecordedAt.IsZero() {
		t.Errorf("entry = %+v, want actor, reason, request, task, payment, Stripe ids and times", e)
	}
	if n := len(list("stripeId=" + p.capture.Meta.Stripe.BalanceTransactionID)); n != 6 {
		t.Errorf("stripeId=txn_ returned %d entries, want capture and settlement's 6", n)
	}
	if n := len(list("stripeId=" + p.hold.Meta.Stripe.PaymentIntentID)); n != 11 {
		t.Errorf("stripeId=pi_ returned %d entries, want all 11 of the payment", n)
	}
	if n := len(list("paymentId=" + p.record.ID + "&to=" + url.QueryEscape(between.Format(time.RFC3339Nano)))); n != 9 {
		t.Errorf("to= returned %d entries, want the 9 before the transfer", n)
	}
	if n := len(list("taskId=" + p.record.TaskID + "&from=" + url.QueryEscape(between.Format(time.RFC3339Nano)))); n != 2 {
		t.Errorf("from= returned %d entries, want the transfer's 2", n)
	}
	if n := len(list("accountId=" + url.QueryEscape("agent_payable:"+auditAgentB))); n != 1 {
		t.Errorf("accountId= returned %d entries, want the other hold's 1", n)
	}

	status, body, _ := env.call("GET", "/v1/ledger/entries?stripeId=cus_123", auditAuditorToken, "")
	if status != http.StatusUnprocessableEntity || auditErrorCode(t, body) != "invalid_stripe_id" {
		t.Errorf("stripeId=cus_ = %d %s, want 422 invalid_stripe_id", status, body)
	}
}

func TestHeadAndVerifyRoutes(t *testing.T) {
	env := newAuditEnv(t)
	var empty headView
	env.expect(http.StatusOK, "GET", "/v1/ledger/head", auditAuditorToken, "", &empty)
	if empty.Sequence != 0 || empty.SealedAt != nil {
		t.Errorf("head of an empty chain = %+v", empty)
	}

	p := newAuditPayment(t, auditAgentA, 100, 100, 33, "usd")
	env.mustPost(p.hold)
	env.mustPost(p.capture, p.settlement)
	if _, err := env.chain.SealPending(env.ctx); err != nil {
		t.Fatal(err)
	}
	var head headView
	env.expect(http.StatusOK, "GET", "/v1/ledger/head", auditAuditorToken, "", &head)
	if head.Sequence != 3 || head.TransactionID != p.settlement.ID || len(head.Hash) != 64 || head.SealedAt == nil {
		t.Errorf("head = %+v, want sequence 3 at the settlement with a hex SHA-256", head)
	}

	var ok verifyView
	env.expect(http.StatusOK, "GET", "/v1/ledger/verify", auditAuditorToken, "", &ok)
	if !ok.OK || ok.CheckedTransactions != 3 || ok.FirstBroken != nil {
		t.Errorf("verify = %+v, want ok with 3 checked", ok)
	}

	tx, err := env.pool.Begin(env.ctx)
	if err != nil {
		t.Fatal(err)
	}
	_, err = tx.Exec(env.ctx, `SET LOCAL session_replication_role = replica`)
	if err == nil {
		_, err = tx.Exec(env.ctx, `UPDATE ledger_entries SET amount = amount + 1 WHERE transaction_id = $1 AND amount > 0`, p.capture.ID)
	}
	if err == nil {
		err = tx.Commit(env.ctx)
	}
	if err != nil {
		t.Fatal(err)
	}
	var broken verifyView
	env.expect(http.StatusOK, "GET", "/v1/ledger/verify", auditAuditorToken, "", &broken)
	if broken.OK || broken.FirstBroken == nil || broken.FirstBroken.TransactionID != p.capture.ID || broken.FirstBroken.Sequence != 2 {
		t.Errorf("verify after tampering = %+v, want the capture at sequence 2 named", broken)
	}
}
