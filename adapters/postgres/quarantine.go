package postgres

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/taskpod/billing/domain"
	"github.com/taskpod/billing/ports"
)

var _ ports.AdminStore = (*Store)(nil)

// InAdminTx runs fn in a unit of work that also reaches the outbox
// quarantine, with the commit and retry rules of InTx.
func (s *Store) InAdminTx(ctx context.Context, fn func(ctx context.Context, tx ports.AdminTx) error) error {
	return s.InTx(ctx, func(ctx context.Context, tx ports.Tx) error {
		u, ok := tx.(*unitOfWork)
		if !ok {
			return fmt.Errorf("admin unit of work: InTx passed %T, want the PostgreSQL unit of work", tx)
		}
		return fn(ctx, adminUnitOfWork{u})
	})
}

// adminUnitOfWork adds the quarantine to an open unit of work.
type adminUnitOfWork struct {
	*unitOfWork
}

func (a adminUnitOfWork) Quarantine() ports.QuarantineRepository { return quarantineRepository{a.tx} }

// quarantineRepository implements ports.QuarantineRepository on the
// outbox_quarantine table filled by the outbox relay. Entry ids are the
// table's sequence numbers shown as oq_<n>.
type quarantineRepository struct {
	tx pgx.Tx
}

var _ ports.QuarantineRepository = quarantineRepository{}

const quarantineIDPrefix = "oq_"

const quarantineColumns = `id, message_uuid, payment_id, step, request_id, attempts, last_error,
	quarantined_at, requeued_at, requeued_by`

func quarantineID(n int64) string { return quarantineIDPrefix + strconv.FormatInt(n, 10) }

// parseQuarantineID returns the sequence number of an id such as oq_42.
func parseQuarantineID(id string) (int64, bool) {
	digits, ok := strings.CutPrefix(id, quarantineIDPrefix)
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseInt(digits, 10, 64)
	return n, err == nil && n > 0
}

func scanQuarantined(row pgx.Row) (ports.QuarantinedMessage, error) {
	var m ports.QuarantinedMessage
	var n int64
	var step string
	var requeuedAt *time.Time
	err := row.Scan(&n, &m.MessageUUID, &m.PaymentID, &step, &m.RequestID, &m.Attempts, &m.LastError,
		&m.QuarantinedAt, &requeuedAt, &m.RequeuedBy)
	if err != nil {
		return ports.QuarantinedMessage{}, err
	}
	m.ID = quarantineID(n)
	m.Step = domain.Step(step)
	m.RequeuedAt = timeOrZero(requeuedAt)
	return m, nil
}

// List returns one page ordered by id, newest first. The sequence only
// grows, so it orders entries as quarantined_at does without ties.
func (r quarantineRepository) List(ctx context.Context, f ports.QuarantineFilter, page ports.Page) ([]ports.QuarantinedMessage, bool, error) {
	if page.StartingAfter != "" && page.EndingBefore != "" {
		return nil, false, domain.Invalid("endingBefore", "conflicting_cursors", "set at most one of startingAfter and endingBefore")
	}
	limit, err := pageLimit(page.Limit, defaultPageLimit, maxPageLimit, "limit")
	if err != nil {
		return nil, false, err
	}

	var filters []string
	var args []any
	switch f.Status {
	case ports.QuarantineOpen:
		filters = append(filters, "requeued_at IS NULL")
	case ports.QuarantineRequeued:
		filters = append(filters, "requeued_at IS NOT NULL")
	case ports.QuarantineAll, "":
	default:
		return nil, false, domain.Invalid("status", "invalid_status", "status must be open, requeued or all, got %q", f.Status)
	}
	if f.PaymentID != "" {
		args = append(args, f.PaymentID)
		filters = append(filters, fmt.Sprintf("payment_id = $%d", len(args)))
	}

	order := "id DESC"
	backward := page.EndingBefore != ""
	cursor, field, comparison := page.StartingAfter, "startingAfter", "<"
	if backward {
		cursor, field, comparison, order = page.EndingBefore, "endingBefore", ">", "id ASC"
	}
	if cursor != "" {
		n, ok := parseQuarantineID(cursor)
		if !ok {
			return nil, false, domain.Invalid(field, "invalid_cursor", "%s must be a quarantine entry id such as oq_42, got %q", field, cursor)
		}
		args = append(args, n)
		filters = append(filters, fmt.Sprintf("id %s $%d", comparison, len(args)))
	}

	args = append(args, limit+1)
	query := fmt.Sprintf("SELECT %s FROM outbox_quarantine %s ORDER BY %s LIMIT $%d",
		quarantineColumns, whereClause(filters), order, len(args))
	rows, err := r.tx.Query(ctx, query, args...)
	if err != nil {
		return nil, false, mapError(err, "list outbox quarantine")
	}
	items, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (ports.QuarantinedMessage, error) { return scanQuarantined(row) })
	if err != nil {
		return nil, false, mapError(err, "list outbox quarantine")
	}

	hasMore := len(items) > limit
	if hasMore {
		items = items[:limit]
	}
	if backward {
		for i, j := 0, len(items)-1; i < j; i, j = i+1, j-1 {
			items[i], items[j] = items[j], items[i]
		}
	}
	return items, hasMore, nil
}

func (r quarantineRepository) GetForUpdate(ctx context.Context, id string) (ports.QuarantinedMessage, error) {
	n, ok := parseQuarantineID(id)
	if !ok {
		return ports.QuarantinedMessage{}, notFound("quarantined outbox message", id)
	}
	m, err := scanQuarantined(r.tx.QueryRow(ctx,
		`SELECT `+quarantineColumns+` FROM outbox_quarantine WHERE id = $1 FOR UPDATE`, n))
	return m, mapError(err, "get quarantined outbox message "+id)
}

func (r quarantineRepository) MarkRequeued(ctx context.Context, id, by string, at time.Time) error {
	n, ok := parseQuarantineID(id)
	if !ok {
		return notFound("quarantined outbox message", id)
	}
	tag, err := r.tx.Exec(ctx, `UPDATE outbox_quarantine SET requeued_at = $2, requeued_by = $3 WHERE id = $1`, n, at, by)
	if err != nil {
		return mapError(err, "mark quarantined outbox message "+id+" requeued")
	}
	if tag.RowsAffected() == 0 {
		return notFound("quarantined outbox message", id)
	}
	return nil
}
