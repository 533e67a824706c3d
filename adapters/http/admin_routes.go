package http

// AdminDeps are the services behind the admin routes beyond agents.
type AdminDeps struct{}

// adminRoutes registers admin routes such as the outbox quarantine.
func (s *Server) adminRoutes() {}
