package postgres

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/taskpod/billing/domain"
	"github.com/taskpod/billing/ports"
)

// taskRepository implements ports.TaskRepository. An empty payment id is
// stored as NULL.
type taskRepository struct {
	tx pgx.Tx
}

var _ ports.TaskRepository = taskRepository{}

const taskColumns = `id, customer_id, agent_id, agent_name, title, description, max_price_amount, currency,
	status, coalesce(payment_id, ''), created_at, updated_at`

func scanTask(row pgx.Row) (domain.Task, error) {
	var r domain.TaskRecord
	var amount int64
	var currency, status string
	err := row.Scan(&r.ID, &r.CustomerID, &r.AgentID, &r.AgentName, &r.Title, &r.Description, &amount, &currency,
		&status, &r.PaymentID, &r.CreatedAt, &r.UpdatedAt)
	if err != nil {
		return domain.Task{}, err
	}
	r.MaxPrice, err = domain.NewMoney(amount, domain.Currency(currency))
	if err != nil {
		return domain.Task{}, fmt.Errorf("task %s has an invalid stored max price: %w", r.ID, err)
	}
	r.Status = domain.TaskStatus(status)
	return domain.UnmarshalTaskFromDatabase(r), nil
}

func (r taskRepository) Get(ctx context.Context, id string) (domain.Task, error) {
	t, err := scanTask(r.tx.QueryRow(ctx, `SELECT `+taskColumns+` FROM tasks WHERE id = $1`, id))
	return t, mapError(err, "get task "+id)
}

func (r taskRepository) GetForUpdate(ctx context.Context, id string) (domain.Task, error) {
	t, err := scanTask(r.tx.QueryRow(ctx, `SELECT `+taskColumns+` FROM tasks WHERE id = $1 FOR UPDATE`, id))
	return t, mapError(err, "get task "+id+" for update")
}

func (r taskRepository) Insert(ctx context.Context, t domain.Task) error {
	rec := t.Record()
	_, err := r.tx.Exec(ctx, `
		INSERT INTO tasks (id, customer_id, agent_id, agent_name, title, description, max_price_amount, currency,
		                   status, payment_id, created_at, updated_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, nullif($10, ''), $11, $12)`,
		rec.ID, rec.CustomerID, rec.AgentID, rec.AgentName, rec.Title, rec.Description,
		rec.MaxPrice.Amount(), string(rec.MaxPrice.Currency()), string(rec.Status), rec.PaymentID,
		rec.CreatedAt, rec.UpdatedAt)
	return mapError(err, "insert task "+rec.ID)
}

// Update stores the status, the payment id and UpdatedAt, the fields the
// domain changes after creation.
func (r taskRepository) Update(ctx context.Context, t domain.Task) error {
	rec := t.Record()
	tag, err := r.tx.Exec(ctx, `
		UPDATE tasks SET status = $2, payment_id = nullif($3, ''), updated_at = $4 WHERE id = $1`,
		rec.ID, string(rec.Status), rec.PaymentID, rec.UpdatedAt)
	if err != nil {
		return mapError(err, "update task "+rec.ID)
	}
	if tag.RowsAffected() == 0 {
		return notFound("task", rec.ID)
	}
	return nil
}

// List returns one page of tasks, newest first, narrowed by f.
func (r taskRepository) List(ctx context.Context, f ports.TaskFilter, page ports.Page) ([]domain.Task, bool, error) {
	list := keysetList{table: "tasks", columns: taskColumns}
	if f.CustomerID != "" {
		list.args = append(list.args, f.CustomerID)
		list.filters = append(list.filters, fmt.Sprintf("customer_id = $%d", len(list.args)))
	}
	if f.AgentID != "" {
		list.args = append(list.args, f.AgentID)
		list.filters = append(list.filters, fmt.Sprintf("agent_id = $%d", len(list.args)))
	}
	return listPage(ctx, r.tx, list, page, scanTask)
}
