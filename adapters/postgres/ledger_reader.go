package postgres

import (
	"context"
	"fmt"
	"slices"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/taskpod/billing/domain"
	"github.com/taskpod/billing/ports"
)

// Page sizes of ledger entry listings.
const (
	defaultEntryLimit = 50
	maxEntryLimit     = 500
)

// LedgerReader implements ports.LedgerReader with single statements on the
// pool, outside any unit of work.
type LedgerReader struct {
	pool *pgxpool.Pool
}

var _ ports.LedgerReader = (*LedgerReader)(nil)

// NewLedgerReader returns a LedgerReader on pool.
func NewLedgerReader(pool *pgxpool.Pool) *LedgerReader {
	return &LedgerReader{pool: pool}
}

// Entries returns one page of entries joined with their transaction,
// ordered by entry id ascending. After returns the entries following that
// id, Before the entries just preceding it, still in ascending order.
// hasMore reports more entries beyond the page in the direction of travel.
// A limit of 0 means 50 and a limit above 500 is lowered to 500.
//
// Pending is the flag stored with the entry: the entries of a hold stay
// pending after a capture or void resolves the hold, because ledger rows
// never change. The resolving transaction is listed with its own entries.
func (r *LedgerReader) Entries(ctx context.Context, f ports.LedgerEntryFilter, page ports.EntryPage) ([]ports.LedgerEntryView, bool, error) {
	if page.After != 0 && page.Before != 0 {
		return nil, false, domain.Invalid("before", "conflicting_cursors", "set at most one of after and before")
	}
	if page.After < 0 || page.Before < 0 {
		return nil, false, domain.Invalid("after", "invalid_cursor", "entry id cursors must be positive")
	}
	limit, err := pageLimit(page.Limit, defaultEntryLimit, maxEntryLimit, "limit")
	if err != nil {
		return nil, false, err
	}

	var filters []string
	var args []any
	addFilter := func(condition string, value any) {
		args = append(args, value)
		filters = append(filters, fmt.Sprintf(condition, len(args)))
	}
	if f.TaskID != "" {
		addFilter("t.task_id = $%d", f.TaskID)
	}
	if f.PaymentID != "" {
		addFilter("t.payment_id = $%d", f.PaymentID)
	}
	if f.AccountID != "" {
		addFilter("e.account_id = $%d", f.AccountID)
	}
	order := "e.id ASC"
	backward := page.Before != 0
	switch {
	case page.After != 0:
		addFilter("e.id > $%d", page.After)
	case backward:
		addFilter("e.id < $%d", page.Before)
		order = "e.id DESC"
	}
	args = append(args, limit+1)

	query := fmt.Sprintf(`
		SELECT e.id, t.id, t.kind, coalesce(t.resolves_id, ''), coalesce(t.reverses_id, ''),
		       e.account_id, e.currency, e.amount, e.pending, t.actor, t.request_id, t.reason,
		       t.task_id, t.payment_id, t.stripe_payment_intent_id, t.stripe_charge_id,
		       t.stripe_balance_transaction_id, t.stripe_transfer_id, t.stripe_refund_id,
		       e.effective_at, t.recorded_at
		  FROM ledger_entries e
		  JOIN ledger_transactions t ON t.id = e.transaction_id
		  %s
		 ORDER BY %s
		 LIMIT $%d`, whereClause(filters), order, len(args))
	rows, err := r.pool.Query(ctx, query, args...)
	if err != nil {
		return nil, false, mapError(err, "list ledger entries")
	}
	views, err := pgx.CollectRows(rows, scanEntryView)
	if err != nil {
		return nil, false, mapError(err, "list ledger entries")
	}

	hasMore := len(views) > limit
	if hasMore {
		views = views[:limit]
	}
	if backward {
		slices.Reverse(views)
	}
	return views, hasMore, nil
}

func scanEntryView(row pgx.CollectableRow) (ports.LedgerEntryView, error) {
	var v ports.LedgerEntryView
	var kind, account, currency string
	err := row.Scan(&v.ID, &v.TransactionID, &kind, &v.ResolvesID, &v.ReversesID,
		&account, &currency, &v.Amount, &v.Pending, &v.Actor, &v.RequestID, &v.Reason,
		&v.TaskID, &v.PaymentID, &v.Stripe.PaymentIntentID, &v.Stripe.ChargeID,
		&v.Stripe.BalanceTransactionID, &v.Stripe.TransferID, &v.Stripe.RefundID,
		&v.EffectiveAt, &v.RecordedAt)
	v.Kind, v.Account, v.Currency = domain.LedgerKind(kind), domain.AccountID(account), domain.Currency(currency)
	return v, err
}
