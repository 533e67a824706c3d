package http

import (
	"github.com/taskpod/billing/application"
	"github.com/taskpod/billing/ports"
)

// AuditDeps are the auditor's ledger services beyond the entry listing. A
// nil field leaves its routes unregistered, so a server built without the
// ledger module responds to them with route_not_found.
type AuditDeps struct {
	// Ledger runs reversals and agents' balance reads.
	Ledger *application.Ledger
	// Books reads balances, statements and the audit log.
	Books ports.LedgerBooks
	// Chain reads and verifies the ledger's hash chain.
	Chain ports.LedgerChain
}

var agentAdmin = roles{application.RoleAgent, application.RoleAdmin}

// auditRoutes registers the auditor's ledger routes, the admin's reversal
// and the agent's balance.
func (s *Server) auditRoutes() {
	d := s.d.Audit
	if d.Books != nil {
		s.handle("GET /v1/ledger/accounts", auditor, s.listLedgerAccounts)
		s.handle("GET /v1/ledger/accounts/{id}/balance", auditor, s.getAccountBalance)
		s.handle("GET /v1/ledger/accounts/{id}/statement", auditor, s.getAccountStatement)
		s.handle("GET /v1/ledger/trial-balance", auditor, s.getTrialBalance)
		s.handle("GET /v1/ledger/transactions/{id}", auditor, s.getLedgerTransaction)
		s.handle("GET /v1/audit/events", auditor, s.listAuditEvents)
	}
	if d.Chain != nil {
		s.handle("GET /v1/ledger/head", auditor, s.getChainHead)
		s.handle("GET /v1/ledger/verify", auditor, s.verifyChain)
	}
	if d.Ledger != nil && d.Books != nil {
		s.handle("POST /v1/ledger/transactions/{id}/reverse", admin, s.reverseLedgerTransaction)
		s.handle("GET /v1/agents/{id}/balance", agentAdmin, s.getAgentBalance)
	}
}
