package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/taskpod/billing/domain"
	"github.com/taskpod/billing/ports"
)

// ledgerRepository implements ports.LedgerRepository on the insert-only
// ledger tables of migration 0002.
type ledgerRepository struct {
	tx pgx.Tx
}

var _ ports.LedgerRepository = ledgerRepository{}

// Append validates t and inserts its missing accounts, the transaction row
// and its entries. Entries copy Pending from t and their effective time from
// t.Meta.EffectiveAt.
//
// The database checks the balance again when the unit of work commits. The
// entry trigger requires entries to be written by the database transaction
// that wrote their ledger transaction, with no savepoint between them, so
// Append issues plain statements only.
func (r ledgerRepository) Append(ctx context.Context, t domain.LedgerTransaction) error {
	if err := t.Validate(); err != nil {
		return fmt.Errorf("append ledger transaction: %w", err)
	}
	if t.Meta.EffectiveAt.IsZero() {
		return fmt.Errorf("append ledger transaction %s: Meta.EffectiveAt is missing", t.ID)
	}
	if t.ResolvesID != "" {
		if err := r.checkResolvesHold(ctx, t); err != nil {
			return err
		}
	}

	if err := r.ensureAccounts(ctx, t); err != nil {
		return err
	}
	if err := r.insertTransaction(ctx, t); err != nil {
		return err
	}
	return r.insertEntries(ctx, t)
}

// checkResolvesHold rejects a capture or void that names a transaction
// other than a hold, which the schema alone would accept. A missing target
// is left to the foreign key, mapped to domain.ErrNotFound.
func (r ledgerRepository) checkResolvesHold(ctx context.Context, t domain.LedgerTransaction) error {
	var kind string
	err := r.tx.QueryRow(ctx, `SELECT kind FROM ledger_transactions WHERE id = $1`, t.ResolvesID).Scan(&kind)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil
	}
	if err != nil {
		return mapError(err, "append ledger transaction "+t.ID)
	}
	if domain.LedgerKind(kind) != domain.LedgerHold {
		return fmt.Errorf("append ledger transaction %s: %s resolves %s, which is a %s, not a hold: %w",
			t.ID, t.Kind, t.ResolvesID, kind, domain.ErrConflict)
	}
	return nil
}

// ensureAccounts inserts the accounts of t that do not exist yet. It inserts
// them in sorted order, so two writers of the same new accounts wait for
// each other in one order and do not deadlock.
func (r ledgerRepository) ensureAccounts(ctx context.Context, t domain.LedgerTransaction) error {
	accounts := t.SortedAccounts()
	if len(accounts) == 0 {
		return nil
	}
	ids := make([]string, len(accounts))
	balances := make([]string, len(accounts))
	for i, a := range accounts {
		ids[i] = string(a)
		balances[i] = string(domain.NormalBalanceOf(a))
	}
	_, err := r.tx.Exec(ctx, `
		INSERT INTO ledger_accounts (id, normal_balance)
		SELECT id, normal_balance FROM unnest($1::text[], $2::text[]) AS a (id, normal_balance)
		ORDER BY id
		ON CONFLICT (id) DO NOTHING`,
		ids, balances)
	return mapError(err, "append ledger transaction "+t.ID+": insert accounts")
}

func (r ledgerRepository) insertTransaction(ctx context.Context, t domain.LedgerTransaction) error {
	m := t.Meta
	_, err := r.tx.Exec(ctx, `
		INSERT INTO ledger_transactions (id, kind, pending, resolves_id, reverses_id, actor, request_id, reason,
		       task_id, payment_id, stripe_payment_intent_id, stripe_charge_id, stripe_balance_transaction_id,
		       stripe_transfer_id, stripe_refund_id, effective_at)
		VALUES ($1, $2, $3, nullif($4, ''), nullif($5, ''), $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)`,
		t.ID, string(t.Kind), t.Pending, t.ResolvesID, t.ReversesID, m.Actor, m.RequestID, m.Reason,
		m.TaskID, m.PaymentID, m.Stripe.PaymentIntentID, m.Stripe.ChargeID, m.Stripe.BalanceTransactionID,
		m.Stripe.TransferID, m.Stripe.RefundID, m.EffectiveAt)
	return mapError(err, fmt.Sprintf("append ledger transaction %s (%s)", t.ID, t.Kind))
}

// insertEntries inserts the entries in their slice order, so entry ids
// follow that order.
func (r ledgerRepository) insertEntries(ctx context.Context, t domain.LedgerTransaction) error {
	if len(t.Entries) == 0 {
		return nil
	}
	accounts := make([]string, len(t.Entries))
	currencies := make([]string, len(t.Entries))
	amounts := make([]int64, len(t.Entries))
	for i, e := range t.Entries {
		accounts[i] = string(e.Account)
		currencies[i] = string(e.Currency)
		amounts[i] = e.Amount
	}
	_, err := r.tx.Exec(ctx, `
		INSERT INTO ledger_entries (transaction_id, account_id, currency, amount, pending, effective_at)
		SELECT $1, e.account_id, e.currency, e.amount, $5, $6
		  FROM unnest($2::text[], $3::text[], $4::bigint[]) WITH ORDINALITY AS e (account_id, currency, amount, n)
		 ORDER BY e.n`,
		t.ID, accounts, currencies, amounts, t.Pending, t.Meta.EffectiveAt)
	return mapError(err, "append ledger transaction "+t.ID+": insert entries")
}

const ledgerTransactionColumns = `id, kind, pending, coalesce(resolves_id, ''), coalesce(reverses_id, ''),
	actor, request_id, reason, task_id, payment_id, stripe_payment_intent_id, stripe_charge_id,
	stripe_balance_transaction_id, stripe_transfer_id, stripe_refund_id, effective_at`

func scanLedgerTransaction(row pgx.Row) (domain.LedgerTransaction, error) {
	var t domain.LedgerTransaction
	var kind string
	m := &t.Meta
	err := row.Scan(&t.ID, &kind, &t.Pending, &t.ResolvesID, &t.ReversesID,
		&m.Actor, &m.RequestID, &m.Reason, &m.TaskID, &m.PaymentID, &m.Stripe.PaymentIntentID, &m.Stripe.ChargeID,
		&m.Stripe.BalanceTransactionID, &m.Stripe.TransferID, &m.Stripe.RefundID, &m.EffectiveAt)
	t.Kind = domain.LedgerKind(kind)
	return t, err
}

// PendingHold returns the hold of a payment that no capture or void
// resolves yet, with its entries in insertion order. More than one such hold
// means the ledger breaks the one-hold-per-payment rule and is an error.
func (r ledgerRepository) PendingHold(ctx context.Context, paymentID string) (domain.LedgerTransaction, bool, error) {
	rows, err := r.tx.Query(ctx, `
		SELECT `+ledgerTransactionColumns+`
		  FROM ledger_transactions h
		 WHERE h.payment_id = $1 AND h.kind = 'hold'
		   AND NOT EXISTS (SELECT 1 FROM ledger_transactions r WHERE r.resolves_id = h.id)
		 ORDER BY h.recorded_at, h.id
		 LIMIT 2`,
		paymentID)
	if err != nil {
		return domain.LedgerTransaction{}, false, mapError(err, "read pending hold of payment "+paymentID)
	}
	holds, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (domain.LedgerTransaction, error) {
		return scanLedgerTransaction(row)
	})
	if err != nil {
		return domain.LedgerTransaction{}, false, mapError(err, "read pending hold of payment "+paymentID)
	}
	switch len(holds) {
	case 0:
		return domain.LedgerTransaction{}, false, nil
	case 2:
		return domain.LedgerTransaction{}, false, fmt.Errorf(
			"read pending hold of payment %s: holds %s and %s are both unresolved; resolve one with a void",
			paymentID, holds[0].ID, holds[1].ID)
	}

	hold := holds[0]
	if hold.Entries, err = r.entries(ctx, hold.ID); err != nil {
		return domain.LedgerTransaction{}, false, err
	}
	return hold, true, nil
}

func (r ledgerRepository) entries(ctx context.Context, transactionID string) ([]domain.Entry, error) {
	rows, err := r.tx.Query(ctx, `
		SELECT account_id, currency, amount FROM ledger_entries WHERE transaction_id = $1 ORDER BY id`,
		transactionID)
	if err != nil {
		return nil, mapError(err, "read entries of ledger transaction "+transactionID)
	}
	entries, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (domain.Entry, error) {
		var e domain.Entry
		var account, currency string
		err := row.Scan(&account, &currency, &e.Amount)
		e.Account, e.Currency = domain.AccountID(account), domain.Currency(currency)
		return e, err
	})
	return entries, mapError(err, "read entries of ledger transaction "+transactionID)
}

// Transaction returns a stored transaction with its entries in id order.
func (r ledgerRepository) Transaction(ctx context.Context, id string) (domain.LedgerTransaction, error) {
	t, err := scanLedgerTransaction(r.tx.QueryRow(ctx,
		`SELECT `+ledgerTransactionColumns+` FROM ledger_transactions WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return domain.LedgerTransaction{}, notFound("ledger transaction", id)
	}
	if err != nil {
		return domain.LedgerTransaction{}, mapError(err, "read ledger transaction "+id)
	}
	if t.Entries, err = r.entries(ctx, id); err != nil {
		return domain.LedgerTransaction{}, err
	}
	return t, nil
}

// ReversalOf returns the transaction that reverses id, found through the
// unique index on reverses_id.
func (r ledgerRepository) ReversalOf(ctx context.Context, id string) (domain.LedgerTransaction, bool, error) {
	var reversalID string
	err := r.tx.QueryRow(ctx, `SELECT id FROM ledger_transactions WHERE reverses_id = $1`, id).Scan(&reversalID)
	if errors.Is(err, pgx.ErrNoRows) {
		return domain.LedgerTransaction{}, false, nil
	}
	if err != nil {
		return domain.LedgerTransaction{}, false, mapError(err, "read reversal of ledger transaction "+id)
	}
	t, err := r.Transaction(ctx, reversalID)
	return t, err == nil, err
}

// PostedBalances returns the current balances of accounts, counting every
// committed entry whatever its effective time.
func (r ledgerRepository) PaymentPostedBalances(ctx context.Context, paymentID string, accounts []domain.AccountID) ([]domain.AccountBalance, error) {
	balances, err := readScopedBalances(ctx, r.tx, accounts, time.Time{}, paymentID)
	if err != nil {
		return nil, fmt.Errorf("read balances of %s for payment %s: %w", accountList(accounts), paymentID, err)
	}
	return balances, nil
}

// PostedBalances returns the current balances of accounts in every currency.
func (r ledgerRepository) PostedBalances(ctx context.Context, accounts []domain.AccountID) ([]domain.AccountBalance, error) {
	balances, err := readBalances(ctx, r.tx, accounts, time.Time{})
	if err != nil {
		return nil, fmt.Errorf("read balances of %s: %w", accountList(accounts), err)
	}
	return balances, nil
}
