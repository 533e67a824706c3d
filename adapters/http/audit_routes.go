package http

// AuditDeps are the auditor's ledger services beyond the entry listing.
type AuditDeps struct{}

// auditRoutes registers the auditor's ledger routes.
func (s *Server) auditRoutes() {}
