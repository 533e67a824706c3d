package domain

import "strings"

// Accounts of refunds and disputes, as the refund and dispute postings
// name them: the agent's receivable (AgentReceivableAccount) and the
// platform's dispute losses (AccountDisputeLosses). Their chart entries are
// kept here by name, so the chart does not depend on those postings' file.
const (
	disputeLossesAccount AccountID = "dispute_losses"
	receivablePrefix               = "agent_receivable:"
)

// AccountType is the class of an account in the balance sheet or the
// income statement.
type AccountType string

// Account types.
const (
	AccountAsset     AccountType = "asset"
	AccountLiability AccountType = "liability"
	AccountRevenue   AccountType = "revenue"
	AccountExpense   AccountType = "expense"
)

// AccountClass describes how an account behaves.
type AccountClass struct {
	Type   AccountType
	Normal NormalBalance
	// MayGoNegative is set for accounts whose posted balance, counted on
	// their normal side, may legitimately fall below zero.
	MayGoNegative bool
}

// platformAccounts is the chart of the platform's fixed accounts.
var platformAccounts = map[AccountID]AccountClass{
	AccountCustomerAuthorizations: {Type: AccountAsset, Normal: NormalDebit},
	// Stripe lets the platform's balance go negative: Stripe's fee on a small
	// charge exceeds the platform fee (33 against 3 on a 1.00 usd task), and
	// refunds or dispute withdrawals can exceed what is available. Stripe then
	// debits the platform's bank account.
	AccountPlatformCash:       {Type: AccountAsset, Normal: NormalDebit, MayGoNegative: true},
	AccountPlatformFeeRevenue: {Type: AccountRevenue, Normal: NormalCredit},
	AccountStripeFeeExpense:   {Type: AccountExpense, Normal: NormalDebit},
	disputeLossesAccount:      {Type: AccountExpense, Normal: NormalDebit},
}

// ClassOf returns the class of an account. Per-agent payables are
// liabilities and receivables assets; an account outside the chart is
// reported as a credit-normal liability with ok false.
func ClassOf(a AccountID) (class AccountClass, ok bool) {
	if c, found := platformAccounts[a]; found {
		return c, true
	}
	switch {
	case strings.HasPrefix(string(a), agentPayablePrefix):
		return AccountClass{Type: AccountLiability, Normal: NormalCredit}, true
	case strings.HasPrefix(string(a), receivablePrefix):
		return AccountClass{Type: AccountAsset, Normal: NormalDebit}, true
	}
	return AccountClass{Type: AccountLiability, Normal: NormalCredit}, false
}

// AgentOfAccount returns the agent id of a per-agent account.
func AgentOfAccount(a AccountID) (string, bool) {
	for _, prefix := range []string{agentPayablePrefix, receivablePrefix} {
		if id, found := strings.CutPrefix(string(a), prefix); found {
			return id, true
		}
	}
	return "", false
}
