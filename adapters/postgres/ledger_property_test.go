package postgres

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/taskpod/billing/application"
	"github.com/taskpod/billing/domain"
	"github.com/taskpod/billing/migrations"
	"github.com/taskpod/billing/ports"
)

// balanceKey names one account's balance in one currency.
type balanceKey struct {
	account  domain.AccountID
	currency domain.Currency
}

// modelEntry is an entry as the test expects the ledger to store it.
type modelEntry struct {
	key     balanceKey
	amount  int64
	pending bool
	holdID  string
	at      time.Time
}

// ledgerModel recomputes balances from the postings the test made, with
// the same "as of" rules the ledger documents, independently of SQL.
type ledgerModel struct {
	entries    []modelEntry
	resolvedAt map[string]time.Time
	stored     map[string]domain.LedgerTransaction
	reversed   map[string]string
}

func newLedgerModel() *ledgerModel {
	return &ledgerModel{resolvedAt: map[string]time.Time{}, stored: map[string]domain.LedgerTransaction{}, reversed: map[string]string{}}
}

func (m *ledgerModel) add(t domain.LedgerTransaction) {
	for _, e := range t.Entries {
		me := modelEntry{key: balanceKey{e.Account, e.Currency}, amount: e.Amount, pending: t.Pending, at: t.Meta.EffectiveAt}
		if t.Pending {
			me.holdID = t.ID
		}
		m.entries = append(m.entries, me)
	}
	if t.ResolvesID != "" {
		m.resolvedAt[t.ResolvesID] = t.Meta.EffectiveAt
	}
	if t.ReversesID != "" {
		m.reversed[t.ReversesID] = t.ID
	}
	m.stored[t.ID] = t
}

// balances returns every balance as of asOf. A key exists once any of its
// entries is effective, as in the SQL grouping.
func (m *ledgerModel) balances(asOf time.Time) map[balanceKey]domain.AccountBalance {
	out := map[balanceKey]domain.AccountBalance{}
	for _, e := range m.entries {
		if e.at.After(asOf) {
			continue
		}
		b := out[e.key]
		b.Account, b.Currency = e.key.account, e.key.currency
		if resolved, ok := m.resolvedAt[e.holdID]; !e.pending || !ok || resolved.After(asOf) {
			b.AddEntry(e.amount, e.pending)
		}
		out[e.key] = b
	}
	return out
}

// modelPayment is the test's view of one payment's postings.
type modelPayment struct {
	record          domain.PaymentRecord
	holdID          string
	resolved        bool
	captured        bool
	captureReversed bool
	transferred     bool
}

// propertyWorld bundles what the property test drives and checks.
type propertyWorld struct {
	t        *testing.T
	ctx      context.Context
	rng      *rand.Rand
	store    *Store
	reader   *LedgerReader
	ledger   *application.Ledger
	clock    *stepClock
	model    *ledgerModel
	payments []*modelPayment
	times    []time.Time
	agents   []string
	counts   map[string]int
}

type stepClock struct{ now time.Time }

func (c *stepClock) Now() time.Time { return c.now }

type randomIDs struct{}

func (randomIDs) NewID(prefix string) string { return uniqueID(prefix + "_") }

var propertyCurrencies = []domain.Currency{"usd", "eur", "jpy"}

// TestLedgerPropertyRandomPostings drives random holds, partial captures
// with settlement, transfers, releases, expiries, double resolutions and
// reversals in usd, eur and jpy on a database of its own, and checks the
// ledger's invariants after every step. LEDGER_PROPERTY_SEED replays a run.
func TestLedgerPropertyRandomPostings(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("LEDGER_PROPERTY_SEED"); s != "" {
		parsed, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("LEDGER_PROPERTY_SEED=%q is not an unsigned integer", s)
		}
		seed = parsed
	}
	t.Logf("seed %d (set LEDGER_PROPERTY_SEED to replay)", seed)

	ctx := testContext(t)
	pool, _ := freshPool(t)
	if _, err := Migrate(ctx, pool, migrations.FS); err != nil {
		t.Fatal(err)
	}
	store := NewStore(pool, nil)
	reader := NewLedgerReader(pool)
	clock := &stepClock{}
	w := &propertyWorld{
		t: t, ctx: ctx, rng: rand.New(rand.NewPCG(seed, seed^0x5eed)), store: store, reader: reader, clock: clock,
		ledger: application.NewLedger(store, reader, clock, randomIDs{}, slog.New(slog.NewTextHandler(io.Discard, nil))),
		model:  newLedgerModel(), agents: []string{uniqueID("agt_"), uniqueID("agt_"), uniqueID("agt_")},
		counts: map[string]int{},
	}

	base := time.Now().UTC().Truncate(time.Second).Add(-time.Hour)
	const steps = 160
	for i := range steps {
		clock.now = base.Add(time.Duration(i) * time.Second)
		w.times = append(w.times, clock.now)
		w.step()
		w.checkInvariants(i)
		if t.Failed() {
			t.Fatalf("invariants broken after step %d; replay with LEDGER_PROPERTY_SEED=%d", i, seed)
		}
	}
	t.Logf("operations: %v", w.counts)

	for _, op := range []string{"hold", "capture", "void"} {
		if w.counts[op] == 0 {
			t.Errorf("the run made no %s; the operation mix is broken", op)
		}
	}
	chain := NewChain(pool)
	if _, err := chain.SealPending(ctx); err != nil {
		t.Fatal(err)
	}
	report, err := chain.Verify(ctx)
	if err != nil || !report.OK() || report.Unsealed != 0 {
		t.Errorf("Verify after the run = %+v, %v; want an intact, fully sealed chain", report, err)
	}
}

// step applies one random operation to the ledger and to the model.
func (w *propertyWorld) step() {
	switch n := w.rng.IntN(100); {
	case n < 30 || len(w.payments) == 0:
		w.hold()
	case n < 50:
		w.capture()
	case n < 62:
		w.transfer()
	case n < 74:
		w.void()
	case n < 82:
		w.resolveTwice()
	default:
		w.reverse()
	}
}

func (w *propertyWorld) meta(p domain.PaymentRecord, reason string) domain.LedgerMeta {
	return domain.LedgerMeta{Actor: "system:property", Reason: reason, TaskID: p.TaskID, PaymentID: p.ID, EffectiveAt: w.clock.now}
}

func (w *propertyWorld) append(txs ...domain.LedgerTransaction) error {
	return w.store.InTx(w.ctx, func(ctx context.Context, tx ports.Tx) error {
		for _, t := range txs {
			if err := tx.Ledger().Append(ctx, t); err != nil {
				return err
			}
		}
		return nil
	})
}

func (w *propertyWorld) mustAppend(op string, txs ...domain.LedgerTransaction) {
	if err := w.append(txs...); err != nil {
		w.t.Errorf("%s: Append: %v", op, err)
		return
	}
	for _, t := range txs {
		w.model.add(t)
	}
	w.counts[op]++
}

func (w *propertyWorld) hold() {
	cur := propertyCurrencies[w.rng.IntN(len(propertyCurrencies))]
	amount := 50 + w.rng.Int64N(5000)
	if cur == "jpy" {
		amount = 50 + w.rng.Int64N(50000)
	}
	record := domain.PaymentRecord{
		ID: uniqueID("pay_"), TaskID: uniqueID("task_"), AgentID: w.agents[w.rng.IntN(len(w.agents))],
		Amount: domain.MustMoney(amount, cur), FeeRate: 250,
	}
	hold, err := domain.HoldPosting(uniqueID("ltx_"), record, w.meta(record, "authorize"))
	if err != nil {
		w.t.Fatalf("HoldPosting: %v", err)
	}
	w.mustAppend("hold", hold)
	w.payments = append(w.payments, &modelPayment{record: record, holdID: hold.ID})
}

// pick returns a random payment that satisfies ok, or nil.
func (w *propertyWorld) pick(ok func(*modelPayment) bool) *modelPayment {
	var candidates []*modelPayment
	for _, p := range w.payments {
		if ok(p) {
			candidates = append(candidates, p)
		}
	}
	if len(candidates) == 0 {
		return nil
	}
	return candidates[w.rng.IntN(len(candidates))]
}

// stripeFee imitates Stripe's card pricing: 2.9 % + 30 in two-decimal
// currencies and 3.6 % in jpy, at most the captured amount.
func stripeFee(captured int64, cur domain.Currency) int64 {
	fee := (captured*29+500)/1000 + 30
	if cur.IsZeroDecimal() {
		fee = (captured*36 + 500) / 1000
	}
	return min(fee, captured)
}

func (w *propertyWorld) capture() {
	p := w.pick(func(p *modelPayment) bool { return !p.resolved })
	if p == nil {
		return
	}
	r := &p.record
	r.CapturedAmount = 1 + w.rng.Int64N(r.Amount.Amount())
	captured := domain.MustMoney(r.CapturedAmount, r.Amount.Currency())
	fee, share, err := domain.PlatformFee(captured, r.FeeRate)
	if err != nil {
		w.t.Fatal(err)
	}
	r.PlatformFee, r.AgentShare, r.StripeFee = fee.Amount(), share.Amount(), stripeFee(r.CapturedAmount, r.Amount.Currency())

	capture, err := domain.CapturePosting(uniqueID("ltx_"), p.holdID, *r, w.meta(*r, "capture"))
	if err != nil {
		w.t.Fatal(err)
	}
	settlement, err := domain.SettlementPosting(uniqueID("ltx_"), *r, w.meta(*r, "capture"))
	if err != nil {
		w.t.Fatal(err)
	}
	w.mustAppend("capture", capture, settlement)
	p.resolved, p.captured = true, true
}

func (w *propertyWorld) transfer() {
	p := w.pick(func(p *modelPayment) bool {
		return p.captured && !p.captureReversed && !p.transferred && p.record.AgentShare > 0
	})
	if p == nil {
		return
	}
	transfer, err := domain.TransferPosting(uniqueID("ltx_"), p.record, w.meta(p.record, "transfer"))
	if err != nil {
		w.t.Fatal(err)
	}
	w.mustAppend("transfer", transfer)
	p.transferred = true
}

// void releases a hold; a quarter of them are recorded as expiries.
func (w *propertyWorld) void() {
	p := w.pick(func(p *modelPayment) bool { return !p.resolved })
	if p == nil {
		return
	}
	reason := "release"
	if w.rng.IntN(4) == 0 {
		reason = "expired"
	}
	w.mustAppend("void", domain.VoidPosting(uniqueID("ltx_"), p.holdID, w.meta(p.record, reason)))
	p.resolved = true
}

// resolveTwice tries to capture or void a hold that is already resolved,
// which the unique index on resolves_id must reject.
func (w *propertyWorld) resolveTwice() {
	p := w.pick(func(p *modelPayment) bool { return p.resolved })
	if p == nil {
		return
	}
	second := domain.VoidPosting(uniqueID("ltx_"), p.holdID, w.meta(p.record, "release"))
	if w.rng.IntN(2) == 0 {
		r := p.record
		r.CapturedAmount = r.Amount.Amount()
		var err error
		if second, err = domain.CapturePosting(uniqueID("ltx_"), p.holdID, r, w.meta(r, "capture")); err != nil {
			w.t.Fatal(err)
		}
	}
	if err := w.append(second); !errors.Is(err, domain.ErrConflict) {
		w.t.Errorf("a second %s of hold %s returned %v, want ErrConflict", second.Kind, p.holdID, err)
	}
	w.counts["resolve twice"]++
}

// reverse calls the use case to reverse a random stored transaction and
// predicts the outcome from the model: not reversible, already reversed,
// rejected for overdraft, or created.
func (w *propertyWorld) reverse() {
	ids := make([]string, 0, len(w.model.stored))
	for id := range w.model.stored {
		ids = append(ids, id)
	}
	if len(ids) == 0 {
		return
	}
	// Map order is random but not seeded; sort for replayable runs.
	slices.Sort(ids)
	original := w.model.stored[ids[w.rng.IntN(len(ids))]]
	admin := application.Actor{Role: application.RoleAdmin, Subject: "ops", TokenID: "tok_property", RequestID: uniqueID("req_")}
	got, err := w.ledger.Reverse(w.ctx, admin, original.ID, "property test correction")

	earlier, alreadyReversed := w.model.reversed[original.ID]
	switch {
	case original.Pending || original.Kind == domain.LedgerVoid || original.Kind == domain.LedgerReversal:
		if !errors.Is(err, application.ErrNotReversible) {
			w.t.Errorf("reversing %s %s returned %v, want ErrNotReversible", original.Kind, original.ID, err)
		}
		w.counts["reverse rejected: kind"]++
	case alreadyReversed:
		if err != nil || got.Created || got.Transaction.ID != earlier {
			w.t.Errorf("reversing %s again returned %+v, %v; want the existing reversal %s", original.ID, got, err, earlier)
		}
		w.counts["reverse repeated"]++
	case w.wouldOverdraw(original):
		if !errors.Is(err, domain.ErrOverdraft) {
			w.t.Errorf("reversing %s %s returned %v, want ErrOverdraft", original.Kind, original.ID, err)
		}
		w.counts["reverse rejected: overdraft"]++
	default:
		if err != nil || !got.Created {
			w.t.Errorf("reversing %s %s returned %+v, %v; want a new reversal", original.Kind, original.ID, got, err)
			return
		}
		w.model.add(got.Transaction)
		w.markReversed(original)
		w.counts["reverse "+string(original.Kind)]++
	}
}

// wouldOverdraw applies the mirrored entries to the model's current posted
// balances and reports an account that may not go negative ending below zero.
func (w *propertyWorld) wouldOverdraw(original domain.LedgerTransaction) bool {
	now := w.model.balances(w.clock.now)
	changed := map[balanceKey]bool{}
	for _, e := range original.Entries {
		k := balanceKey{e.Account, e.Currency}
		b := now[k]
		b.Account, b.Currency = k.account, k.currency
		b.AddEntry(-e.Amount, false)
		now[k] = b
		changed[k] = true
	}
	for k := range changed {
		class, _ := domain.ClassOf(k.account)
		if !class.MayGoNegative && now[k].Posted() < 0 {
			return true
		}
	}
	return w.wouldOverdrawPayment(original)
}

// wouldOverdrawPayment repeats the check on the original payment's own
// share of each account, since pooled accounts hide a payment whose later
// transactions already used the money.
func (w *propertyWorld) wouldOverdrawPayment(original domain.LedgerTransaction) bool {
	if original.Meta.PaymentID == "" {
		return false
	}
	own := map[balanceKey]int64{}
	for _, t := range w.model.stored {
		if t.Meta.PaymentID != original.Meta.PaymentID || t.Pending {
			continue
		}
		for _, e := range t.Entries {
			own[balanceKey{e.Account, e.Currency}] += e.Amount
		}
	}
	for _, e := range original.Entries {
		k := balanceKey{e.Account, e.Currency}
		class, _ := domain.ClassOf(k.account)
		if class.MayGoNegative {
			continue
		}
		after := own[k] - e.Amount
		if domain.NormalBalanceOf(k.account) == domain.NormalCredit {
			after = -after
		}
		if after < 0 {
			return true
		}
	}
	return false
}

func (w *propertyWorld) markReversed(original domain.LedgerTransaction) {
	for _, p := range w.payments {
		if p.record.ID != original.Meta.PaymentID {
			continue
		}
		switch original.Kind {
		case domain.LedgerCapture:
			p.captureReversed = true
		case domain.LedgerTransfer:
			p.transferred = false
		}
	}
}

// checkInvariants checks the ledger after step i.
func (w *propertyWorld) checkInvariants(step int) {
	w.t.Helper()
	w.checkSumsToZero(step)
	w.checkResolvedOnce(step)

	now := w.clock.now
	w.checkBalances(step, now)
	earlier := w.times[w.rng.IntN(len(w.times))]
	w.checkBalances(step, earlier)
	w.checkNoOverdraft(step, now)
	w.checkTrialBalance(step, now)
}

func (w *propertyWorld) checkSumsToZero(step int) {
	pool := w.store.pool
	var unbalanced int
	err := pool.QueryRow(w.ctx, `
		SELECT count(*) FROM (SELECT 1 FROM ledger_entries GROUP BY transaction_id, currency HAVING sum(amount) <> 0) x`).Scan(&unbalanced)
	if err != nil {
		w.t.Fatal(err)
	}
	if unbalanced != 0 {
		w.t.Errorf("step %d: %d transaction-currency pairs do not sum to zero", step, unbalanced)
	}
	rows, err := pool.Query(w.ctx, `SELECT currency, sum(amount)::bigint FROM ledger_entries GROUP BY currency`)
	if err != nil {
		w.t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var cur string
		var sum int64
		if err := rows.Scan(&cur, &sum); err != nil {
			w.t.Fatal(err)
		}
		if sum != 0 {
			w.t.Errorf("step %d: all %s entries sum to %d, want 0", step, cur, sum)
		}
	}
}

func (w *propertyWorld) checkResolvedOnce(step int) {
	var twice int
	err := w.store.pool.QueryRow(w.ctx, `
		SELECT count(*) FROM (SELECT resolves_id FROM ledger_transactions WHERE resolves_id IS NOT NULL
		 GROUP BY resolves_id HAVING count(*) > 1) x`).Scan(&twice)
	if err != nil {
		w.t.Fatal(err)
	}
	if twice != 0 {
		w.t.Errorf("step %d: %d holds are resolved more than once", step, twice)
	}
}

// checkBalances compares every account's balance as of asOf, read through
// the auditor's port, with the model and with a plain sum of its entries.
func (w *propertyWorld) checkBalances(step int, asOf time.Time) {
	want := w.model.balances(asOf)
	accounts := map[domain.AccountID]bool{}
	for k := range want {
		accounts[k.account] = true
	}
	for account := range accounts {
		view, err := w.reader.Account(w.ctx, account, asOf)
		if err != nil {
			w.t.Errorf("step %d: Account(%s, %s): %v", step, account, asOf.Format(time.RFC3339), err)
			continue
		}
		got := map[balanceKey]domain.AccountBalance{}
		for _, b := range view.Balances {
			got[balanceKey{b.Account, b.Currency}] = b
		}
		for k, wb := range want {
			if k.account != account {
				continue
			}
			if got[k] != wb {
				w.t.Errorf("step %d: balance of %s in %s as of %s = %+v, want %+v",
					step, k.account, k.currency, asOf.Format(time.RFC3339), got[k], wb)
			}
			w.checkEntrySum(step, k, asOf, got[k])
			delete(got, k)
		}
		for k, b := range got {
			w.t.Errorf("step %d: unexpected balance of %s in %s: %+v", step, k.account, k.currency, b)
		}
	}
}

// checkEntrySum checks a balance's posted side against SUM over entries.
func (w *propertyWorld) checkEntrySum(step int, k balanceKey, asOf time.Time, b domain.AccountBalance) {
	var sum int64
	err := w.store.pool.QueryRow(w.ctx, `
		SELECT coalesce(sum(amount), 0)::bigint FROM ledger_entries
		 WHERE account_id = $1 AND currency = $2 AND NOT pending AND effective_at <= $3`,
		string(k.account), string(k.currency), asOf).Scan(&sum)
	if err != nil {
		w.t.Fatal(err)
	}
	if sum != b.PostedDebits-b.PostedCredits {
		w.t.Errorf("step %d: posted entries of %s in %s sum to %d, balance says %d",
			step, k.account, k.currency, sum, b.PostedDebits-b.PostedCredits)
	}
}

// checkNoOverdraft checks that only accounts allowed to go negative are
// below zero, and that no pending amount is negative.
func (w *propertyWorld) checkNoOverdraft(step int, asOf time.Time) {
	balances, err := readBalances(w.ctx, w.store.pool, nil, asOf)
	if err != nil {
		w.t.Fatal(err)
	}
	for _, b := range balances {
		class, _ := domain.ClassOf(b.Account)
		if !class.MayGoNegative && b.Posted() < 0 {
			w.t.Errorf("step %d: %s is at %d %s, below zero", step, b.Account, b.Posted(), b.Currency)
		}
		if b.Pending() < 0 {
			w.t.Errorf("step %d: %s has pending %d %s, below zero", step, b.Account, b.Pending(), b.Currency)
		}
	}
}

func (w *propertyWorld) checkTrialBalance(step int, asOf time.Time) {
	tbs, err := w.reader.TrialBalance(w.ctx, asOf)
	if err != nil {
		w.t.Fatal(err)
	}
	for _, tb := range tbs {
		if !tb.Balanced() {
			w.t.Errorf("step %d: trial balance in %s is not balanced: %+v", step, tb.Currency, tb)
		}
	}
}
