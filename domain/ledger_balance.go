package domain

import (
	"errors"
	"fmt"
	"sort"
)

// AccountBalance is one account's balance in one currency at one instant.
// Every field is a non-negative sum in minor units.
//
// Posted sums cover entries of every transaction except holds. Pending sums
// cover the entries of holds that no capture or void had resolved at that
// instant. A resolved hold's entries count nowhere, because its capture
// posts what was taken and a void posts nothing.
type AccountBalance struct {
	Account        AccountID
	Currency       Currency
	PostedDebits   int64
	PostedCredits  int64
	PendingDebits  int64
	PendingCredits int64
}

// Normal returns the account's normal side.
func (b AccountBalance) Normal() NormalBalance { return NormalBalanceOf(b.Account) }

// Posted returns the posted balance counted on the normal side: debits minus
// credits for a debit-normal account, credits minus debits otherwise.
func (b AccountBalance) Posted() int64 {
	return b.onNormalSide(b.PostedDebits, b.PostedCredits)
}

// Pending returns the net of unresolved holds on the normal side. A positive
// value is money expected to arrive on the account.
func (b AccountBalance) Pending() int64 {
	return b.onNormalSide(b.PendingDebits, b.PendingCredits)
}

// Available returns the posted balance less the pending entries that would
// reduce it: pending credits of a debit-normal account, pending debits of a
// credit-normal one. Pending entries that would raise the balance are not
// available until they post.
func (b AccountBalance) Available() int64 {
	if b.Normal() == NormalDebit {
		return b.Posted() - b.PendingCredits
	}
	return b.Posted() - b.PendingDebits
}

func (b AccountBalance) onNormalSide(debits, credits int64) int64 {
	if b.Normal() == NormalDebit {
		return debits - credits
	}
	return credits - debits
}

// AddEntry adds one signed entry amount (debits positive) to the posted or
// pending sums.
func (b *AccountBalance) AddEntry(amount int64, pending bool) {
	switch {
	case pending && amount > 0:
		b.PendingDebits += amount
	case pending:
		b.PendingCredits -= amount
	case amount > 0:
		b.PostedDebits += amount
	default:
		b.PostedCredits -= amount
	}
}

// ErrOverdraft is returned for a posting that would take the posted balance
// of an account that may not go negative below zero.
var ErrOverdraft = errors.New("posting would take an account below zero")

// CheckOverdraft returns an error wrapping ErrOverdraft when posting t on top
// of the posted balances in before takes an account below zero on its normal
// side, unless ClassOf allows that account to go negative. Accounts absent
// from before count as zero. Only accounts that t reduces are checked, so an
// account that is already negative may still be credited back toward zero.
func CheckOverdraft(t LedgerTransaction, before []AccountBalance) error {
	type key struct {
		account  AccountID
		currency Currency
	}
	after := map[key]AccountBalance{}
	for _, b := range before {
		after[key{b.Account, b.Currency}] = b
	}
	reduced := map[key]bool{}
	for _, e := range t.Entries {
		k := key{e.Account, e.Currency}
		b := after[k]
		b.Account, b.Currency = e.Account, e.Currency
		old := b.Posted()
		b.AddEntry(e.Amount, t.Pending)
		after[k] = b
		if b.Posted() < old {
			reduced[k] = true
		}
	}

	keys := make([]key, 0, len(reduced))
	for k := range reduced {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if keys[i].account != keys[j].account {
			return keys[i].account < keys[j].account
		}
		return keys[i].currency < keys[j].currency
	})
	for _, k := range keys {
		class, _ := ClassOf(k.account)
		if b := after[k]; !class.MayGoNegative && b.Posted() < 0 {
			return fmt.Errorf("%w: %s would leave %s at %d %s", ErrOverdraft, t.ID, k.account, b.Posted(), k.currency)
		}
	}
	return nil
}
