package domain

import "fmt"

// Ledger transaction kinds of money that goes back after a capture.
const (
	// LedgerRefund records a refund leaving the platform's Stripe balance.
	LedgerRefund LedgerKind = "refund"
	// LedgerTransferReversal records an agent's part coming back from its
	// Connect account.
	LedgerTransferReversal LedgerKind = "transfer_reversal"
	// LedgerDispute records the withdrawal of a disputed amount and its fee.
	LedgerDispute LedgerKind = "dispute"
	// LedgerDisputeReinstatement records the amount a won dispute gave back.
	LedgerDisputeReinstatement LedgerKind = "dispute_reinstatement"
)

// AccountDisputeLosses (expense) is disputed money the platform bears:
// the whole amount of an open or lost dispute less the agent part it claws
// back. The chart of accounts names it too.
const AccountDisputeLosses AccountID = disputeLossesAccount

// AgentReceivableAccount returns the asset account of what one agent owes
// the platform: the agent part of refunds and disputes of a transferred
// payment, until its transfer reversal succeeds.
func AgentReceivableAccount(agentID string) AccountID {
	return AccountID(receivablePrefix + agentID)
}

// agentAccountOf returns the account that takes the agent part of a refund
// or dispute: the receivable when the share was transferred and will be
// reversed, else the payable, because the share was never transferred.
func agentAccountOf(agentID string, side DisputeAgentSide) AccountID {
	if side == DisputeClawbackReversal {
		return AgentReceivableAccount(agentID)
	}
	return AgentPayableAccount(agentID)
}

// RefundAgentSide returns where the agent part of a refund of p is booked:
// reversed from the transfer when there is one, else taken off the payable.
func RefundAgentSide(p PaymentRecord) DisputeAgentSide {
	if p.StripeTransferID != "" {
		return DisputeClawbackReversal
	}
	return DisputeClawbackPayable
}

// RefundPosting records a succeeded refund: the amount leaves platform
// cash, the fee part is taken back from fee revenue and the agent part is
// owed by the agent (or owed to it less, when it was never transferred).
func RefundPosting(id string, p PaymentRecord, r RefundRecord, meta LedgerMeta) (LedgerTransaction, error) {
	if r.Status != RefundSucceeded {
		return LedgerTransaction{}, fmt.Errorf("refund %s is %s; only a succeeded refund is posted", r.ID, r.Status)
	}
	cur := r.Amount.Currency()
	var entries []Entry
	if r.FeeReturned > 0 {
		entries = append(entries, Entry{AccountPlatformFeeRevenue, cur, r.FeeReturned})
	}
	if r.AgentPart > 0 {
		entries = append(entries, Entry{agentAccountOf(p.AgentID, RefundAgentSide(p)), cur, r.AgentPart})
	}
	entries = append(entries, Entry{AccountPlatformCash, cur, -r.Amount.Amount()})
	tx := LedgerTransaction{ID: id, Kind: LedgerRefund, Entries: entries, Meta: meta}
	return tx, tx.Validate()
}

// TransferReversalPosting records the agent part coming back to platform
// cash, settling the agent's receivable.
func TransferReversalPosting(id string, r ReversalRecord, meta LedgerMeta) (LedgerTransaction, error) {
	return reversalPosting(id, r, AgentReceivableAccount(r.AgentID), meta)
}

// LateReversalPosting records a reversal that succeeded after a won dispute
// had canceled it: the money came back from the agent, so the platform owes
// it to the agent again.
func LateReversalPosting(id string, r ReversalRecord, meta LedgerMeta) (LedgerTransaction, error) {
	return reversalPosting(id, r, AgentPayableAccount(r.AgentID), meta)
}

func reversalPosting(id string, r ReversalRecord, credit AccountID, meta LedgerMeta) (LedgerTransaction, error) {
	cur := r.Amount.Currency()
	entries := []Entry{
		{AccountPlatformCash, cur, r.Amount.Amount()},
		{credit, cur, -r.Amount.Amount()},
	}
	tx := LedgerTransaction{ID: id, Kind: LedgerTransferReversal, Entries: entries, Meta: meta}
	return tx, tx.Validate()
}

// DisputePosting records an opened dispute: Stripe withdraws the disputed
// amount, booked as a dispute loss, and its dispute fee, booked with
// Stripe's other fees. With a clawback the agent part is recovered from the
// agent at once and reduces the loss.
func DisputePosting(id string, p PaymentRecord, d DisputeRecord, meta LedgerMeta) (LedgerTransaction, error) {
	cur := d.Amount.Currency()
	amount := d.Amount.Amount()
	entries := []Entry{{AccountDisputeLosses, cur, amount}}
	if d.StripeFee > 0 {
		entries = append(entries, Entry{AccountStripeFeeExpense, cur, d.StripeFee})
	}
	entries = append(entries, Entry{AccountPlatformCash, cur, -(amount + d.StripeFee)})
	if d.AgentSide != DisputePlatformLoss && d.AgentPart > 0 {
		entries = append(entries,
			Entry{agentAccountOf(p.AgentID, d.AgentSide), cur, d.AgentPart},
			Entry{AccountDisputeLosses, cur, -d.AgentPart})
	}
	tx := LedgerTransaction{ID: id, Kind: LedgerDispute, Entries: entries, Meta: meta}
	return tx, tx.Validate()
}

// DisputeReinstatementPosting records the amount of a won dispute coming
// back to platform cash and undoing its loss. A clawback is undone as well:
// its agent part is credited to agentAccount, which the caller picks with
// ReinstatementAccount. The dispute fee stays an expense, because Stripe
// keeps it.
func DisputeReinstatementPosting(id string, d DisputeRecord, agentAccount AccountID, meta LedgerMeta) (LedgerTransaction, error) {
	if d.Status != DisputeWon {
		return LedgerTransaction{}, fmt.Errorf("dispute %s is %s; only a won dispute is reinstated", d.ID, d.Status)
	}
	cur := d.Amount.Currency()
	entries := []Entry{
		{AccountPlatformCash, cur, d.Amount.Amount()},
		{AccountDisputeLosses, cur, -d.Amount.Amount()},
	}
	if d.AgentSide != DisputePlatformLoss && d.AgentPart > 0 {
		entries = append(entries,
			Entry{AccountDisputeLosses, cur, d.AgentPart},
			Entry{agentAccount, cur, -d.AgentPart})
	}
	tx := LedgerTransaction{ID: id, Kind: LedgerDisputeReinstatement, Entries: entries, Meta: meta}
	return tx, tx.Validate()
}

// ReinstatementAccount returns where a won dispute credits its clawed-back
// agent part. A reversal that succeeded took the money from the agent, so
// the platform owes it again; one that failed or never ran leaves a
// receivable to clear.
func ReinstatementAccount(agentID string, side DisputeAgentSide, reversal ReversalStatus) AccountID {
	if side == DisputeClawbackReversal && reversal != ReversalSucceeded {
		return AgentReceivableAccount(agentID)
	}
	return AgentPayableAccount(agentID)
}
