// Package http is the JSON API of TaskPod Billing: routing, authentication,
// request decoding and the single error envelope. Handlers call the
// application's use cases and never touch storage or Stripe themselves.
package http

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/taskpod/billing/adapters/logging"
	"github.com/taskpod/billing/application"
	"github.com/taskpod/billing/ports"
)

// Principal is the identity behind a bearer token.
type Principal struct {
	TokenID string
	Role    application.Role
	Subject string
}

// ErrInvalidToken is returned by an Authenticator for an unknown, revoked
// or expired token.
var ErrInvalidToken = errors.New("invalid token")

// Authenticator resolves bearer tokens.
type Authenticator interface {
	Authenticate(ctx context.Context, token string) (Principal, error)
}

// Observer records request metrics.
type Observer interface {
	ObserveRequest(route, method string, status int, elapsed time.Duration)
}

type nopObserver struct{}

func (nopObserver) ObserveRequest(string, string, int, time.Duration) {}

// Deps are the use cases and services the API serves. Each feature's
// dependencies are declared next to its routes.
type Deps struct {
	Billing  *application.Billing
	Tasks    *application.Tasks
	Agents   *application.Agents
	Ledger   ports.LedgerReader
	Auth     Authenticator
	Observer Observer
	Log      *slog.Logger
	// Extra routes (health, metrics) mounted without authentication.
	Extra map[string]http.Handler

	Audit    AuditDeps
	Webhooks WebhookDeps
	Admin    AdminDeps
	Contract ContractDeps
}

// Server routes API requests.
type Server struct {
	d   Deps
	mux *http.ServeMux
}

// NewServer builds the API handler.
func NewServer(d Deps) *Server {
	if d.Observer == nil {
		d.Observer = nopObserver{}
	}
	s := &Server{d: d, mux: http.NewServeMux()}
	s.routes()
	for pattern, h := range d.Extra {
		s.mux.Handle(pattern, h)
	}
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, r, &apiError{Status: http.StatusNotFound, Type: typeInvalidRequest, Code: "route_not_found",
			Message: "no route " + r.Method + " " + r.URL.Path + "; see the API reference"})
	})
	return s
}

// roles lists who may call a route.
type roles []application.Role

var (
	customer      = roles{application.RoleCustomer}
	agent         = roles{application.RoleAgent}
	admin         = roles{application.RoleAdmin}
	auditor       = roles{application.RoleAuditor}
	customerAgent = roles{application.RoleCustomer, application.RoleAgent}
)

func (s *Server) routes() {
	s.handle("POST /v1/billing/setup", customer, s.setup)
	s.handle("POST /v1/billing/confirm-setup", customer, s.confirmSetup)
	s.handle("GET /v1/billing/payment-methods", customer, s.listPaymentMethods)
	s.handle("PUT /v1/billing/default-payment-method", customer, s.setDefaultPaymentMethod)
	s.handle("DELETE /v1/billing/payment-methods/{id}", customer, s.removePaymentMethod)

	s.handle("POST /v1/tasks", customer, s.createTask)
	s.handle("GET /v1/tasks", customerAgent, s.listTasks)
	s.handle("GET /v1/tasks/{id}", customerAgent, s.getTask)
	s.handle("POST /v1/tasks/{id}/complete", agent, s.completeTask)
	s.handle("POST /v1/tasks/{id}/fail", agent, s.failTask)
	s.handle("POST /v1/tasks/{id}/cancel", customer, s.cancelTask)
	s.handle("GET /v1/payments/{id}", customerAgent, s.getPayment)

	s.handle("GET /v1/agents", roles{application.RoleCustomer, application.RoleAdmin}, s.listAgents)
	s.handle("POST /v1/agents", admin, s.createAgent)
	s.handle("GET /v1/agents/{id}", admin, s.getAgent)
	s.handle("PATCH /v1/agents/{id}", admin, s.updateAgent)

	s.handle("GET /v1/ledger/entries", auditor, s.listLedgerEntries)

	s.auditRoutes()
	s.webhookRoutes()
	s.adminRoutes()
	s.contractRoutes()
}

// handle registers a route behind authentication, the role check and the
// caller-scoped contract checks (Idempotency-Key).
func (s *Server) handle(pattern string, allowed roles, h func(http.ResponseWriter, *http.Request)) {
	s.mux.Handle(pattern, s.authenticate(allowed, s.contractRoute(http.HandlerFunc(h))))
}

// ServeHTTP assigns a request id, then logs and measures the request.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	id := newRequestID()
	w.Header().Set("Request-Id", id)
	ctx := logging.WithAttrs(r.Context(), slog.String("request_id", id))
	ctx = context.WithValue(ctx, requestIDKey, id)
	r = r.WithContext(ctx)
	log := s.d.Log

	rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
	handler := s.contractMiddleware(s.mux)
	defer func() {
		if p := recover(); p != nil {
			log.ErrorContext(ctx, "handler panicked", "panic", p, "method", r.Method, "path", r.URL.Path)
			if !rec.wrote {
				writeError(rec, r, errors.New("panic"))
			}
		}
		route := r.Pattern
		if route == "" {
			route = "unmatched"
		}
		elapsed := time.Since(start)
		s.d.Observer.ObserveRequest(route, r.Method, rec.status, elapsed)
		log.InfoContext(ctx, "request", "method", r.Method, "route", route, "status", rec.status,
			"duration_ms", elapsed.Milliseconds())
	}()
	handler.ServeHTTP(rec, r)
}

func (s *Server) authenticate(allowed roles, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		token, ok := bearerToken(r)
		if !ok {
			writeError(w, r, &apiError{Status: http.StatusUnauthorized, Type: typeAuthentication, Code: "missing_token",
				Message: "send Authorization: Bearer <token>; mint one with billingd token create"})
			return
		}
		p, err := s.d.Auth.Authenticate(r.Context(), token)
		if err != nil {
			if errors.Is(err, ErrInvalidToken) {
				writeError(w, r, &apiError{Status: http.StatusUnauthorized, Type: typeAuthentication, Code: "invalid_token",
					Message: "the bearer token is unknown, revoked or expired"})
				return
			}
			writeError(w, r, err)
			return
		}
		if !allowedRole(allowed, p.Role) {
			writeError(w, r, &apiError{Status: http.StatusForbidden, Type: typePermission, Code: "forbidden",
				Message: "the " + string(p.Role) + " role may not call " + r.Pattern + "; use a token of a role listed in the API reference"})
			return
		}
		actor := application.Actor{Role: p.Role, Subject: p.Subject, TokenID: p.TokenID, RequestID: requestID(r.Context())}
		ctx := application.WithActor(r.Context(), actor)
		ctx = logging.WithAttrs(ctx, slog.String("token_id", p.TokenID), slog.String("role", string(p.Role)))
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

func allowedRole(allowed roles, role application.Role) bool {
	for _, a := range allowed {
		if a == role {
			return true
		}
	}
	return false
}

func bearerToken(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	scheme, token, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(token) == "" {
		return "", false
	}
	return strings.TrimSpace(token), true
}

type statusRecorder struct {
	http.ResponseWriter
	status int
	wrote  bool
}

func (r *statusRecorder) WriteHeader(code int) {
	if !r.wrote {
		r.status = code
		r.wrote = true
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Write(b []byte) (int, error) {
	r.wrote = true
	return r.ResponseWriter.Write(b)
}

// Flush lets streamed responses reach the client.
func (r *statusRecorder) Flush() {
	if f, ok := r.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

type ctxKey int

const (
	requestIDKey ctxKey = iota
)

func requestID(ctx context.Context) string {
	id, _ := ctx.Value(requestIDKey).(string)
	return id
}

func newRequestID() string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return "req_" + hex.EncodeToString(b)
}
