package http

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/taskpod/billing/application"
	"github.com/taskpod/billing/domain"
	"github.com/taskpod/billing/ports"
)

// The request bodies of the JSON routes, in the shapes the handlers decode.
type (
	fuzzCreateTask struct {
		Title         *string `json:"title"`
		Description   string  `json:"description"`
		AgentID       *string `json:"agentId"`
		MaxPriceCents *int64  `json:"maxPriceCents"`
	}
	fuzzCreateAgent struct {
		ID              string  `json:"id"`
		Name            *string `json:"name"`
		PriceCents      *int64  `json:"priceCents"`
		Currency        string  `json:"currency"`
		StripeAccountID string  `json:"stripeAccountId"`
	}
	fuzzUpdateAgent struct {
		PriceCents      *int64  `json:"priceCents"`
		StripeAccountID *string `json:"stripeAccountId"`
		Active          *bool   `json:"active"`
	}
	fuzzComplete struct {
		FinalAmountCents *int64 `json:"finalAmountCents"`
	}
	fuzzConfirmSetup struct {
		SetupIntentID *string `json:"setupIntentId"`
	}
	fuzzEmpty struct{}
)

var fuzzSeeds = []string{
	`{"title": "Analyze this meal", "description": "Identify calories and macros", "agentId": "kbYsAVcJPYeQ", "maxPriceCents": 100}`,
	`{"title": "t", "agentId": "a", "maxPriceCents": 9223372036854775807}`,
	`{"title": "t", "agentId": "a", "maxPriceCents": 9223372036854775808}`,
	`{"title": "t", "agentId": "a", "maxPriceCents": -1}`,
	`{"title": "t", "agentId": "a", "maxPriceCents": 1e3}`,
	`{"title": "t", "agentId": "a", "maxPriceCents": "100"}`,
	`{"title": null, "agentId": null, "maxPriceCents": null}`,
	`{"title": "\u0000\ud800", "agentId": "a", "maxPriceCents": 1}`,
	`{"title": "t", "title": "u", "agentId": "a", "maxPriceCents": 1}`,
	`{"Title": "case", "AGENTID": "a", "maxpricecents": 1}`,
	`{"finalAmountCents": 80}`,
	`{"setupIntentId": "seti_123"}`,
	`{"name": "n", "priceCents": 1.5, "currency": "usd"}`,
	`{"active": "yes"}`,
	`{"surprise": {"nested": [1, 2, {"deep": true}]}}`,
	`{"": 0}`,
	`{} {}`,
	`{}garbage`,
	`[]`,
	`"string"`,
	`null`,
	`{"title": `,
	``,
	"   \n\t",
	"\xef\xbb\xbf{}",
	`{"description": "` + string(bytes.Repeat([]byte("x"), 100)) + `"}`,
}

// FuzzDecodeBody drives the strict JSON decoder with every route's body
// shape, and the whole POST /v1/tasks handler. Neither may panic, and the
// handler must respond with a 4xx error envelope, never a 5xx.
func FuzzDecodeBody(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, dst := range []any{
			&fuzzCreateTask{}, &fuzzCreateAgent{}, &fuzzUpdateAgent{}, &fuzzComplete{}, &fuzzConfirmSetup{}, &fuzzEmpty{},
		} {
			checkDecodeError(t, body, decodeBody(body, dst))
		}
		checkCreateTaskHandler(t, body)
	})
}

// checkDecodeError fails unless err is nil or a 400 envelope error whose
// code names the problem and, for field errors, the field.
func checkDecodeError(t *testing.T, body []byte, err error) {
	t.Helper()
	if err == nil {
		return
	}
	var ae *apiError
	if !errors.As(err, &ae) {
		t.Fatalf("decodeBody(%q) returned %T %v, want an *apiError", body, err, err)
	}
	if ae.Status != http.StatusBadRequest {
		t.Fatalf("decodeBody(%q) status %d, want 400", body, ae.Status)
	}
	switch ae.Code {
	case "invalid_json":
	case "invalid_type":
		if ae.Param == "" {
			t.Fatalf("decodeBody(%q) code %s without a param", body, ae.Code)
		}
	case "unknown_field":
		// The field may be named "" ({"": 0}), so the param is checked
		// against the message instead of for being non-empty.
		if !strings.Contains(ae.Message, strconv.Quote(ae.Param)) {
			t.Fatalf("decodeBody(%q) unknown_field param %q is not the field named in %q", body, ae.Param, ae.Message)
		}
	default:
		t.Fatalf("decodeBody(%q) code %q, want invalid_json, invalid_type or unknown_field", body, ae.Code)
	}
}

var (
	fuzzServerOnce sync.Once
	fuzzServer     *Server
)

// newFuzzServer builds an API whose task use case runs on a store without
// agents, so every well-formed request ends in a 422 for its agentId
// without touching a database or Stripe.
func newFuzzServer() *Server {
	fuzzServerOnce.Do(func() {
		log := slog.New(slog.NewTextHandler(io.Discard, nil))
		tasks := application.NewTasks(agentlessStore{}, nil, nil, fuzzClock{}, fuzzIDs{},
			application.TasksConfig{FeeRate: 250, Currencies: []domain.Currency{"usd"}}, log)
		fuzzServer = NewServer(Deps{Tasks: tasks, Auth: customerAuth{}, Log: log})
	})
	return fuzzServer
}

func checkCreateTaskHandler(t *testing.T, body []byte) {
	t.Helper()
	req := httptest.NewRequest(http.MethodPost, "/v1/tasks", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer fuzz")
	rec := httptest.NewRecorder()
	newFuzzServer().ServeHTTP(rec, req)

	switch rec.Code {
	case http.StatusBadRequest, http.StatusRequestEntityTooLarge, http.StatusUnprocessableEntity:
	default:
		t.Fatalf("POST /v1/tasks with %q answered %d, want 400, 413 or 422: %s", body, rec.Code, rec.Body)
	}
	var env struct {
		Error *struct {
			Code      string `json:"code"`
			RequestID string `json:"requestId"`
		} `json:"error"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &env); err != nil || env.Error == nil || env.Error.Code == "" {
		t.Fatalf("POST /v1/tasks with %q: body %q is not an error envelope (%v)", body, rec.Body, err)
	}
	if env.Error.RequestID == "" || env.Error.RequestID != rec.Header().Get("Request-Id") {
		t.Fatalf("requestId %q, Request-Id header %q", env.Error.RequestID, rec.Header().Get("Request-Id"))
	}
}

// customerAuth accepts any token as customer user_fuzz.
type customerAuth struct{}

func (customerAuth) Authenticate(context.Context, string) (Principal, error) {
	return Principal{TokenID: "tok_fuzz", Role: application.RoleCustomer, Subject: "user_fuzz"}, nil
}

// agentlessStore is a store with no agents. The other repositories are
// left to the embedded nil interfaces, because creating a task for an
// unknown agent never reaches them.
type agentlessStore struct{}

func (agentlessStore) InTx(ctx context.Context, fn func(context.Context, ports.Tx) error) error {
	return fn(ctx, agentlessTx{})
}

type agentlessTx struct{ ports.Tx }

func (agentlessTx) Agents() ports.AgentRepository { return noAgents{} }

type noAgents struct{ ports.AgentRepository }

func (noAgents) Get(_ context.Context, id string) (domain.Agent, error) {
	return domain.Agent{}, errors.Join(domain.ErrNotFound, errors.New("agent "+id))
}

type fuzzClock struct{}

func (fuzzClock) Now() time.Time { return time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC) }

type fuzzIDs struct{}

func (fuzzIDs) NewID(prefix string) string { return prefix + "_fuzz" }
