package http_test

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
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
)

// Webhook secrets of the test service; the emulator signs with the current one.
const (
	whSecret         = "whsec_webhook_tests_current"
	whPreviousSecret = "whsec_webhook_tests_previous"
	whEmulatorKey    = "sk_test_WebhookTests"
)

// webhookEnvOptions change one webhook test environment.
type webhookEnvOptions struct {
	policy   domain.HoldExpiryPolicy
	noRelay  bool
	clawback bool
}

// webhookEnv is the service in-process: the API with the webhook route, the
// Stripe emulator sending signed events to it, and the outbox relay. Each
// env has a database of its own, so moving the emulator's clock or pausing
// its webhooks touches no other test.
type webhookEnv struct {
	pool     *pgxpool.Pool
	api      *httptest.Server
	emuURL   string
	tokens   *postgres.Tokens
	store    *postgres.Store
	steps    *application.Steps
	webhooks *application.Webhooks
	expiry   *application.Expiry
	clock    *shiftClock
	logs     *logCapture
	counts   *webhookCounts
	client   *http.Client
	log      *slog.Logger
	seq      atomic.Int64
	relay    func()
}

// shiftClock is the real clock moved by a settable offset, for the
// scheduler and the event retries.
type shiftClock struct {
	offset atomic.Int64
}

func (c *shiftClock) Now() time.Time {
	return system.Clock{}.Now().Add(time.Duration(c.offset.Load()))
}

func (c *shiftClock) set(at time.Time) { c.offset.Store(int64(time.Until(at))) }

// logCapture keeps every JSON log record for assertions.
type logCapture struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logCapture) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

// records returns the log records whose msg is msg.
func (l *logCapture) records(msg string) []map[string]any {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]any
	for _, line := range strings.Split(l.buf.String(), "\n") {
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) == nil && rec["msg"] == msg {
			out = append(out, rec)
		}
	}
	return out
}

// webhookCounts records WebhookReceived calls.
type webhookCounts struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *webhookCounts) WebhookReceived(eventType, outcome string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n[eventType+"/"+outcome]++
}

func (c *webhookCounts) get(key string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[key]
}

type webhookAuth struct{ tokens *postgres.Tokens }

func (a webhookAuth) Authenticate(ctx context.Context, token string) (apihttp.Principal, error) {
	p, err := a.tokens.Authenticate(ctx, token)
	if errors.Is(err, postgres.ErrTokenInvalid) {
		return apihttp.Principal{}, apihttp.ErrInvalidToken
	}
	if err != nil {
		return apihttp.Principal{}, err
	}
	return apihttp.Principal{TokenID: p.TokenID, Role: application.Role(p.Role), Subject: p.Subject}, nil
}

func newWebhookEnv(t *testing.T, opts webhookEnvOptions) *webhookEnv {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	name, err := pgtest.CreateDatabase(ctx, "wh")
	if err != nil {
		t.Fatalf("create database: %v", err)
	}
	pool, err := pgxpool.New(ctx, pgtest.DatabaseURL(name))
	if err != nil {
		t.Fatalf("open database: %v", err)
	}
	t.Cleanup(func() {
		pool.Close()
		dropCtx, dropCancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer dropCancel()
		if err := pgtest.DropDatabase(dropCtx, name); err != nil {
			t.Logf("drop database %s: %v", name, err)
		}
	})
	if _, err := postgres.Migrate(ctx, pool, migrations.FS); err != nil {
		t.Fatalf("migrate: %v", err)
	}

	e := &webhookEnv{pool: pool, clock: &shiftClock{}, logs: &logCapture{}, counts: &webhookCounts{n: map[string]int{}},
		client: &http.Client{Timeout: 30 * time.Second}}
	e.log = slog.New(slog.NewJSONHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	t.Cleanup(func() {
		if t.Failed() {
			e.logs.mu.Lock()
			t.Logf("service log:\n%s", e.logs.buf.String())
			e.logs.mu.Unlock()
		}
	})

	// The API's URL must exist before the emulator that posts to it.
	var handler atomic.Value
	e.api = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		handler.Load().(http.Handler).ServeHTTP(w, r)
	}))
	t.Cleanup(e.api.Close)

	em, err := emulator.New(ctx, pool, emulator.Config{Logger: e.log, WebhookURL: e.api.URL + "/v1/stripe/webhooks", WebhookSecret: whSecret})
	if err != nil {
		t.Fatalf("emulator: %v", err)
	}
	emuServer := httptest.NewServer(em.Handler())
	t.Cleanup(emuServer.Close)
	e.emuURL = emuServer.URL
	em.Start(context.Background())
	t.Cleanup(em.Close)

	gateway, err := stripe.New(stripe.Config{SecretKey: whEmulatorKey, APIBase: emuServer.URL, Logger: e.log})
	if err != nil {
		t.Fatalf("gateway: %v", err)
	}
	e.store = postgres.NewStore(pool, outbox.NewTxOutbox).WithLogger(e.log)
	clock, ids := system.Clock{}, system.IDs{}
	currencies := []domain.Currency{"usd"}

	e.steps = application.NewSteps(e.store, gateway, clock, ids, nil, application.StepsConfig{LeaseTTL: time.Minute}, e.log)
	policy := opts.policy
	if policy == "" {
		policy = domain.HoldExpiryReauthorize
	}
	e.steps.SetHoldExpiryPolicy(policy)
	billing := application.NewBilling(e.store, gateway, clock, e.log)
	tasks := application.NewTasks(e.store, billing, e.steps, clock, ids, application.TasksConfig{FeeRate: 250, Currencies: currencies}, e.log)
	agents := application.NewAgents(e.store, clock, ids, currencies, e.log)
	parser := stripe.NewWebhookParser(whSecret, whPreviousSecret)
	e.webhooks = application.NewWebhooks(e.store, gateway, gateway, parser, e.steps, e.clock, ids, e.counts,
		application.WebhooksConfig{DisputeClawback: opts.clawback, RetryBase: time.Second}, e.log)
	refunds := application.NewRefunds(e.store, e.steps, clock, ids, e.log)
	e.expiry = application.NewExpiry(e.store, e.store, e.webhooks, e.clock, application.ExpiryConfig{
		Policy: policy, RenewBefore: 24 * time.Hour, PendingPaymentTimeout: 24 * time.Hour,
	}, e.log)

	e.tokens = postgres.NewTokens(pool)
	handler.Store(http.Handler(apihttp.NewServer(apihttp.Deps{
		Billing: billing, Tasks: tasks, Agents: agents, Ledger: postgres.NewLedgerReader(pool),
		Auth: webhookAuth{e.tokens}, Log: e.log,
		Webhooks: apihttp.WebhookDeps{Parser: parser, Webhooks: e.webhooks, Refunds: refunds},
	})))

	if !opts.noRelay {
		e.startRelay(t)
	}
	return e
}

// startRelay runs the outbox relay until the test ends.
func (e *webhookEnv) startRelay(t *testing.T) {
	t.Helper()
	relay, err := outbox.NewRelay(e.pool, e.steps, outbox.RelayConfig{
		PollInterval: 20 * time.Millisecond, BaseBackoff: 50 * time.Millisecond, MaxBackoff: 300 * time.Millisecond,
	}, nil, e.log)
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
	t.Cleanup(func() {
		if err := relay.Close(); err != nil {
			t.Errorf("close the outbox relay: %v", err)
		}
		<-done
	})
}

func (e *webhookEnv) id(prefix string) string {
	return fmt.Sprintf("%s%d", prefix, e.seq.Add(1))
}

func (e *webhookEnv) token(t *testing.T, role, subject string) string {
	t.Helper()
	_, tok, err := e.tokens.Create(context.Background(), role, subject, nil)
	if err != nil {
		t.Fatalf("create %s token: %v", role, err)
	}
	return tok
}

// call sends a JSON request to the API and decodes the JSON response into a map.
func (e *webhookEnv) call(t *testing.T, method, path, token string, body any) (int, map[string]any) {
	t.Helper()
	var reader io.Reader
	if body != nil {
		raw, err := json.Marshal(body)
		if err != nil {
			t.Fatalf("encode body: %v", err)
		}
		reader = bytes.NewReader(raw)
	}
	req, err := http.NewRequest(method, e.api.URL+path, reader)
	if err != nil {
		t.Fatalf("build request: %v", err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	return e.do(t, req)
}

func (e *webhookEnv) do(t *testing.T, req *http.Request) (int, map[string]any) {
	t.Helper()
	res, err := e.client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	out := map[string]any{}
	if len(bytes.TrimSpace(raw)) > 0 {
		if err := json.Unmarshal(raw, &out); err != nil {
			t.Fatalf("%s %s: decode %q: %v", req.Method, req.URL.Path, raw, err)
		}
	}
	return res.StatusCode, out
}

// stripeCall sends a form request to the emulator's Stripe API. A card
// decline (402) is returned; any other error fails the test.
func (e *webhookEnv) stripeCall(t *testing.T, method, path string, form map[string]string) map[string]any {
	t.Helper()
	values := make([]string, 0, len(form))
	for k, v := range form {
		values = append(values, k+"="+v)
	}
	req, err := http.NewRequest(method, e.emuURL+path, strings.NewReader(strings.Join(values, "&")))
	if err != nil {
		t.Fatalf("build request: %v", err)
	}
	req.Header.Set("Authorization", "Bearer "+whEmulatorKey)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	status, out := e.do(t, req)
	if status >= 500 || (status >= 400 && status != http.StatusPaymentRequired) {
		t.Fatalf("%s %s: status %d: %v", method, path, status, out)
	}
	return out
}

// control calls the emulator's control API and checks for a 200.
func (e *webhookEnv) control(t *testing.T, method, path string, body any) map[string]any {
	t.Helper()
	var reader io.Reader = http.NoBody
	if body != nil {
		raw, _ := json.Marshal(body)
		reader = bytes.NewReader(raw)
	}
	req, err := http.NewRequest(method, e.emuURL+path, reader)
	if err != nil {
		t.Fatalf("build request: %v", err)
	}
	status, out := e.do(t, req)
	if status != http.StatusOK {
		t.Fatalf("%s %s: status %d: %v", method, path, status, out)
	}
	return out
}

// objects lists emulator objects of one type matching the filters.
func (e *webhookEnv) objects(t *testing.T, typ string, filters ...string) []map[string]any {
	t.Helper()
	q := "/_emulator/objects?type=" + typ
	for i := 0; i+1 < len(filters); i += 2 {
		q += "&" + filters[i] + "=" + filters[i+1]
	}
	out := e.control(t, http.MethodGet, q, nil)
	var list []map[string]any
	for _, o := range out["data"].([]any) {
		list = append(list, o.(map[string]any))
	}
	return list
}

// waitFor polls cond until it holds or 20 seconds pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// sign returns a Stripe-Signature header for body at time at.
func sign(secret string, at time.Time, body []byte) string {
	ts := strconv.FormatInt(at.Unix(), 10)
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(ts + "." + string(body)))
	return "t=" + ts + ",v1=" + hex.EncodeToString(mac.Sum(nil))
}

// postEvent sends a raw event body to the webhook route.
func (e *webhookEnv) postEvent(t *testing.T, body []byte, signature string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, e.api.URL+"/v1/stripe/webhooks", bytes.NewReader(body))
	if err != nil {
		t.Fatalf("build request: %v", err)
	}
	req.Header.Set("Content-Type", "application/json")
	if signature != "" {
		req.Header.Set("Stripe-Signature", signature)
	}
	return e.do(t, req)
}

// paidAgent registers an agent priced at price cents with a Connect account.
func (e *webhookEnv) paidAgent(t *testing.T, admin string, price int64) (id, account string) {
	t.Helper()
	id = e.id("agent")
	account = "acct_" + id
	status, body := e.call(t, http.MethodPost, "/v1/agents", admin, map[string]any{
		"id": id, "name": "Agent " + id, "priceCents": price, "currency": "usd", "stripeAccountId": account,
	})
	if status != http.StatusCreated {
		t.Fatalf("create agent: %d %v", status, body)
	}
	return id, account
}

// saveCard saves pm as the customer's default card through a SetupIntent.
func (e *webhookEnv) saveCard(t *testing.T, customer, pm string) string {
	t.Helper()
	_, setup := e.call(t, http.MethodPost, "/v1/billing/setup", customer, map[string]any{})
	seti, _ := setup["setupIntentId"].(string)
	e.stripeCall(t, http.MethodPost, "/v1/setup_intents/"+seti+"/confirm", map[string]string{"payment_method": pm})
	status, card := e.call(t, http.MethodPost, "/v1/billing/confirm-setup", customer, map[string]any{"setupIntentId": seti})
	if status != http.StatusOK {
		t.Fatalf("confirm setup: %d %v", status, card)
	}
	return card["id"].(string)
}

// createTask creates a task for agent and returns its id.
func (e *webhookEnv) createTask(t *testing.T, customer, agent string, maxPrice int64) string {
	t.Helper()
	status, body := e.call(t, http.MethodPost, "/v1/tasks", customer, map[string]any{
		"title": "Webhook test task", "agentId": agent, "maxPriceCents": maxPrice,
	})
	if status != http.StatusCreated && status != http.StatusAccepted {
		t.Fatalf("create task: %d %v", status, body)
	}
	return body["id"].(string)
}

// task reads a task as the customer.
func (e *webhookEnv) task(t *testing.T, token, id string) map[string]any {
	t.Helper()
	status, body := e.call(t, http.MethodGet, "/v1/tasks/"+id, token, nil)
	if status != http.StatusOK {
		t.Fatalf("get task %s: %d %v", id, status, body)
	}
	return body
}

func paymentOfTask(task map[string]any) map[string]any {
	p, _ := task["payment"].(map[string]any)
	return p
}

// waitTask polls a task until its status and payment status are as given.
func (e *webhookEnv) waitTask(t *testing.T, token, id, taskStatus, paymentStatus string) map[string]any {
	t.Helper()
	var last map[string]any
	waitFor(t, fmt.Sprintf("task %s %s with payment %s", id, taskStatus, paymentStatus), func() bool {
		last = e.task(t, token, id)
		p := paymentOfTask(last)
		return last["status"] == taskStatus && p != nil && p["status"] == paymentStatus
	})
	return last
}

// ledgerRow is one ledger entry read straight from the tables.
type ledgerRow struct {
	kind, account string
	amount        int64
	pending       bool
	resolves      string
}

func (e *webhookEnv) ledger(t *testing.T, paymentID string) []ledgerRow {
	t.Helper()
	rows, err := e.pool.Query(context.Background(), `
		SELECT t.kind, e.account_id, e.amount, e.pending, coalesce(t.resolves_id, '')
		  FROM ledger_transactions t LEFT JOIN ledger_entries e ON e.transaction_id = t.id
		 WHERE t.payment_id = $1 ORDER BY t.recorded_at, e.id`, paymentID)
	if err != nil {
		t.Fatalf("read ledger: %v", err)
	}
	defer rows.Close()
	var out []ledgerRow
	for rows.Next() {
		var r ledgerRow
		var account *string
		var amount *int64
		var pending *bool
		if err := rows.Scan(&r.kind, &account, &amount, &pending, &r.resolves); err != nil {
			t.Fatalf("scan ledger: %v", err)
		}
		if account != nil {
			r.account, r.amount, r.pending = *account, *amount, *pending
		}
		out = append(out, r)
	}
	return out
}

// balance sums the posted entries of account for one payment.
func balance(rows []ledgerRow, account string) int64 {
	var sum int64
	for _, r := range rows {
		if r.account == account && !r.pending {
			sum += r.amount
		}
	}
	return sum
}

// countKind counts the ledger transactions of a kind; a transaction with
// several entries counts once per entry, so callers pass one account too.
func countKind(rows []ledgerRow, kind, account string) int {
	n := 0
	for _, r := range rows {
		if r.kind == kind && (account == "" || r.account == account) {
			n++
		}
	}
	return n
}

// openHolds counts the payment's holds that no capture or void resolves.
func (e *webhookEnv) openHolds(t *testing.T, paymentID string) int {
	t.Helper()
	var n int
	err := e.pool.QueryRow(context.Background(), `
		SELECT count(*) FROM ledger_transactions h WHERE h.payment_id = $1 AND h.kind = 'hold'
		   AND NOT EXISTS (SELECT 1 FROM ledger_transactions r WHERE r.resolves_id = h.id)`, paymentID).Scan(&n)
	if err != nil {
		t.Fatalf("count open holds: %v", err)
	}
	return n
}

func (e *webhookEnv) scalar(t *testing.T, query string, args ...any) string {
	t.Helper()
	var v *string
	err := e.pool.QueryRow(context.Background(), query, args...).Scan(&v)
	if errors.Is(err, pgx.ErrNoRows) {
		return ""
	}
	if err != nil {
		t.Fatalf("query %q: %v", query, err)
	}
	if v == nil {
		return ""
	}
	return *v
}
