package http_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	apihttp "github.com/taskpod/billing/adapters/http"
	"github.com/taskpod/billing/adapters/outbox"
	"github.com/taskpod/billing/adapters/postgres"
	"github.com/taskpod/billing/adapters/postgres/pgtest"
	"github.com/taskpod/billing/adapters/stripe"
	"github.com/taskpod/billing/adapters/stripe/emulator"
	"github.com/taskpod/billing/adapters/system"
	"github.com/taskpod/billing/application"
	"github.com/taskpod/billing/domain"
	"github.com/taskpod/billing/migrations"
	"github.com/taskpod/billing/ports"
)

// TestMain gives the package its own PostgreSQL database. Fuzz workers
// run no route test and skip it.
func TestMain(m *testing.M) {
	flag.Parse()
	if f := flag.Lookup("test.fuzzworker"); f != nil && f.Value.String() == "true" {
		os.Exit(m.Run())
	}
	os.Exit(pgtest.Main(m))
}

// emulatorKey is the secret key the gateway sends; the emulator accepts
// any key that starts with sk_test_.
const emulatorKey = "sk_test_TaskPodRoutes"

// stack is the whole service in-process: the API over real PostgreSQL,
// the Stripe emulator behind the real gateway, and the outbox relay.
type stack struct {
	api      *httptest.Server
	emulator *httptest.Server
	tokens   *postgres.Tokens
	client   *http.Client
	seq      atomic.Int64

	// What startRelay needs to build a relay.
	pool  *pgxpool.Pool
	steps *application.Steps
	log   *slog.Logger
}

var (
	sharedOnce  sync.Once
	sharedStack *stack
	sharedErr   error
)

// testLogger discards logs unless the test runs with -v.
func testLogger() *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// startStack builds the stack once for the package. Tests share it and
// keep apart by using fresh customer and agent ids.
func startStack(t *testing.T) *stack {
	t.Helper()
	pool := pgtest.Pool(t)
	sharedOnce.Do(func() { sharedStack, sharedErr = buildStack(pool) })
	if sharedErr != nil {
		t.Fatalf("start the service stack: %v", sharedErr)
	}
	return sharedStack
}

// buildStack wires the service the way cmd/billingd's serve command does.
// Its servers live until the test binary exits.
func buildStack(pool *pgxpool.Pool) (*stack, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := postgres.Migrate(ctx, pool, migrations.FS); err != nil {
		return nil, fmt.Errorf("migrate: %w", err)
	}
	log := testLogger()

	em, err := emulator.New(ctx, pool, emulator.Config{Logger: log})
	if err != nil {
		return nil, fmt.Errorf("emulator: %w", err)
	}
	emulatorServer := httptest.NewServer(em.Handler())

	gateway, err := stripe.New(stripe.Config{SecretKey: emulatorKey, APIBase: emulatorServer.URL, Logger: log})
	if err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	store := postgres.NewStore(pool, outbox.NewTxOutbox).WithLogger(log)
	clock, ids := system.Clock{}, system.IDs{}
	currencies := []domain.Currency{"usd", "jpy"}

	steps := application.NewSteps(store, gateway, clock, ids, nil, application.StepsConfig{LeaseTTL: time.Minute}, log)
	billing := application.NewBilling(store, gateway, clock, log)
	tasks := application.NewTasks(store, billing, steps, clock, ids, application.TasksConfig{FeeRate: 250, Currencies: currencies}, log)
	agents := application.NewAgents(store, clock, ids, currencies, log)

	tokens := postgres.NewTokens(pool)
	api := apihttp.NewServer(apihttp.Deps{
		Billing: billing, Tasks: tasks, Agents: agents, Ledger: postgres.NewLedgerReader(pool),
		Auth: tokenAuth{tokens}, Log: log,
	})
	return &stack{
		api: httptest.NewServer(api), emulator: emulatorServer, tokens: tokens,
		client: &http.Client{Timeout: 30 * time.Second},
		pool:   pool, steps: steps, log: log,
	}, nil
}

// startRelay runs the outbox relay until the returned stop is called.
//
// NOTE: the relay runs only while a test waits for background work. Running
// it all the time lets it claim a new task's authorize message before
// Tasks.Create runs it inline, and Create then returns 202 although Stripe
// is reachable (1 create in 60 in one run with a 20 ms poll interval).
func (s *stack) startRelay(t *testing.T) (stop func()) {
	t.Helper()
	relay, err := outbox.NewRelay(s.pool, s.steps, outbox.RelayConfig{
		PollInterval: 20 * time.Millisecond, BaseBackoff: 50 * time.Millisecond, MaxBackoff: 500 * time.Millisecond,
	}, nil, s.log)
	if err != nil {
		t.Fatalf("build the outbox relay: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- relay.Run(context.Background()) }()
	select {
	case <-relay.RunningChan():
	case err := <-done:
		t.Fatalf("the outbox relay stopped at start: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("the outbox relay did not start within 30s")
	}
	return func() {
		if err := relay.Close(); err != nil {
			t.Errorf("close the outbox relay: %v", err)
		}
		if err := <-done; err != nil {
			t.Errorf("outbox relay: %v", err)
		}
	}
}

// tokenAuth adapts the token store to the API's Authenticator, as the
// serve command does.
type tokenAuth struct{ tokens *postgres.Tokens }

func (a tokenAuth) Authenticate(ctx context.Context, token string) (apihttp.Principal, error) {
	p, err := a.tokens.Authenticate(ctx, token)
	if errors.Is(err, postgres.ErrTokenInvalid) {
		return apihttp.Principal{}, apihttp.ErrInvalidToken
	}
	if err != nil {
		return apihttp.Principal{}, err
	}
	return apihttp.Principal{TokenID: p.TokenID, Role: application.Role(p.Role), Subject: p.Subject}, nil
}

// uniqueID returns prefix followed by a number unique in this run and a
// time component, so reruns against a kept database never collide.
func (s *stack) uniqueID(prefix string) string {
	return fmt.Sprintf("%s%d%d", prefix, time.Now().UnixNano()%1_000_000_000, s.seq.Add(1))
}

// token mints a bearer token for role and subject.
func (s *stack) token(t *testing.T, role, subject string) string {
	t.Helper()
	_, tok, err := s.tokens.Create(context.Background(), role, subject, nil)
	if err != nil {
		t.Fatalf("create %s token for %s: %v", role, subject, err)
	}
	return tok
}

// response is one API response with its decoded JSON body.
type response struct {
	status    int
	header    http.Header
	raw       []byte
	body      map[string]any
	requestID string
}

// call sends a request to the API. body is sent as is when it is a string
// and as JSON otherwise; nil sends no body.
func (s *stack) call(t *testing.T, method, path, token string, body any) response {
	t.Helper()
	var reader io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		reader = strings.NewReader(b)
	default:
		raw, err := json.Marshal(b)
		if err != nil {
			t.Fatalf("encode request body: %v", err)
		}
		reader = bytes.NewReader(raw)
	}
	req, err := http.NewRequest(method, s.api.URL+path, reader)
	if err != nil {
		t.Fatalf("build request: %v", err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	return s.do(t, req)
}

func (s *stack) do(t *testing.T, req *http.Request) response {
	t.Helper()
	res, err := s.client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("read response of %s %s: %v", req.Method, req.URL.Path, err)
	}
	out := response{status: res.StatusCode, header: res.Header, raw: raw, requestID: res.Header.Get("Request-Id")}
	if len(bytes.TrimSpace(raw)) > 0 {
		if err := json.Unmarshal(raw, &out.body); err != nil {
			t.Fatalf("%s %s returned %d with a body that is not a JSON object: %v\n%s", req.Method, req.URL.Path, res.StatusCode, err, raw)
		}
	}
	return out
}

// emulatorCall sends a request to the emulator: form-encoded with the
// secret key for its Stripe API, JSON for its control API.
func (s *stack) emulatorCall(t *testing.T, method, path string, form url.Values) map[string]any {
	t.Helper()
	var reader io.Reader
	if form != nil {
		reader = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, s.emulator.URL+path, reader)
	if err != nil {
		t.Fatalf("build emulator request: %v", err)
	}
	req.Header.Set("Authorization", "Bearer "+emulatorKey)
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	res, err := s.client.Do(req)
	if err != nil {
		t.Fatalf("emulator %s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	var out map[string]any
	if err := json.NewDecoder(res.Body).Decode(&out); err != nil {
		t.Fatalf("emulator %s %s: decode: %v", method, path, err)
	}
	if res.StatusCode >= 300 {
		t.Fatalf("emulator %s %s: status %d: %v", method, path, res.StatusCode, out)
	}
	return out
}

// emulatorControl sends a JSON request to the emulator's control API.
func (s *stack) emulatorControl(t *testing.T, method, path string, body any) {
	t.Helper()
	raw, err := json.Marshal(body)
	if err != nil {
		t.Fatalf("encode control body: %v", err)
	}
	req, err := http.NewRequest(method, s.emulator.URL+path, bytes.NewReader(raw))
	if err != nil {
		t.Fatalf("build control request: %v", err)
	}
	req.Header.Set("Content-Type", "application/json")
	res, err := s.client.Do(req)
	if err != nil {
		t.Fatalf("emulator %s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	if res.StatusCode >= 300 {
		msg, _ := io.ReadAll(res.Body)
		t.Fatalf("emulator %s %s: status %d: %s", method, path, res.StatusCode, msg)
	}
}

// emulatorObjects lists the emulator's stored objects of one type whose
// top-level fields equal the filters, oldest first. The control API
// filters on some fields only, such as transfer_group, so every filter is
// applied here as well.
func (s *stack) emulatorObjects(t *testing.T, typ string, filters map[string]string) []map[string]any {
	t.Helper()
	q := url.Values{"type": {typ}}
	for k, v := range filters {
		q.Set(k, v)
	}
	out := s.emulatorCall(t, http.MethodGet, "/_emulator/objects?"+q.Encode(), nil)
	data, _ := out["data"].([]any)
	objects := make([]map[string]any, 0, len(data))
	for _, d := range data {
		object := d.(map[string]any)
		matches := true
		for k, v := range filters {
			if got, _ := object[k].(string); got != v {
				matches = false
			}
		}
		if matches {
			objects = append(objects, object)
		}
	}
	return objects
}

// ---------------------------------------------------------------- fixtures

// world is one test's cast: an admin, an auditor, two customers and a paid
// agent priced at 100 usd, all with their own tokens and fresh ids.
type world struct {
	s                         *stack
	admin, auditor            string
	customerID, customer      string
	otherID, other            string
	agentID, agentName, agent string
	otherAgentID, otherAgent  string
}

func newWorld(t *testing.T) *world {
	t.Helper()
	s := startStack(t)
	w := &world{s: s}
	w.admin = s.token(t, "admin", "ops")
	w.auditor = s.token(t, "auditor", "audit_team")
	w.customerID = s.uniqueID("user_")
	w.customer = s.token(t, "customer", w.customerID)
	w.otherID = s.uniqueID("user_")
	w.other = s.token(t, "customer", w.otherID)
	w.agentID = s.uniqueID("agent")
	w.agentName = "Habit AI " + w.agentID
	w.agent = s.token(t, "agent", w.agentID)
	w.otherAgentID = s.uniqueID("agent")
	w.otherAgent = s.token(t, "agent", w.otherAgentID)
	w.createAgent(t, w.agentID, w.agentName, 100, "usd")
	w.createAgent(t, w.otherAgentID, "Other AI", 300, "usd")
	return w
}

func (w *world) createAgent(t *testing.T, id, name string, price int64, currency string) {
	t.Helper()
	body := map[string]any{"id": id, "name": name, "priceCents": price, "currency": currency}
	if price > 0 {
		body["stripeAccountId"] = "acct_1" + strings.ReplaceAll(id, "_", "")
	}
	res := w.s.call(t, http.MethodPost, "/v1/agents", w.admin, body)
	if res.status != http.StatusCreated {
		t.Fatalf("create agent %s: %d %s", id, res.status, res.raw)
	}
}

// saveCard runs the card flow for a customer token: setup, confirmation at
// the emulator with a test payment method, and confirm-setup. It returns
// the confirm-setup response.
func (w *world) saveCard(t *testing.T, token, testCard string) response {
	t.Helper()
	setup := w.s.call(t, http.MethodPost, "/v1/billing/setup", token, map[string]any{})
	if setup.status != http.StatusOK {
		t.Fatalf("setup: %d %s", setup.status, setup.raw)
	}
	seti, _ := setup.body["setupIntentId"].(string)
	w.s.emulatorCall(t, http.MethodPost, "/v1/setup_intents/"+seti+"/confirm", url.Values{"payment_method": {testCard}})
	confirm := w.s.call(t, http.MethodPost, "/v1/billing/confirm-setup", token, map[string]any{"setupIntentId": seti})
	if confirm.status != http.StatusOK {
		t.Fatalf("confirm-setup: %d %s", confirm.status, confirm.raw)
	}
	return confirm
}

// createTask creates a task for agentID with the customer token and
// returns the response, whatever its status.
func (w *world) createTask(t *testing.T, token, agentID string, maxPrice int64) response {
	t.Helper()
	return w.s.call(t, http.MethodPost, "/v1/tasks", token, map[string]any{
		"title": "Analyze this meal", "description": "Identify calories and macros", "agentId": agentID, "maxPriceCents": maxPrice,
	})
}

// waitForPayment runs the relay and polls GET /v1/payments/{id} until its
// status is want, failing after 30 seconds. The relay finishes money steps
// in the background, so polling is the way a client learns about them.
func (w *world) waitForPayment(t *testing.T, token, paymentID, want string) map[string]any {
	t.Helper()
	stop := w.s.startRelay(t)
	defer stop()
	deadline := time.Now().Add(30 * time.Second)
	var last response
	for time.Now().Before(deadline) {
		last = w.s.call(t, http.MethodGet, "/v1/payments/"+paymentID, token, nil)
		if last.status == http.StatusOK && last.body["status"] == want {
			return last.body
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("payment %s did not reach %s in 30s; last response %d %s", paymentID, want, last.status, last.raw)
	return nil
}

// ---------------------------------------------------------------- JSON helpers

// field walks a decoded JSON object along a dotted path.
func field(body map[string]any, path string) any {
	var cur any = body
	for _, part := range strings.Split(path, ".") {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = m[part]
	}
	return cur
}

func str(body map[string]any, path string) string {
	s, _ := field(body, path).(string)
	return s
}

// num returns a JSON number as int64; JSON numbers decode as float64,
// exact for the amounts used here.
func num(body map[string]any, path string) int64 {
	f, _ := field(body, path).(float64)
	return int64(f)
}

var _ ports.LedgerReader = (*postgres.LedgerReader)(nil)
