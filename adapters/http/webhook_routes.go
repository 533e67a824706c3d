package http

import (
	"github.com/taskpod/billing/application"
	"github.com/taskpod/billing/ports"
)

// WebhookDeps are the services behind Stripe's webhook route and the
// admin's refund routes. The zero value registers none of them.
type WebhookDeps struct {
	// Parser verifies the Stripe-Signature header and parses events.
	Parser   ports.EventParser
	Webhooks *application.Webhooks
	Refunds  *application.Refunds
}

// webhookRoutes registers the Stripe webhook route, which carries no bearer
// token because Stripe signs its requests instead, and the refund routes.
func (s *Server) webhookRoutes() {
	if s.d.Webhooks.Webhooks != nil && s.d.Webhooks.Parser != nil {
		s.mux.HandleFunc("POST /v1/stripe/webhooks", s.stripeWebhook)
	}
	if s.d.Webhooks.Refunds != nil {
		s.handle("POST /v1/tasks/{id}/refund", admin, s.refundTask)
		s.handle("GET /v1/tasks/{id}/refunds", roles{application.RoleAdmin, application.RoleAuditor}, s.listTaskReturns)
	}
}
