package http

import (
	"encoding/hex"
	"time"

	"github.com/taskpod/billing/domain"
	"github.com/taskpod/billing/ports"
)

// balanceView is one account's balance in one currency. postedCents,
// pendingCents and availableCents count on the account's normal side; the
// four sums below them are non-negative totals of each column.
type balanceView struct {
	Currency           string `json:"currency"`
	PostedCents        int64  `json:"postedCents"`
	PendingCents       int64  `json:"pendingCents"`
	AvailableCents     int64  `json:"availableCents"`
	PostedDebitsCents  int64  `json:"postedDebitsCents"`
	PostedCreditsCents int64  `json:"postedCreditsCents"`
	PendingDebitsCents int64  `json:"pendingDebitsCents"`
	PendingCreditCents int64  `json:"pendingCreditsCents"`
}

func balancesOf(balances []domain.AccountBalance) []balanceView {
	out := make([]balanceView, len(balances))
	for i, b := range balances {
		out[i] = balanceView{
			Currency: string(b.Currency), PostedCents: b.Posted(), PendingCents: b.Pending(), AvailableCents: b.Available(),
			PostedDebitsCents: b.PostedDebits, PostedCreditsCents: b.PostedCredits,
			PendingDebitsCents: b.PendingDebits, PendingCreditCents: b.PendingCredits,
		}
	}
	return out
}

type accountView struct {
	ID            string        `json:"id"`
	Type          string        `json:"type"`
	NormalBalance string        `json:"normalBalance"`
	CreatedAt     time.Time     `json:"createdAt"`
	Balances      []balanceView `json:"balances"`
}

func accountOf(a ports.AccountView) accountView {
	return accountView{
		ID: string(a.ID), Type: string(a.Class.Type), NormalBalance: string(a.Class.Normal),
		CreatedAt: a.CreatedAt.UTC(), Balances: balancesOf(a.Balances),
	}
}

// accountBalanceView is the body of GET /v1/ledger/accounts/{id}/balance.
type accountBalanceView struct {
	Account       string        `json:"account"`
	Type          string        `json:"type"`
	NormalBalance string        `json:"normalBalance"`
	AsOf          time.Time     `json:"asOf"`
	Balances      []balanceView `json:"balances"`
}

type trialAccountView struct {
	Account       string `json:"account"`
	NormalBalance string `json:"normalBalance"`
	DebitCents    int64  `json:"debitCents"`
	CreditCents   int64  `json:"creditCents"`
}

type trialCurrencyView struct {
	Currency            string             `json:"currency"`
	DebitsCents         int64              `json:"debitsCents"`
	CreditsCents        int64              `json:"creditsCents"`
	PendingDebitsCents  int64              `json:"pendingDebitsCents"`
	PendingCreditsCents int64              `json:"pendingCreditsCents"`
	Balanced            bool               `json:"balanced"`
	Accounts            []trialAccountView `json:"accounts"`
}

// trialBalanceView is the body of GET /v1/ledger/trial-balance. balanced
// is true when every currency balances.
type trialBalanceView struct {
	AsOf       time.Time           `json:"asOf"`
	Balanced   bool                `json:"balanced"`
	Currencies []trialCurrencyView `json:"currencies"`
}

func trialBalanceOf(asOf time.Time, tbs []ports.TrialBalance) trialBalanceView {
	out := trialBalanceView{AsOf: asOf.UTC(), Balanced: true, Currencies: []trialCurrencyView{}}
	for _, tb := range tbs {
		c := trialCurrencyView{
			Currency: string(tb.Currency), DebitsCents: tb.DebitColumn, CreditsCents: tb.CreditColumn,
			PendingDebitsCents: tb.PendingDebit, PendingCreditsCents: tb.PendingCredit,
			Balanced: tb.Balanced(), Accounts: []trialAccountView{},
		}
		for _, b := range tb.Accounts {
			a := trialAccountView{Account: string(b.Account), NormalBalance: string(b.Normal())}
			if net := b.PostedDebits - b.PostedCredits; net > 0 {
				a.DebitCents = net
			} else {
				a.CreditCents = -net
			}
			c.Accounts = append(c.Accounts, a)
		}
		out.Balanced = out.Balanced && c.Balanced
		out.Currencies = append(out.Currencies, c)
	}
	return out
}

type transactionEntryView struct {
	ID          string `json:"id"`
	Account     string `json:"account"`
	Currency    string `json:"currency"`
	AmountCents int64  `json:"amountCents"`
	Direction   string `json:"direction"`
}

// transactionView is one ledger transaction with who made it, why, and
// what it concerns. sequence is its seal position, 0 until sealed.
type transactionView struct {
	ID          string                 `json:"id"`
	Kind        string                 `json:"kind"`
	Pending     bool                   `json:"pending"`
	ResolvesID  string                 `json:"resolvesTransactionId,omitempty"`
	ReversesID  string                 `json:"reversesTransactionId,omitempty"`
	Actor       string                 `json:"actor"`
	RequestID   string                 `json:"requestId,omitempty"`
	Reason      string                 `json:"reason,omitempty"`
	TaskID      string                 `json:"taskId,omitempty"`
	PaymentID   string                 `json:"paymentId,omitempty"`
	Stripe      stripeRefsView         `json:"stripe"`
	EffectiveAt time.Time              `json:"effectiveAt"`
	RecordedAt  time.Time              `json:"recordedAt"`
	Sequence    int64                  `json:"sequence"`
	Entries     []transactionEntryView `json:"entries"`
}

func transactionOf(v ports.LedgerTransactionView) transactionView {
	t := v.Transaction
	m := t.Meta
	out := transactionView{
		ID: t.ID, Kind: string(t.Kind), Pending: t.Pending, ResolvesID: t.ResolvesID, ReversesID: t.ReversesID,
		Actor: m.Actor, RequestID: m.RequestID, Reason: m.Reason, TaskID: m.TaskID, PaymentID: m.PaymentID,
		Stripe:      stripeRefsOf(m.Stripe),
		EffectiveAt: m.EffectiveAt.UTC(), RecordedAt: v.RecordedAt.UTC(), Sequence: v.Sequence,
		Entries: []transactionEntryView{},
	}
	for i, e := range t.Entries {
		ev := transactionEntryView{Account: string(e.Account), Currency: string(e.Currency), AmountCents: e.Amount, Direction: directionOf(e.Amount)}
		if i < len(v.EntryIDs) {
			ev.ID = entryCursor(v.EntryIDs[i])
		}
		out.Entries = append(out.Entries, ev)
	}
	return out
}

func stripeRefsOf(s domain.StripeRefs) stripeRefsView {
	return stripeRefsView{PaymentIntentID: s.PaymentIntentID, ChargeID: s.ChargeID,
		BalanceTransactionID: s.BalanceTransactionID, TransferID: s.TransferID, RefundID: s.RefundID}
}

func directionOf(amount int64) string {
	if amount < 0 {
		return "credit"
	}
	return "debit"
}

// headView is the newest seal; hash is hex. An empty chain has sequence 0,
// an empty hash and no sealedAt.
type headView struct {
	Sequence      int64      `json:"sequence"`
	Hash          string     `json:"hash"`
	TransactionID string     `json:"transactionId"`
	SealedAt      *time.Time `json:"sealedAt"`
}

func headOf(h ports.ChainHead) headView {
	v := headView{Sequence: h.Sequence, TransactionID: h.TransactionID}
	if h.Sequence > 0 {
		v.Hash = hex.EncodeToString(h.Hash)
		sealed := h.SealedAt.UTC()
		v.SealedAt = &sealed
	}
	return v
}

type chainBreakView struct {
	Sequence      int64  `json:"sequence"`
	TransactionID string `json:"transactionId"`
	Problem       string `json:"problem"`
}

// verifyView is the body of GET /v1/ledger/verify.
type verifyView struct {
	OK                   bool            `json:"ok"`
	CheckedTransactions  int64           `json:"checkedTransactions"`
	UnsealedTransactions int64           `json:"unsealedTransactions"`
	UnqueuedTransactions int64           `json:"unqueuedTransactions"`
	Head                 headView        `json:"head"`
	FirstBroken          *chainBreakView `json:"firstBroken"`
}

func verifyOf(r ports.ChainReport) verifyView {
	v := verifyView{
		OK: r.OK(), CheckedTransactions: r.Checked, UnsealedTransactions: r.Unsealed,
		UnqueuedTransactions: r.Unqueued, Head: headOf(r.Head),
	}
	if r.Broken != nil {
		v.FirstBroken = &chainBreakView{Sequence: r.Broken.Sequence, TransactionID: r.Broken.TransactionID, Problem: r.Broken.Problem}
	}
	return v
}

type auditEventView struct {
	ID        string         `json:"id"`
	At        time.Time      `json:"at"`
	Actor     string         `json:"actor"`
	Action    string         `json:"action"`
	Subject   string         `json:"subject"`
	RequestID string         `json:"requestId,omitempty"`
	Details   map[string]any `json:"details"`
}

func auditEventOf(e ports.AuditEventView) auditEventView {
	details := e.Details
	if details == nil {
		details = map[string]any{}
	}
	return auditEventView{ID: auditCursor(e.ID), At: e.At.UTC(), Actor: e.Actor, Action: e.Action,
		Subject: e.Subject, RequestID: e.RequestID, Details: details}
}

type agentCurrencyBalanceView struct {
	Currency         string `json:"currency"`
	PendingCents     int64  `json:"pendingCents"`
	PostedCents      int64  `json:"postedCents"`
	TransferredCents int64  `json:"transferredCents"`
}

// agentBalanceView is the body of GET /v1/agents/{id}/balance.
type agentBalanceView struct {
	AgentID  string                     `json:"agentId"`
	Balances []agentCurrencyBalanceView `json:"balances"`
}

func agentBalanceOf(agentID string, balances []ports.AgentBalance) agentBalanceView {
	out := agentBalanceView{AgentID: agentID, Balances: []agentCurrencyBalanceView{}}
	for _, b := range balances {
		out.Balances = append(out.Balances, agentCurrencyBalanceView{
			Currency: string(b.Currency), PendingCents: b.Pending, PostedCents: b.Posted, TransferredCents: b.Transferred,
		})
	}
	return out
}
