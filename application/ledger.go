package application

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"unicode/utf8"

	"github.com/taskpod/billing/domain"
	"github.com/taskpod/billing/ports"
)

// ErrNotReversible marks a ledger transaction that a reversal cannot undo:
// a hold, a void or another reversal.
var ErrNotReversible = errors.New("ledger transaction cannot be reversed")

// maxReasonLength bounds a reversal's reason, in characters.
const maxReasonLength = 500

// Ledger holds the ledger use cases that are not money steps: reversals by
// an admin and agents' balances.
type Ledger struct {
	store ports.Store
	books ports.LedgerBooks
	clock ports.Clock
	ids   ports.IDGenerator
	log   *slog.Logger
}

// NewLedger builds the ledger use cases.
func NewLedger(store ports.Store, books ports.LedgerBooks, clock ports.Clock, ids ports.IDGenerator, log *slog.Logger) *Ledger {
	return &Ledger{store: store, books: books, clock: clock, ids: ids, log: log}
}

// Reversal is the outcome of Reverse.
type Reversal struct {
	Transaction domain.LedgerTransaction
	// Created is false when the transaction had been reversed before and
	// Transaction is that earlier reversal.
	Created bool
}

// Reverse posts a transaction's reversal, mirroring every entry, and records
// who asked and why in the audit log, in one unit of work. It is idempotent:
// a transaction is reversed at most once (a unique index on reverses_id), and
// asking again returns the existing reversal.
//
// A reversal that would take an account that may not go negative below zero
// fails with domain.ErrOverdraft; reverse the later transactions that used
// the money first, for example a settlement before its capture.
func (l *Ledger) Reverse(ctx context.Context, actor Actor, transactionID, reason string) (Reversal, error) {
	if actor.Role != RoleAdmin {
		return Reversal{}, fmt.Errorf("ledger transaction %s: %w", transactionID, domain.ErrNotFound)
	}
	reason = strings.TrimSpace(reason)
	if reason == "" {
		return Reversal{}, domain.Invalid("reason", "missing_field", "reason is required: say why the transaction is reversed")
	}
	if utf8.RuneCountInString(reason) > maxReasonLength {
		return Reversal{}, domain.Invalid("reason", "invalid_reason", "reason must be at most %d characters", maxReasonLength)
	}

	var out Reversal
	err := l.store.InTx(ctx, func(ctx context.Context, tx ports.Tx) error {
		var err error
		out, err = l.reverseInTx(ctx, tx, actor, transactionID, reason)
		return err
	})
	if errors.Is(err, domain.ErrConflict) || errors.Is(err, domain.ErrOverdraft) {
		// A concurrent request may have reversed it first: the unique index
		// on reverses_id rejects this one, or, for a transaction without a
		// payment row to lock, the winner's entries made the balance check
		// fail. Either way the winner's reversal is returned.
		return l.existingReversal(ctx, transactionID, err)
	}
	if err != nil {
		return Reversal{}, err
	}
	if out.Created {
		l.log.InfoContext(ctx, "ledger transaction reversed",
			"transaction_id", transactionID, "reversal_id", out.Transaction.ID, "actor", actor.Name())
	}
	return out, nil
}

func (l *Ledger) reverseInTx(ctx context.Context, tx ports.Tx, actor Actor, transactionID, reason string) (Reversal, error) {
	ledger := tx.Ledger()
	original, err := ledger.Transaction(ctx, transactionID)
	if err != nil {
		return Reversal{}, err
	}
	// Read committed rows only after the lock, so a reversal committed by a
	// request that held it is seen below.
	if err := lockLedgerPayment(ctx, tx, original.Meta.PaymentID); err != nil {
		return Reversal{}, err
	}
	if existing, found, err := ledger.ReversalOf(ctx, transactionID); err != nil || found {
		return Reversal{Transaction: existing}, err
	}
	if original.Pending || original.Kind == domain.LedgerVoid || original.Kind == domain.LedgerReversal {
		return Reversal{}, fmt.Errorf("%w: %s is a %s; reverse a posted transaction instead", ErrNotReversible, original.ID, original.Kind)
	}

	meta := original.Meta
	meta.Actor, meta.RequestID, meta.Reason, meta.EffectiveAt = actor.Name(), actor.RequestID, reason, l.clock.Now()
	reversal, err := domain.ReversalPosting(l.ids.NewID("ltx"), original, meta)
	if err != nil {
		return Reversal{}, fmt.Errorf("%w: %w", ErrNotReversible, err)
	}
	balances, err := ledger.PostedBalances(ctx, reversal.SortedAccounts())
	if err != nil {
		return Reversal{}, err
	}
	if err := domain.CheckOverdraft(reversal, balances); err != nil {
		return Reversal{}, err
	}
	// Agent payables and authorizations pool many payments, so the pooled
	// check alone would let a capture be reversed after its own transfer
	// whenever other payments keep the pool positive. Checking the payment's
	// own share forces the later transaction to be reversed first.
	if paymentID := original.Meta.PaymentID; paymentID != "" {
		own, err := ledger.PaymentPostedBalances(ctx, paymentID, reversal.SortedAccounts())
		if err != nil {
			return Reversal{}, err
		}
		if err := domain.CheckOverdraft(reversal, own); err != nil {
			return Reversal{}, err
		}
	}

	if err := ledger.Append(ctx, reversal); err != nil {
		return Reversal{}, err
	}
	err = tx.Audit().Record(ctx, ports.AuditEvent{
		Actor: actor.Name(), Action: "ledger.transaction_reversed", Subject: original.ID, RequestID: actor.RequestID,
		Details: map[string]any{"reversalId": reversal.ID, "kind": string(original.Kind), "reason": reason},
		At:      meta.EffectiveAt,
	})
	return Reversal{Transaction: reversal, Created: true}, err
}

// lockLedgerPayment locks the payment a transaction belongs to, so a reversal
// and the payment's money steps, which lock the same row, do not interleave
// their balance checks and postings. A transaction without a stored payment
// has nothing to lock.
func lockLedgerPayment(ctx context.Context, tx ports.Tx, paymentID string) error {
	if paymentID == "" {
		return nil
	}
	_, err := tx.Payments().GetForUpdate(ctx, paymentID)
	if errors.Is(err, domain.ErrNotFound) {
		return nil
	}
	return err
}

// existingReversal returns the reversal that won a race, or cause when
// there is none, because then the conflict came from something else.
func (l *Ledger) existingReversal(ctx context.Context, transactionID string, cause error) (Reversal, error) {
	var out Reversal
	var found bool
	err := l.store.InTx(ctx, func(ctx context.Context, tx ports.Tx) error {
		var err error
		out.Transaction, found, err = tx.Ledger().ReversalOf(ctx, transactionID)
		return err
	})
	if err != nil {
		return Reversal{}, err
	}
	if !found {
		return Reversal{}, cause
	}
	return out, nil
}

// AgentBalance returns an agent's pending, payable and transferred money per
// currency. An agent sees only its own balance: any other id is reported as
// not found, as is an unknown agent. Admins see every agent.
func (l *Ledger) AgentBalance(ctx context.Context, actor Actor, agentID string) ([]ports.AgentBalance, error) {
	switch {
	case actor.Role == RoleAdmin:
	case actor.Role == RoleAgent && actor.Subject == agentID:
	default:
		return nil, fmt.Errorf("agent %s: %w", agentID, domain.ErrNotFound)
	}
	err := l.store.InTx(ctx, func(ctx context.Context, tx ports.Tx) error {
		_, err := tx.Agents().Get(ctx, agentID)
		return err
	})
	if err != nil {
		return nil, err
	}
	return l.books.AgentBalances(ctx, agentID)
}
