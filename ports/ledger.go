package ports

import (
	"context"
	"time"

	"github.com/taskpod/billing/domain"
)

// LedgerReader answers auditors' questions from the ledger, outside any
// unit of work.
type LedgerReader interface {
	// Entries lists entries oldest first by entry id.
	Entries(ctx context.Context, f LedgerEntryFilter, page EntryPage) ([]LedgerEntryView, bool, error)
}

// LedgerEntryFilter narrows an entry listing; empty fields match everything.
type LedgerEntryFilter struct {
	TaskID    string
	PaymentID string
	AccountID string
}

// EntryPage asks for one page of entries ordered by entry id. After and
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
}
