package postgres

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/taskpod/billing/domain"
	"github.com/taskpod/billing/ports"
)

// Page sizes of lists ordered by creation.
const (
	defaultPageLimit = 10
	maxPageLimit     = 100
)

// keysetList describes a list ordered by (created_at DESC, id DESC).
type keysetList struct {
	// table is the table name, trusted SQL.
	table string
	// columns is the SELECT list, trusted SQL.
	columns string
	// filters are conditions joined with AND; they use $1, $2, ... for args.
	filters []string
	args    []any
}

// pageLimit returns the page size for a requested limit: the default for 0
// and at most maxPageLimit.
func pageLimit(requested, defaultLimit, maxLimit int, field string) (int, error) {
	switch {
	case requested < 0:
		return 0, domain.Invalid(field, "invalid_limit", "limit must be between 1 and %d, got %d", maxLimit, requested)
	case requested == 0:
		return defaultLimit, nil
	case requested > maxLimit:
		return maxLimit, nil
	}
	return requested, nil
}

// listPage returns one page of list, newest first, and whether more items
// exist beyond the page in the direction of travel: older items for a first
// page or StartingAfter, newer items for EndingBefore.
//
// A cursor id must belong to the filtered list, so a caller cannot probe
// other customers' ids; an unknown one is a *domain.ValidationError.
func listPage[T any](ctx context.Context, tx pgx.Tx, list keysetList, page ports.Page, scan func(pgx.Row) (T, error)) ([]T, bool, error) {
	if page.StartingAfter != "" && page.EndingBefore != "" {
		return nil, false, domain.Invalid("endingBefore", "conflicting_cursors", "set at most one of startingAfter and endingBefore")
	}
	limit, err := pageLimit(page.Limit, defaultPageLimit, maxPageLimit, "limit")
	if err != nil {
		return nil, false, err
	}

	filters := slices.Clone(list.filters)
	args := slices.Clone(list.args)
	order := "created_at DESC, id DESC"
	backward := page.EndingBefore != ""

	cursorID, cursorField, comparison := page.StartingAfter, "startingAfter", "<"
	if backward {
		cursorID, cursorField, comparison = page.EndingBefore, "endingBefore", ">"
		order = "created_at ASC, id ASC"
	}
	if cursorID != "" {
		createdAt, err := cursorPosition(ctx, tx, list, cursorID)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil, false, domain.Invalid(cursorField, "invalid_cursor",
				"%s %q is not the id of an item in this list; pass an id from the previous page", cursorField, cursorID)
		}
		if err != nil {
			return nil, false, mapError(err, "read "+list.table+" cursor "+cursorID)
		}
		args = append(args, createdAt, cursorID)
		filters = append(filters, fmt.Sprintf("(created_at, id) %s ($%d, $%d)", comparison, len(args)-1, len(args)))
	}

	args = append(args, limit+1)
	query := fmt.Sprintf("SELECT %s FROM %s %s ORDER BY %s LIMIT $%d",
		list.columns, list.table, whereClause(filters), order, len(args))
	rows, err := tx.Query(ctx, query, args...)
	if err != nil {
		return nil, false, mapError(err, "list "+list.table)
	}
	items, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (T, error) { return scan(row) })
	if err != nil {
		return nil, false, mapError(err, "list "+list.table)
	}

	hasMore := len(items) > limit
	if hasMore {
		items = items[:limit]
	}
	if backward {
		slices.Reverse(items)
	}
	return items, hasMore, nil
}

func cursorPosition(ctx context.Context, tx pgx.Tx, list keysetList, id string) (time.Time, error) {
	args := append(slices.Clone(list.args), id)
	filters := append(slices.Clone(list.filters), fmt.Sprintf("id = $%d", len(args)))
	var createdAt time.Time
	err := tx.QueryRow(ctx, "SELECT created_at FROM "+list.table+" "+whereClause(filters), args...).Scan(&createdAt)
	return createdAt, err
}

func whereClause(filters []string) string {
	if len(filters) == 0 {
		return ""
	}
	return "WHERE " + strings.Join(filters, " AND ")
}

// nullTime returns nil for the zero time, so it is stored as NULL.
func nullTime(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

// timeOrZero returns the zero time for NULL.
func timeOrZero(t *time.Time) time.Time {
	if t == nil {
		return time.Time{}
	}
	return *t
}
