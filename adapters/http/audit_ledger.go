package http

import (
	"errors"
	"net/http"

	"github.com/taskpod/billing/application"
	"github.com/taskpod/billing/domain"
	"github.com/taskpod/billing/ports"
)

// ledgerError maps the ledger use cases' own errors before the shared table.
func ledgerError(err error) error {
	switch {
	case errors.Is(err, domain.ErrOverdraft):
		return &apiError{Status: http.StatusConflict, Type: typeInvalidRequest, Code: "reversal_overdraws_account",
			Message: err.Error() + "; reverse the later transactions that used this money first"}
	case errors.Is(err, application.ErrNotReversible):
		return &apiError{Status: http.StatusConflict, Type: typeInvalidRequest, Code: "transaction_not_reversible", Message: err.Error()}
	}
	return err
}

func (s *Server) listLedgerAccounts(w http.ResponseWriter, r *http.Request) {
	asOf, err := asOfParam(r.URL.Query())
	if err != nil {
		writeError(w, r, err)
		return
	}
	page, err := pageOf(r)
	if err != nil {
		writeError(w, r, err)
		return
	}
	accounts, more, err := s.d.Audit.Books.Accounts(r.Context(), asOf, page)
	if err != nil {
		writeError(w, r, err)
		return
	}
	out := list[accountView]{Data: []accountView{}, HasMore: more}
	for _, a := range accounts {
		out.Data = append(out.Data, accountOf(a))
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) getAccountBalance(w http.ResponseWriter, r *http.Request) {
	asOf, err := asOfParam(r.URL.Query())
	if err != nil {
		writeError(w, r, err)
		return
	}
	a, err := s.d.Audit.Books.Account(r.Context(), domain.AccountID(r.PathValue("id")), asOf)
	if err != nil {
		writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, accountBalanceView{
		Account: string(a.ID), Type: string(a.Class.Type), NormalBalance: string(a.Class.Normal),
		AsOf: asOf, Balances: balancesOf(a.Balances),
	})
}

func (s *Server) getTrialBalance(w http.ResponseWriter, r *http.Request) {
	asOf, err := asOfParam(r.URL.Query())
	if err != nil {
		writeError(w, r, err)
		return
	}
	tbs, err := s.d.Audit.Books.TrialBalance(r.Context(), asOf)
	if err != nil {
		writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, trialBalanceOf(asOf, tbs))
}

func (s *Server) getLedgerTransaction(w http.ResponseWriter, r *http.Request) {
	v, err := s.d.Audit.Books.Transaction(r.Context(), r.PathValue("id"))
	if err != nil {
		writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, transactionOf(v))
}

// reverseLedgerTransaction responds 201 with a new reversal and 200 with
// the reversal an earlier request created.
func (s *Server) reverseLedgerTransaction(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Reason *string `json:"reason"`
	}
	if err := decodeJSON(w, r, &body, false); err != nil {
		writeError(w, r, err)
		return
	}
	if body.Reason == nil {
		writeError(w, r, domain.Invalid("reason", "missing_field", "reason is required: say why the transaction is reversed"))
		return
	}
	res, err := s.d.Audit.Ledger.Reverse(r.Context(), actorOf(r), r.PathValue("id"), *body.Reason)
	if err != nil {
		writeError(w, r, ledgerError(err))
		return
	}
	v, err := s.d.Audit.Books.Transaction(r.Context(), res.Transaction.ID)
	if err != nil {
		writeError(w, r, err)
		return
	}
	status := http.StatusOK
	if res.Created {
		status = http.StatusCreated
	}
	writeJSON(w, status, transactionOf(v))
}

func (s *Server) getChainHead(w http.ResponseWriter, r *http.Request) {
	h, err := s.d.Audit.Chain.Head(r.Context())
	if err != nil {
		writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, headOf(h))
}

// verifyChain responds 200 whether or not the chain is intact, because the
// report's ok and firstBroken fields carry the verdict.
func (s *Server) verifyChain(w http.ResponseWriter, r *http.Request) {
	report, err := s.d.Audit.Chain.Verify(r.Context())
	if err != nil {
		writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, verifyOf(report))
}

func (s *Server) listAuditEvents(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	page := ports.AuditPage{}
	var err error
	if page.Limit, err = limitOf(q.Get("limit"), 50, 500); err != nil {
		writeError(w, r, err)
		return
	}
	if page.StartingAfter, err = parseAuditCursor(q.Get("startingAfter"), "startingAfter"); err != nil {
		writeError(w, r, err)
		return
	}
	if page.EndingBefore, err = parseAuditCursor(q.Get("endingBefore"), "endingBefore"); err != nil {
		writeError(w, r, err)
		return
	}
	if page.StartingAfter != 0 && page.EndingBefore != 0 {
		writeError(w, r, badRequest("invalid_pagination", "endingBefore", "set startingAfter or endingBefore, not both"))
		return
	}

	filter := ports.AuditFilter{Action: q.Get("action"), Subject: q.Get("subject"), Actor: q.Get("actor")}
	events, more, err := s.d.Audit.Books.AuditEvents(r.Context(), filter, page)
	if err != nil {
		writeError(w, r, err)
		return
	}
	out := list[auditEventView]{Data: []auditEventView{}, HasMore: more}
	for _, e := range events {
		out.Data = append(out.Data, auditEventOf(e))
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) getAgentBalance(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	balances, err := s.d.Audit.Ledger.AgentBalance(r.Context(), actorOf(r), id)
	if err != nil {
		writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, agentBalanceOf(id, balances))
}
