package http

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/taskpod/billing/adapters/logging"
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

// contractWebhookSecret signs the Stripe events the contract tests send.
const contractWebhookSecret = "whsec_contract_tests"

// contractEnv is the whole API on a fresh database with the Stripe emulator,
// served on loopback, for the contract tests. Its helpers are named
// contract... so they never collide with other test files of the package.
type contractEnv struct {
	t        *testing.T
	ctx      context.Context
	pool     *pgxpool.Pool
	api      *httptest.Server
	emulator *httptest.Server
	tokens   *postgres.Tokens
	keys     *postgres.IdempotencyKeys
	steps    *application.Steps
	tasks    *application.Tasks
	logs     *contractLogBuffer
	log      *slog.Logger
}

// newContractEnv builds the environment; configure may change the API's
// dependencies before the server is built.
func newContractEnv(t *testing.T, configure ...func(*Deps)) *contractEnv {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)

	pool := contractDatabase(ctx, t)
	emu, err := emulator.New(ctx, pool, emulator.Config{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatalf("start emulator: %v", err)
	}
	emuServer := httptest.NewServer(emu.Handler())
	t.Cleanup(emuServer.Close)
	gateway, err := stripe.New(stripe.Config{SecretKey: "sk_test_contract", APIBase: emuServer.URL})
	if err != nil {
		t.Fatalf("build gateway: %v", err)
	}

	logs := &contractLogBuffer{}
	log := logging.New(logs, slog.LevelDebug)
	store := postgres.NewStore(pool, outbox.NewTxOutbox).WithLogger(log)
	clock, ids := system.Clock{}, system.IDs{}
	usd, jpy := domain.Currency("usd"), domain.Currency("jpy")
	steps := application.NewSteps(store, gateway, clock, ids, nil, application.StepsConfig{LeaseTTL: time.Minute}, log)
	billing := application.NewBilling(store, gateway, clock, log)
	tasks := application.NewTasks(store, billing, steps, clock, ids,
		application.TasksConfig{FeeRate: 250, Currencies: []domain.Currency{usd, jpy}}, log)
	tokens := postgres.NewTokens(pool)
	keys := postgres.NewIdempotencyKeys(pool)

	books := postgres.NewLedgerReader(pool)
	parser := stripe.NewWebhookParser(contractWebhookSecret)
	webhooks := application.NewWebhooks(store, gateway, gateway, parser, steps, clock, ids, nil, application.WebhooksConfig{}, log)

	deps := Deps{
		Billing: billing, Tasks: tasks, Agents: application.NewAgents(store, clock, ids, []domain.Currency{usd, jpy}, log),
		Ledger: books, Auth: contractTokenAuth{tokens}, Log: log,
		Contract: ContractDeps{Idempotency: contractKeyStore{keys}, IDs: ids},
		Admin:    AdminDeps{Admin: application.NewAdmin(store, clock, log)},
		Audit:    AuditDeps{Ledger: application.NewLedger(store, books, clock, ids, log), Books: books, Chain: postgres.NewChain(pool)},
		Webhooks: WebhookDeps{Parser: parser, Webhooks: webhooks, Refunds: application.NewRefunds(store, steps, clock, ids, log)},
	}
	for _, c := range configure {
		c(&deps)
	}
	api := httptest.NewServer(NewServer(deps))
	t.Cleanup(api.Close)

	return &contractEnv{t: t, ctx: ctx, pool: pool, api: api, emulator: emuServer, tokens: tokens, keys: keys,
		steps: steps, tasks: tasks, logs: logs, log: log}
}

// contractDatabase creates a migrated database for one test and drops it
// when the test ends; the contract tests need no TestMain.
func contractDatabase(ctx context.Context, t *testing.T) *pgxpool.Pool {
	t.Helper()
	name, err := pgtest.CreateDatabase(ctx, "c")
	if err != nil {
		t.Fatalf("create database: %v", err)
	}
	pool, err := pgxpool.New(ctx, pgtest.DatabaseURL(name))
	if err != nil {
		t.Fatalf("connect to %s: %v", name, err)
	}
	t.Cleanup(func() {
		pool.Close()
		dropCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := pgtest.DropDatabase(dropCtx, name); err != nil {
			t.Errorf("drop database %s: %v", name, err)
		}
	})
	if _, err := postgres.Migrate(ctx, pool, migrations.FS); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	return pool
}

// contractResponse is one API response.
type contractResponse struct {
	Status int
	Header http.Header
	Body   []byte
}

// errorBody decodes the error envelope, failing the test if the body is not one.
func (r contractResponse) errorBody(t *testing.T) apiError {
	t.Helper()
	var env struct {
		Error *apiError `json:"error"`
	}
	if err := json.Unmarshal(r.Body, &env); err != nil || env.Error == nil {
		t.Fatalf("status %d body %s is not an error envelope (%v)", r.Status, r.Body, err)
	}
	return *env.Error
}

// contractRequest describes one API call.
type contractRequest struct {
	Method, Path, Token, Body string
	// ContentType defaults to application/json when Body is set.
	ContentType string
	Header      map[string]string
}

func (e *contractEnv) send(req contractRequest) contractResponse {
	e.t.Helper()
	resp, err := e.sendE(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", req.Method, req.Path, err)
	}
	return resp
}

// sendE is send for goroutines, which must not call t.Fatal.
func (e *contractEnv) sendE(req contractRequest) (contractResponse, error) {
	httpReq, err := e.newRequest(req)
	if err != nil {
		return contractResponse{}, err
	}

	resp, err := http.DefaultClient.Do(httpReq)
	if err != nil {
		return contractResponse{}, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return contractResponse{}, err
	}
	return contractResponse{Status: resp.StatusCode, Header: resp.Header, Body: data}, nil
}

// newRequest builds the HTTP request of req against the API server.
func (e *contractEnv) newRequest(req contractRequest) (*http.Request, error) {
	var body io.Reader
	if req.Body != "" {
		body = strings.NewReader(req.Body)
	}
	httpReq, err := http.NewRequestWithContext(e.ctx, req.Method, e.api.URL+req.Path, body)
	if err != nil {
		return nil, err
	}
	if req.Token != "" {
		httpReq.Header.Set("Authorization", "Bearer "+req.Token)
	}
	switch {
	case req.ContentType != "":
		httpReq.Header.Set("Content-Type", req.ContentType)
	case req.Body != "":
		httpReq.Header.Set("Content-Type", "application/json")
	}
	for k, v := range req.Header {
		httpReq.Header.Set(k, v)
	}
	return httpReq, nil
}

// expect sends req and fails the test unless the status is want.
func (e *contractEnv) expect(want int, req contractRequest) contractResponse {
	e.t.Helper()
	resp := e.send(req)
	if resp.Status != want {
		e.t.Fatalf("%s %s = %d %s, want %d", req.Method, req.Path, resp.Status, resp.Body, want)
	}
	return resp
}

// token mints an API token.
func (e *contractEnv) token(role, subject string) string {
	e.t.Helper()
	_, token, err := e.tokens.Create(e.ctx, role, subject, nil)
	if err != nil {
		e.t.Fatalf("create %s token: %v", role, err)
	}
	return token
}

// createAgent registers an agent through the API.
func (e *contractEnv) createAgent(adminToken, id string, priceCents int64, currency string) {
	e.t.Helper()
	body := fmt.Sprintf(`{"id":%q,"name":"Agent %s","priceCents":%d,"currency":%q,"stripeAccountId":"acct_1Contract"}`,
		id, id, priceCents, currency)
	e.expect(http.StatusCreated, contractRequest{Method: "POST", Path: "/v1/agents", Token: adminToken, Body: body})
}

// saveCard saves a test card as the customer's default and returns the
// customer's Stripe id and the card's id.
func (e *contractEnv) saveCard(customerToken, testCard string) (stripeCustomerID, paymentMethodID string) {
	e.t.Helper()
	resp := e.expect(http.StatusOK, contractRequest{Method: "POST", Path: "/v1/billing/setup", Token: customerToken, Body: "{}"})
	var setup struct{ SetupIntentID, CustomerID string }
	contractDecode(e.t, resp.Body, &setup)

	e.emulatorCall("POST", "/v1/setup_intents/"+setup.SetupIntentID+"/confirm", "payment_method="+testCard,
		"application/x-www-form-urlencoded")
	resp = e.expect(http.StatusOK, contractRequest{Method: "POST", Path: "/v1/billing/confirm-setup", Token: customerToken,
		Body: fmt.Sprintf(`{"setupIntentId":%q}`, setup.SetupIntentID)})
	var card struct{ ID string }
	contractDecode(e.t, resp.Body, &card)
	return setup.CustomerID, card.ID
}

// emulatorCall sends a request to the emulator's Stripe or control API and
// returns the body, failing the test on a status other than 200.
func (e *contractEnv) emulatorCall(method, path, body, contentType string) []byte {
	e.t.Helper()
	req, err := http.NewRequestWithContext(e.ctx, method, e.emulator.URL+path, strings.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer sk_test_contract")
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatalf("emulator %s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		e.t.Fatalf("emulator %s %s = %d %s", method, path, resp.StatusCode, data)
	}
	return data
}

// addFault injects a failure into the emulator, as JSON for /_emulator/faults.
func (e *contractEnv) addFault(rule string) {
	e.t.Helper()
	e.emulatorCall("POST", "/_emulator/faults", rule, "application/json")
}

// paymentIntents returns the emulator's PaymentIntents of a Stripe customer.
func (e *contractEnv) paymentIntents(stripeCustomerID string) []map[string]any {
	e.t.Helper()
	data := e.emulatorCall("GET", "/_emulator/objects?type=payment_intent&customer="+stripeCustomerID, "", "")
	var list struct{ Data []map[string]any }
	contractDecode(e.t, data, &list)
	return list.Data
}

// countRows runs a count(*) query.
func (e *contractEnv) countRows(query string, args ...any) int {
	e.t.Helper()
	var n int
	if err := e.pool.QueryRow(e.ctx, query, args...).Scan(&n); err != nil {
		e.t.Fatalf("%s: %v", query, err)
	}
	return n
}

func contractDecode(t *testing.T, data []byte, dst any) {
	t.Helper()
	if err := json.Unmarshal(data, dst); err != nil {
		t.Fatalf("decode %s: %v", data, err)
	}
}

// contractTokenAuth adapts the PostgreSQL token store to Authenticator, as
// billingd does.
type contractTokenAuth struct {
	tokens *postgres.Tokens
}

func (a contractTokenAuth) Authenticate(ctx context.Context, token string) (Principal, error) {
	p, err := a.tokens.Authenticate(ctx, token)
	if errors.Is(err, postgres.ErrTokenInvalid) {
		return Principal{}, ErrInvalidToken
	}
	if err != nil {
		return Principal{}, err
	}
	return Principal{TokenID: p.TokenID, Role: application.Role(p.Role), Subject: p.Subject}, nil
}

// contractKeyStore adapts the PostgreSQL idempotency keys to
// IdempotencyStore, as billingd does.
type contractKeyStore struct {
	keys *postgres.IdempotencyKeys
}

func (s contractKeyStore) Claim(ctx context.Context, c IdempotencyClaim) (IdempotencyRecord, error) {
	rec, err := s.keys.Claim(ctx, postgres.IdempotencyClaim{
		IdempotencyKeyID: postgres.IdempotencyKeyID(c.IdempotencyKeyID),
		RequestHash:      c.RequestHash, ResourceID: c.ResourceID, ClaimToken: c.ClaimToken, Lease: c.Lease, TTL: c.TTL,
	})
	if err != nil {
		return IdempotencyRecord{}, err
	}
	// Both packages number the outcomes alike, from 1.
	return IdempotencyRecord{Outcome: ClaimOutcome(rec.Outcome), ResourceID: rec.ResourceID, Response: StoredResponse(rec.Response)}, nil
}

func (s contractKeyStore) Complete(ctx context.Context, id IdempotencyKeyID, token string, resp StoredResponse) error {
	return s.keys.Complete(ctx, postgres.IdempotencyKeyID(id), token, postgres.StoredResponse(resp))
}

func (s contractKeyStore) Release(ctx context.Context, id IdempotencyKeyID, token string, forget bool) error {
	return s.keys.Release(ctx, postgres.IdempotencyKeyID(id), token, forget)
}

// contractLogBuffer collects the JSON log lines of one environment.
type contractLogBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *contractLogBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// records returns every log record written so far.
func (b *contractLogBuffer) records(t *testing.T) []map[string]any {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []map[string]any
	for _, line := range bytes.Split(b.buf.Bytes(), []byte("\n")) {
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		var rec map[string]any
		if err := json.Unmarshal(line, &rec); err != nil {
			t.Fatalf("log line %q is not JSON: %v", line, err)
		}
		out = append(out, rec)
	}
	return out
}
