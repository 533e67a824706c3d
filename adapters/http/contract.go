package http

import (
	"net/http"
	"time"

	"github.com/taskpod/billing/ports"
)

// ContractDeps are the services of the API contract layer: idempotency
// keys and rate limits. The zero value turns both off.
type ContractDeps struct {
	// Idempotency stores Idempotency-Key records; nil ignores the header.
	Idempotency IdempotencyStore
	// IdempotencyTTL is how long a key is kept; zero means DefaultIdempotencyTTL.
	IdempotencyTTL time.Duration
	// IdempotencyLease is how long a running request holds its key before
	// a retry may take it over; zero means DefaultIdempotencyLease.
	IdempotencyLease time.Duration
	// IDs makes the ids reserved for objects that keyed requests create.
	IDs ports.IDGenerator
	// Limiter limits requests per bearer token; nil turns the limit off.
	Limiter *RateLimiter
}

// contractMiddleware wraps every request with the checks that need no
// route: the per-token rate limit. It runs before authentication, so a
// client flooding the API with a bad token never reaches the database.
func (s *Server) contractMiddleware(next http.Handler) http.Handler {
	limiter := s.d.Contract.Limiter
	if limiter == nil {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		token, ok := bearerToken(r)
		if !ok {
			// Unauthenticated routes (health, metrics, the spec, Stripe's
			// webhooks) carry no token and are not limited.
			next.ServeHTTP(w, r)
			return
		}
		if allowed, wait := limiter.Allow(token, time.Now()); !allowed {
			writeError(w, r, &apiError{Status: http.StatusTooManyRequests, RetryAfter: retryAfterSeconds(wait),
				Type: typeRateLimit, Code: "rate_limited",
				Message: "too many requests for this token; wait for the Retry-After seconds and slow down"})
			return
		}
		next.ServeHTTP(w, r)
	})
}

// contractRoute wraps one authenticated route with the checks that need the
// caller: Idempotency-Key handling.
func (s *Server) contractRoute(next http.Handler) http.Handler {
	return s.idempotent(next)
}

// contractRoutes registers the routes of the contract layer, served
// without authentication.
func (s *Server) contractRoutes() {
	s.mux.HandleFunc("GET /v1/openapi.yaml", serveOpenAPISpec)
}
