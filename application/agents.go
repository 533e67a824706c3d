package application

import (
	"context"
	"log/slog"
	"strings"

	"github.com/taskpod/billing/domain"
	"github.com/taskpod/billing/ports"
)

// Agents registers and changes the agents customers can pay.
type Agents struct {
	store      ports.Store
	clock      ports.Clock
	ids        ports.IDGenerator
	currencies map[domain.Currency]bool
	log        *slog.Logger
}

// NewAgents builds the agent use cases; currencies lists those agents may price in.
func NewAgents(store ports.Store, clock ports.Clock, ids ports.IDGenerator, currencies []domain.Currency, log *slog.Logger) *Agents {
	set := map[domain.Currency]bool{}
	for _, c := range currencies {
		set[c] = true
	}
	return &Agents{store: store, clock: clock, ids: ids, currencies: set, log: log}
}

// CreateAgentInput describes a new agent.
type CreateAgentInput struct {
	ID               string
	Name             string
	PriceCents       int64
	Currency         string
	ConnectAccountID string
}

// UpdateAgentInput changes an agent; nil fields stay as they are.
type UpdateAgentInput struct {
	PriceCents       *int64
	ConnectAccountID *string
	Active           *bool
}

// Create registers an agent.
func (s *Agents) Create(ctx context.Context, actor Actor, in CreateAgentInput) (domain.Agent, error) {
	price, err := s.price(in.PriceCents, in.Currency)
	if err != nil {
		return domain.Agent{}, err
	}
	id := in.ID
	if id == "" {
		id = s.ids.NewID("")
	} else if !validAgentID(id) {
		return domain.Agent{}, domain.Invalid("id", "invalid_id", "id must be 1 to 64 letters, digits, '_' or '-'")
	}
	agent, err := domain.NewAgent(id, in.Name, price, in.ConnectAccountID, s.clock.Now())
	if err != nil {
		return domain.Agent{}, err
	}

	err = s.store.InTx(ctx, func(ctx context.Context, tx ports.Tx) error {
		if err := tx.Agents().Insert(ctx, agent); err != nil {
			return err
		}
		return tx.Audit().Record(ctx, ports.AuditEvent{
			Actor: actor.Name(), Action: "agent.created", Subject: agent.ID, RequestID: actor.RequestID,
			Details: map[string]any{"priceCents": price.Amount(), "currency": price.Currency(), "stripeAccountId": agent.ConnectAccountID},
			At:      s.clock.Now(),
		})
	})
	if err != nil {
		return domain.Agent{}, err
	}
	s.log.InfoContext(ctx, "agent created", "agent_id", agent.ID)
	return agent, nil
}

// Update changes an agent's price, Connect account or active flag. Tasks
// already created keep their amounts and destination.
func (s *Agents) Update(ctx context.Context, actor Actor, id string, in UpdateAgentInput) (domain.Agent, error) {
	var agent domain.Agent
	err := s.store.InTx(ctx, func(ctx context.Context, tx ports.Tx) error {
		var err error
		agent, err = tx.Agents().GetForUpdate(ctx, id)
		if err != nil {
			return err
		}
		details := map[string]any{}
		if in.PriceCents != nil {
			price, err := s.price(*in.PriceCents, string(agent.Price.Currency()))
			if err != nil {
				return err
			}
			if err := agent.Reprice(price); err != nil {
				return err
			}
			details["priceCents"] = *in.PriceCents
		}
		if in.ConnectAccountID != nil {
			if err := agent.ChangeConnectAccount(*in.ConnectAccountID); err != nil {
				return err
			}
			details["stripeAccountId"] = *in.ConnectAccountID
		}
		if in.Active != nil {
			agent.Active = *in.Active
			details["active"] = *in.Active
		}
		if err := tx.Agents().Update(ctx, agent); err != nil {
			return err
		}
		return tx.Audit().Record(ctx, ports.AuditEvent{
			Actor: actor.Name(), Action: "agent.updated", Subject: id, RequestID: actor.RequestID,
			Details: details, At: s.clock.Now(),
		})
	})
	return agent, err
}

// List returns agents; customers see only active ones.
func (s *Agents) List(ctx context.Context, actor Actor, page ports.Page) ([]domain.Agent, bool, error) {
	var out []domain.Agent
	var more bool
	err := s.store.InTx(ctx, func(ctx context.Context, tx ports.Tx) error {
		var err error
		out, more, err = tx.Agents().List(ctx, ports.AgentFilter{ActiveOnly: actor.Role != RoleAdmin}, page)
		return err
	})
	return out, more, err
}

// Get returns one agent.
func (s *Agents) Get(ctx context.Context, id string) (domain.Agent, error) {
	var a domain.Agent
	err := s.store.InTx(ctx, func(ctx context.Context, tx ports.Tx) error {
		var err error
		a, err = tx.Agents().Get(ctx, id)
		return err
	})
	return a, err
}

func (s *Agents) price(cents int64, currency string) (domain.Money, error) {
	if currency == "" {
		return domain.Money{}, domain.Invalid("currency", "missing_field", "currency is required, for example \"usd\"")
	}
	cur, err := domain.ParseCurrency(currency)
	if err != nil || !s.currencies[cur] {
		return domain.Money{}, domain.Invalid("currency", "unsupported_currency",
			"currency %q is not supported here; supported: %s", currency, s.supported())
	}
	if cents < 0 {
		return domain.Money{}, domain.Invalid("priceCents", "invalid_amount", "priceCents must be zero or more, got %d", cents)
	}
	// Stripe rejects a charge above eight digits of minor units
	// (amount_too_large), so a higher price would fail every task.
	const maxChargeCents = 99_999_999
	if cents > maxChargeCents {
		return domain.Money{}, domain.Invalid("priceCents", "amount_too_large",
			"priceCents must be at most %d, the largest amount Stripe charges at once, got %d", maxChargeCents, cents)
	}
	return domain.NewMoney(cents, cur)
}

func (s *Agents) supported() string {
	var list []string
	for c := range s.currencies {
		list = append(list, string(c))
	}
	return strings.Join(list, ", ")
}

func validAgentID(id string) bool {
	if len(id) == 0 || len(id) > 64 {
		return false
	}
	for _, r := range id {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-'
		if !ok {
			return false
		}
	}
	return true
}
