package http

// WebhookDeps are the services behind Stripe's webhook route.
type WebhookDeps struct{}

// webhookRoutes registers the Stripe webhook route.
func (s *Server) webhookRoutes() {}
