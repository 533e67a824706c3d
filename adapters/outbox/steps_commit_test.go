package outbox_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/taskpod/billing/adapters/outbox"
	"github.com/taskpod/billing/adapters/postgres"
	"github.com/taskpod/billing/adapters/stripe"
	"github.com/taskpod/billing/adapters/stripe/emulator"
	"github.com/taskpod/billing/adapters/system"
	"github.com/taskpod/billing/application"
	"github.com/taskpod/billing/domain"
	"github.com/taskpod/billing/ports"
)

// These tests show what the step executor does when a COMMIT fails with
// postgres.ErrCommitUnknown: the unit of work may or may not be in the
// database. The retry must re-read the payment and its step by payment id
// before it calls Stripe or writes anything, so neither outcome leads to a
// second Stripe mutation, a second ledger posting or a second next step.

// errLostCommit rolls a unit of work back while the caller receives
// ErrCommitUnknown.
var errLostCommit = errors.New("simulated lost commit")

// commitLossStore reports ErrCommitUnknown for the first unit of work that
// trap matches. With applied set the unit of work really commits, as when
// the connection drops after PostgreSQL committed; otherwise it rolls back.
type commitLossStore struct {
	inner   ports.Store
	trap    func(seen *observedTx) bool
	applied bool

	mu     sync.Mutex
	sprung bool
}

func (s *commitLossStore) InTx(ctx context.Context, fn func(ctx context.Context, tx ports.Tx) error) error {
	var hit bool
	err := s.inner.InTx(ctx, func(ctx context.Context, tx ports.Tx) error {
		seen := &observedTx{Tx: tx}
		if err := fn(ctx, seen); err != nil {
			return err
		}
		hit = s.spring(seen)
		if hit && !s.applied {
			return errLostCommit
		}
		return nil
	})
	if hit && (err == nil || errors.Is(err, errLostCommit)) {
		return fmt.Errorf("commit unit of work: %w: connection reset by peer", postgres.ErrCommitUnknown)
	}
	return err
}

func (s *commitLossStore) spring(seen *observedTx) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sprung || !s.trap(seen) {
		return false
	}
	s.sprung = true
	return true
}

// observedTx records the step states saved and ledger kinds appended in one
// unit of work.
type observedTx struct {
	ports.Tx
	steps    []ports.StepState
	postings []domain.LedgerKind
}

func (o *observedTx) Payments() ports.PaymentRepository {
	return observedPayments{PaymentRepository: o.Tx.Payments(), seen: o}
}

func (o *observedTx) Ledger() ports.LedgerRepository {
	return observedLedger{LedgerRepository: o.Tx.Ledger(), seen: o}
}

type observedPayments struct {
	ports.PaymentRepository
	seen *observedTx
}

func (p observedPayments) SaveStep(ctx context.Context, s ports.StepState) error {
	p.seen.steps = append(p.seen.steps, s)
	return p.PaymentRepository.SaveStep(ctx, s)
}

type observedLedger struct {
	ports.LedgerRepository
	seen *observedTx
}

func (l observedLedger) Append(ctx context.Context, t domain.LedgerTransaction) error {
	l.seen.postings = append(l.seen.postings, t.Kind)
	return l.LedgerRepository.Append(ctx, t)
}

// claimOf matches the unit of work that takes the lease of step.
func claimOf(step domain.Step) func(*observedTx) bool {
	return func(seen *observedTx) bool {
		for _, s := range seen.steps {
			if s.Step == step && s.Claimed && !s.Done && !s.LeaseUntil.IsZero() {
				return true
			}
		}
		return false
	}
}

// recordOf matches the unit of work that appends a ledger posting of kind.
func recordOf(kind domain.LedgerKind) func(*observedTx) bool {
	return func(seen *observedTx) bool {
		for _, k := range seen.postings {
			if k == kind {
				return true
			}
		}
		return false
	}
}

// manualClock is a clock the test moves, so a lease left by a lost claim
// can expire without waiting.
type manualClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *manualClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *manualClock) advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// moneyPath is the real service minus HTTP: PostgreSQL, the step executor
// and the Stripe emulator behind the stripe-go gateway.
type moneyPath struct {
	pool    *pgxpool.Pool
	store   ports.Store
	gateway ports.PaymentGateway
	billing *application.Billing
	tasks   *application.Tasks
	agentID string
	stripe  string
}

const commitTestKey = "sk_test_commit_loss"

func newMoneyPath(t *testing.T) *moneyPath {
	t.Helper()
	ctx := context.Background()
	pool := migratedDatabase(t)
	log := testLogger()

	emu, err := emulator.New(ctx, pool, emulator.Config{Logger: log})
	if err != nil {
		t.Fatalf("start emulator: %v", err)
	}
	srv := httptest.NewServer(emu.Handler())
	t.Cleanup(srv.Close)
	gw, err := stripe.New(stripe.Config{SecretKey: commitTestKey, APIBase: srv.URL, Logger: log})
	if err != nil {
		t.Fatal(err)
	}

	store := postgres.NewStore(pool, outbox.NewTxOutbox)
	clock, ids := system.Clock{}, system.IDs{}
	steps := application.NewSteps(store, gw, clock, ids, nil, application.StepsConfig{}, log)
	billing := application.NewBilling(store, gw, clock, log)
	tasks := application.NewTasks(store, billing, steps, clock, ids,
		application.TasksConfig{FeeRate: 250, Currencies: []domain.Currency{"usd"}}, log)
	agents := application.NewAgents(store, clock, ids, []domain.Currency{"usd"}, log)

	agent, err := agents.Create(ctx, application.Actor{Role: application.RoleAdmin, TokenID: "tok_admin"}, application.CreateAgentInput{
		ID: "agent_commit", Name: "Commit tester", PriceCents: 1000, Currency: "usd", ConnectAccountID: "acct_commit",
	})
	if err != nil {
		t.Fatalf("create agent: %v", err)
	}
	return &moneyPath{pool: pool, store: store, gateway: gw, billing: billing, tasks: tasks, agentID: agent.ID, stripe: srv.URL}
}

// steps returns an executor on store with its own clock.
func (m *moneyPath) steps(store ports.Store, clock ports.Clock) *application.Steps {
	return application.NewSteps(store, m.gateway, clock, system.IDs{}, nil, application.StepsConfig{LeaseTTL: time.Minute}, testLogger())
}

// completedTask saves a card for a new customer, creates a task whose hold
// is placed at once, completes it and returns its payment.
func (m *moneyPath) completedTask(t *testing.T, user string) domain.PaymentRecord {
	t.Helper()
	ctx := context.Background()
	setup, err := m.billing.Setup(ctx, user)
	if err != nil {
		t.Fatalf("setup: %v", err)
	}
	m.emulatorPost(t, "/v1/setup_intents/"+setup.SetupIntentID+"/confirm", url.Values{"payment_method": {"pm_card_visa"}})
	if _, err := m.billing.ConfirmSetup(ctx, user, setup.SetupIntentID); err != nil {
		t.Fatalf("confirm setup: %v", err)
	}
	view, err := m.tasks.Create(ctx, user, application.CreateTaskInput{Title: "Summarise", AgentID: m.agentID, MaxPrice: 1000})
	if err != nil {
		t.Fatalf("create task: %v", err)
	}
	if view.Payment == nil || view.Payment.Status != domain.PaymentAuthorized {
		t.Fatalf("new task's payment = %+v, want authorized", view.Payment)
	}
	agent := application.Actor{Role: application.RoleAgent, Subject: m.agentID}
	if _, err := m.tasks.Complete(ctx, agent, view.Task.ID, nil); err != nil {
		t.Fatalf("complete task: %v", err)
	}
	return m.payment(t, view.Payment.ID)
}

func (m *moneyPath) payment(t *testing.T, id string) domain.PaymentRecord {
	t.Helper()
	var rec domain.PaymentRecord
	err := m.store.InTx(context.Background(), func(ctx context.Context, tx ports.Tx) error {
		p, err := tx.Payments().Get(ctx, id)
		rec = p.Record()
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return rec
}

func (m *moneyPath) stepState(t *testing.T, paymentID string, step domain.Step) ports.StepState {
	t.Helper()
	var st ports.StepState
	err := m.store.InTx(context.Background(), func(ctx context.Context, tx ports.Tx) error {
		var err error
		st, err = tx.Payments().Step(ctx, paymentID, step)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func (m *moneyPath) emulatorPost(t *testing.T, path string, form url.Values) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, m.stripe+path, strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+commitTestKey)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("POST %s: status %d", path, res.StatusCode)
	}
}

// stripeCalls returns the emulator's counters for POST requests to a path:
// every request received, and those that changed state.
func (m *moneyPath) stripeCalls(t *testing.T, path string) (requests, mutations int64) {
	t.Helper()
	res, err := http.Get(m.stripe + "/_emulator/requests/count?method=POST&path=" + url.QueryEscape(path))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var body struct{ Requests, Mutations int64 }
	if err := json.NewDecoder(res.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	return body.Requests, body.Mutations
}

func (m *moneyPath) count(t *testing.T, query string, args ...any) int {
	t.Helper()
	var n int
	if err := m.pool.QueryRow(context.Background(), query, args...).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func (m *moneyPath) postings(t *testing.T, paymentID string, kind domain.LedgerKind) int {
	return m.count(t, `SELECT count(*) FROM ledger_transactions WHERE payment_id = $1 AND kind = $2`, paymentID, string(kind))
}

func (m *moneyPath) queued(t *testing.T, paymentID string, step domain.Step) int {
	return m.count(t, `SELECT count(*) FROM watermill_payment_steps WHERE payload->>'paymentId' = $1 AND payload->>'step' = $2`,
		paymentID, string(step))
}

func TestStepsCaptureAfterCommitUnknown(t *testing.T) {
	m := newMoneyPath(t)
	cases := []struct {
		name    string
		trap    func(*observedTx) bool
		applied bool
		// busyFirst means the lease taken by the claim is still in the
		// database, so the retry must wait for it to expire.
		busyFirst bool
		// attempt is the idempotency key's attempt number of the capture
		// that reached Stripe.
		attempt int
	}{
		{name: "record committed", trap: recordOf(domain.LedgerCapture), applied: true, attempt: 1},
		{name: "record rolled back", trap: recordOf(domain.LedgerCapture), applied: false, attempt: 1},
		{name: "claim committed", trap: claimOf(domain.StepCapture), applied: true, busyFirst: true, attempt: 2},
		{name: "claim rolled back", trap: claimOf(domain.StepCapture), applied: false, attempt: 1},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			p := m.completedTask(t, fmt.Sprintf("user_capture_%d", i))
			capturePath := "/v1/payment_intents/" + p.StripePaymentIntentID + "/capture"
			clock := &manualClock{now: time.Now().UTC()}
			lossy := m.steps(&commitLossStore{inner: m.store, trap: tc.trap, applied: tc.applied}, clock)
			msg := ports.OutboxMessage{PaymentID: p.ID, Step: domain.StepCapture}

			err := lossy.Run(ctx, msg)
			if !errors.Is(err, postgres.ErrCommitUnknown) {
				t.Fatalf("first run: err = %v, want ErrCommitUnknown", err)
			}
			if tc.busyFirst {
				if err := lossy.Run(ctx, msg); !errors.Is(err, application.ErrStepBusy) {
					t.Fatalf("retry inside the lease: err = %v, want ErrStepBusy", err)
				}
				clock.advance(2 * time.Minute)
			}
			// The relay retries the same message after a failed run.
			if err := lossy.Run(ctx, msg); err != nil {
				t.Fatalf("retry: %v", err)
			}
			if err := lossy.Run(ctx, msg); err != nil {
				t.Fatalf("redelivery after success: %v", err)
			}

			requests, mutations := m.stripeCalls(t, capturePath)
			if requests != 1 {
				t.Errorf("capture requests at Stripe = %d, want 1", requests)
			}
			if mutations != 1 {
				t.Errorf("captures at Stripe = %d, want 1", mutations)
			}
			got := m.payment(t, p.ID)
			if got.Status != domain.PaymentCaptured || got.CapturedAmount != 1000 {
				t.Errorf("payment = %s with %d captured, want captured with 1000", got.Status, got.CapturedAmount)
			}
			if n := m.postings(t, p.ID, domain.LedgerCapture); n != 1 {
				t.Errorf("capture postings = %d, want 1", n)
			}
			if n := m.postings(t, p.ID, domain.LedgerSettlement); n != 1 {
				t.Errorf("settlement postings = %d, want 1", n)
			}
			if n := m.queued(t, p.ID, domain.StepTransfer); n != 1 {
				t.Errorf("transfer messages queued = %d, want 1", n)
			}
			st := m.stepState(t, p.ID, domain.StepCapture)
			if !st.Done || st.Attempt != tc.attempt {
				t.Errorf("capture step = %+v, want done at attempt %d", st, tc.attempt)
			}
		})
	}
}

func TestStepsTransferAfterCommitUnknown(t *testing.T) {
	m := newMoneyPath(t)
	for i, applied := range []bool{true, false} {
		t.Run(fmt.Sprintf("applied=%v", applied), func(t *testing.T) {
			ctx := context.Background()
			p := m.completedTask(t, fmt.Sprintf("user_transfer_%d", i))
			plain := m.steps(m.store, system.Clock{})
			if err := plain.Run(ctx, ports.OutboxMessage{PaymentID: p.ID, Step: domain.StepCapture}); err != nil {
				t.Fatalf("capture: %v", err)
			}
			_, transfersBefore := m.stripeCalls(t, "/v1/transfers")

			clock := &manualClock{now: time.Now().UTC()}
			lossy := m.steps(&commitLossStore{inner: m.store, trap: recordOf(domain.LedgerTransfer), applied: applied}, clock)
			msg := ports.OutboxMessage{PaymentID: p.ID, Step: domain.StepTransfer}
			if err := lossy.Run(ctx, msg); !errors.Is(err, postgres.ErrCommitUnknown) {
				t.Fatalf("first run: err = %v, want ErrCommitUnknown", err)
			}
			// A failed record gives its lease back, so the retry runs at
			// once and reconciles instead of waiting for the lease to end.
			if err := lossy.Run(ctx, msg); err != nil {
				t.Fatalf("retry: %v", err)
			}

			_, transfersAfter := m.stripeCalls(t, "/v1/transfers")
			if n := transfersAfter - transfersBefore; n != 1 {
				t.Errorf("transfers created at Stripe = %d, want 1", n)
			}
			got := m.payment(t, p.ID)
			if got.Status != domain.PaymentTransferred || got.StripeTransferID == "" {
				t.Errorf("payment = %s with transfer %q, want transferred", got.Status, got.StripeTransferID)
			}
			if n := m.postings(t, p.ID, domain.LedgerTransfer); n != 1 {
				t.Errorf("transfer postings = %d, want 1", n)
			}
			if st := m.stepState(t, p.ID, domain.StepTransfer); !st.Done || st.Attempt != 1 {
				t.Errorf("transfer step = %+v, want done at attempt 1", st)
			}
		})
	}
}
