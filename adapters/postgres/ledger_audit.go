package postgres

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"

	"github.com/jackc/pgx/v5"

	"github.com/taskpod/billing/domain"
	"github.com/taskpod/billing/ports"
)

// Page sizes of audit log listings.
const (
	defaultAuditLimit = 50
	maxAuditLimit     = 500
)

// AuditEvents lists audit events newest first by id.
//
// NOTE: audit ids come from a sequence and are taken before commit, so an
// event committed late can appear below a cursor a reader already passed.
// Unlike ledger entries, audit events are not sealed; a reader that must not
// miss one re-reads a short overlap of ids.
func (r *LedgerReader) AuditEvents(ctx context.Context, f ports.AuditFilter, page ports.AuditPage) ([]ports.AuditEventView, bool, error) {
	if page.StartingAfter != 0 && page.EndingBefore != 0 {
		return nil, false, domain.Invalid("endingBefore", "conflicting_cursors", "set at most one of startingAfter and endingBefore")
	}
	limit, err := pageLimit(page.Limit, defaultAuditLimit, maxAuditLimit, "limit")
	if err != nil {
		return nil, false, err
	}

	var filters []string
	var args []any
	add := func(condition string, value any) {
		args = append(args, value)
		filters = append(filters, fmt.Sprintf(condition, len(args)))
	}
	if f.Action != "" {
		add("action = $%d", f.Action)
	}
	if f.Subject != "" {
		add("subject = $%d", f.Subject)
	}
	if f.Actor != "" {
		add("actor = $%d", f.Actor)
	}
	order := "id DESC"
	backward := page.EndingBefore != 0
	switch {
	case page.StartingAfter != 0:
		add("id < $%d", page.StartingAfter)
	case backward:
		add("id > $%d", page.EndingBefore)
		order = "id ASC"
	}
	args = append(args, limit+1)

	rows, err := r.pool.Query(ctx, fmt.Sprintf(`
		SELECT id, at, actor, action, subject, request_id, details
		  FROM audit_log %s ORDER BY %s LIMIT $%d`, whereClause(filters), order, len(args)), args...)
	if err != nil {
		return nil, false, mapError(err, "list audit events")
	}
	events, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (ports.AuditEventView, error) {
		var v ports.AuditEventView
		var details []byte
		if err := row.Scan(&v.ID, &v.At, &v.Actor, &v.Action, &v.Subject, &v.RequestID, &details); err != nil {
			return v, err
		}
		return v, json.Unmarshal(details, &v.Details)
	})
	if err != nil {
		return nil, false, mapError(err, "list audit events")
	}

	hasMore := len(events) > limit
	if hasMore {
		events = events[:limit]
	}
	if backward {
		slices.Reverse(events)
	}
	return events, hasMore, nil
}
