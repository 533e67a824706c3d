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

// Page sizes of account listings.
const (
	defaultAccountLimit = 50
	maxAccountLimit     = 200
)

var _ ports.LedgerBooks = (*LedgerReader)(nil)

// queryer is the part of a pool or an open transaction that queries use.
type queryer interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// readBalances sums entries into balances per account and currency, ordered
// by account and currency. A nil accounts reads every account; a zero asOf
// counts every entry.
//
// Balances are computed from entries on every call. No balance row is
// updated per posting, so concurrent postings on one existing account never
// wait for each other. A hold's entry counts as pending only while no capture or void
// effective at or before asOf names the hold; the CASE keeps the lookup off
// the entries of other transactions.
func readBalances(ctx context.Context, q queryer, accounts []domain.AccountID, asOf time.Time) ([]domain.AccountBalance, error) {
	return readScopedBalances(ctx, q, accounts, asOf, "")
}

// readScopedBalances is readBalances limited, when paymentID is set, to the
// entries of one payment's transactions.
func readScopedBalances(ctx context.Context, q queryer, accounts []domain.AccountID, asOf time.Time, paymentID string) ([]domain.AccountBalance, error) {
	var filters []string
	var args []any
	if paymentID != "" {
		args = append(args, paymentID)
		filters = append(filters, fmt.Sprintf("e.transaction_id IN (SELECT id FROM ledger_transactions WHERE payment_id = $%d)", len(args)))
	}
	if accounts != nil {
		ids := make([]string, len(accounts))
		for i, a := range accounts {
			ids[i] = string(a)
		}
		args = append(args, ids)
		filters = append(filters, fmt.Sprintf("e.account_id = ANY($%d)", len(args)))
	}
	resolvedBy := ""
	if !asOf.IsZero() {
		args = append(args, asOf)
		filters = append(filters, fmt.Sprintf("e.effective_at <= $%d", len(args)))
		resolvedBy = fmt.Sprintf(" AND r.effective_at <= $%d", len(args))
	}

	query := fmt.Sprintf(`
		WITH scoped AS (
			SELECT e.account_id, e.currency, e.amount, e.pending,
			       CASE WHEN e.pending THEN NOT EXISTS (
			           SELECT 1 FROM ledger_transactions r WHERE r.resolves_id = e.transaction_id%s)
			       ELSE false END AS open
			  FROM ledger_entries e
			  %s
		)
		SELECT account_id, currency,
		       coalesce(sum(amount) FILTER (WHERE NOT pending AND amount > 0), 0)::bigint,
		       coalesce(-sum(amount) FILTER (WHERE NOT pending AND amount < 0), 0)::bigint,
		       coalesce(sum(amount) FILTER (WHERE open AND amount > 0), 0)::bigint,
		       coalesce(-sum(amount) FILTER (WHERE open AND amount < 0), 0)::bigint
		  FROM scoped
		 GROUP BY account_id, currency
		 ORDER BY account_id, currency`, resolvedBy, whereClause(filters))
	rows, err := q.Query(ctx, query, args...)
	if err != nil {
		return nil, mapError(err, "read ledger balances")
	}
	balances, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (domain.AccountBalance, error) {
		var b domain.AccountBalance
		var account, currency string
		err := row.Scan(&account, &currency, &b.PostedDebits, &b.PostedCredits, &b.PendingDebits, &b.PendingCredits)
		b.Account, b.Currency = domain.AccountID(account), domain.Currency(currency)
		return b, err
	})
	return balances, mapError(err, "read ledger balances")
}

// Accounts lists accounts in ascending id order with their balances as of
// asOf. StartingAfter and EndingBefore are account ids.
func (r *LedgerReader) Accounts(ctx context.Context, asOf time.Time, page ports.Page) ([]ports.AccountView, bool, error) {
	if page.StartingAfter != "" && page.EndingBefore != "" {
		return nil, false, domain.Invalid("endingBefore", "conflicting_cursors", "set at most one of startingAfter and endingBefore")
	}
	limit, err := pageLimit(page.Limit, defaultAccountLimit, maxAccountLimit, "limit")
	if err != nil {
		return nil, false, err
	}

	query := `SELECT id, created_at FROM ledger_accounts WHERE id > $1 ORDER BY id LIMIT $2`
	cursor := page.StartingAfter
	backward := page.EndingBefore != ""
	if backward {
		query = `SELECT id, created_at FROM ledger_accounts WHERE id < $1 ORDER BY id DESC LIMIT $2`
		cursor = page.EndingBefore
	}
	rows, err := r.pool.Query(ctx, query, cursor, limit+1)
	if err != nil {
		return nil, false, mapError(err, "list ledger accounts")
	}
	views, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (ports.AccountView, error) {
		var v ports.AccountView
		var id string
		err := row.Scan(&id, &v.CreatedAt)
		v.ID = domain.AccountID(id)
		v.Class, _ = domain.ClassOf(v.ID)
		return v, err
	})
	if err != nil {
		return nil, false, mapError(err, "list ledger accounts")
	}
	hasMore := len(views) > limit
	if hasMore {
		views = views[:limit]
	}
	if backward {
		slices.Reverse(views)
	}

	if err := r.attachBalances(ctx, views, asOf); err != nil {
		return nil, false, err
	}
	return views, hasMore, nil
}

// Account returns one account with its balances as of asOf.
func (r *LedgerReader) Account(ctx context.Context, id domain.AccountID, asOf time.Time) (ports.AccountView, error) {
	v := ports.AccountView{ID: id}
	err := r.pool.QueryRow(ctx, `SELECT created_at FROM ledger_accounts WHERE id = $1`, string(id)).Scan(&v.CreatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return ports.AccountView{}, notFound("ledger account", string(id))
	}
	if err != nil {
		return ports.AccountView{}, mapError(err, "read ledger account "+string(id))
	}
	v.Class, _ = domain.ClassOf(id)
	views := []ports.AccountView{v}
	if err := r.attachBalances(ctx, views, asOf); err != nil {
		return ports.AccountView{}, err
	}
	return views[0], nil
}

func (r *LedgerReader) attachBalances(ctx context.Context, views []ports.AccountView, asOf time.Time) error {
	if len(views) == 0 {
		return nil
	}
	ids := make([]domain.AccountID, len(views))
	index := map[domain.AccountID]int{}
	for i, v := range views {
		ids[i] = v.ID
		index[v.ID] = i
	}
	balances, err := readBalances(ctx, r.pool, ids, asOf)
	if err != nil {
		return err
	}
	for _, b := range balances {
		i := index[b.Account]
		views[i].Balances = append(views[i].Balances, b)
	}
	return nil
}

// TrialBalance returns the balances of every account as of asOf, grouped
// by currency in code order.
func (r *LedgerReader) TrialBalance(ctx context.Context, asOf time.Time) ([]ports.TrialBalance, error) {
	balances, err := readBalances(ctx, r.pool, nil, asOf)
	if err != nil {
		return nil, err
	}
	byCurrency := map[domain.Currency]*ports.TrialBalance{}
	var currencies []domain.Currency
	for _, b := range balances {
		tb, ok := byCurrency[b.Currency]
		if !ok {
			tb = &ports.TrialBalance{Currency: b.Currency}
			byCurrency[b.Currency] = tb
			currencies = append(currencies, b.Currency)
		}
		tb.Accounts = append(tb.Accounts, b)
		if net := b.PostedDebits - b.PostedCredits; net > 0 {
			tb.DebitColumn += net
		} else {
			tb.CreditColumn -= net
		}
		tb.PendingDebit += b.PendingDebits
		tb.PendingCredit += b.PendingCredits
	}
	slices.Sort(currencies)
	out := make([]ports.TrialBalance, len(currencies))
	for i, c := range currencies {
		out[i] = *byCurrency[c]
	}
	return out, nil
}

// AgentBalances sums the agent's payable account per currency. Transferred
// counts the debits of transfers less the ledger reversals of transfers and
// less the transfer reversals Stripe made, which settle the agent's
// receivable rather than its payable.
func (r *LedgerReader) AgentBalances(ctx context.Context, agentID string) ([]ports.AgentBalance, error) {
	rows, err := r.pool.Query(ctx, `
		SELECT e.currency,
		       coalesce(-sum(e.amount) FILTER (WHERE e.account_id = $1 AND NOT e.pending), 0)::bigint,
		       coalesce(-sum(e.amount) FILTER (WHERE e.account_id = $1 AND CASE WHEN e.pending THEN NOT EXISTS (
		           SELECT 1 FROM ledger_transactions r WHERE r.resolves_id = e.transaction_id) ELSE false END), 0)::bigint,
		       coalesce(sum(e.amount) FILTER (WHERE
		           (e.account_id = $1 AND (t.kind = 'transfer' OR o.kind = 'transfer'))
		           OR (e.account_id = $2 AND t.kind = 'transfer_reversal')), 0)::bigint
		  FROM ledger_entries e
		  JOIN ledger_transactions t ON t.id = e.transaction_id
		  LEFT JOIN ledger_transactions o ON o.id = t.reverses_id
		 WHERE e.account_id IN ($1, $2)
		 GROUP BY e.currency
		 ORDER BY e.currency`,
		string(domain.AgentPayableAccount(agentID)), string(domain.AgentReceivableAccount(agentID)))
	if err != nil {
		return nil, mapError(err, "read balances of agent "+agentID)
	}
	balances, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (ports.AgentBalance, error) {
		var b ports.AgentBalance
		var currency string
		err := row.Scan(&currency, &b.Posted, &b.Pending, &b.Transferred)
		b.Currency = domain.Currency(currency)
		return b, err
	})
	return balances, mapError(err, "read balances of agent "+agentID)
}

// accountList formats account ids for error messages.
func accountList(accounts []domain.AccountID) string {
	parts := make([]string, len(accounts))
	for i, a := range accounts {
		parts[i] = string(a)
	}
	return strings.Join(parts, ", ")
}
