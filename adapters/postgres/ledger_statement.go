package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/taskpod/billing/domain"
	"github.com/taskpod/billing/ports"
)

// Statement streams an account's posted entries with
// From <= effective_at < To, grouped by currency and then in effective-time
// and id order, the order of the ledger_entries_account index, so PostgreSQL
// sends rows without sorting them first. The opening balances and the
// entries come from one REPEATABLE READ snapshot, so they agree. Rows go to
// sink as they arrive; nothing is collected in memory.
//
// A zero From starts at the first entry and a zero To ends after the last.
func (r *LedgerReader) Statement(ctx context.Context, q ports.StatementQuery, sink ports.StatementSink) error {
	if !q.From.IsZero() && !q.To.IsZero() && !q.From.Before(q.To) {
		return domain.Invalid("to", "invalid_time_range", "to must be after from")
	}
	tx, err := r.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return fmt.Errorf("read statement of %s: begin: %w", q.Account, err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()

	var exists bool
	if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM ledger_accounts WHERE id = $1)`, string(q.Account)).Scan(&exists); err != nil {
		return mapError(err, "read statement of "+string(q.Account))
	}
	if !exists {
		return notFound("ledger account", string(q.Account))
	}

	var opening []domain.AccountBalance
	if !q.From.IsZero() {
		// Times are stored with microsecond precision, so "at or before one
		// microsecond earlier" is "strictly before From".
		opening, err = readBalances(ctx, tx, []domain.AccountID{q.Account}, q.From.Add(-time.Microsecond))
		if err != nil {
			return err
		}
	}
	if err := sink.Opening(opening); err != nil {
		return err
	}
	return streamStatementEntries(ctx, tx, q, sink)
}

func streamStatementEntries(ctx context.Context, tx pgx.Tx, q ports.StatementQuery, sink ports.StatementSink) error {
	filters := []string{"e.account_id = $1", "NOT e.pending"}
	args := []any{string(q.Account)}
	if !q.From.IsZero() {
		args = append(args, q.From)
		filters = append(filters, fmt.Sprintf("e.effective_at >= $%d", len(args)))
	}
	if !q.To.IsZero() {
		args = append(args, q.To)
		filters = append(filters, fmt.Sprintf("e.effective_at < $%d", len(args)))
	}
	rows, err := tx.Query(ctx, `
		SELECT `+entryViewColumns+`
		  FROM ledger_entries e
		  JOIN ledger_transactions t ON t.id = e.transaction_id
		  LEFT JOIN ledger_seals s ON s.transaction_id = t.id
		  `+whereClause(filters)+`
		 ORDER BY e.currency, e.effective_at, e.id`, args...)
	if err != nil {
		return mapError(err, "read statement of "+string(q.Account))
	}
	defer rows.Close()
	for rows.Next() {
		v, err := scanEntryView(rows)
		if err != nil {
			return fmt.Errorf("read statement of %s: %w", q.Account, err)
		}
		if err := sink.Entry(v); err != nil {
			return err
		}
	}
	return mapError(rows.Err(), "read statement of "+string(q.Account))
}
