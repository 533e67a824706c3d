package domain_test

import (
	"errors"
	"testing"

	"github.com/taskpod/billing/domain"
)

// balances accumulates posted entries per account and currency, the way
// an auditor sums the ledger. Pending holds are skipped because they do
// not move balances until a capture resolves them.
type balances map[domain.AccountID]map[domain.Currency]int64

func (b balances) post(t *testing.T, tx domain.LedgerTransaction) {
	t.Helper()
	if err := tx.Validate(); err != nil {
		t.Fatalf("%s (%s) does not validate: %v", tx.ID, tx.Kind, err)
	}
	if tx.Pending {
		return
	}
	for _, e := range tx.Entries {
		if b[e.Account] == nil {
			b[e.Account] = map[domain.Currency]int64{}
		}
		b[e.Account][e.Currency] += e.Amount
	}
}

func (b balances) of(account domain.AccountID, cur domain.Currency) int64 {
	return b[account][cur]
}

// sumPerCurrency returns the sum of a transaction's entries per currency.
func sumPerCurrency(tx domain.LedgerTransaction) map[domain.Currency]int64 {
	sums := map[domain.Currency]int64{}
	for _, e := range tx.Entries {
		sums[e.Currency] += e.Amount
	}
	return sums
}

func assertBalanced(t *testing.T, tx domain.LedgerTransaction) {
	t.Helper()
	for cur, sum := range sumPerCurrency(tx) {
		if sum != 0 {
			t.Errorf("%s (%s) sums to %d in %s", tx.ID, tx.Kind, sum, cur)
		}
	}
}

func entryOf(tx domain.LedgerTransaction, account domain.AccountID) (domain.Entry, bool) {
	for _, e := range tx.Entries {
		if e.Account == account {
			return e, true
		}
	}
	return domain.Entry{}, false
}

// capturedRecord is a payment of amount in cur captured for captured with
// Stripe's fee stripeFee, split at rate.
func capturedRecord(t *testing.T, amount, captured, stripeFee int64, cur domain.Currency, rate domain.BasisPoints) domain.PaymentRecord {
	t.Helper()
	p := domain.UnmarshalPaymentFromDatabase(domain.PaymentRecord{
		ID: "pay_1", TaskID: "task_1", AgentID: "agent_1", Amount: domain.MustMoney(amount, cur),
		CaptureAmount: domain.MustMoney(captured, cur), FeeRate: rate, Status: domain.PaymentAuthorized,
	})
	if err := p.MarkCaptured(captured, "ch_1", "txn_1", stripeFee, taskT0); err != nil {
		t.Fatalf("MarkCaptured: %v", err)
	}
	return p.Record()
}

func TestLedgerFullLifecycleBalances(t *testing.T) {
	meta := domain.LedgerMeta{TaskID: "task_1", PaymentID: "pay_1"}
	rec := capturedRecord(t, 100, 100, 33, "usd", platformRate)
	agent := domain.AgentPayableAccount("agent_1")

	hold, err := domain.HoldPosting("ltx_hold", rec, meta)
	if err != nil {
		t.Fatal(err)
	}
	capture, err := domain.CapturePosting("ltx_cap", hold.ID, rec, meta)
	if err != nil {
		t.Fatal(err)
	}
	settlement, err := domain.SettlementPosting("ltx_set", rec, meta)
	if err != nil {
		t.Fatal(err)
	}
	transfer, err := domain.TransferPosting("ltx_tr", rec, meta)
	if err != nil {
		t.Fatal(err)
	}

	if !hold.Pending || hold.Kind != domain.LedgerHold {
		t.Errorf("hold: pending %v kind %s, want a pending hold", hold.Pending, hold.Kind)
	}
	if capture.ResolvesID != "ltx_hold" || capture.Pending {
		t.Errorf("capture resolves %q pending %v, want it to resolve the hold", capture.ResolvesID, capture.Pending)
	}

	b := balances{}
	for _, tx := range []domain.LedgerTransaction{hold, capture, settlement, transfer} {
		assertBalanced(t, tx)
		b.post(t, tx)
	}

	// The documented example: 100 captured, fee 3, agent 97, Stripe fee 33.
	want := map[domain.AccountID]int64{
		domain.AccountCustomerAuthorizations: 0,
		agent:                                0,
		domain.AccountPlatformFeeRevenue:     -3,
		domain.AccountStripeFeeExpense:       33,
		domain.AccountPlatformCash:           67 - 97,
	}
	for account, amount := range want {
		if got := b.of(account, "usd"); got != amount {
			t.Errorf("%s balance = %d, want %d", account, got, amount)
		}
	}

	if e, _ := entryOf(hold, agent); e.Amount != -97 {
		t.Errorf("hold credits the agent %d, want -97", e.Amount)
	}
	if e, _ := entryOf(settlement, domain.AccountPlatformCash); e.Amount != 67 {
		t.Errorf("settlement debits platform cash %d, want 67", e.Amount)
	}
}

func TestCapturePostingPartial(t *testing.T) {
	rec := capturedRecord(t, 300, 120, 33, "usd", platformRate)
	capture, err := domain.CapturePosting("ltx_cap", "ltx_hold", rec, domain.LedgerMeta{})
	if err != nil {
		t.Fatal(err)
	}
	assertBalanced(t, capture)

	want := map[domain.AccountID]int64{
		domain.AccountCustomerAuthorizations:  120,
		domain.AgentPayableAccount("agent_1"): -117,
		domain.AccountPlatformFeeRevenue:      -3,
	}
	if len(capture.Entries) != len(want) {
		t.Fatalf("entries = %+v, want %d", capture.Entries, len(want))
	}
	for account, amount := range want {
		if e, ok := entryOf(capture, account); !ok || e.Amount != amount {
			t.Errorf("%s = %d, want %d", account, e.Amount, amount)
		}
	}
}

func TestPostingsWithZeroFeeRate(t *testing.T) {
	rec := capturedRecord(t, 500, 500, 45, "usd", 0)
	hold, err := domain.HoldPosting("ltx_hold", rec, domain.LedgerMeta{})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := entryOf(hold, domain.AccountPlatformFeeRevenue); ok {
		t.Errorf("zero-fee hold has a fee revenue entry: %+v", hold.Entries)
	}
	if e, _ := entryOf(hold, domain.AgentPayableAccount("agent_1")); e.Amount != -500 {
		t.Errorf("zero-fee hold credits the agent %d, want -500", e.Amount)
	}
	capture, err := domain.CapturePosting("ltx_cap", hold.ID, rec, domain.LedgerMeta{})
	if err != nil {
		t.Fatal(err)
	}
	assertBalanced(t, capture)
	if len(capture.Entries) != 2 {
		t.Errorf("zero-fee capture entries = %+v, want 2", capture.Entries)
	}
}

func TestPostingsInZeroDecimalCurrency(t *testing.T) {
	rec := capturedRecord(t, 1000, 1000, 59, "jpy", platformRate)
	if rec.PlatformFee != 25 || rec.AgentShare != 975 {
		t.Fatalf("¥1000 split = %d/%d, want 25/975", rec.PlatformFee, rec.AgentShare)
	}

	hold, err := domain.HoldPosting("h", rec, domain.LedgerMeta{})
	if err != nil {
		t.Fatal(err)
	}
	capture, err := domain.CapturePosting("c", hold.ID, rec, domain.LedgerMeta{})
	if err != nil {
		t.Fatal(err)
	}
	settlement, err := domain.SettlementPosting("s", rec, domain.LedgerMeta{})
	if err != nil {
		t.Fatal(err)
	}
	transfer, err := domain.TransferPosting("t", rec, domain.LedgerMeta{})
	if err != nil {
		t.Fatal(err)
	}

	b := balances{}
	for _, tx := range []domain.LedgerTransaction{hold, capture, settlement, transfer} {
		for _, e := range tx.Entries {
			if e.Currency != "jpy" {
				t.Errorf("%s entry on %s in %s, want jpy", tx.Kind, e.Account, e.Currency)
			}
		}
		b.post(t, tx)
	}
	if got := b.of(domain.AccountPlatformCash, "jpy"); got != 1000-59-975 {
		t.Errorf("platform cash = %d, want %d", got, 1000-59-975)
	}
	if got := b.of(domain.AccountPlatformCash, "usd"); got != 0 {
		t.Errorf("a jpy payment moved %d usd", got)
	}
}

func TestSettlementPostingEdges(t *testing.T) {
	rec := capturedRecord(t, 100, 100, 0, "usd", platformRate)
	s, err := domain.SettlementPosting("s", rec, domain.LedgerMeta{})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := entryOf(s, domain.AccountStripeFeeExpense); ok {
		t.Errorf("settlement without a Stripe fee has an expense entry: %+v", s.Entries)
	}

	rec = capturedRecord(t, 100, 100, 100, "usd", platformRate)
	s, err = domain.SettlementPosting("s", rec, domain.LedgerMeta{})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := entryOf(s, domain.AccountPlatformCash); ok {
		t.Errorf("settlement whose fee is the whole charge has a cash entry: %+v", s.Entries)
	}

	for _, fee := range []int64{-1, 101} {
		rec = capturedRecord(t, 100, 100, 0, "usd", platformRate)
		rec.StripeFee = fee
		if _, err := domain.SettlementPosting("s", rec, domain.LedgerMeta{}); err == nil {
			t.Errorf("Stripe fee %d on a 100 charge was accepted", fee)
		}
	}
}

func TestVoidPostingHasNoEntries(t *testing.T) {
	v := domain.VoidPosting("ltx_void", "ltx_hold", domain.LedgerMeta{Reason: "release"})
	if err := v.Validate(); err != nil {
		t.Fatalf("void: %v", err)
	}
	if v.Kind != domain.LedgerVoid || v.ResolvesID != "ltx_hold" || len(v.Entries) != 0 {
		t.Errorf("void = %+v, want a void resolving ltx_hold with no entries", v)
	}
}

func TestReversalPostingMirrors(t *testing.T) {
	rec := capturedRecord(t, 300, 300, 39, "usd", platformRate)
	transfer, err := domain.TransferPosting("ltx_tr", rec, domain.LedgerMeta{})
	if err != nil {
		t.Fatal(err)
	}
	rev, err := domain.ReversalPosting("ltx_rev", transfer, domain.LedgerMeta{})
	if err != nil {
		t.Fatal(err)
	}
	assertBalanced(t, rev)
	if rev.ReversesID != "ltx_tr" || rev.Kind != domain.LedgerReversal {
		t.Errorf("reversal = %+v", rev)
	}
	b := balances{}
	b.post(t, transfer)
	b.post(t, rev)
	for account, byCur := range b {
		for cur, amount := range byCur {
			if amount != 0 {
				t.Errorf("after transfer and reversal %s holds %d %s, want 0", account, amount, cur)
			}
		}
	}

	hold, err := domain.HoldPosting("ltx_hold", rec, domain.LedgerMeta{})
	if err != nil {
		t.Fatal(err)
	}
	void := domain.VoidPosting("v", "ltx_hold", domain.LedgerMeta{})
	for _, original := range []domain.LedgerTransaction{hold, void, rev} {
		if _, err := domain.ReversalPosting("x", original, domain.LedgerMeta{}); err == nil {
			t.Errorf("reversal of a %s (pending %v) was accepted", original.Kind, original.Pending)
		}
	}
}

func TestLedgerValidateRejects(t *testing.T) {
	cases := []struct {
		name string
		tx   domain.LedgerTransaction
		is   error
	}{
		{"unbalanced", domain.LedgerTransaction{ID: "a", Kind: domain.LedgerCapture, Entries: []domain.Entry{
			{domain.AccountPlatformCash, "usd", 10}, {domain.AccountPlatformFeeRevenue, "usd", -9}}}, domain.ErrUnbalanced},
		{"balanced only across currencies", domain.LedgerTransaction{ID: "b", Kind: domain.LedgerCapture, Entries: []domain.Entry{
			{domain.AccountPlatformCash, "usd", 10}, {domain.AccountPlatformFeeRevenue, "eur", -10}}}, domain.ErrUnbalanced},
		{"zero entry", domain.LedgerTransaction{ID: "c", Kind: domain.LedgerCapture, Entries: []domain.Entry{
			{domain.AccountPlatformCash, "usd", 0}}}, nil},
		{"unknown currency", domain.LedgerTransaction{ID: "d", Kind: domain.LedgerCapture, Entries: []domain.Entry{
			{domain.AccountPlatformCash, "zzz", 1}, {domain.AccountPlatformFeeRevenue, "zzz", -1}}}, domain.ErrUnsupportedCurrency},
		{"void with entries", domain.LedgerTransaction{ID: "e", Kind: domain.LedgerVoid, Entries: []domain.Entry{
			{domain.AccountPlatformCash, "usd", 1}, {domain.AccountPlatformFeeRevenue, "usd", -1}}}, nil},
		{"capture without entries", domain.LedgerTransaction{ID: "f", Kind: domain.LedgerCapture}, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := c.tx.Validate()
			if err == nil {
				t.Fatal("Validate accepted it")
			}
			if c.is != nil && !errors.Is(err, c.is) {
				t.Errorf("err = %v, want %v", err, c.is)
			}
		})
	}

	multi := domain.LedgerTransaction{ID: "g", Kind: domain.LedgerCapture, Entries: []domain.Entry{
		{domain.AccountPlatformCash, "usd", 10}, {domain.AccountPlatformFeeRevenue, "usd", -10},
		{domain.AccountPlatformCash, "jpy", 5}, {domain.AccountPlatformFeeRevenue, "jpy", -5}}}
	if err := multi.Validate(); err != nil {
		t.Errorf("a transaction balanced in each of two currencies: %v", err)
	}
}

func TestSortedAccountsIsStable(t *testing.T) {
	rec := capturedRecord(t, 100, 100, 33, "usd", platformRate)
	hold, err := domain.HoldPosting("h", rec, domain.LedgerMeta{})
	if err != nil {
		t.Fatal(err)
	}
	got := hold.SortedAccounts()
	want := []domain.AccountID{"agent_payable:agent_1", "customer_authorizations", "platform_fee_revenue"}
	if len(got) != len(want) {
		t.Fatalf("SortedAccounts() = %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("SortedAccounts()[%d] = %s, want %s", i, got[i], want[i])
		}
	}
}

func TestNormalBalances(t *testing.T) {
	debit := []domain.AccountID{domain.AccountCustomerAuthorizations, domain.AccountPlatformCash, domain.AccountStripeFeeExpense}
	credit := []domain.AccountID{domain.AccountPlatformFeeRevenue, domain.AgentPayableAccount("a")}
	for _, a := range debit {
		if domain.NormalBalanceOf(a) != domain.NormalDebit {
			t.Errorf("%s is not debit-normal", a)
		}
	}
	for _, a := range credit {
		if domain.NormalBalanceOf(a) != domain.NormalCredit {
			t.Errorf("%s is not credit-normal", a)
		}
	}
}
