package http

import "github.com/taskpod/billing/application"

// AdminDeps are the services behind the admin routes beyond agents.
type AdminDeps struct {
	// Admin repairs money steps; nil leaves its routes unregistered.
	Admin *application.Admin
}

// adminRoutes registers the operator's repairs of money steps: the outbox
// quarantine and the retry of a transfer Stripe rejected.
func (s *Server) adminRoutes() {
	if s.d.Admin.Admin == nil {
		return
	}
	s.handle("GET /v1/admin/outbox/quarantine", admin, s.listQuarantine)
	s.handle("POST /v1/admin/outbox/quarantine/{id}/requeue", admin, s.requeueQuarantined)
	s.handle("POST /v1/admin/payments/{id}/retry-transfer", admin, s.retryTransfer)
}
