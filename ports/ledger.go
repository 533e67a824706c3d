package ports

import (
	"context"
	"time"

	"github.com/taskpod/billing/domain"
)

// LedgerReader answers auditors' questions from the ledger, outside any
// unit of work.
type LedgerReader interface {
	// Entries lists entries of sealed transactions in seal order, and by
	// entry id within a transaction. Because seals are assigned after commit
	// in one gap-free sequence, a reader paging forward while others write
	// never skips or repeats an entry.
	Entries(ctx context.Context, f LedgerEntryFilter, page EntryPage) ([]LedgerEntryView, bool, error)
}

// LedgerEntryFilter narrows an entry listing; empty fields match everything.
type LedgerEntryFilter struct {
	TaskID    string
	PaymentID string
	AccountID string
	// StripeID is a Stripe object id: pi_, ch_, txn_, tr_ or re_, matched
	// against the column of that object type.
	StripeID string
	// From and To bound the effective time: From <= effective_at < To.
	From time.Time
	To   time.Time
}

// EntryPage requests one page of entries in listing order. After and
// Before are entry ids from a previous page; at most one is set.
type EntryPage struct {
	Limit  int
	After  int64
	Before int64
}

// LedgerEntryView is one entry joined with its transaction's metadata.
type LedgerEntryView struct {
	ID            int64
	TransactionID string
	Kind          domain.LedgerKind
	ResolvesID    string
	ReversesID    string
	Account       domain.AccountID
	Currency      domain.Currency
	Amount        int64
	Pending       bool
	Actor         string
	RequestID     string
	Reason        string
	TaskID        string
	PaymentID     string
	Stripe        domain.StripeRefs
	EffectiveAt   time.Time
	RecordedAt    time.Time
	// Sequence is the seal position of the entry's transaction, 0 when the
	// transaction is not sealed yet.
	Sequence int64
}

// LedgerHistory reads committed ledger transactions inside a unit of work,
// for use cases that post corrections.
type LedgerHistory interface {
	// Transaction returns a transaction with its entries in id order, or an
	// error wrapping domain.ErrNotFound.
	Transaction(ctx context.Context, id string) (domain.LedgerTransaction, error)
	// ReversalOf returns the reversal of a transaction, if one exists.
	ReversalOf(ctx context.Context, id string) (domain.LedgerTransaction, bool, error)
	// PostedBalances returns the current balances of accounts in every
	// currency they hold.
	PostedBalances(ctx context.Context, accounts []domain.AccountID) ([]domain.AccountBalance, error)
	// PaymentPostedBalances returns what one payment's transactions
	// contribute to the balances of accounts.
	PaymentPostedBalances(ctx context.Context, paymentID string, accounts []domain.AccountID) ([]domain.AccountBalance, error)
}

// LedgerBooks reads balances, statements and the audit log outside
// any unit of work. "As of" an instant counts entries whose effective time
// is at or before it.
type LedgerBooks interface {
	// Accounts lists accounts by id with their balances as of asOf.
	Accounts(ctx context.Context, asOf time.Time, page Page) ([]AccountView, bool, error)
	// Account returns one account with its balances as of asOf, or an error
	// wrapping domain.ErrNotFound.
	Account(ctx context.Context, id domain.AccountID, asOf time.Time) (AccountView, error)
	// TrialBalance returns every account's balance as of asOf, per currency.
	TrialBalance(ctx context.Context, asOf time.Time) ([]TrialBalance, error)
	// AgentBalances returns what an agent has pending, payable and
	// transferred, per currency.
	AgentBalances(ctx context.Context, agentID string) ([]AgentBalance, error)
	// Transaction returns a transaction with its entries, or an error
	// wrapping domain.ErrNotFound.
	Transaction(ctx context.Context, id string) (LedgerTransactionView, error)
	// Statement streams the posted entries of one account with
	// From <= effective_at < To into sink, after the opening balances, from
	// one consistent snapshot.
	Statement(ctx context.Context, q StatementQuery, sink StatementSink) error
	// AuditEvents lists the audit log, newest first.
	AuditEvents(ctx context.Context, f AuditFilter, page AuditPage) ([]AuditEventView, bool, error)
}

// AccountView is an account with its balances, one per currency.
type AccountView struct {
	ID        domain.AccountID
	Class     domain.AccountClass
	CreatedAt time.Time
	Balances  []domain.AccountBalance
}

// TrialBalance lists every account's balance in one currency. Each account
// with a positive net posted balance sits in the debit column, each with a
// negative one in the credit column.
type TrialBalance struct {
	Currency      domain.Currency
	Accounts      []domain.AccountBalance
	DebitColumn   int64
	CreditColumn  int64
	PendingDebit  int64
	PendingCredit int64
}

// Balanced reports whether the columns agree and the unresolved holds net
// to zero, as they must when every transaction balances.
func (t TrialBalance) Balanced() bool {
	return t.DebitColumn == t.CreditColumn && t.PendingDebit == t.PendingCredit
}

// AgentBalance is an agent's money in one currency, in minor units.
type AgentBalance struct {
	Currency domain.Currency
	// Pending is the agent's share of holds not captured or voided yet.
	Pending int64
	// Posted is payable to the agent: captured and not transferred yet.
	Posted int64
	// Transferred is the total sent to the agent's Connect account, less
	// reversed transfers.
	Transferred int64
}

// LedgerTransactionView is a stored transaction with its stored entries.
type LedgerTransactionView struct {
	Transaction domain.LedgerTransaction
	EntryIDs    []int64
	RecordedAt  time.Time
	// Sequence is the seal position, 0 when not sealed yet.
	Sequence int64
}

// StatementQuery names an account and a half-open effective-time range.
type StatementQuery struct {
	Account domain.AccountID
	From    time.Time
	To      time.Time
}

// StatementSink receives a statement as it is read, so a statement of any
// length needs constant memory.
type StatementSink interface {
	// Opening receives the posted balances just before From, one per
	// currency the account held by then.
	Opening(balances []domain.AccountBalance) error
	// Entry receives each posted entry in effective-time order.
	Entry(e LedgerEntryView) error
}

// AuditFilter narrows the audit log; empty fields match everything.
type AuditFilter struct {
	Action  string
	Subject string
	Actor   string
}

// AuditPage requests one page of the audit log, newest first.
// StartingAfter returns older events, EndingBefore newer ones; both are
// event ids and at most one is set.
type AuditPage struct {
	Limit         int
	StartingAfter int64
	EndingBefore  int64
}

// AuditEventView is one stored audit event.
type AuditEventView struct {
	ID        int64
	At        time.Time
	Actor     string
	Action    string
	Subject   string
	RequestID string
	Details   map[string]any
}

// LedgerChain reads and checks the hash chain that seals the ledger.
type LedgerChain interface {
	// Head returns the last seal; Sequence is 0 for an empty chain.
	Head(ctx context.Context) (ChainHead, error)
	// Verify recomputes every seal from the stored rows.
	Verify(ctx context.Context) (ChainReport, error)
}

// ChainHead is the newest seal.
type ChainHead struct {
	Sequence      int64
	Hash          []byte
	TransactionID string
	SealedAt      time.Time
}

// ChainReport is the outcome of a verification.
type ChainReport struct {
	// Checked counts the seals recomputed before the first break.
	Checked int64
	Head    ChainHead
	// Unsealed counts committed transactions waiting for the sealer.
	Unsealed int64
	// Unqueued counts transactions neither sealed nor waiting, which only
	// writes that bypass the triggers can produce.
	Unqueued int64
	// Broken is the first seal that does not match the stored rows.
	Broken *ChainBreak
}

// OK reports an intact chain with every stored transaction sealed or queued.
func (r ChainReport) OK() bool { return r.Broken == nil && r.Unqueued == 0 }

// ChainBreak names the first seal that does not match.
type ChainBreak struct {
	Sequence      int64
	TransactionID string
	Problem       string
}
