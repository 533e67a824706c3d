package application_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/taskpod/billing/application"
	"github.com/taskpod/billing/domain"
	"github.com/taskpod/billing/ports"
)

// testEnv wires the application's use cases to the fakes.
type testEnv struct {
	t        *testing.T
	store    *memStore
	gateway  *fakeGateway
	clock    *fixedClock
	observer *recordingObserver
	steps    *application.Steps
	tasks    *application.Tasks
	billing  *application.Billing
	agents   *application.Agents
}

// newEnv returns an environment with a paid agent (100 usd), a free agent,
// a second paid agent, and customer user_42 who has a saved default card.
func newEnv(t *testing.T) *testEnv {
	t.Helper()
	e := &testEnv{t: t, store: newMemStore(), gateway: newFakeGateway(), clock: newFixedClock(), observer: &recordingObserver{}}
	ids := &sequentialIDs{}
	e.billing = application.NewBilling(e.store, e.gateway, e.clock, discardLog)
	e.steps = application.NewSteps(e.store, e.gateway, e.clock, ids, e.observer, application.StepsConfig{LeaseTTL: leaseTTL}, discardLog)
	e.tasks = application.NewTasks(e.store, e.billing, e.steps, e.clock, ids,
		application.TasksConfig{FeeRate: 250, Currencies: []domain.Currency{"usd", "jpy"}}, discardLog)
	e.agents = application.NewAgents(e.store, e.clock, ids, []domain.Currency{"usd", "jpy"}, discardLog)

	e.addAgent(paidAgentID, domain.MustMoney(100, "usd"), payoutAccount)
	e.addAgent(otherAgentID, domain.MustMoney(300, "usd"), "acct_1Other")
	e.addAgent(freeAgentID, domain.MustMoney(0, "usd"), "")
	e.addCustomer(cardOwner, cardVisa)
	return e
}

func (e *testEnv) addAgent(id string, price domain.Money, account string) {
	e.t.Helper()
	a, err := domain.NewAgent(id, "Agent "+id, price, account, e.clock.Now())
	if err != nil {
		e.t.Fatalf("NewAgent(%s): %v", id, err)
	}
	e.store.seed(func(st *memState) { st.agents[id] = a })
}

// addCustomer stores a customer with a Stripe customer and, unless card is
// empty, a saved default card.
func (e *testEnv) addCustomer(userID, card string) {
	e.store.seed(func(st *memState) {
		c := domain.Customer{UserID: userID, StripeCustomerID: "cus_" + userID}
		if card != "" {
			c.DefaultPaymentMethodID = card + "_" + userID
			st.cards[c.DefaultPaymentMethodID] = domain.PaymentMethod{ID: c.DefaultPaymentMethodID, CustomerID: userID, Brand: "visa", Last4: "4242"}
		}
		st.customers[userID] = c
	})
}

func customer(id string) application.Actor {
	return application.Actor{Role: application.RoleCustomer, Subject: id, RequestID: "req_" + id}
}

func agent(id string) application.Actor {
	return application.Actor{Role: application.RoleAgent, Subject: id, RequestID: "req_" + id}
}

// createTask creates a task for agentID as userID and fails the test on error.
func (e *testEnv) createTask(userID, agentID string, maxPrice int64) application.TaskView {
	e.t.Helper()
	ctx := application.WithActor(context.Background(), customer(userID))
	v, err := e.tasks.Create(ctx, userID, application.CreateTaskInput{Title: "Analyze this meal", AgentID: agentID, MaxPrice: maxPrice})
	if err != nil {
		e.t.Fatalf("Create task for %s: %v", agentID, err)
	}
	return v
}

// relay runs every queued outbox message, and the messages those queue,
// like the relay would. Failed messages stay queued and their errors are
// returned.
func (e *testEnv) relay() []error {
	e.t.Helper()
	var failed []ports.OutboxMessage
	var errs []error
	for round := 0; round < 20; round++ {
		msgs := e.store.takeOutbox()
		if len(msgs) == 0 {
			break
		}
		for _, m := range msgs {
			if err := e.steps.Run(context.Background(), m); err != nil {
				failed = append(failed, m)
				errs = append(errs, err)
			}
		}
	}
	e.store.requeue(failed)
	return errs
}

// relayOK runs the outbox and fails the test if any step fails.
func (e *testEnv) relayOK() {
	e.t.Helper()
	if errs := e.relay(); len(errs) > 0 {
		e.t.Fatalf("relay: %v", errors.Join(errs...))
	}
}

// runCrashing runs one step whose gateway call is programmed to crash, and
// returns once the simulated process has died.
func (e *testEnv) runCrashing(msg ports.OutboxMessage) {
	e.t.Helper()
	defer func() {
		if p := recover(); p != errCrash {
			e.t.Fatalf("step %s: recovered %v, want the simulated crash", msg.Step, p)
		}
	}()
	_ = e.steps.Run(context.Background(), msg)
	e.t.Fatalf("step %s returned instead of crashing", msg.Step)
}

// sumLedger returns the posted (non-pending) balance of every account in
// every currency over a payment's ledger transactions.
func sumLedger(txs []domain.LedgerTransaction) map[domain.AccountID]map[domain.Currency]int64 {
	out := map[domain.AccountID]map[domain.Currency]int64{}
	for _, t := range txs {
		if t.Pending {
			continue
		}
		for _, en := range t.Entries {
			if out[en.Account] == nil {
				out[en.Account] = map[domain.Currency]int64{}
			}
			out[en.Account][en.Currency] += en.Amount
		}
	}
	return out
}

func kindsOf(txs []domain.LedgerTransaction) []domain.LedgerKind {
	var out []domain.LedgerKind
	for _, t := range txs {
		out = append(out, t.Kind)
	}
	return out
}

func equalKinds(got []domain.LedgerKind, want ...domain.LedgerKind) bool {
	if len(got) != len(want) {
		return false
	}
	for i := range got {
		if got[i] != want[i] {
			return false
		}
	}
	return true
}

func msg(paymentID string, step domain.Step) ports.OutboxMessage {
	return ports.OutboxMessage{PaymentID: paymentID, Step: step, RequestID: "req_test"}
}

// ---------------------------------------------------------------- authorize

func TestAutoPayCreateAuthorizes(t *testing.T) {
	e := newEnv(t)
	v := e.createTask(cardOwner, paidAgentID, 100)

	if v.Task.Status != domain.TaskMatched {
		t.Errorf("task status = %s, want matched", v.Task.Status)
	}
	if v.Payment == nil {
		t.Fatal("paid task has no payment")
	}
	p := *v.Payment
	if p.Status != domain.PaymentAuthorized || !p.AutoCharged {
		t.Errorf("payment status %s autoCharged %v, want authorized and true", p.Status, p.AutoCharged)
	}
	if p.Amount != domain.MustMoney(100, "usd") || p.StripePaymentIntentID == "" || p.StripeChargeID == "" || p.CaptureBefore.IsZero() {
		t.Errorf("payment = %+v, want 100 usd with intent, charge and capture deadline", p)
	}

	keys := e.gateway.keys("Authorize")
	if len(keys) != 1 || keys[0] != "taskpod:"+p.ID+":authorize:1" {
		t.Errorf("Authorize keys = %v, want one with attempt 1", keys)
	}
	pi := e.gateway.intent(p.StripePaymentIntentID)
	if pi.PaymentMethodID != cardVisa+"_"+cardOwner || pi.CustomerID != "cus_"+cardOwner || pi.Amount != 100 {
		t.Errorf("intent = %+v, want the saved card, the Stripe customer and 100", pi)
	}

	ledger := e.store.ledgerOf(p.ID)
	if !equalKinds(kindsOf(ledger), domain.LedgerHold) || !ledger[0].Pending {
		t.Fatalf("ledger = %v, want one pending hold", kindsOf(ledger))
	}
	hold := map[domain.AccountID]int64{}
	for _, en := range ledger[0].Entries {
		hold[en.Account] += en.Amount
	}
	if hold[domain.AccountCustomerAuthorizations] != 100 || hold[domain.AgentPayableAccount(paidAgentID)] != -97 ||
		hold[domain.AccountPlatformFeeRevenue] != -3 {
		t.Errorf("hold entries = %v, want 100 / -97 / -3", hold)
	}
	if got := e.observer.count(domain.PaymentAuthorized); got != 1 {
		t.Errorf("authorized observed %d times, want 1", got)
	}

	// The relay later finds the authorize message done and makes no call.
	e.relayOK()
	if n := e.gateway.count("Authorize"); n != 1 {
		t.Errorf("Authorize called %d times after the relay ran, want 1", n)
	}
}

func TestCreateWithDeclinedCard(t *testing.T) {
	e := newEnv(t)
	e.addCustomer("user_poor", cardDeclined)

	v := e.createTask("user_poor", paidAgentID, 100)
	if v.Task.Status != domain.TaskPendingPayment {
		t.Errorf("task status = %s, want pending_payment", v.Task.Status)
	}
	p := *v.Payment
	if p.Status != domain.PaymentRequiresCustomerAction {
		t.Errorf("payment status = %s, want requires_customer_action", p.Status)
	}
	if p.DeclineCode != "insufficient_funds" {
		t.Errorf("decline code = %q, want insufficient_funds", p.DeclineCode)
	}
	if p.ClientSecret == "" || p.StripePaymentIntentID == "" {
		t.Errorf("client secret %q intent %q, want both set", p.ClientSecret, p.StripePaymentIntentID)
	}
	if ledger := e.store.ledgerOf(p.ID); len(ledger) != 0 {
		t.Errorf("a declined card left ledger postings %v", kindsOf(ledger))
	}
}

func TestCreateWithoutCardReturnsClientSecret(t *testing.T) {
	e := newEnv(t)
	e.addCustomer("user_new", "")

	v := e.createTask("user_new", paidAgentID, 100)
	p := *v.Payment
	if v.Task.Status != domain.TaskPendingPayment || p.Status != domain.PaymentRequiresCustomerAction {
		t.Errorf("task %s payment %s, want pending_payment and requires_customer_action", v.Task.Status, p.Status)
	}
	if p.AutoCharged || p.DeclineCode != "" {
		t.Errorf("autoCharged %v decline %q, want false and none", p.AutoCharged, p.DeclineCode)
	}
	pi := e.gateway.intent(p.StripePaymentIntentID)
	if p.ClientSecret != pi.ClientSecret || pi.PaymentMethodID != "" {
		t.Errorf("client secret %q, intent %+v; want the intent's secret and no card", p.ClientSecret, pi)
	}
}

func TestCreateForNewCustomerMakesStripeCustomer(t *testing.T) {
	e := newEnv(t)
	v := e.createTask("user_fresh", paidAgentID, 100)
	c := e.store.customer("user_fresh")
	if c.StripeCustomerID == "" || e.gateway.count("CreateCustomer") != 1 {
		t.Fatalf("customer %+v, CreateCustomer calls %d; want one Stripe customer", c, e.gateway.count("CreateCustomer"))
	}
	if v.Payment.StripeCustomerID != c.StripeCustomerID {
		t.Errorf("payment customer %q, want %q", v.Payment.StripeCustomerID, c.StripeCustomerID)
	}
}

func TestCreateNetworkErrorDefersToRelay(t *testing.T) {
	e := newEnv(t)
	e.gateway.program("Authorize", gatewayFault{err: networkError()})

	v := e.createTask(cardOwner, paidAgentID, 100)
	p := *v.Payment
	if p.Status != domain.PaymentAuthorizing || v.Task.Status != domain.TaskPendingPayment {
		t.Fatalf("task %s payment %s, want pending_payment and authorizing", v.Task.Status, p.Status)
	}
	queued := e.store.outboxMessages()
	if len(queued) != 1 || queued[0].PaymentID != p.ID || queued[0].Step != domain.StepAuthorize {
		t.Fatalf("outbox = %+v, want the authorize message for the relay", queued)
	}
	st := e.store.step(p.ID, domain.StepAuthorize)
	if !st.Claimed || st.LastError == "" || !st.LeaseUntil.IsZero() {
		t.Errorf("step state = %+v, want claimed, lease released and the error kept", st)
	}

	// Stripe shows no intent for the payment, so the relay uses attempt 2.
	e.relayOK()
	keys := e.gateway.keys("Authorize")
	if len(keys) != 2 || keys[0] != "taskpod:"+p.ID+":authorize:1" || keys[1] != "taskpod:"+p.ID+":authorize:2" {
		t.Errorf("Authorize keys = %v, want attempts 1 and 2", keys)
	}
	if got := e.store.step(p.ID, domain.StepAuthorize).Attempt; got != 2 {
		t.Errorf("stored attempt = %d, want 2", got)
	}
	if got := e.store.payment(p.ID).Status; got != domain.PaymentAuthorized {
		t.Errorf("payment after relay = %s, want authorized", got)
	}
	if got := e.store.task(v.Task.ID).Status; got != domain.TaskMatched {
		t.Errorf("task after relay = %s, want matched", got)
	}
	if n := e.gateway.count("FindPaymentIntent"); n != 1 {
		t.Errorf("FindPaymentIntent called %d times, want 1", n)
	}
}

func TestAuthorizeLostResponseReconciles(t *testing.T) {
	e := newEnv(t)
	e.gateway.program("Authorize", gatewayFault{err: networkError(), afterEffect: true})

	v := e.createTask(cardOwner, paidAgentID, 100)
	if v.Payment.Status != domain.PaymentAuthorizing {
		t.Fatalf("payment = %s, want authorizing while the answer is lost", v.Payment.Status)
	}

	e.relayOK()
	p := e.store.payment(v.Payment.ID)
	if p.Status != domain.PaymentAuthorized {
		t.Fatalf("payment = %s, want authorized from the intent found at Stripe", p.Status)
	}
	if n := e.gateway.count("Authorize"); n != 1 {
		t.Errorf("Authorize called %d times, want 1: the hold existed", n)
	}
	if holds := e.store.ledgerOf(p.ID); !equalKinds(kindsOf(holds), domain.LedgerHold) {
		t.Errorf("ledger = %v, want exactly one hold", kindsOf(holds))
	}
}

func TestAuthorizeCrashRecovery(t *testing.T) {
	e := newEnv(t)
	e.gateway.program("Authorize", gatewayFault{crash: true})

	// Create crashes inside the inline run, after the claim committed and
	// Stripe placed the hold, before anything was recorded.
	func() {
		defer func() {
			if p := recover(); p != errCrash {
				t.Fatalf("recovered %v, want the simulated crash", p)
			}
		}()
		ctx := application.WithActor(context.Background(), customer(cardOwner))
		_, _ = e.tasks.Create(ctx, cardOwner, application.CreateTaskInput{Title: "t", AgentID: paidAgentID, MaxPrice: 100})
	}()

	queued := e.store.outboxMessages()
	if len(queued) != 1 {
		t.Fatalf("outbox = %+v, want the authorize message", queued)
	}
	paymentID := queued[0].PaymentID
	if p := e.store.payment(paymentID); p.Status != domain.PaymentAuthorizing {
		t.Fatalf("payment after crash = %s, want authorizing", p.Status)
	}

	// The dead process still holds the lease.
	if err := e.steps.Run(context.Background(), queued[0]); !errors.Is(err, application.ErrStepBusy) {
		t.Fatalf("run under the dead lease: %v, want ErrStepBusy", err)
	}

	e.clock.Advance(leaseTTL + time.Second)
	e.relayOK()

	p := e.store.payment(paymentID)
	if p.Status != domain.PaymentAuthorized {
		t.Fatalf("payment after recovery = %s, want authorized", p.Status)
	}
	if n := e.gateway.count("Authorize"); n != 1 {
		t.Errorf("Authorize called %d times, want 1", n)
	}
	if n := e.gateway.count("FindPaymentIntent"); n != 1 {
		t.Errorf("FindPaymentIntent called %d times, want 1", n)
	}
	if holds := e.store.ledgerOf(paymentID); !equalKinds(kindsOf(holds), domain.LedgerHold) {
		t.Errorf("ledger = %v, want exactly one hold", kindsOf(holds))
	}
	if got := e.observer.count(domain.PaymentAuthorized); got != 1 {
		t.Errorf("authorized observed %d times, want 1", got)
	}
	if got := e.store.task(p.TaskID).Status; got != domain.TaskMatched {
		t.Errorf("task = %s, want matched", got)
	}

	// Running the same message once more changes nothing.
	if err := e.steps.Run(context.Background(), msg(paymentID, domain.StepAuthorize)); err != nil {
		t.Fatalf("rerun: %v", err)
	}
	if n := e.gateway.count("Authorize") + e.gateway.count("FindPaymentIntent"); n != 2 {
		t.Errorf("a rerun of a done step reached the gateway (%d calls in all)", n)
	}
}

// ---------------------------------------------------------------- capture and transfer

// completedTask creates an authorized task and completes it with
// finalAmount (nil for the whole hold); the capture is queued, not run.
func (e *testEnv) completedTask(finalAmount *int64) application.TaskView {
	e.t.Helper()
	v := e.createTask(cardOwner, paidAgentID, 100)
	if v.Payment.Status != domain.PaymentAuthorized {
		e.t.Fatalf("payment = %s, want authorized before completion", v.Payment.Status)
	}
	e.store.takeOutbox() // the authorize message is already done
	done, err := e.tasks.Complete(context.Background(), agent(paidAgentID), v.Task.ID, finalAmount)
	if err != nil {
		e.t.Fatalf("Complete: %v", err)
	}
	return done
}

func TestCompleteCapturesAndTransfers(t *testing.T) {
	e := newEnv(t)
	v := e.completedTask(nil)
	if v.Task.Status != domain.TaskCompleted || v.Payment.Status != domain.PaymentAuthorized {
		t.Fatalf("after Complete: task %s payment %s, want completed and still authorized", v.Task.Status, v.Payment.Status)
	}
	queued := e.store.outboxMessages()
	if len(queued) != 1 || queued[0].Step != domain.StepCapture || queued[0].RequestID != "req_"+paidAgentID {
		t.Fatalf("outbox = %+v, want one capture message with the agent's request id", queued)
	}

	e.relayOK()
	p := e.store.payment(v.Payment.ID)
	if p.Status != domain.PaymentTransferred {
		t.Fatalf("payment = %s, want transferred", p.Status)
	}
	if p.CapturedAmount != 100 || p.PlatformFee != 3 || p.AgentShare != 97 || p.StripeFee != 33 {
		t.Errorf("captured %d fee %d agent %d stripe fee %d, want 100/3/97/33", p.CapturedAmount, p.PlatformFee, p.AgentShare, p.StripeFee)
	}
	if keys := e.gateway.keys("Capture"); len(keys) != 1 || keys[0] != "taskpod:"+p.ID+":capture:1" {
		t.Errorf("Capture keys = %v", keys)
	}

	transfers := e.gateway.transfersOf(p.ID)
	if len(transfers) != 1 {
		t.Fatalf("transfers = %+v, want 1", transfers)
	}
	tr := transfers[0]
	if tr.t.Amount != p.CapturedAmount-p.PlatformFee || tr.destination != payoutAccount || tr.group != p.TaskID ||
		tr.source != p.StripeChargeID || tr.currency != "usd" || tr.t.ID != p.StripeTransferID {
		t.Errorf("transfer = %+v, want 97 usd to %s from the charge in group %s", tr, payoutAccount, p.TaskID)
	}

	ledger := e.store.ledgerOf(p.ID)
	if !equalKinds(kindsOf(ledger), domain.LedgerHold, domain.LedgerCapture, domain.LedgerSettlement, domain.LedgerTransfer) {
		t.Fatalf("ledger = %v, want hold, capture, settlement, transfer", kindsOf(ledger))
	}
	balances := sumLedger(ledger)
	if balances[domain.AgentPayableAccount(paidAgentID)]["usd"] != 0 || balances[domain.AccountCustomerAuthorizations]["usd"] != 0 {
		t.Errorf("balances = %v, want the payable and the authorization settled", balances)
	}
	if balances[domain.AccountPlatformFeeRevenue]["usd"] != -3 || balances[domain.AccountPlatformCash]["usd"] != 100-33-97 {
		t.Errorf("balances = %v, want fee revenue -3 and platform cash %d", balances, 100-33-97)
	}
	for _, tx := range ledger {
		var sum int64
		for _, en := range tx.Entries {
			sum += en.Amount
		}
		if sum != 0 {
			t.Errorf("%s %s sums to %d", tx.Kind, tx.ID, sum)
		}
	}
	if _, open, _ := pendingHold(e, p.ID); open {
		t.Error("the hold is still pending after capture")
	}
}

func pendingHold(e *testEnv, paymentID string) (domain.LedgerTransaction, bool, error) {
	var hold domain.LedgerTransaction
	var found bool
	err := e.store.InTx(context.Background(), func(ctx context.Context, tx ports.Tx) error {
		var err error
		hold, found, err = tx.Ledger().PendingHold(ctx, paymentID)
		return err
	})
	return hold, found, err
}

func TestCompletePartialCapture(t *testing.T) {
	e := newEnv(t)
	final := int64(80)
	v := e.completedTask(&final)
	if v.Payment.CaptureAmount.Amount() != 80 {
		t.Fatalf("capture amount = %v, want 80", v.Payment.CaptureAmount)
	}

	e.relayOK()
	p := e.store.payment(v.Payment.ID)
	if p.Status != domain.PaymentTransferred || p.CapturedAmount != 80 || p.PlatformFee != 2 || p.AgentShare != 78 {
		t.Fatalf("payment %s captured %d fee %d agent %d, want transferred 80/2/78", p.Status, p.CapturedAmount, p.PlatformFee, p.AgentShare)
	}
	if pi := e.gateway.intent(p.StripePaymentIntentID); pi.AmountReceived != 80 {
		t.Errorf("Stripe received %d, want 80", pi.AmountReceived)
	}
	if tr := e.gateway.transfersOf(p.ID); len(tr) != 1 || tr[0].t.Amount != 78 {
		t.Errorf("transfers = %+v, want one of 78", tr)
	}
	ledger := e.store.ledgerOf(p.ID)
	for _, tx := range ledger {
		if tx.Kind != domain.LedgerCapture {
			continue
		}
		for _, en := range tx.Entries {
			if en.Account == domain.AccountCustomerAuthorizations && en.Amount != 80 {
				t.Errorf("capture posts %d to the authorization, want 80", en.Amount)
			}
		}
	}
	if b := sumLedger(ledger); b[domain.AccountCustomerAuthorizations]["usd"] != 0 || b[domain.AgentPayableAccount(paidAgentID)]["usd"] != 0 {
		t.Errorf("balances = %v, want authorization and payable at zero", b)
	}
}

func TestCaptureCrashRecovery(t *testing.T) {
	e := newEnv(t)
	v := e.completedTask(nil)
	capture := e.store.takeOutbox()[0]
	e.gateway.program("Capture", gatewayFault{crash: true})

	e.runCrashing(capture)
	if got := e.store.payment(v.Payment.ID).Status; got != domain.PaymentAuthorized {
		t.Fatalf("payment after crash = %s, want authorized: nothing was recorded", got)
	}
	if pi := e.gateway.intent(v.Payment.StripePaymentIntentID); pi.Status != ports.PISucceeded {
		t.Fatalf("intent = %s, want succeeded at Stripe", pi.Status)
	}

	e.clock.Advance(leaseTTL + time.Second)
	if err := e.steps.Run(context.Background(), capture); err != nil {
		t.Fatalf("rerun capture: %v", err)
	}
	e.relayOK()

	p := e.store.payment(v.Payment.ID)
	if p.Status != domain.PaymentTransferred || p.CapturedAmount != 100 {
		t.Fatalf("payment %s captured %d, want transferred 100", p.Status, p.CapturedAmount)
	}
	if n := e.gateway.count("Capture"); n != 1 {
		t.Errorf("Capture called %d times, want 1", n)
	}
	if n := e.gateway.count("GetCapture"); n != 1 {
		t.Errorf("GetCapture called %d times, want 1", n)
	}
	ledger := e.store.ledgerOf(p.ID)
	if !equalKinds(kindsOf(ledger), domain.LedgerHold, domain.LedgerCapture, domain.LedgerSettlement, domain.LedgerTransfer) {
		t.Errorf("ledger = %v, want each posting once", kindsOf(ledger))
	}
	if got := e.observer.count(domain.PaymentCaptured); got != 1 {
		t.Errorf("captured observed %d times, want 1", got)
	}
}

func TestCaptureLostResponseReconciles(t *testing.T) {
	e := newEnv(t)
	v := e.completedTask(nil)
	e.gateway.program("Capture", gatewayFault{err: networkError(), afterEffect: true})

	if errs := e.relay(); len(errs) != 1 {
		t.Fatalf("relay errors = %v, want the lost capture response", errs)
	}
	e.relayOK()

	p := e.store.payment(v.Payment.ID)
	if p.Status != domain.PaymentTransferred {
		t.Fatalf("payment = %s, want transferred", p.Status)
	}
	if n := e.gateway.count("Capture"); n != 1 {
		t.Errorf("Capture called %d times, want 1", n)
	}
	if got := e.store.step(p.ID, domain.StepCapture).Attempt; got != 1 {
		t.Errorf("capture attempt = %d, want 1: the first attempt took effect", got)
	}
}

func TestTransferCrashRecovery(t *testing.T) {
	e := newEnv(t)
	v := e.completedTask(nil)
	e.gateway.program("CreateTransfer", gatewayFault{crash: true})
	capture := e.store.takeOutbox()[0]
	if err := e.steps.Run(context.Background(), capture); err != nil {
		t.Fatalf("capture: %v", err)
	}
	transfer := e.store.takeOutbox()
	if len(transfer) != 1 || transfer[0].Step != domain.StepTransfer {
		t.Fatalf("outbox after capture = %+v, want the transfer", transfer)
	}

	e.runCrashing(transfer[0])
	if got := e.store.payment(v.Payment.ID).Status; got != domain.PaymentCaptured {
		t.Fatalf("payment after crash = %s, want captured", got)
	}

	e.clock.Advance(leaseTTL + time.Second)
	if err := e.steps.Run(context.Background(), transfer[0]); err != nil {
		t.Fatalf("rerun transfer: %v", err)
	}

	p := e.store.payment(v.Payment.ID)
	if p.Status != domain.PaymentTransferred {
		t.Fatalf("payment = %s, want transferred", p.Status)
	}
	if n := e.gateway.count("CreateTransfer"); n != 1 {
		t.Errorf("CreateTransfer called %d times, want 1", n)
	}
	if n := e.gateway.count("FindTransfer"); n != 1 {
		t.Errorf("FindTransfer called %d times, want 1", n)
	}
	if tr := e.gateway.transfersOf(p.ID); len(tr) != 1 || tr[0].t.ID != p.StripeTransferID {
		t.Errorf("transfers = %+v, want one, recorded as %s", tr, p.StripeTransferID)
	}
	transfers := 0
	for _, tx := range e.store.ledgerOf(p.ID) {
		if tx.Kind == domain.LedgerTransfer {
			transfers++
		}
	}
	if transfers != 1 {
		t.Errorf("%d transfer postings, want 1", transfers)
	}
}

func TestTransferReconcileFindsNothing(t *testing.T) {
	e := newEnv(t)
	v := e.completedTask(nil)
	e.gateway.program("CreateTransfer", gatewayFault{err: networkError()})
	if errs := e.relay(); len(errs) != 1 {
		t.Fatalf("relay errors = %v, want the failed transfer", errs)
	}
	e.relayOK()

	keys := e.gateway.keys("CreateTransfer")
	id := v.Payment.ID
	if len(keys) != 2 || keys[0] != "taskpod:"+id+":transfer:1" || keys[1] != "taskpod:"+id+":transfer:2" {
		t.Errorf("CreateTransfer keys = %v, want attempts 1 and 2", keys)
	}
	if tr := e.gateway.transfersOf(id); len(tr) != 1 {
		t.Errorf("transfers = %d, want 1", len(tr))
	}
}

func TestCaptureRefusedAfterHoldExpired(t *testing.T) {
	e := newEnv(t)
	v := e.completedTask(nil)
	e.gateway.expireHold(v.Payment.StripePaymentIntentID)

	e.relayOK()
	p := e.store.payment(v.Payment.ID)
	if p.Status != domain.PaymentReleased {
		t.Fatalf("payment = %s, want released", p.Status)
	}
	if p.FailureReason != "authorization expired before capture" {
		t.Errorf("reason = %q, want the expiry named", p.FailureReason)
	}
	if p.CapturedAmount != 0 || len(e.gateway.transfersOf(p.ID)) != 0 {
		t.Errorf("captured %d, transfers %d; want nothing moved", p.CapturedAmount, len(e.gateway.transfersOf(p.ID)))
	}
	ledger := e.store.ledgerOf(p.ID)
	if !equalKinds(kindsOf(ledger), domain.LedgerHold, domain.LedgerVoid) || ledger[1].ResolvesID != ledger[0].ID {
		t.Errorf("ledger = %v, want the hold voided", kindsOf(ledger))
	}
}

func TestTransferRefusedKeepsCaptured(t *testing.T) {
	e := newEnv(t)
	e.addAgent("agent_bad_payout", domain.MustMoney(100, "usd"), "acct_invalid")
	v := e.createTask(cardOwner, "agent_bad_payout", 100)
	e.store.takeOutbox()
	if _, err := e.tasks.Complete(context.Background(), agent("agent_bad_payout"), v.Task.ID, nil); err != nil {
		t.Fatal(err)
	}

	e.relayOK()
	p := e.store.payment(v.Payment.ID)
	if p.Status != domain.PaymentCaptured || p.TransferFailedReason == "" {
		t.Fatalf("payment %s reason %q, want captured with transferFailedReason", p.Status, p.TransferFailedReason)
	}
	b := sumLedger(e.store.ledgerOf(p.ID))
	if got := b[domain.AgentPayableAccount("agent_bad_payout")]["usd"]; got != -97 {
		t.Errorf("agent payable = %d, want -97 left open", got)
	}
	if st := e.store.step(p.ID, domain.StepTransfer); !st.Done {
		t.Errorf("transfer step = %+v, want done so the relay stops retrying", st)
	}

	// Another run of the transfer message finds nothing to do.
	if err := e.steps.Run(context.Background(), msg(p.ID, domain.StepTransfer)); err != nil {
		t.Fatalf("rerun: %v", err)
	}
	if n := e.gateway.count("CreateTransfer"); n != 1 {
		t.Errorf("CreateTransfer called %d times, want 1", n)
	}
}

// ---------------------------------------------------------------- release

func TestFailReleasesHold(t *testing.T) {
	e := newEnv(t)
	v := e.createTask(cardOwner, paidAgentID, 100)
	e.store.takeOutbox()

	got, err := e.tasks.Fail(context.Background(), agent(paidAgentID), v.Task.ID)
	if err != nil || got.Task.Status != domain.TaskFailed {
		t.Fatalf("Fail: %v, status %s", err, got.Task.Status)
	}
	e.relayOK()

	p := e.store.payment(v.Payment.ID)
	if p.Status != domain.PaymentReleased {
		t.Fatalf("payment = %s, want released", p.Status)
	}
	if pi := e.gateway.intent(p.StripePaymentIntentID); pi.Status != ports.PICanceled || pi.AmountReceived != 0 {
		t.Errorf("intent %s received %d, want canceled with nothing received", pi.Status, pi.AmountReceived)
	}
	if keys := e.gateway.keys("CancelPaymentIntent"); len(keys) != 1 || keys[0] != "taskpod:"+p.ID+":release:1" {
		t.Errorf("cancel keys = %v", keys)
	}
	if n := e.gateway.count("Capture"); n != 0 {
		t.Errorf("Capture called %d times after a failure", n)
	}
	ledger := e.store.ledgerOf(p.ID)
	if !equalKinds(kindsOf(ledger), domain.LedgerHold, domain.LedgerVoid) {
		t.Errorf("ledger = %v, want hold and void", kindsOf(ledger))
	}
}

func TestCancelRequiresActionCancelsIntent(t *testing.T) {
	e := newEnv(t)
	e.addCustomer("user_new", "")
	v := e.createTask("user_new", paidAgentID, 100)
	e.store.takeOutbox()

	if _, err := e.tasks.Cancel(context.Background(), customer("user_new"), v.Task.ID); err != nil {
		t.Fatal(err)
	}
	e.relayOK()

	p := e.store.payment(v.Payment.ID)
	if p.Status != domain.PaymentReleased {
		t.Errorf("payment = %s, want released", p.Status)
	}
	if pi := e.gateway.intent(p.StripePaymentIntentID); pi.Status != ports.PICanceled {
		t.Errorf("intent = %s, want canceled", pi.Status)
	}
	if ledger := e.store.ledgerOf(p.ID); len(ledger) != 0 {
		t.Errorf("ledger = %v, want nothing: no hold was placed", kindsOf(ledger))
	}
}

// A task cancelled before its authorize step ever ran ends with no Stripe
// request at all.
func TestCancelBeforeAuthorizationMakesNoCall(t *testing.T) {
	e := newEnv(t)
	// The inline run of Create fails before it can claim the step, so no
	// request leaves for Stripe and the message stays in the outbox.
	e.store.failOnce("payments.step:authorize", errors.New("database connection lost"))
	v := e.createTask(cardOwner, paidAgentID, 100)
	if v.Payment.Status != domain.PaymentAuthorizing {
		t.Fatalf("payment = %s, want authorizing", v.Payment.Status)
	}
	if st := e.store.step(v.Payment.ID, domain.StepAuthorize); st.Claimed {
		t.Fatalf("authorize step = %+v, want unclaimed", st)
	}

	cancelled, err := e.tasks.Cancel(context.Background(), customer(cardOwner), v.Task.ID)
	if err != nil || cancelled.Task.Status != domain.TaskCancelled {
		t.Fatalf("Cancel: %v, status %s", err, cancelled.Task.Status)
	}
	e.relayOK()

	p := e.store.payment(v.Payment.ID)
	if p.Status != domain.PaymentReleased {
		t.Errorf("payment = %s, want released", p.Status)
	}
	for _, method := range []string{"Authorize", "FindPaymentIntent", "CancelPaymentIntent"} {
		if n := e.gateway.count(method); n != 0 {
			t.Errorf("%s called %d times, want no Stripe request", method, n)
		}
	}
	if len(e.store.outboxMessages()) != 0 {
		t.Errorf("outbox = %+v, want empty", e.store.outboxMessages())
	}
}

// A hold placed while the customer cancels is released afterwards, so no
// hold outlives a cancelled task.
func TestHoldAfterCancelIsReleased(t *testing.T) {
	e := newEnv(t)
	entered, unblock := make(chan struct{}), make(chan struct{})
	e.gateway.program("Authorize", gatewayFault{entered: entered, block: unblock})

	created := make(chan application.TaskView, 1)
	go func() {
		ctx := application.WithActor(context.Background(), customer(cardOwner))
		v, _ := e.tasks.Create(ctx, cardOwner, application.CreateTaskInput{Title: "t", AgentID: paidAgentID, MaxPrice: 100})
		created <- v
	}()
	<-entered

	queued := e.store.outboxMessages()
	taskID := e.store.payment(queued[0].PaymentID).TaskID
	if _, err := e.tasks.Cancel(context.Background(), customer(cardOwner), taskID); err != nil {
		t.Fatalf("Cancel during authorization: %v", err)
	}
	release := e.store.outboxMessages()[1]
	if err := e.steps.Run(context.Background(), release); !errors.Is(err, application.ErrStepNotReady) {
		t.Errorf("release during authorization: %v, want ErrStepNotReady", err)
	}

	close(unblock)
	v := <-created
	if v.Task.Status != domain.TaskCancelled || v.Payment.Status != domain.PaymentAuthorized {
		t.Fatalf("after the hold: task %s payment %s, want cancelled and authorized", v.Task.Status, v.Payment.Status)
	}

	e.relayOK()
	p := e.store.payment(v.Payment.ID)
	if p.Status != domain.PaymentReleased {
		t.Errorf("payment = %s, want released", p.Status)
	}
	if pi := e.gateway.intent(p.StripePaymentIntentID); pi.Status != ports.PICanceled {
		t.Errorf("intent = %s, want canceled", pi.Status)
	}
	if ledger := e.store.ledgerOf(p.ID); !equalKinds(kindsOf(ledger), domain.LedgerHold, domain.LedgerVoid) {
		t.Errorf("ledger = %v, want hold and void", kindsOf(ledger))
	}
}

// ---------------------------------------------------------------- leases

func TestSecondRunGetsStepBusy(t *testing.T) {
	e := newEnv(t)
	v := e.completedTask(nil)
	capture := e.store.takeOutbox()[0]
	entered, unblock := make(chan struct{}), make(chan struct{})
	e.gateway.program("Capture", gatewayFault{entered: entered, block: unblock})

	first := make(chan error, 1)
	go func() { first <- e.steps.Run(context.Background(), capture) }()
	<-entered

	if err := e.steps.Run(context.Background(), capture); !errors.Is(err, application.ErrStepBusy) {
		t.Errorf("second run: %v, want ErrStepBusy", err)
	}
	close(unblock)
	if err := <-first; err != nil {
		t.Fatalf("first run: %v", err)
	}
	if n := e.gateway.count("Capture"); n != 1 {
		t.Errorf("Capture called %d times, want 1", n)
	}
	if got := e.store.payment(v.Payment.ID).Status; got != domain.PaymentCaptured {
		t.Errorf("payment = %s, want captured", got)
	}
}

func TestRecordFailureLeavesNothing(t *testing.T) {
	e := newEnv(t)
	v := e.completedTask(nil)
	capture := e.store.takeOutbox()[0]
	e.store.failOnce("payments.update", errors.New("database connection lost"))

	if err := e.steps.Run(context.Background(), capture); err == nil {
		t.Fatal("capture whose record failed reported success")
	}
	if got := e.store.payment(v.Payment.ID).Status; got != domain.PaymentAuthorized {
		t.Errorf("payment = %s, want authorized: the failed unit of work must leave nothing", got)
	}
	if ledger := e.store.ledgerOf(v.Payment.ID); !equalKinds(kindsOf(ledger), domain.LedgerHold) {
		t.Errorf("ledger = %v, want only the hold", kindsOf(ledger))
	}

	// The lease outlives the failed record; after it ends, the run
	// reconciles with Stripe instead of capturing again.
	e.clock.Advance(leaseTTL + time.Second)
	if err := e.steps.Run(context.Background(), capture); err != nil {
		t.Fatalf("rerun: %v", err)
	}
	if n := e.gateway.count("Capture"); n != 1 {
		t.Errorf("Capture called %d times, want 1", n)
	}
	if got := e.store.payment(v.Payment.ID).Status; got != domain.PaymentCaptured {
		t.Errorf("payment = %s, want captured", got)
	}
}

func TestIdempotencyKeyFormat(t *testing.T) {
	if got := application.IdempotencyKey("pay_7", domain.StepCapture, 3); got != "taskpod:pay_7:capture:3" {
		t.Errorf("IdempotencyKey = %q", got)
	}
}
