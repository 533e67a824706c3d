package domain

import (
	"fmt"
	"sort"
	"time"
)

// AccountID names a ledger account. Per-agent accounts carry the agent id
// after a colon; balances are kept per currency within an account.
type AccountID string

// Platform accounts. See docs/ledger.md for the chart of accounts.
const (
	// AccountCustomerAuthorizations (asset) holds card authorizations: pending
	// while a hold is live, posted at capture until Stripe settles the charge.
	AccountCustomerAuthorizations AccountID = "customer_authorizations"
	// AccountPlatformCash (asset) is the platform's balance at Stripe.
	AccountPlatformCash AccountID = "platform_cash"
	// AccountPlatformFeeRevenue (revenue) is the platform fee earned on captures.
	AccountPlatformFeeRevenue AccountID = "platform_fee_revenue"
	// AccountStripeFeeExpense (expense) is Stripe's processing fee on charges.
	AccountStripeFeeExpense AccountID = "stripe_fee_expense"
)

// agentPayablePrefix starts the account of what the platform owes one agent.
const agentPayablePrefix = "agent_payable:"

// AgentPayableAccount returns the liability account for one agent's earnings.
func AgentPayableAccount(agentID string) AccountID {
	return AccountID(agentPayablePrefix + agentID)
}

// NormalBalance is the side on which an account's balance grows.
type NormalBalance string

// Normal balances.
const (
	NormalDebit  NormalBalance = "debit"
	NormalCredit NormalBalance = "credit"
)

// NormalBalanceOf returns the normal side of an account: assets and expenses
// are debit-normal, liabilities and revenue credit-normal. An account outside
// the chart of ClassOf is credit-normal.
func NormalBalanceOf(a AccountID) NormalBalance {
	class, _ := ClassOf(a)
	return class.Normal
}

// Entry is one line of a ledger transaction. Amount is in minor units,
// positive for a debit and negative for a credit.
type Entry struct {
	Account  AccountID
	Currency Currency
	Amount   int64
}

// LedgerKind says which business event a ledger transaction records.
type LedgerKind string

// Ledger transaction kinds.
const (
	// LedgerHold is a pending posting for a card authorization.
	LedgerHold LedgerKind = "hold"
	// LedgerCapture posts a hold, possibly for less than was held.
	LedgerCapture LedgerKind = "capture"
	// LedgerVoid resolves a hold with nothing posted (release, cancel, expiry).
	LedgerVoid LedgerKind = "void"
	// LedgerSettlement records Stripe's balance transaction for a charge.
	LedgerSettlement LedgerKind = "settlement"
	// LedgerTransfer records the agent's share sent to its Connect account.
	LedgerTransfer LedgerKind = "transfer"
	// LedgerReversal undoes an earlier transaction with mirrored entries.
	LedgerReversal LedgerKind = "reversal"
)

// StripeRefs are the Stripe object ids behind a ledger transaction.
type StripeRefs struct {
	PaymentIntentID      string
	ChargeID             string
	BalanceTransactionID string
	TransferID           string
	RefundID             string
}

// LedgerMeta says who made a transaction, why, and what it concerns.
type LedgerMeta struct {
	Actor       string
	RequestID   string
	Reason      string
	TaskID      string
	PaymentID   string
	Stripe      StripeRefs
	EffectiveAt time.Time
}

// LedgerTransaction is an immutable, balanced group of entries.
type LedgerTransaction struct {
	ID   string
	Kind LedgerKind
	// Pending marks a hold: its entries count as pending until a capture or
	// void that names it in ResolvesID.
	Pending    bool
	ResolvesID string
	ReversesID string
	Entries    []Entry
	Meta       LedgerMeta
}

// ErrUnbalanced is returned for a transaction whose entries do not sum to
// zero in every currency.
var ErrUnbalanced = fmt.Errorf("ledger transaction does not balance")

// Validate checks that entries are non-zero and balance per currency.
func (t LedgerTransaction) Validate() error {
	sums := map[Currency]int64{}
	for _, e := range t.Entries {
		if e.Amount == 0 {
			return fmt.Errorf("ledger transaction %s: zero entry on %s", t.ID, e.Account)
		}
		if _, ok := currencies[e.Currency]; !ok {
			return fmt.Errorf("ledger transaction %s: %w %q", t.ID, ErrUnsupportedCurrency, e.Currency)
		}
		sums[e.Currency] += e.Amount
	}
	for cur, sum := range sums {
		if sum != 0 {
			return fmt.Errorf("%w: %s sums to %d in %s", ErrUnbalanced, t.ID, sum, cur)
		}
	}
	if t.Kind == LedgerVoid && len(t.Entries) != 0 {
		return fmt.Errorf("ledger transaction %s: a void carries no entries", t.ID)
	}
	if t.Kind != LedgerVoid && len(t.Entries) == 0 {
		return fmt.Errorf("ledger transaction %s: no entries", t.ID)
	}
	return nil
}

// SortedAccounts returns the distinct accounts of the entries in a fixed
// order, so writers that insert the same new accounts wait for each other in
// one order and do not deadlock.
func (t LedgerTransaction) SortedAccounts() []AccountID {
	seen := map[AccountID]bool{}
	var out []AccountID
	for _, e := range t.Entries {
		if !seen[e.Account] {
			seen[e.Account] = true
			out = append(out, e.Account)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// splitEntries returns the entries moving amount from the customer's
// authorization to the agent's payable and the platform's fee revenue.
func splitEntries(amount Money, agentID string, rate BasisPoints) ([]Entry, error) {
	fee, share, err := PlatformFee(amount, rate)
	if err != nil {
		return nil, err
	}
	cur := amount.Currency()
	entries := []Entry{{AccountCustomerAuthorizations, cur, amount.Amount()}}
	if share.Amount() > 0 {
		entries = append(entries, Entry{AgentPayableAccount(agentID), cur, -share.Amount()})
	}
	if fee.Amount() > 0 {
		entries = append(entries, Entry{AccountPlatformFeeRevenue, cur, -fee.Amount()})
	}
	return entries, nil
}

// HoldPosting records an authorized hold as a pending posting of the full
// split: what the customer would pay, the agent would earn and the platform
// would keep.
func HoldPosting(id string, p PaymentRecord, meta LedgerMeta) (LedgerTransaction, error) {
	entries, err := splitEntries(p.Amount, p.AgentID, p.FeeRate)
	if err != nil {
		return LedgerTransaction{}, err
	}
	tx := LedgerTransaction{ID: id, Kind: LedgerHold, Pending: true, Entries: entries, Meta: meta}
	return tx, tx.Validate()
}

// CapturePosting posts a hold for the captured amount; a smaller capture
// releases the rest of the hold, since the hold resolves once.
func CapturePosting(id, holdID string, p PaymentRecord, meta LedgerMeta) (LedgerTransaction, error) {
	captured, err := NewMoney(p.CapturedAmount, p.Amount.Currency())
	if err != nil {
		return LedgerTransaction{}, err
	}
	entries, err := splitEntries(captured, p.AgentID, p.FeeRate)
	if err != nil {
		return LedgerTransaction{}, err
	}
	tx := LedgerTransaction{ID: id, Kind: LedgerCapture, ResolvesID: holdID, Entries: entries, Meta: meta}
	return tx, tx.Validate()
}

// SettlementPosting records Stripe's balance transaction for a captured
// charge: the net reaches the platform's Stripe balance and Stripe's fee is
// an expense, clearing the captured authorization.
func SettlementPosting(id string, p PaymentRecord, meta LedgerMeta) (LedgerTransaction, error) {
	cur := p.Amount.Currency()
	if p.StripeFee < 0 || p.StripeFee > p.CapturedAmount {
		return LedgerTransaction{}, fmt.Errorf("stripe fee %d is outside 0..%d", p.StripeFee, p.CapturedAmount)
	}
	var entries []Entry
	if net := p.CapturedAmount - p.StripeFee; net > 0 {
		entries = append(entries, Entry{AccountPlatformCash, cur, net})
	}
	if p.StripeFee > 0 {
		entries = append(entries, Entry{AccountStripeFeeExpense, cur, p.StripeFee})
	}
	entries = append(entries, Entry{AccountCustomerAuthorizations, cur, -p.CapturedAmount})
	tx := LedgerTransaction{ID: id, Kind: LedgerSettlement, Entries: entries, Meta: meta}
	return tx, tx.Validate()
}

// TransferPosting records the agent's share leaving the platform's Stripe
// balance for the agent's Connect account, settling the payable.
func TransferPosting(id string, p PaymentRecord, meta LedgerMeta) (LedgerTransaction, error) {
	cur := p.Amount.Currency()
	entries := []Entry{
		{AgentPayableAccount(p.AgentID), cur, p.AgentShare},
		{AccountPlatformCash, cur, -p.AgentShare},
	}
	tx := LedgerTransaction{ID: id, Kind: LedgerTransfer, Entries: entries, Meta: meta}
	return tx, tx.Validate()
}

// VoidPosting resolves a hold with nothing posted.
func VoidPosting(id, holdID string, meta LedgerMeta) LedgerTransaction {
	return LedgerTransaction{ID: id, Kind: LedgerVoid, ResolvesID: holdID, Meta: meta}
}

// ReversalPosting mirrors every entry of an original posted transaction.
func ReversalPosting(id string, original LedgerTransaction, meta LedgerMeta) (LedgerTransaction, error) {
	if original.Pending || original.Kind == LedgerVoid || original.Kind == LedgerReversal {
		return LedgerTransaction{}, fmt.Errorf("ledger transaction %s (%s) cannot be reversed", original.ID, original.Kind)
	}
	entries := make([]Entry, len(original.Entries))
	for i, e := range original.Entries {
		entries[i] = Entry{e.Account, e.Currency, -e.Amount}
	}
	tx := LedgerTransaction{ID: id, Kind: LedgerReversal, ReversesID: original.ID, Entries: entries, Meta: meta}
	return tx, tx.Validate()
}
