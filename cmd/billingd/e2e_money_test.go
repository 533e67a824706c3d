package main

// Client flows of the end-to-end tests (agents, cards, tasks) and the check
// that the ledger matches what the Stripe emulator recorded.

import (
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"time"
)

// customer is a TaskPod user with a saved default card.
type customer struct {
	user, token string
}

// agent is a paid agent and the token it completes tasks with.
type agent struct {
	id, token string
	price     int64
}

// outcome is how a test ends a task.
type outcome string

const (
	completeTask outcome = "complete"
	cancelTask   outcome = "cancel"
	failTask     outcome = "fail"
)

// paidTask is one task the test created and what it expects of its money.
type paidTask struct {
	id, paymentID string
	owner         customer
	agent         agent
	outcome       outcome
	// transferFails is set for an agent whose Connect account Stripe rejects.
	transferFails bool
}

func (c *cluster) registerAgent(s *server, id, account string, price int64) agent {
	c.t.Helper()
	c.mustCall(http.MethodPost, s.base+"/v1/agents", c.admin, map[string]any{
		"id": id, "name": "Agent " + id, "priceCents": price, "currency": "usd", "stripeAccountId": account,
	}, nil)
	return agent{id: id, token: c.token("agent", id), price: price}
}

// newCustomer saves a Visa test card as the user's default, the way the
// browser and Stripe.js would.
func (c *cluster) newCustomer(s *server, user string) customer {
	c.t.Helper()
	cust := customer{user: user, token: c.token("customer", user)}
	var setup struct {
		SetupIntentID string `json:"setupIntentId"`
	}
	c.mustCall(http.MethodPost, s.base+"/v1/billing/setup", cust.token, map[string]any{}, &setup)
	if err := c.emulatorForm("/v1/setup_intents/"+setup.SetupIntentID+"/confirm", url.Values{"payment_method": {"pm_card_visa"}}); err != nil {
		c.t.Fatalf("confirm setup intent %s at the emulator: %v", setup.SetupIntentID, err)
	}
	c.mustCall(http.MethodPost, s.base+"/v1/billing/confirm-setup", cust.token, map[string]any{"setupIntentId": setup.SetupIntentID}, nil)
	return cust
}

// taskJSON is the part of a task's JSON the tests read.
type taskJSON struct {
	ID      string `json:"id"`
	Status  string `json:"status"`
	Payment *struct {
		ID     string `json:"id"`
		Status string `json:"status"`
	} `json:"payment"`
}

// createTask creates a task for a paid agent. The hold is placed before the
// response (201) or, when Stripe did not respond, by the relay later (202).
func createTask(s *server, cust customer, a agent) (*paidTask, error) {
	var out taskJSON
	status, err := call(http.MethodPost, s.base+"/v1/tasks", cust.token, map[string]any{
		"title": "Analyze this meal", "agentId": a.id, "maxPriceCents": a.price,
	}, &out)
	if err != nil {
		return nil, err
	}
	if status != http.StatusCreated && status != http.StatusAccepted {
		return nil, fmt.Errorf("create task: status %d", status)
	}
	if out.Payment == nil {
		return nil, fmt.Errorf("task %s of a paid agent has no payment", out.ID)
	}
	return &paidTask{id: out.ID, paymentID: out.Payment.ID, owner: cust, agent: a}, nil
}

func (c *cluster) mustCreateTask(s *server, cust customer, a agent) *paidTask {
	c.t.Helper()
	task, err := createTask(s, cust, a)
	if err != nil {
		c.t.Fatalf("create task: %v", err)
	}
	return task
}

// waitMatched waits until the hold of task is placed.
func (c *cluster) waitMatched(s *server, task *paidTask) {
	c.t.Helper()
	if err := awaitMatched(s, task); err != nil {
		c.t.Fatal(err)
	}
}

// awaitMatched polls the task until its hold is placed. It does not touch
// testing.T, so worker goroutines can call it.
func awaitMatched(s *server, task *paidTask) error {
	deadline := time.Now().Add(hungAfter)
	for {
		var out taskJSON
		_, err := call(http.MethodGet, s.base+"/v1/tasks/"+task.id, task.owner.token, nil, &out)
		switch {
		case err == nil && out.Status == "matched":
			return nil
		case err == nil && out.Status != "pending_payment":
			return fmt.Errorf("task %s is %s while waiting for its hold", task.id, out.Status)
		case time.Now().After(deadline):
			return fmt.Errorf("gave up waiting until task %s is matched: status %q, error %v", task.id, out.Status, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// end completes, cancels or fails a matched task and returns the HTTP status.
func end(s *server, task *paidTask, how outcome) (int, error) {
	task.outcome = how
	switch how {
	case completeTask:
		return call(http.MethodPost, s.base+"/v1/tasks/"+task.id+"/complete", task.agent.token, map[string]any{}, nil)
	case failTask:
		return call(http.MethodPost, s.base+"/v1/tasks/"+task.id+"/fail", task.agent.token, map[string]any{}, nil)
	case cancelTask:
		return call(http.MethodPost, s.base+"/v1/tasks/"+task.id+"/cancel", task.owner.token, nil, nil)
	}
	return 0, fmt.Errorf("unknown outcome %q", how)
}

func (c *cluster) mustEnd(s *server, task *paidTask, how outcome) {
	c.t.Helper()
	status, err := end(s, task, how)
	if err != nil {
		c.t.Fatalf("%s task %s: %v", how, task.id, err)
	}
	if status != http.StatusOK {
		c.t.Fatalf("%s task %s: status %d, want 200", how, task.id, status)
	}
}

// finalStatus is the payment state each outcome must reach.
func (task *paidTask) finalStatus() string {
	if task.outcome == completeTask {
		if task.transferFails {
			return "captured"
		}
		return "transferred"
	}
	return "released"
}

// waitSettled waits until the outbox is empty and every payment of tasks
// has reached the state its outcome leads to.
func (c *cluster) waitSettled(tasks []*paidTask) {
	c.t.Helper()
	c.waitPayments(tasks)
	waitFor(c.t, "the outbox drains", func() error {
		if n := c.count(`SELECT count(*) FROM watermill_payment_steps`); n != 0 {
			return fmt.Errorf("%d outbox messages pending", n)
		}
		return nil
	})
}

// waitPayments waits until every payment of tasks has reached the state
// its outcome leads to. Messages may remain that have nothing left to do,
// such as the relay's delayed copy of an authorization placed inline.
func (c *cluster) waitPayments(tasks []*paidTask) {
	c.t.Helper()
	waitFor(c.t, "every payment settles", func() error {
		for _, task := range tasks {
			status, _ := c.paymentStatus(task.paymentID)
			if status != task.finalStatus() {
				return fmt.Errorf("payment %s of task %s is %s, want %s", task.paymentID, task.id, status, task.finalStatus())
			}
		}
		return nil
	})
}

// Emulator objects, as GET /_emulator/objects returns them.
type (
	stripeIntent struct {
		ID             string            `json:"id"`
		Status         string            `json:"status"`
		Amount         int64             `json:"amount"`
		AmountReceived int64             `json:"amount_received"`
		LatestCharge   string            `json:"latest_charge"`
		Metadata       map[string]string `json:"metadata"`
	}
	stripeCharge struct {
		ID                 string `json:"id"`
		AmountCaptured     int64  `json:"amount_captured"`
		BalanceTransaction string `json:"balance_transaction"`
	}
	stripeBalanceTx struct {
		ID  string `json:"id"`
		Fee int64  `json:"fee"`
		Net int64  `json:"net"`
	}
	stripeTransfer struct {
		ID            string            `json:"id"`
		Amount        int64             `json:"amount"`
		Destination   string            `json:"destination"`
		TransferGroup string            `json:"transfer_group"`
		Metadata      map[string]string `json:"metadata"`
	}
	requestCounter struct {
		Method    string `json:"method"`
		Path      string `json:"path"`
		Requests  int64  `json:"requests"`
		Mutations int64  `json:"mutations"`
		Replays   int64  `json:"replays"`
	}
)

func emulatorObjects[T any](c *cluster, typ string) []T {
	c.t.Helper()
	var out struct {
		Data []T `json:"data"`
	}
	if _, err := c.emulatorJSON(http.MethodGet, "/_emulator/objects?type="+typ, nil, &out); err != nil {
		c.t.Fatalf("list emulator %s objects: %v", typ, err)
	}
	return out.Data
}

// stripeRecords is everything the emulator holds, indexed for the checks.
type stripeRecords struct {
	intents   map[string][]stripeIntent // by payment id
	charges   map[string]stripeCharge
	balance   map[string]stripeBalanceTx
	transfers map[string][]stripeTransfer // by payment id
	// mutations counts state-changing POSTs per concrete path.
	mutations map[string]int64
}

func (c *cluster) stripeRecords() stripeRecords {
	c.t.Helper()
	r := stripeRecords{
		intents: map[string][]stripeIntent{}, charges: map[string]stripeCharge{}, balance: map[string]stripeBalanceTx{},
		transfers: map[string][]stripeTransfer{}, mutations: map[string]int64{},
	}
	for _, pi := range emulatorObjects[stripeIntent](c, "payment_intent") {
		r.intents[pi.Metadata["payment_id"]] = append(r.intents[pi.Metadata["payment_id"]], pi)
	}
	for _, ch := range emulatorObjects[stripeCharge](c, "charge") {
		r.charges[ch.ID] = ch
	}
	for _, bt := range emulatorObjects[stripeBalanceTx](c, "balance_transaction") {
		r.balance[bt.ID] = bt
	}
	for _, tr := range emulatorObjects[stripeTransfer](c, "transfer") {
		r.transfers[tr.Metadata["payment_id"]] = append(r.transfers[tr.Metadata["payment_id"]], tr)
	}
	var counters struct {
		Requests []requestCounter `json:"requests"`
	}
	if _, err := c.emulatorJSON(http.MethodGet, "/_emulator/requests", nil, &counters); err != nil {
		c.t.Fatalf("read emulator request counters: %v", err)
	}
	for _, rc := range counters.Requests {
		if rc.Method == http.MethodPost {
			r.mutations[rc.Path] += rc.Mutations
		}
	}
	return r
}

// ledgerEntry is one entry of GET /v1/ledger/entries.
type ledgerEntry struct {
	TransactionID string `json:"transactionId"`
	Kind          string `json:"kind"`
	Account       string `json:"account"`
	AmountCents   int64  `json:"amountCents"`
	Stripe        struct {
		ChargeID   string `json:"chargeId"`
		TransferID string `json:"transferId"`
	} `json:"stripe"`
}

// ledgerTx is one ledger transaction rebuilt from its entries: the amount
// per account prefix (agent_payable:<id> becomes agent_payable).
type ledgerTx struct {
	kind     string
	accounts map[string]int64
	entry    ledgerEntry
}

func (c *cluster) ledgerOf(s *server, paymentID string) []ledgerTx {
	c.t.Helper()
	var out struct {
		Data    []ledgerEntry `json:"data"`
		HasMore bool          `json:"hasMore"`
	}
	c.mustCall(http.MethodGet, s.base+"/v1/ledger/entries?limit=500&paymentId="+paymentID, c.auditor, nil, &out)
	if out.HasMore {
		c.t.Fatalf("payment %s has more than 500 ledger entries", paymentID)
	}
	byID := map[string]*ledgerTx{}
	var order []string
	for _, e := range out.Data {
		tx, ok := byID[e.TransactionID]
		if !ok {
			tx = &ledgerTx{kind: e.Kind, accounts: map[string]int64{}, entry: e}
			byID[e.TransactionID] = tx
			order = append(order, e.TransactionID)
		}
		account, _, _ := strings.Cut(e.Account, ":")
		tx.accounts[account] += e.AmountCents
	}
	sort.Strings(order)
	txs := make([]ledgerTx, 0, len(order))
	for _, id := range order {
		txs = append(txs, *byID[id])
	}
	return txs
}

// moneyTotals sums what both sides recorded, in cents.
type moneyTotals struct {
	tasks, captures, transfers               int
	captured, platformFees, stripeFees, sent int64
}

func (m moneyTotals) String() string {
	return fmt.Sprintf("%d tasks: %d captures of %d cents (platform fees %d, Stripe fees %d), %d transfers of %d cents",
		m.tasks, m.captures, m.captured, m.platformFees, m.stripeFees, m.transfers, m.sent)
}

// platformFee is the fee at 250 basis points rounded half up, as the
// service computes it by default.
func platformFee(amount int64) int64 { return (amount*250 + 5000) / 10000 }

// verifyMoney checks, for every task, at most one hold, capture and
// transfer at Stripe and a ledger equal to Stripe's records to the cent,
// then compares the totals of both sides.
func (c *cluster) verifyMoney(s *server, tasks []*paidTask) moneyTotals {
	c.t.Helper()
	t := c.t
	stripe := c.stripeRecords()
	var ledgerSide, stripeSide moneyTotals
	ledgerSide.tasks, stripeSide.tasks = len(tasks), len(tasks)

	for _, task := range tasks {
		intents := stripe.intents[task.paymentID]
		if len(intents) != 1 {
			t.Errorf("task %s: %d PaymentIntents at Stripe, want 1", task.id, len(intents))
			continue
		}
		pi := intents[0]
		if pi.Status == "requires_capture" {
			t.Errorf("task %s: hold %s is still live after the task ended (%s)", task.id, pi.ID, task.outcome)
		}
		captures := stripe.mutations["/v1/payment_intents/"+pi.ID+"/capture"]
		transfers := stripe.transfers[task.paymentID]
		txs := c.ledgerOf(s, task.paymentID)
		kinds := map[string][]ledgerTx{}
		for _, tx := range txs {
			kinds[tx.kind] = append(kinds[tx.kind], tx)
		}
		if len(kinds["hold"]) != 1 {
			t.Errorf("task %s: %d hold postings, want 1", task.id, len(kinds["hold"]))
		}

		if task.outcome != completeTask {
			if pi.Status != "canceled" || captures != 0 || len(transfers) != 0 {
				t.Errorf("task %s (%s): intent %s, %d captures, %d transfers; want canceled, 0, 0",
					task.id, task.outcome, pi.Status, captures, len(transfers))
			}
			// A void has no entries, so the entry listing cannot show it.
			voids := c.count(`SELECT count(*) FROM ledger_transactions WHERE payment_id = $1 AND kind = 'void'`, task.paymentID)
			if voids != 1 || len(kinds["capture"]) != 0 || len(kinds["transfer"]) != 0 {
				t.Errorf("task %s (%s): ledger has %d voids, %d captures, %d transfers; want 1, 0, 0",
					task.id, task.outcome, voids, len(kinds["capture"]), len(kinds["transfer"]))
			}
			continue
		}

		if pi.Status != "succeeded" || captures != 1 {
			t.Errorf("task %s: intent %s is %s after %d captures, want succeeded after exactly 1", task.id, pi.ID, pi.Status, captures)
			continue
		}
		charge := stripe.charges[pi.LatestCharge]
		bt := stripe.balance[charge.BalanceTransaction]
		fee := platformFee(charge.AmountCaptured)
		stripeSide.captures++
		stripeSide.captured += charge.AmountCaptured
		stripeSide.platformFees += fee
		stripeSide.stripeFees += bt.Fee
		if charge.AmountCaptured != pi.AmountReceived || charge.AmountCaptured != task.agent.price {
			t.Errorf("task %s: charge captured %d, intent received %d, price %d", task.id, charge.AmountCaptured, pi.AmountReceived, task.agent.price)
		}

		if len(kinds["capture"]) != 1 || len(kinds["settlement"]) != 1 {
			t.Errorf("task %s: %d capture and %d settlement postings, want 1 and 1", task.id, len(kinds["capture"]), len(kinds["settlement"]))
			continue
		}
		capture, settlement := kinds["capture"][0], kinds["settlement"][0]
		ledgerSide.captures++
		ledgerSide.captured += capture.accounts["customer_authorizations"]
		ledgerSide.platformFees += -capture.accounts["platform_fee_revenue"]
		ledgerSide.stripeFees += settlement.accounts["stripe_fee_expense"]
		if got := capture.accounts["customer_authorizations"]; got != charge.AmountCaptured {
			t.Errorf("task %s: ledger captured %d, Stripe captured %d", task.id, got, charge.AmountCaptured)
		}
		if got := -capture.accounts["platform_fee_revenue"]; got != fee {
			t.Errorf("task %s: ledger platform fee %d, want %d", task.id, got, fee)
		}
		if got := settlement.accounts["stripe_fee_expense"]; got != bt.Fee {
			t.Errorf("task %s: ledger Stripe fee %d, balance transaction fee %d", task.id, got, bt.Fee)
		}
		if got := settlement.accounts["platform_cash"]; got != bt.Net {
			t.Errorf("task %s: ledger settlement cash %d, balance transaction net %d", task.id, got, bt.Net)
		}
		if capture.entry.Stripe.ChargeID != charge.ID {
			t.Errorf("task %s: capture posting names charge %q, Stripe has %q", task.id, capture.entry.Stripe.ChargeID, charge.ID)
		}

		if task.transferFails {
			if len(transfers) != 0 || len(kinds["transfer"]) != 0 {
				t.Errorf("task %s: %d transfers at Stripe and %d in the ledger for a rejected account, want none",
					task.id, len(transfers), len(kinds["transfer"]))
			}
			continue
		}
		if len(transfers) != 1 || len(kinds["transfer"]) != 1 {
			t.Errorf("task %s: %d transfers at Stripe and %d in the ledger, want 1 and 1", task.id, len(transfers), len(kinds["transfer"]))
			continue
		}
		tr, posting := transfers[0], kinds["transfer"][0]
		stripeSide.transfers++
		stripeSide.sent += tr.Amount
		ledgerSide.transfers++
		ledgerSide.sent += posting.accounts["agent_payable"]
		if tr.Amount != charge.AmountCaptured-fee {
			t.Errorf("task %s: transferred %d, want captured %d minus fee %d", task.id, tr.Amount, charge.AmountCaptured, fee)
		}
		if got := posting.accounts["agent_payable"]; got != tr.Amount {
			t.Errorf("task %s: ledger transfer %d, Stripe transfer %d", task.id, got, tr.Amount)
		}
		if got := -posting.accounts["platform_cash"]; got != tr.Amount {
			t.Errorf("task %s: ledger cash out %d, Stripe transfer %d", task.id, got, tr.Amount)
		}
		if posting.entry.Stripe.TransferID != tr.ID || tr.TransferGroup != task.id {
			t.Errorf("task %s: posting names transfer %q in group %q, Stripe has %q", task.id, posting.entry.Stripe.TransferID, tr.TransferGroup, tr.ID)
		}
	}

	if ledgerSide != stripeSide {
		t.Errorf("totals differ:\n ledger %v\n stripe %v", ledgerSide, stripeSide)
	}
	if n := c.count(`SELECT count(*) FROM watermill_payment_steps`); n != 0 {
		t.Errorf("%d messages left in watermill_payment_steps", n)
	}
	return stripeSide
}
