package postgres

import (
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/taskpod/billing/domain"
)

// ErrCommitUnknown marks a unit of work whose COMMIT failed, so the database
// may or may not have applied it. Callers re-read by business key before
// doing the work again; InTx never retries after it.
var ErrCommitUnknown = errors.New("commit outcome unknown")

// SQLSTATE codes this package acts on.
const (
	codeUniqueViolation      = "23505"
	codeForeignKeyViolation  = "23503"
	codeSerializationFailure = "40001"
	codeDeadlockDetected     = "40P01"
)

// constraintError is the domain meaning of one named constraint.
type constraintError struct {
	sentinel error
	message  string
}

// constraintErrors maps the constraint names of migrations 0001 and 0002 to
// domain errors. Keys are PostgreSQL's default names for inline constraints
// (table_column_key, table_column_fkey, table_pkey) or the index names.
var constraintErrors = map[string]constraintError{
	"customers_pkey":                        {domain.ErrConflict, "the customer already exists"},
	"customers_stripe_customer_id_key":      {domain.ErrConflict, "the Stripe customer belongs to another customer"},
	"payment_methods_pkey":                  {domain.ErrConflict, "the payment method already exists"},
	"payment_methods_customer_user_id_fkey": {domain.ErrNotFound, "the payment method's customer was not found"},
	"agents_pkey":                           {domain.ErrConflict, "an agent with this id already exists"},
	"tasks_pkey":                            {domain.ErrConflict, "a task with this id already exists"},
	"tasks_agent_id_fkey":                   {domain.ErrNotFound, "the task's agent was not found"},
	"payments_pkey":                         {domain.ErrConflict, "a payment with this id already exists"},
	"payments_task_id_key":                  {domain.ErrConflict, "the task already has a payment"},
	"payments_task_id_fkey":                 {domain.ErrNotFound, "the payment's task was not found"},
	"payments_stripe_payment_intent_id_key": {domain.ErrConflict, "the PaymentIntent belongs to another payment"},
	"payment_steps_payment_id_fkey":         {domain.ErrNotFound, "the step's payment was not found"},
	"operations_pkey":                       {domain.ErrConflict, "an operation with this id already exists"},
	"api_tokens_pkey":                       {domain.ErrConflict, "a token with this id already exists"},
	"api_tokens_token_hash_key":             {domain.ErrConflict, "a token with this hash already exists"},
	"ledger_transactions_pkey":              {domain.ErrConflict, "a ledger transaction with this id already exists"},
	"ledger_transactions_resolves":          {domain.ErrConflict, "the hold is already resolved by another capture or void"},
	"ledger_transactions_reverses":          {domain.ErrConflict, "the transaction is already reversed"},
	"ledger_transactions_resolves_id_fkey":  {domain.ErrNotFound, "the hold named in resolves_id was not found"},
	"ledger_transactions_reverses_id_fkey":  {domain.ErrNotFound, "the transaction named in reverses_id was not found"},
	"ledger_entries_transaction_id_fkey":    {domain.ErrNotFound, "the entry's ledger transaction was not found"},
	"ledger_entries_account_id_fkey":        {domain.ErrNotFound, "the entry's ledger account was not found"},
	"ledger_accounts_pkey":                  {domain.ErrConflict, "the ledger account already exists"},
	"payment_steps_pkey":                    {domain.ErrConflict, "the payment step already exists"},
}

// mapError wraps err with what failed and, for a unique or foreign key
// violation, with the domain error of the violated constraint, found by
// constraint name. The *pgconn.PgError stays reachable with errors.As.
func mapError(err error, what string) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("%s: %w", what, domain.ErrNotFound)
	}
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return fmt.Errorf("%s: %w", what, err)
	}
	if known, ok := constraintErrors[pgErr.ConstraintName]; ok {
		return fmt.Errorf("%s: %s: %w: %w", what, known.message, known.sentinel, err)
	}
	switch pgErr.Code {
	case codeUniqueViolation:
		return fmt.Errorf("%s: unique constraint %s violated: %w: %w", what, pgErr.ConstraintName, domain.ErrConflict, err)
	case codeForeignKeyViolation:
		return fmt.Errorf("%s: referenced row of %s not found: %w: %w", what, pgErr.ConstraintName, domain.ErrNotFound, err)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// notFound returns an error wrapping domain.ErrNotFound for a missing entity.
func notFound(entity, id string) error {
	return fmt.Errorf("%s %s: %w", entity, id, domain.ErrNotFound)
}

// isRetryable reports whether err is a serialization failure or a deadlock,
// after which PostgreSQL has rolled the transaction back and running it
// again may succeed.
func isRetryable(err error) bool {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return false
	}
	return pgErr.Code == codeSerializationFailure || pgErr.Code == codeDeadlockDetected
}
