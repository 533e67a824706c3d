package http

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/taskpod/billing/adapters/postgres"
	"github.com/taskpod/billing/adapters/postgres/pgtest"
	"github.com/taskpod/billing/application"
	"github.com/taskpod/billing/domain"
	"github.com/taskpod/billing/migrations"
	"github.com/taskpod/billing/ports"
)

// auditEnv is an API server with the ledger routes on a database of its
// own, and tokens for every role.
type auditEnv struct {
	t       *testing.T
	ctx     context.Context
	pool    *pgxpool.Pool
	store   *postgres.Store
	reader  *postgres.LedgerReader
	chain   *postgres.Chain
	server  *Server
	api     *httptest.Server
	retries *atomic.Int64
}

// Tokens of the fake authenticator; the agent tokens belong to auditAgentA
// and auditAgentB.
const (
	auditAuditorToken  = "tok_auditor"
	auditAdminToken    = "tok_admin"
	auditCustomerToken = "tok_customer"
	auditAgentAToken   = "tok_agent_a"
	auditAgentBToken   = "tok_agent_b"
	auditAgentA        = "agentAlpha"
	auditAgentB        = "agentBravo"
)

type auditAuth struct{}

func (auditAuth) Authenticate(_ context.Context, token string) (Principal, error) {
	principals := map[string]Principal{
		auditAuditorToken:  {TokenID: auditAuditorToken, Role: application.RoleAuditor, Subject: "audit_team"},
		auditAdminToken:    {TokenID: auditAdminToken, Role: application.RoleAdmin, Subject: "ops"},
		auditCustomerToken: {TokenID: auditCustomerToken, Role: application.RoleCustomer, Subject: "user_42"},
		auditAgentAToken:   {TokenID: auditAgentAToken, Role: application.RoleAgent, Subject: auditAgentA},
		auditAgentBToken:   {TokenID: auditAgentBToken, Role: application.RoleAgent, Subject: auditAgentB},
	}
	p, ok := principals[token]
	if !ok {
		return Principal{}, ErrInvalidToken
	}
	return p, nil
}

// auditRetryCounter counts the store's "will be retried" warnings, which it logs
// after a deadlock or serialization failure.
type auditRetryCounter struct {
	slog.Handler
	retries *atomic.Int64
}

func (h auditRetryCounter) Handle(ctx context.Context, r slog.Record) error {
	if strings.Contains(r.Message, "retried") {
		h.retries.Add(1)
	}
	return nil
}

func (h auditRetryCounter) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h auditRetryCounter) WithGroup(string) slog.Handler      { return h }

func newAuditEnv(t *testing.T) *auditEnv {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	pool := auditDatabase(ctx, t)

	retries := &atomic.Int64{}
	log := slog.New(auditRetryCounter{Handler: slog.NewTextHandler(io.Discard, nil), retries: retries})
	store := postgres.NewStore(pool, nil).WithLogger(log)
	reader := postgres.NewLedgerReader(pool)
	chain := postgres.NewChain(pool)
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	ledger := application.NewLedger(store, reader, auditClock{}, auditIDs{}, quiet)
	server := NewServer(Deps{
		Ledger: reader, Auth: auditAuth{}, Log: quiet,
		Audit: AuditDeps{Ledger: ledger, Books: reader, Chain: chain},
	})
	api := httptest.NewServer(server)
	t.Cleanup(api.Close)

	env := &auditEnv{t: t, ctx: ctx, pool: pool, store: store, reader: reader, chain: chain, server: server, api: api, retries: retries}
	for _, id := range []string{auditAgentA, auditAgentB} {
		env.insertAgent(id)
	}
	return env
}

// auditDatabase creates a migrated database for one test and drops it when
// the test ends, so the package needs no TestMain.
func auditDatabase(ctx context.Context, t *testing.T) *pgxpool.Pool {
	t.Helper()
	name, err := pgtest.CreateDatabase(ctx, "a")
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

type auditClock struct{}

func (auditClock) Now() time.Time { return time.Now().UTC().Truncate(time.Microsecond) }

type auditIDs struct{}

func (auditIDs) NewID(prefix string) string { return auditID(prefix + "_") }

func auditID(prefix string) string {
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return prefix + hex.EncodeToString(b)
}

func (e *auditEnv) insertAgent(id string) {
	e.t.Helper()
	agent, err := domain.NewAgent(id, "Agent "+id, domain.MustMoney(100, "usd"), "acct_"+id, time.Now())
	if err != nil {
		e.t.Fatal(err)
	}
	err = e.store.InTx(e.ctx, func(ctx context.Context, tx ports.Tx) error { return tx.Agents().Insert(ctx, agent) })
	if err != nil {
		e.t.Fatal(err)
	}
}

// auditPayment is one payment's postings, built like the step executor builds
// them for a captured amount and Stripe's fee.
type auditPayment struct {
	record                                  domain.PaymentRecord
	hold, capture, settlement, transfer, vd domain.LedgerTransaction
}

func newAuditPayment(t testing.TB, agentID string, amount, captured, stripeFee int64, cur domain.Currency) auditPayment {
	t.Helper()
	r := domain.PaymentRecord{
		ID: auditID("pay_"), TaskID: auditID("task_"), AgentID: agentID,
		Amount: domain.MustMoney(amount, cur), FeeRate: 250, CapturedAmount: captured, StripeFee: stripeFee,
	}
	fee, share, err := domain.PlatformFee(domain.MustMoney(captured, cur), r.FeeRate)
	if err != nil {
		t.Fatal(err)
	}
	r.PlatformFee, r.AgentShare = fee.Amount(), share.Amount()
	pi, ch, txn, tr := auditID("pi_"), auditID("ch_"), auditID("txn_"), auditID("tr_")
	meta := func(reason string, refs domain.StripeRefs) domain.LedgerMeta {
		return domain.LedgerMeta{Actor: "system:relay", RequestID: auditID("req_"), Reason: reason, TaskID: r.TaskID,
			PaymentID: r.ID, Stripe: refs, EffectiveAt: time.Now().UTC().Truncate(time.Microsecond)}
	}
	p := auditPayment{record: r}
	if p.hold, err = domain.HoldPosting(auditID("ltx_"), r, meta("authorize", domain.StripeRefs{PaymentIntentID: pi, ChargeID: ch})); err != nil {
		t.Fatal(err)
	}
	captureRefs := domain.StripeRefs{PaymentIntentID: pi, ChargeID: ch, BalanceTransactionID: txn}
	if p.capture, err = domain.CapturePosting(auditID("ltx_"), p.hold.ID, r, meta("capture", captureRefs)); err != nil {
		t.Fatal(err)
	}
	if p.settlement, err = domain.SettlementPosting(auditID("ltx_"), r, meta("capture", captureRefs)); err != nil {
		t.Fatal(err)
	}
	if p.transfer, err = domain.TransferPosting(auditID("ltx_"), r, meta("transfer", domain.StripeRefs{PaymentIntentID: pi, ChargeID: ch, TransferID: tr})); err != nil {
		t.Fatal(err)
	}
	p.vd = domain.VoidPosting(auditID("ltx_"), p.hold.ID, meta("release", domain.StripeRefs{PaymentIntentID: pi}))
	return p
}

// post appends transactions in one unit of work, effective now, as the
// step executor does.
func (e *auditEnv) post(txs ...domain.LedgerTransaction) error {
	now := time.Now().UTC().Truncate(time.Microsecond)
	return e.store.InTx(e.ctx, func(ctx context.Context, tx ports.Tx) error {
		for _, t := range txs {
			t.Meta.EffectiveAt = now
			if err := tx.Ledger().Append(ctx, t); err != nil {
				return err
			}
		}
		return nil
	})
}

func (e *auditEnv) mustPost(txs ...domain.LedgerTransaction) {
	e.t.Helper()
	if err := e.post(txs...); err != nil {
		e.t.Fatal(err)
	}
}

// call sends one request and returns the status and body.
func (e *auditEnv) call(method, path, token string, body string) (int, []byte, error) {
	var reader io.Reader
	if body != "" {
		reader = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(e.ctx, method, e.api.URL+path, reader)
	if err != nil {
		return 0, nil, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := e.api.Client().Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	return resp.StatusCode, data, err
}

// expect sends a request, checks the status and decodes the body into out
// when out is not nil.
func (e *auditEnv) expect(want int, method, path, token, body string, out any) {
	e.t.Helper()
	status, data, err := e.call(method, path, token, body)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	if status != want {
		e.t.Fatalf("%s %s = %d %s, want %d", method, path, status, data, want)
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			e.t.Fatalf("%s %s: decode %s: %v", method, path, data, err)
		}
	}
}

// auditErrorCode returns the code of an error envelope.
func auditErrorCode(t *testing.T, body []byte) string {
	t.Helper()
	var env struct {
		Error struct {
			Code string `json:"code"`
		} `json:"error"`
	}
	if err := json.Unmarshal(body, &env); err != nil {
		t.Fatalf("decode error envelope %s: %v", body, err)
	}
	return env.Error.Code
}

func discardLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
