package postgres

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/taskpod/billing/domain"
	"github.com/taskpod/billing/ports"
)

// agentRepository implements ports.AgentRepository.
type agentRepository struct {
	tx pgx.Tx
}

var _ ports.AgentRepository = agentRepository{}

const agentColumns = `id, name, price_amount, currency, connect_account_id, active, created_at`

func scanAgent(row pgx.Row) (domain.Agent, error) {
	var a domain.Agent
	var amount int64
	var currency string
	if err := row.Scan(&a.ID, &a.Name, &amount, &currency, &a.ConnectAccountID, &a.Active, &a.CreatedAt); err != nil {
		return domain.Agent{}, err
	}
	price, err := domain.NewMoney(amount, domain.Currency(currency))
	if err != nil {
		return domain.Agent{}, fmt.Errorf("agent %s has an invalid stored price: %w", a.ID, err)
	}
	a.Price = price
	return a, nil
}

func (r agentRepository) Get(ctx context.Context, id string) (domain.Agent, error) {
	a, err := scanAgent(r.tx.QueryRow(ctx, `SELECT `+agentColumns+` FROM agents WHERE id = $1`, id))
	return a, mapError(err, "get agent "+id)
}

func (r agentRepository) GetForUpdate(ctx context.Context, id string) (domain.Agent, error) {
	a, err := scanAgent(r.tx.QueryRow(ctx, `SELECT `+agentColumns+` FROM agents WHERE id = $1 FOR UPDATE`, id))
	return a, mapError(err, "get agent "+id+" for update")
}

func (r agentRepository) Insert(ctx context.Context, a domain.Agent) error {
	_, err := r.tx.Exec(ctx, `
		INSERT INTO agents (id, name, price_amount, currency, connect_account_id, active, created_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7)`,
		a.ID, a.Name, a.Price.Amount(), string(a.Price.Currency()), a.ConnectAccountID, a.Active, a.CreatedAt)
	return mapError(err, "insert agent "+a.ID)
}

// Update stores every field of a except the id and CreatedAt.
func (r agentRepository) Update(ctx context.Context, a domain.Agent) error {
	tag, err := r.tx.Exec(ctx, `
		UPDATE agents
		   SET name = $2, price_amount = $3, currency = $4, connect_account_id = $5, active = $6, updated_at = now()
		 WHERE id = $1`,
		a.ID, a.Name, a.Price.Amount(), string(a.Price.Currency()), a.ConnectAccountID, a.Active)
	if err != nil {
		return mapError(err, "update agent "+a.ID)
	}
	if tag.RowsAffected() == 0 {
		return notFound("agent", a.ID)
	}
	return nil
}

// List returns one page of agents, newest first.
func (r agentRepository) List(ctx context.Context, f ports.AgentFilter, page ports.Page) ([]domain.Agent, bool, error) {
	list := keysetList{table: "agents", columns: agentColumns}
	if f.ActiveOnly {
		list.filters = append(list.filters, "active")
	}
	return listPage(ctx, r.tx, list, page, scanAgent)
}
