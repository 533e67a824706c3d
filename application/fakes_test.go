package application_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/taskpod/billing/domain"
	"github.com/taskpod/billing/ports"
)

// This file contains hand-written fakes of every port the application uses:
// an in-memory store whose units of work commit atomically, a stateful
// payment gateway that follows Stripe's idempotency rules, a fixed clock
// and sequential ids.

var discardLog = slog.New(slog.NewTextHandler(io.Discard, nil))

// ---------------------------------------------------------------- clock, ids

type fixedClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFixedClock() *fixedClock {
	return &fixedClock{now: time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)}
}

func (c *fixedClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fixedClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

type sequentialIDs struct {
	mu sync.Mutex
	n  map[string]int
}

func (g *sequentialIDs) NewID(prefix string) string {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.n == nil {
		g.n = map[string]int{}
	}
	g.n[prefix]++
	if prefix == "" {
		return fmt.Sprintf("id%d", g.n[prefix])
	}
	return fmt.Sprintf("%s_%d", prefix, g.n[prefix])
}

// ---------------------------------------------------------------- store

type stepKey struct {
	paymentID string
	step      domain.Step
}

type operation struct {
	subject, kind string
	finished      bool
}

// memState is everything the store keeps. clone copies it so a unit of
// work can change its copy and publish it only on success.
type memState struct {
	customers  map[string]domain.Customer
	cards      map[string]domain.PaymentMethod // by payment method id
	agents     map[string]domain.Agent
	tasks      map[string]domain.Task
	payments   map[string]domain.Payment
	steps      map[stepKey]ports.StepState
	ledger     []domain.LedgerTransaction
	outbox     []ports.OutboxMessage
	operations map[string]operation
	audit      []ports.AuditEvent
	nextOp     int
}

func newMemState() *memState {
	return &memState{
		customers: map[string]domain.Customer{}, cards: map[string]domain.PaymentMethod{},
		agents: map[string]domain.Agent{}, tasks: map[string]domain.Task{}, payments: map[string]domain.Payment{},
		steps: map[stepKey]ports.StepState{}, operations: map[string]operation{},
	}
}

func (s *memState) clone() *memState {
	return &memState{
		customers: maps.Clone(s.customers), cards: maps.Clone(s.cards), agents: maps.Clone(s.agents),
		tasks: maps.Clone(s.tasks), payments: maps.Clone(s.payments), steps: maps.Clone(s.steps),
		ledger: slices.Clone(s.ledger), outbox: slices.Clone(s.outbox), operations: maps.Clone(s.operations),
		audit: slices.Clone(s.audit), nextOp: s.nextOp,
	}
}

// memStore implements ports.Store. One mutex serialises units of work,
// which gives GetForUpdate the exclusion of a row lock without modelling
// locks. Each unit of work changes a copy of the state that replaces the
// committed state only when fn returns nil.
type memStore struct {
	mu        sync.Mutex
	state     *memState
	faults    map[string]error // one-shot failures by operation name
	committed int
}

func newMemStore() *memStore {
	return &memStore{state: newMemState(), faults: map[string]error{}}
}

type inTxKey struct{}

func (s *memStore) InTx(ctx context.Context, fn func(ctx context.Context, tx ports.Tx) error) error {
	if ctx.Value(inTxKey{}) != nil {
		return errors.New("memStore: nested InTx; a unit of work must not open another")
	}
	s.mu.Lock()
	defer s.mu.Unlock()

	work := &memTx{store: s, state: s.state.clone()}
	if err := fn(context.WithValue(ctx, inTxKey{}, true), work); err != nil {
		return err
	}
	s.state = work.state
	s.committed++
	return nil
}

// failOnce makes the next call of the named operation fail with err, for
// example "payments.step:authorize" or "payments.update".
func (s *memStore) failOnce(op string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults[op] = err
}

// fault returns and clears the failure set for op. The caller must hold s.mu.
func (s *memStore) fault(op string) error {
	err := s.faults[op]
	delete(s.faults, op)
	return err
}

// read runs f on the committed state under the lock.
func (s *memStore) read(f func(st *memState)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f(s.state)
}

// seed commits f's changes directly, for fixtures.
func (s *memStore) seed(f func(st *memState)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f(s.state)
}

func (s *memStore) payment(id string) domain.PaymentRecord {
	var r domain.PaymentRecord
	s.read(func(st *memState) { r = st.payments[id].Record() })
	return r
}

func (s *memStore) task(id string) domain.TaskRecord {
	var r domain.TaskRecord
	s.read(func(st *memState) { r = st.tasks[id].Record() })
	return r
}

func (s *memStore) step(paymentID string, step domain.Step) ports.StepState {
	var st ports.StepState
	s.read(func(m *memState) { st = m.steps[stepKey{paymentID, step}] })
	return st
}

func (s *memStore) customer(userID string) domain.Customer {
	var c domain.Customer
	s.read(func(st *memState) { c = st.customers[userID] })
	return c
}

// ledgerOf returns the payment's ledger transactions in append order.
func (s *memStore) ledgerOf(paymentID string) []domain.LedgerTransaction {
	var out []domain.LedgerTransaction
	s.read(func(st *memState) {
		for _, t := range st.ledger {
			if t.Meta.PaymentID == paymentID {
				out = append(out, t)
			}
		}
	})
	return out
}

// outboxMessages returns the queued messages without removing them.
func (s *memStore) outboxMessages() []ports.OutboxMessage {
	var out []ports.OutboxMessage
	s.read(func(st *memState) { out = slices.Clone(st.outbox) })
	return out
}

// takeOutbox removes and returns every queued message.
func (s *memStore) takeOutbox() []ports.OutboxMessage {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := s.state.outbox
	s.state.outbox = nil
	return out
}

// requeue puts messages back at the front of the outbox.
func (s *memStore) requeue(msgs []ports.OutboxMessage) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.state.outbox = append(slices.Clone(msgs), s.state.outbox...)
}

// memTx and the repositories embed their port interfaces, left nil, so
// methods the application does not call yet still satisfy the ports. A
// call to one of them panics, which names the method the fake lacks.
type memTx struct {
	ports.Tx
	store *memStore
	state *memState
}

func (t *memTx) Customers() ports.CustomerRepository   { return customerRepo{tx: t} }
func (t *memTx) Agents() ports.AgentRepository         { return agentRepo{tx: t} }
func (t *memTx) Tasks() ports.TaskRepository           { return taskRepo{tx: t} }
func (t *memTx) Payments() ports.PaymentRepository     { return paymentRepo{tx: t} }
func (t *memTx) Ledger() ports.LedgerRepository        { return ledgerRepo{tx: t} }
func (t *memTx) Outbox() ports.Outbox                  { return outboxRepo{tx: t} }
func (t *memTx) Operations() ports.OperationRepository { return operationRepo{tx: t} }
func (t *memTx) Audit() ports.AuditLog                 { return auditRepo{tx: t} }

func notFound(kind, id string) error {
	return fmt.Errorf("%s %s: %w", kind, id, domain.ErrNotFound)
}

type customerRepo struct {
	ports.CustomerRepository
	tx *memTx
}

func (r customerRepo) Get(_ context.Context, userID string) (domain.Customer, error) {
	c, ok := r.tx.state.customers[userID]
	if !ok {
		return domain.Customer{}, notFound("customer", userID)
	}
	return c, nil
}

func (r customerRepo) GetForUpdate(ctx context.Context, userID string) (domain.Customer, error) {
	return r.Get(ctx, userID)
}

func (r customerRepo) Ensure(_ context.Context, c domain.Customer) (domain.Customer, error) {
	if stored, ok := r.tx.state.customers[c.UserID]; ok {
		return stored, nil
	}
	r.tx.state.customers[c.UserID] = c
	return c, nil
}

func (r customerRepo) Update(_ context.Context, c domain.Customer) error {
	if _, ok := r.tx.state.customers[c.UserID]; !ok {
		return notFound("customer", c.UserID)
	}
	r.tx.state.customers[c.UserID] = c
	return nil
}

func (r customerRepo) UpsertPaymentMethod(_ context.Context, pm domain.PaymentMethod) error {
	if stored, ok := r.tx.state.cards[pm.ID]; ok && stored.CustomerID != pm.CustomerID {
		return fmt.Errorf("payment method %s belongs to another customer: %w", pm.ID, domain.ErrConflict)
	}
	r.tx.state.cards[pm.ID] = pm
	return nil
}

func (r customerRepo) DeletePaymentMethod(_ context.Context, userID, id string) error {
	pm, ok := r.tx.state.cards[id]
	if !ok || pm.CustomerID != userID {
		return notFound("payment method", id)
	}
	delete(r.tx.state.cards, id)
	return nil
}

func (r customerRepo) ListPaymentMethods(_ context.Context, userID string) ([]domain.PaymentMethod, error) {
	var out []domain.PaymentMethod
	for _, pm := range r.tx.state.cards {
		if pm.CustomerID == userID {
			out = append(out, pm)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

func (r customerRepo) GetPaymentMethod(_ context.Context, userID, id string) (domain.PaymentMethod, error) {
	pm, ok := r.tx.state.cards[id]
	if !ok || pm.CustomerID != userID {
		return domain.PaymentMethod{}, notFound("payment method", id)
	}
	return pm, nil
}

type agentRepo struct {
	ports.AgentRepository
	tx *memTx
}

func (r agentRepo) Get(_ context.Context, id string) (domain.Agent, error) {
	a, ok := r.tx.state.agents[id]
	if !ok {
		return domain.Agent{}, notFound("agent", id)
	}
	return a, nil
}

func (r agentRepo) GetForUpdate(ctx context.Context, id string) (domain.Agent, error) {
	return r.Get(ctx, id)
}

func (r agentRepo) Insert(_ context.Context, a domain.Agent) error {
	if _, ok := r.tx.state.agents[a.ID]; ok {
		return fmt.Errorf("agent %s: %w", a.ID, domain.ErrConflict)
	}
	r.tx.state.agents[a.ID] = a
	return nil
}

func (r agentRepo) Update(_ context.Context, a domain.Agent) error {
	if _, ok := r.tx.state.agents[a.ID]; !ok {
		return notFound("agent", a.ID)
	}
	r.tx.state.agents[a.ID] = a
	return nil
}

func (r agentRepo) List(_ context.Context, f ports.AgentFilter, _ ports.Page) ([]domain.Agent, bool, error) {
	var out []domain.Agent
	for _, a := range r.tx.state.agents {
		if !f.ActiveOnly || a.Active {
			out = append(out, a)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, false, nil
}

type taskRepo struct {
	ports.TaskRepository
	tx *memTx
}

func (r taskRepo) Get(_ context.Context, id string) (domain.Task, error) {
	t, ok := r.tx.state.tasks[id]
	if !ok {
		return domain.Task{}, notFound("task", id)
	}
	return t, nil
}

func (r taskRepo) GetForUpdate(ctx context.Context, id string) (domain.Task, error) {
	return r.Get(ctx, id)
}

func (r taskRepo) Insert(_ context.Context, t domain.Task) error {
	if _, ok := r.tx.state.tasks[t.ID()]; ok {
		return fmt.Errorf("task %s: %w", t.ID(), domain.ErrConflict)
	}
	r.tx.state.tasks[t.ID()] = t
	return nil
}

func (r taskRepo) Update(_ context.Context, t domain.Task) error {
	if _, ok := r.tx.state.tasks[t.ID()]; !ok {
		return notFound("task", t.ID())
	}
	r.tx.state.tasks[t.ID()] = t
	return nil
}

func (r taskRepo) List(_ context.Context, f ports.TaskFilter, _ ports.Page) ([]domain.Task, bool, error) {
	var out []domain.Task
	for _, t := range r.tx.state.tasks {
		if (f.CustomerID != "" && t.CustomerID() == f.CustomerID) || (f.AgentID != "" && t.AgentID() == f.AgentID) {
			out = append(out, t)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID() < out[j].ID() })
	return out, false, nil
}

type paymentRepo struct {
	ports.PaymentRepository
	tx *memTx
}

func (r paymentRepo) Get(_ context.Context, id string) (domain.Payment, error) {
	if err := r.tx.store.fault("payments.get"); err != nil {
		return domain.Payment{}, err
	}
	p, ok := r.tx.state.payments[id]
	if !ok {
		return domain.Payment{}, notFound("payment", id)
	}
	return p, nil
}

func (r paymentRepo) GetForUpdate(ctx context.Context, id string) (domain.Payment, error) {
	return r.Get(ctx, id)
}

func (r paymentRepo) GetByPaymentIntent(_ context.Context, piID string) (domain.Payment, error) {
	for _, p := range r.tx.state.payments {
		if p.Record().StripePaymentIntentID == piID {
			return p, nil
		}
	}
	return domain.Payment{}, notFound("payment of intent", piID)
}

func (r paymentRepo) Insert(_ context.Context, p domain.Payment) error {
	if _, ok := r.tx.state.payments[p.ID()]; ok {
		return fmt.Errorf("payment %s: %w", p.ID(), domain.ErrConflict)
	}
	r.tx.state.payments[p.ID()] = p
	return nil
}

func (r paymentRepo) Update(_ context.Context, p domain.Payment) error {
	if err := r.tx.store.fault("payments.update"); err != nil {
		return err
	}
	stored, ok := r.tx.state.payments[p.ID()]
	if !ok {
		return notFound("payment", p.ID())
	}
	if stored.Amount().Currency() != p.Amount().Currency() {
		return fmt.Errorf("payment %s changes currency: %w", p.ID(), domain.ErrCurrencyMismatch)
	}
	r.tx.state.payments[p.ID()] = p
	return nil
}

func (r paymentRepo) Step(_ context.Context, paymentID string, step domain.Step) (ports.StepState, error) {
	if err := r.tx.store.fault("payments.step:" + string(step)); err != nil {
		return ports.StepState{}, err
	}
	st, ok := r.tx.state.steps[stepKey{paymentID, step}]
	if !ok {
		return ports.StepState{PaymentID: paymentID, Step: step, Attempt: 1}, nil
	}
	return st, nil
}

func (r paymentRepo) SaveStep(_ context.Context, s ports.StepState) error {
	if s.Attempt < 1 {
		return fmt.Errorf("step %s of %s: attempt %d", s.Step, s.PaymentID, s.Attempt)
	}
	r.tx.state.steps[stepKey{s.PaymentID, s.Step}] = s
	return nil
}

type ledgerRepo struct {
	ports.LedgerRepository
	tx *memTx
}

// Append enforces what the database enforces: balance, an effective time,
// unique ids and at most one resolution per hold.
func (r ledgerRepo) Append(_ context.Context, t domain.LedgerTransaction) error {
	if err := t.Validate(); err != nil {
		return err
	}
	if t.Meta.EffectiveAt.IsZero() {
		return fmt.Errorf("ledger transaction %s has no effective time", t.ID)
	}
	for _, old := range r.tx.state.ledger {
		if old.ID == t.ID {
			return fmt.Errorf("ledger transaction %s: %w", t.ID, domain.ErrConflict)
		}
		if t.ResolvesID != "" && old.ResolvesID == t.ResolvesID {
			return fmt.Errorf("hold %s is already resolved by %s: %w", t.ResolvesID, old.ID, domain.ErrConflict)
		}
	}
	r.tx.state.ledger = append(r.tx.state.ledger, t)
	return nil
}

func (r ledgerRepo) PendingHold(_ context.Context, paymentID string) (domain.LedgerTransaction, bool, error) {
	resolved := map[string]bool{}
	for _, t := range r.tx.state.ledger {
		if t.ResolvesID != "" {
			resolved[t.ResolvesID] = true
		}
	}
	for _, t := range r.tx.state.ledger {
		if t.Pending && t.Meta.PaymentID == paymentID && !resolved[t.ID] {
			return t, true, nil
		}
	}
	return domain.LedgerTransaction{}, false, nil
}

type outboxRepo struct {
	ports.Outbox
	tx *memTx
}

func (r outboxRepo) Enqueue(_ context.Context, m ports.OutboxMessage) error {
	if _, err := domain.ParseStep(string(m.Step)); err != nil {
		return err
	}
	r.tx.state.outbox = append(r.tx.state.outbox, m)
	return nil
}

type operationRepo struct {
	ports.OperationRepository
	tx *memTx
}

func (r operationRepo) Begin(_ context.Context, subject, kind string) (string, error) {
	for id, op := range r.tx.state.operations {
		if op.subject == subject && op.kind == kind && !op.finished {
			return id, nil
		}
	}
	r.tx.state.nextOp++
	id := fmt.Sprintf("op_%d", r.tx.state.nextOp)
	r.tx.state.operations[id] = operation{subject: subject, kind: kind}
	return id, nil
}

func (r operationRepo) Finish(_ context.Context, id string) error {
	op, ok := r.tx.state.operations[id]
	if !ok {
		return notFound("operation", id)
	}
	op.finished = true
	r.tx.state.operations[id] = op
	return nil
}

type auditRepo struct {
	ports.AuditLog
	tx *memTx
}

func (r auditRepo) Record(_ context.Context, e ports.AuditEvent) error {
	r.tx.state.audit = append(r.tx.state.audit, e)
	return nil
}

// ---------------------------------------------------------------- gateway

// errCrash is the panic value of a simulated process crash right after a
// Stripe call took effect and before its response was recorded.
var errCrash = errors.New("simulated crash after the Stripe call")

// Test payment methods of the fake gateway.
const (
	cardVisa     = "pm_visa"
	cardDeclined = "pm_declined" // ids with this prefix fail off-session with insufficient_funds
	cardOwner    = "user_42"
)

// gatewayFault programs one response of a gateway method.
type gatewayFault struct {
	err error
	// afterEffect applies the call at "Stripe" before failing, like a
	// response lost on the way back.
	afterEffect bool
	// crash panics with errCrash after the effect, like a process dying
	// before it could record the response.
	crash bool
	// block, when set, is waited on before the call runs.
	block chan struct{}
	// entered, when set, is closed when the call starts.
	entered chan struct{}
}

type fakeTransfer struct {
	t                   ports.Transfer
	group, paymentID    string
	destination, source string
	currency            domain.Currency
}

// fakeGateway is a stateful PaymentGateway. Like Stripe it stores the
// answer of every successful or card-declined POST under its idempotency
// key and replays it for the same key, so a retry never acts twice.
type fakeGateway struct {
	mu sync.Mutex

	calls        []string // "Method key", in call order
	faults       map[string][]gatewayFault
	replies      map[string]any // idempotency key → stored answer
	customers    map[string]string
	setupIntents map[string]ports.SetupIntent
	cards        map[string]domain.PaymentMethod
	intents      map[string]ports.PaymentIntent
	captures     map[string]ports.Capture
	transfers    []fakeTransfer
	detached     []string
	nextID       int
	stripeFee    int64
}

func newFakeGateway() *fakeGateway {
	return &fakeGateway{
		faults: map[string][]gatewayFault{}, replies: map[string]any{}, customers: map[string]string{},
		setupIntents: map[string]ports.SetupIntent{}, cards: map[string]domain.PaymentMethod{},
		intents: map[string]ports.PaymentIntent{}, captures: map[string]ports.Capture{}, stripeFee: 33,
	}
}

// program queues answers for the next calls of method.
func (g *fakeGateway) program(method string, faults ...gatewayFault) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.faults[method] = append(g.faults[method], faults...)
}

func networkError() error {
	return &ports.GatewayError{Kind: ports.GatewayNetwork, Message: "connection reset"}
}

func invalidRequest(msg string) error {
	return &ports.GatewayError{Kind: ports.GatewayInvalidRequest, Code: "invalid_request", Message: msg, HTTPStatus: 400}
}

// count returns how many times method was called.
func (g *fakeGateway) count(method string) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	n := 0
	for _, c := range g.calls {
		if c == method || strings.HasPrefix(c, method+" ") {
			n++
		}
	}
	return n
}

// keys returns the idempotency keys method was called with, in order.
func (g *fakeGateway) keys(method string) []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	var out []string
	for _, c := range g.calls {
		if k, ok := strings.CutPrefix(c, method+" "); ok {
			out = append(out, k)
		}
	}
	return out
}

func (g *fakeGateway) transfersOf(paymentID string) []fakeTransfer {
	g.mu.Lock()
	defer g.mu.Unlock()
	var out []fakeTransfer
	for _, t := range g.transfers {
		if t.paymentID == paymentID {
			out = append(out, t)
		}
	}
	return out
}

func (g *fakeGateway) intent(id string) ports.PaymentIntent {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.intents[id]
}

// expireHold cancels an authorization the way Stripe does when the
// capture window ends.
func (g *fakeGateway) expireHold(piID string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	pi := g.intents[piID]
	pi.Status = ports.PICanceled
	pi.AmountCapturable = 0
	g.intents[piID] = pi
}

func (g *fakeGateway) newID(prefix string) string {
	g.nextID++
	return fmt.Sprintf("%s_%d", prefix, g.nextID)
}

// enter records a call and pops its programmed fault, waiting on a block
// outside the lock.
func (g *fakeGateway) enter(method, key string) gatewayFault {
	g.mu.Lock()
	call := method
	if key != "" {
		call += " " + key
	}
	g.calls = append(g.calls, call)
	var f gatewayFault
	if q := g.faults[method]; len(q) > 0 {
		f = q[0]
		g.faults[method] = q[1:]
	}
	g.mu.Unlock()

	if f.entered != nil {
		close(f.entered)
	}
	if f.block != nil {
		<-f.block
	}
	return f
}

// mutate runs a POST: a programmed failure without effect, a replay of a
// stored answer, or the effect followed by the programmed outcome.
func mutate[T any](g *fakeGateway, method, key string, effect func() (T, error)) (T, error) {
	var zero T
	f := g.enter(method, key)
	if f.err != nil && !f.afterEffect && !f.crash {
		return zero, f.err
	}

	g.mu.Lock()
	var out T
	var err error
	if stored, ok := g.replies[key]; ok && key != "" {
		reply := stored.(storedReply[T])
		out, err = reply.value, reply.err
	} else {
		out, err = effect()
		var ge *ports.GatewayError
		if err == nil || (errors.As(err, &ge) && ge.Kind == ports.GatewayCardError) {
			g.replies[key] = storedReply[T]{out, err}
		}
	}
	g.mu.Unlock()

	if f.crash {
		panic(errCrash)
	}
	if f.err != nil {
		return zero, f.err
	}
	return out, err
}

type storedReply[T any] struct {
	value T
	err   error
}

func (g *fakeGateway) CreateCustomer(_ context.Context, in ports.CreateCustomerInput) (string, error) {
	return mutate(g, "CreateCustomer", in.IdempotencyKey, func() (string, error) {
		id := g.newID("cus")
		g.customers[id] = in.UserID
		return id, nil
	})
}

func (g *fakeGateway) CreateSetupIntent(_ context.Context, customerID, key string) (ports.SetupIntent, error) {
	return mutate(g, "CreateSetupIntent", key, func() (ports.SetupIntent, error) {
		id := g.newID("seti")
		si := ports.SetupIntent{ID: id, CustomerID: customerID, ClientSecret: id + "_secret_x", Status: "requires_payment_method"}
		g.setupIntents[id] = si
		return si, nil
	})
}

// confirmSetup plays the browser's part: Stripe.js confirms the
// SetupIntent with a card, which becomes a payment method of the customer.
func (g *fakeGateway) confirmSetup(setupIntentID, brand, last4 string) string {
	g.mu.Lock()
	defer g.mu.Unlock()
	si := g.setupIntents[setupIntentID]
	pmID := g.newID("pm")
	g.cards[pmID] = domain.PaymentMethod{ID: pmID, Brand: brand, Last4: last4, ExpMonth: 12, ExpYear: 2030}
	si.Status = ports.SetupIntentSucceeded
	si.PaymentMethodID = pmID
	g.setupIntents[setupIntentID] = si
	return pmID
}

func (g *fakeGateway) GetSetupIntent(_ context.Context, id string) (ports.SetupIntent, error) {
	g.enter("GetSetupIntent", "")
	g.mu.Lock()
	defer g.mu.Unlock()
	si, ok := g.setupIntents[id]
	if !ok {
		return ports.SetupIntent{}, fmt.Errorf("setup intent %s: %w", id, ports.ErrGatewayNotFound)
	}
	return si, nil
}

func (g *fakeGateway) GetPaymentMethod(_ context.Context, id string) (domain.PaymentMethod, error) {
	g.enter("GetPaymentMethod", "")
	g.mu.Lock()
	defer g.mu.Unlock()
	pm, ok := g.cards[id]
	if !ok {
		return domain.PaymentMethod{}, fmt.Errorf("payment method %s: %w", id, ports.ErrGatewayNotFound)
	}
	return pm, nil
}

func (g *fakeGateway) ListPaymentMethods(context.Context, string) ([]domain.PaymentMethod, error) {
	g.enter("ListPaymentMethods", "")
	return nil, nil
}

func (g *fakeGateway) DetachPaymentMethod(_ context.Context, id, key string) error {
	_, err := mutate(g, "DetachPaymentMethod", key, func() (struct{}, error) {
		g.detached = append(g.detached, id)
		return struct{}{}, nil
	})
	return err
}

func (g *fakeGateway) Authorize(_ context.Context, in ports.AuthorizeInput) (ports.PaymentIntent, error) {
	return mutate(g, "Authorize", in.IdempotencyKey, func() (ports.PaymentIntent, error) {
		id := g.newID("pi")
		pi := ports.PaymentIntent{
			ID: id, ClientSecret: id + "_secret_y", Amount: in.Amount.Amount(), Currency: in.Amount.Currency(),
			CustomerID: in.CustomerID, PaymentMethodID: in.PaymentMethodID, PaymentID: in.PaymentID,
		}
		switch {
		case in.PaymentMethodID == "":
			pi.Status = ports.PIRequiresPaymentMethod
		case strings.HasPrefix(in.PaymentMethodID, cardDeclined):
			pi.Status = ports.PIRequiresPaymentMethod
			pi.LastErrorCode, pi.LastDeclineCode = "card_declined", "insufficient_funds"
			g.intents[id] = pi
			return ports.PaymentIntent{}, &ports.GatewayError{Kind: ports.GatewayCardError, Code: "card_declined",
				DeclineCode: "insufficient_funds", HTTPStatus: 402, PaymentIntent: &pi}
		default:
			pi.Status = ports.PIRequiresCapture
			pi.AmountCapturable = pi.Amount
			pi.LatestChargeID = g.newID("ch")
			pi.CaptureBefore = time.Date(2025, 3, 6, 6, 0, 0, 0, time.UTC)
		}
		g.intents[id] = pi
		return pi, nil
	})
}

func (g *fakeGateway) GetPaymentIntent(_ context.Context, id string) (ports.PaymentIntent, error) {
	g.enter("GetPaymentIntent", "")
	g.mu.Lock()
	defer g.mu.Unlock()
	pi, ok := g.intents[id]
	if !ok {
		return ports.PaymentIntent{}, fmt.Errorf("payment intent %s: %w", id, ports.ErrGatewayNotFound)
	}
	return pi, nil
}

func (g *fakeGateway) FindPaymentIntent(_ context.Context, customerID, paymentID string) (ports.PaymentIntent, bool, error) {
	g.enter("FindPaymentIntent", "")
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, pi := range g.intents {
		if pi.CustomerID == customerID && pi.PaymentID == paymentID {
			return pi, true, nil
		}
	}
	return ports.PaymentIntent{}, false, nil
}

func (g *fakeGateway) Capture(_ context.Context, piID string, amount int64, key string) (ports.Capture, error) {
	return mutate(g, "Capture", key, func() (ports.Capture, error) {
		pi, ok := g.intents[piID]
		if !ok || pi.Status != ports.PIRequiresCapture {
			return ports.Capture{}, invalidRequest(fmt.Sprintf("payment intent %s is %s and cannot be captured", piID, pi.Status))
		}
		if amount > pi.AmountCapturable {
			return ports.Capture{}, invalidRequest("amount_to_capture is above the capturable amount")
		}
		pi.Status = ports.PISucceeded
		pi.AmountReceived, pi.AmountCapturable = amount, 0
		g.intents[piID] = pi
		c := ports.Capture{PaymentIntentID: piID, ChargeID: pi.LatestChargeID, BalanceTransactionID: g.newID("txn"),
			Amount: amount, StripeFee: min(g.stripeFee, amount)}
		g.captures[piID] = c
		return c, nil
	})
}

func (g *fakeGateway) GetCapture(_ context.Context, piID string) (ports.Capture, error) {
	g.enter("GetCapture", "")
	g.mu.Lock()
	defer g.mu.Unlock()
	c, ok := g.captures[piID]
	if !ok {
		return ports.Capture{}, fmt.Errorf("capture of %s: %w", piID, ports.ErrGatewayNotFound)
	}
	return c, nil
}

func (g *fakeGateway) CancelPaymentIntent(_ context.Context, piID, key string) (ports.PaymentIntent, error) {
	return mutate(g, "CancelPaymentIntent", key, func() (ports.PaymentIntent, error) {
		pi, ok := g.intents[piID]
		if !ok || pi.Status == ports.PISucceeded || pi.Status == ports.PICanceled {
			return ports.PaymentIntent{}, invalidRequest(fmt.Sprintf("payment intent %s is %s and cannot be canceled", piID, pi.Status))
		}
		pi.Status = ports.PICanceled
		pi.AmountCapturable = 0
		g.intents[piID] = pi
		return pi, nil
	})
}

func (g *fakeGateway) CreateTransfer(_ context.Context, in ports.TransferInput) (ports.Transfer, error) {
	return mutate(g, "CreateTransfer", in.IdempotencyKey, func() (ports.Transfer, error) {
		if in.DestinationAccount == "acct_invalid" {
			return ports.Transfer{}, invalidRequest("no such destination: acct_invalid")
		}
		t := ports.Transfer{ID: g.newID("tr"), Amount: in.Amount.Amount()}
		g.transfers = append(g.transfers, fakeTransfer{t: t, group: in.TransferGroup, paymentID: in.PaymentID,
			destination: in.DestinationAccount, source: in.SourceChargeID, currency: in.Amount.Currency()})
		return t, nil
	})
}

func (g *fakeGateway) FindTransfer(_ context.Context, group, paymentID string) (ports.Transfer, bool, error) {
	g.enter("FindTransfer", "")
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, t := range g.transfers {
		if t.group == group && t.paymentID == paymentID {
			return t.t, true, nil
		}
	}
	return ports.Transfer{}, false, nil
}

var _ ports.PaymentGateway = (*fakeGateway)(nil)
var _ ports.Store = (*memStore)(nil)

// ---------------------------------------------------------------- wiring

// recordingObserver counts committed payment transitions by target.
type recordingObserver struct {
	mu     sync.Mutex
	counts map[domain.PaymentStatus]int
}

func (o *recordingObserver) PaymentTransitioned(to domain.PaymentStatus, _ domain.Currency, _ int64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.counts == nil {
		o.counts = map[domain.PaymentStatus]int{}
	}
	o.counts[to]++
}

func (o *recordingObserver) count(to domain.PaymentStatus) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.counts[to]
}

// Fixtures every environment starts with.
const (
	paidAgentID   = "agent_paid"
	freeAgentID   = "agent_free"
	otherAgentID  = "agent_other"
	payoutAccount = "acct_1Paid"
	leaseTTL      = time.Minute
)
