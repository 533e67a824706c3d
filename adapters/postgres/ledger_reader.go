package postgres

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

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

// Entries returns one page of entries of sealed transactions, ordered by
// seal sequence and then entry id. After returns the entries following that
// entry, Before the entries just preceding it, still in ascending order.
// hasMore reports more entries beyond the page in the direction of travel.
// A limit of 0 means 50 and a limit above 500 is lowered to 500.
//
// Entry ids come from a sequence and are taken before commit, so a reader
// can see entry 10 before entry 9 commits. Paging by entry id could then
// skip entry 9. Seals are assigned after commit by one sealer at a time, so
// the sealed set always ends at the current head, and paging by seal order
// never skips or repeats an entry while others write. Entries first seals
// what has committed, so a listing includes every transaction committed
// before the request.
//
// Pending is the flag stored with the entry: the entries of a hold stay
// pending after a capture or void resolves the hold, because ledger rows
// never change. The resolving transaction is listed with its own entries.
//
// NOTE: sealing before listing writes to the database, so Entries fails on
// a read-only replica. With accountId alone, PostgreSQL sorts all of the
// account's entries by seal position for each page, which grows with a hot
// account; the task, payment and Stripe filters select few rows.
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
	filters, args, err := entryFilters(f)
	if err != nil {
		return nil, false, err
	}
	if _, err := sealPending(ctx, r.pool, maxSealBatchesOnRead); err != nil {
		return nil, false, err
	}

	addFilter := func(condition string, values ...any) {
		positions := make([]any, len(values))
		for i, v := range values {
			args = append(args, v)
			positions[i] = len(args)
		}
		filters = append(filters, fmt.Sprintf(condition, positions...))
	}
	order := "s.sequence ASC, e.id ASC"
	backward := page.Before != 0
	if cursor := max(page.After, page.Before); cursor != 0 {
		sequence, err := r.entrySequence(ctx, cursor)
		if err != nil {
			return nil, false, err
		}
		if backward {
			// The redundant bound on sequence alone lets the index scan
			// start at the cursor instead of walking the seals from one end.
			addFilter("s.sequence <= $%d AND (s.sequence, e.id) < ($%d, $%d)", sequence, sequence, cursor)
			order = "s.sequence DESC, e.id DESC"
		} else {
			addFilter("s.sequence >= $%d AND (s.sequence, e.id) > ($%d, $%d)", sequence, sequence, cursor)
		}
	}
	args = append(args, limit+1)

	query := fmt.Sprintf(`
		SELECT `+entryViewColumns+`
		  FROM ledger_seals s
		  JOIN ledger_transactions t ON t.id = s.transaction_id
		  JOIN ledger_entries e ON e.transaction_id = s.transaction_id
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

// entryViewColumns selects an entry view from entries e, transactions t and
// seals s.
const entryViewColumns = `e.id, t.id, t.kind, coalesce(t.resolves_id, ''), coalesce(t.reverses_id, ''),
	e.account_id, e.currency, e.amount, e.pending, t.actor, t.request_id, t.reason,
	t.task_id, t.payment_id, t.stripe_payment_intent_id, t.stripe_charge_id,
	t.stripe_balance_transaction_id, t.stripe_transfer_id, t.stripe_refund_id,
	e.effective_at, t.recorded_at, coalesce(s.sequence, 0)`

// stripeColumns maps Stripe id prefixes to the transaction column that
// stores objects of that type.
var stripeColumns = map[string]string{
	"pi_":  "t.stripe_payment_intent_id",
	"ch_":  "t.stripe_charge_id",
	"txn_": "t.stripe_balance_transaction_id",
	"tr_":  "t.stripe_transfer_id",
	"re_":  "t.stripe_refund_id",
}

// entryFilters returns the SQL conditions of f, numbered from $1.
func entryFilters(f ports.LedgerEntryFilter) ([]string, []any, error) {
	var filters []string
	var args []any
	add := func(condition string, value any) {
		args = append(args, value)
		filters = append(filters, fmt.Sprintf(condition, len(args)))
	}
	if f.TaskID != "" {
		add("t.task_id = $%d", f.TaskID)
	}
	if f.PaymentID != "" {
		add("t.payment_id = $%d", f.PaymentID)
	}
	if f.AccountID != "" {
		add("e.account_id = $%d", f.AccountID)
	}
	if f.StripeID != "" {
		column := ""
		for prefix, c := range stripeColumns {
			if strings.HasPrefix(f.StripeID, prefix) {
				column = c
			}
		}
		if column == "" {
			return nil, nil, domain.Invalid("stripeId", "invalid_stripe_id",
				"stripeId %q must start with pi_, ch_, txn_, tr_ or re_", f.StripeID)
		}
		add(column+" = $%d", f.StripeID)
	}
	if !f.From.IsZero() {
		add("e.effective_at >= $%d", f.From)
	}
	if !f.To.IsZero() {
		add("e.effective_at < $%d", f.To)
	}
	if !f.From.IsZero() && !f.To.IsZero() && !f.From.Before(f.To) {
		return nil, nil, domain.Invalid("to", "invalid_time_range", "to must be after from")
	}
	return filters, args, nil
}

// entrySequence returns the seal sequence of a cursor entry.
func (r *LedgerReader) entrySequence(ctx context.Context, entryID int64) (int64, error) {
	var sequence int64
	err := r.pool.QueryRow(ctx, `
		SELECT s.sequence FROM ledger_entries e JOIN ledger_seals s ON s.transaction_id = e.transaction_id
		 WHERE e.id = $1`, entryID).Scan(&sequence)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, domain.Invalid("after", "invalid_cursor",
			"entry %d is not a listed ledger entry; pass an id from a previous page", entryID)
	}
	return sequence, mapError(err, "read ledger entry cursor")
}

func scanEntryView(row pgx.CollectableRow) (ports.LedgerEntryView, error) {
	var v ports.LedgerEntryView
	var kind, account, currency string
	err := row.Scan(&v.ID, &v.TransactionID, &kind, &v.ResolvesID, &v.ReversesID,
		&account, &currency, &v.Amount, &v.Pending, &v.Actor, &v.RequestID, &v.Reason,
		&v.TaskID, &v.PaymentID, &v.Stripe.PaymentIntentID, &v.Stripe.ChargeID,
		&v.Stripe.BalanceTransactionID, &v.Stripe.TransferID, &v.Stripe.RefundID,
		&v.EffectiveAt, &v.RecordedAt, &v.Sequence)
	v.Kind, v.Account, v.Currency = domain.LedgerKind(kind), domain.AccountID(account), domain.Currency(currency)
	return v, err
}

// Transaction returns a stored transaction with its entries and seal.
func (r *LedgerReader) Transaction(ctx context.Context, id string) (ports.LedgerTransactionView, error) {
	row := r.pool.QueryRow(ctx, `
		SELECT coalesce(s.sequence, 0), `+sealSourceColumns+`
		  FROM ledger_transactions t
		  LEFT JOIN ledger_seals s ON s.transaction_id = t.id
		  `+sealSourceEntries+`
		 WHERE t.id = $1`, id)
	var v ports.LedgerTransactionView
	record, err := scanSealSource(row, &v.Sequence)
	if errors.Is(err, pgx.ErrNoRows) {
		return ports.LedgerTransactionView{}, notFound("ledger transaction", id)
	}
	if err != nil {
		return ports.LedgerTransactionView{}, mapError(err, "read ledger transaction "+id)
	}
	v.Transaction, v.RecordedAt = record.Transaction, record.RecordedAt
	for _, e := range record.Entries {
		v.Transaction.Entries = append(v.Transaction.Entries, domain.Entry{Account: e.Account, Currency: e.Currency, Amount: e.Amount})
		v.EntryIDs = append(v.EntryIDs, e.ID)
	}
	return v, nil
}
