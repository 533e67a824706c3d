package http

import (
	"net/http"
	"strconv"
	"strings"

	"github.com/taskpod/billing/application"
	"github.com/taskpod/billing/domain"
	"github.com/taskpod/billing/ports"
)

func actorOf(r *http.Request) application.Actor { return application.ActorFrom(r.Context()) }

func (s *Server) setup(w http.ResponseWriter, r *http.Request) {
	var body struct{}
	if err := decodeJSON(w, r, &body, true); err != nil {
		writeError(w, r, err)
		return
	}
	res, err := s.d.Billing.Setup(r.Context(), actorOf(r).Subject)
	if err != nil {
		writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{
		"setupIntentId": res.SetupIntentID, "clientSecret": res.ClientSecret, "customerId": res.CustomerID,
	})
}

func (s *Server) confirmSetup(w http.ResponseWriter, r *http.Request) {
	var body struct {
		SetupIntentID *string `json:"setupIntentId"`
	}
	if err := decodeJSON(w, r, &body, false); err != nil {
		writeError(w, r, err)
		return
	}
	if err := requireID(body.SetupIntentID, "setupIntentId", "seti_"); err != nil {
		writeError(w, r, err)
		return
	}
	pm, err := s.d.Billing.ConfirmSetup(r.Context(), actorOf(r).Subject, *body.SetupIntentID)
	if err != nil {
		writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, cardOf(pm, pm.ID))
}

func (s *Server) listPaymentMethods(w http.ResponseWriter, r *http.Request) {
	pms, err := s.d.Billing.ListPaymentMethods(r.Context(), actorOf(r).Subject)
	if err != nil {
		writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, paymentMethodsOf(pms))
}

func (s *Server) setDefaultPaymentMethod(w http.ResponseWriter, r *http.Request) {
	var body struct {
		PaymentMethodID *string `json:"paymentMethodId"`
	}
	if err := decodeJSON(w, r, &body, false); err != nil {
		writeError(w, r, err)
		return
	}
	if err := requireID(body.PaymentMethodID, "paymentMethodId", "pm_"); err != nil {
		writeError(w, r, err)
		return
	}
	pms, err := s.d.Billing.SetDefault(r.Context(), actorOf(r).Subject, *body.PaymentMethodID)
	if err != nil {
		writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, paymentMethodsOf(pms))
}

func (s *Server) removePaymentMethod(w http.ResponseWriter, r *http.Request) {
	if err := s.d.Billing.RemovePaymentMethod(r.Context(), actorOf(r).Subject, r.PathValue("id")); err != nil {
		writeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) createTask(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Title         *string `json:"title"`
		Description   string  `json:"description"`
		AgentID       *string `json:"agentId"`
		MaxPriceCents *int64  `json:"maxPriceCents"`
	}
	if err := decodeJSON(w, r, &body, false); err != nil {
		writeError(w, r, err)
		return
	}
	if body.Title == nil {
		writeError(w, r, domain.Invalid("title", "missing_field", "title is required"))
		return
	}
	if body.AgentID == nil || *body.AgentID == "" {
		writeError(w, r, domain.Invalid("agentId", "missing_field", "agentId is required; list agents with GET /v1/agents"))
		return
	}
	if body.MaxPriceCents == nil {
		writeError(w, r, domain.Invalid("maxPriceCents", "missing_field", "maxPriceCents is required, in minor units of the agent's currency"))
		return
	}
	// With an Idempotency-Key the task id is reserved under the key, so a
	// retry after a crash can never create a second task.
	v, err := s.d.Tasks.Create(r.Context(), actorOf(r).Subject, application.CreateTaskInput{
		ID: reservedID(r.Context()), Title: *body.Title, Description: body.Description, AgentID: *body.AgentID, MaxPrice: *body.MaxPriceCents,
	})
	if err != nil {
		writeError(w, r, err)
		return
	}
	writeJSON(w, createdTaskStatus(v), taskOf(v, application.RoleCustomer))
}

func (s *Server) listTasks(w http.ResponseWriter, r *http.Request) {
	page, err := pageOf(r)
	if err != nil {
		writeError(w, r, err)
		return
	}
	actor := actorOf(r)
	views, more, err := s.d.Tasks.List(r.Context(), actor, page)
	if err != nil {
		writeError(w, r, err)
		return
	}
	out := list[taskView]{Data: []taskView{}, HasMore: more}
	for _, v := range views {
		out.Data = append(out.Data, taskOf(v, actor.Role))
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) getTask(w http.ResponseWriter, r *http.Request) {
	actor := actorOf(r)
	v, err := s.d.Tasks.Get(r.Context(), actor, r.PathValue("id"))
	if err != nil {
		writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, taskOf(v, actor.Role))
}

func (s *Server) completeTask(w http.ResponseWriter, r *http.Request) {
	var body struct {
		FinalAmountCents *int64 `json:"finalAmountCents"`
	}
	if err := decodeJSON(w, r, &body, true); err != nil {
		writeError(w, r, err)
		return
	}
	actor := actorOf(r)
	v, err := s.d.Tasks.Complete(r.Context(), actor, r.PathValue("id"), body.FinalAmountCents)
	if err != nil {
		writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, taskOf(v, actor.Role))
}

func (s *Server) failTask(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Reason string `json:"reason"`
	}
	if err := decodeJSON(w, r, &body, true); err != nil {
		writeError(w, r, err)
		return
	}
	actor := actorOf(r)
	v, err := s.d.Tasks.Fail(r.Context(), actor, r.PathValue("id"))
	if err != nil {
		writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, taskOf(v, actor.Role))
}

func (s *Server) cancelTask(w http.ResponseWriter, r *http.Request) {
	var body struct{}
	if err := decodeJSON(w, r, &body, true); err != nil {
		writeError(w, r, err)
		return
	}
	actor := actorOf(r)
	v, err := s.d.Tasks.Cancel(r.Context(), actor, r.PathValue("id"))
	if err != nil {
		writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, taskOf(v, actor.Role))
}

func (s *Server) getPayment(w http.ResponseWriter, r *http.Request) {
	actor := actorOf(r)
	p, err := s.d.Tasks.GetPayment(r.Context(), actor, r.PathValue("id"))
	if err != nil {
		writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, paymentOf(p, actor.Role))
}

func (s *Server) listAgents(w http.ResponseWriter, r *http.Request) {
	page, err := pageOf(r)
	if err != nil {
		writeError(w, r, err)
		return
	}
	actor := actorOf(r)
	agents, more, err := s.d.Agents.List(r.Context(), actor, page)
	if err != nil {
		writeError(w, r, err)
		return
	}
	out := list[agentView]{Data: []agentView{}, HasMore: more}
	for _, a := range agents {
		out.Data = append(out.Data, agentOf(a, actor.Role))
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) createAgent(w http.ResponseWriter, r *http.Request) {
	var body struct {
		ID              string  `json:"id"`
		Name            *string `json:"name"`
		PriceCents      *int64  `json:"priceCents"`
		Currency        string  `json:"currency"`
		StripeAccountID string  `json:"stripeAccountId"`
	}
	if err := decodeJSON(w, r, &body, false); err != nil {
		writeError(w, r, err)
		return
	}
	if body.Name == nil {
		writeError(w, r, domain.Invalid("name", "missing_field", "name is required"))
		return
	}
	if body.PriceCents == nil {
		writeError(w, r, domain.Invalid("priceCents", "missing_field", "priceCents is required (0 for a free agent)"))
		return
	}
	actor := actorOf(r)
	a, err := s.d.Agents.Create(r.Context(), actor, application.CreateAgentInput{
		ID: body.ID, Name: *body.Name, PriceCents: *body.PriceCents, Currency: body.Currency, ConnectAccountID: body.StripeAccountID,
	})
	if err != nil {
		writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, agentOf(a, actor.Role))
}

func (s *Server) getAgent(w http.ResponseWriter, r *http.Request) {
	a, err := s.d.Agents.Get(r.Context(), r.PathValue("id"))
	if err != nil {
		writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, agentOf(a, actorOf(r).Role))
}

func (s *Server) updateAgent(w http.ResponseWriter, r *http.Request) {
	var body struct {
		PriceCents      *int64  `json:"priceCents"`
		StripeAccountID *string `json:"stripeAccountId"`
		Active          *bool   `json:"active"`
	}
	if err := decodeJSON(w, r, &body, false); err != nil {
		writeError(w, r, err)
		return
	}
	actor := actorOf(r)
	a, err := s.d.Agents.Update(r.Context(), actor, r.PathValue("id"), application.UpdateAgentInput{
		PriceCents: body.PriceCents, ConnectAccountID: body.StripeAccountID, Active: body.Active,
	})
	if err != nil {
		writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, agentOf(a, actor.Role))
}

func (s *Server) listLedgerEntries(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	page := ports.EntryPage{}
	var err error
	if page.Limit, err = limitOf(q.Get("limit"), 50, 500); err != nil {
		writeError(w, r, err)
		return
	}
	if page.After, err = parseEntryCursor(q.Get("startingAfter"), "startingAfter"); err != nil {
		writeError(w, r, err)
		return
	}
	if page.Before, err = parseEntryCursor(q.Get("endingBefore"), "endingBefore"); err != nil {
		writeError(w, r, err)
		return
	}
	filter, err := entryFilterOf(q)
	if err != nil {
		writeError(w, r, err)
		return
	}
	entries, more, err := s.d.Ledger.Entries(r.Context(), filter, page)
	if err != nil {
		writeError(w, r, err)
		return
	}
	out := list[entryView]{Data: []entryView{}, HasMore: more}
	for _, e := range entries {
		out.Data = append(out.Data, entryOf(e))
	}
	writeJSON(w, http.StatusOK, out)
}

// requireID checks a required id field and its Stripe prefix.
func requireID(v *string, field, prefix string) error {
	if v == nil || *v == "" {
		return domain.Invalid(field, "missing_field", "%s is required", field)
	}
	if !strings.HasPrefix(*v, prefix) {
		return domain.Invalid(field, "invalid_id", "%s must start with %q", field, prefix)
	}
	return nil
}

// pageOf reads limit, startingAfter and endingBefore.
func pageOf(r *http.Request) (ports.Page, error) {
	q := r.URL.Query()
	limit, err := limitOf(q.Get("limit"), 10, 100)
	if err != nil {
		return ports.Page{}, err
	}
	p := ports.Page{Limit: limit, StartingAfter: q.Get("startingAfter"), EndingBefore: q.Get("endingBefore")}
	if p.StartingAfter != "" && p.EndingBefore != "" {
		return ports.Page{}, badRequest("invalid_pagination", "endingBefore", "set startingAfter or endingBefore, not both")
	}
	return p, nil
}

func limitOf(raw string, def, max int) (int, error) {
	if raw == "" {
		return def, nil
	}
	n, err := strconv.Atoi(raw)
	if err != nil || n < 1 || n > max {
		return 0, badRequest("invalid_limit", "limit", "limit must be an integer from 1 to "+strconv.Itoa(max))
	}
	return n, nil
}

// Ledger entry ids are sequence numbers; the API shows them as le_<n>.
func entryCursor(id int64) string { return "le_" + strconv.FormatInt(id, 10) }

func parseEntryCursor(raw, param string) (int64, error) {
	if raw == "" {
		return 0, nil
	}
	n, err := strconv.ParseInt(strings.TrimPrefix(raw, "le_"), 10, 64)
	if err != nil || n < 1 {
		return 0, badRequest("invalid_cursor", param, param+" must be a ledger entry id such as le_42")
	}
	return n, nil
}
