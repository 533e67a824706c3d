package postgres

import (
	"context"
	"errors"
	"reflect"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/taskpod/billing/domain"
	"github.com/taskpod/billing/ports"
)

// holdFixture returns a payment record and its hold posting, not yet stored.
func holdFixture(t *testing.T) (domain.PaymentRecord, domain.LedgerTransaction) {
	t.Helper()
	record := domain.PaymentRecord{
		ID: uniqueID("pay_"), TaskID: uniqueID("task_"), AgentID: uniqueID("agt_"),
		Amount: domain.MustMoney(2000, "usd"), FeeRate: 1000,
		CapturedAmount: 1500,
	}
	hold, err := domain.HoldPosting(uniqueID("ltx_"), record, ledgerMeta(record))
	if err != nil {
		t.Fatal(err)
	}
	return record, hold
}

func ledgerMeta(record domain.PaymentRecord) domain.LedgerMeta {
	return domain.LedgerMeta{
		Actor: "system", RequestID: uniqueID("req_"), Reason: "test", TaskID: record.TaskID, PaymentID: record.ID,
		Stripe:      domain.StripeRefs{PaymentIntentID: "pi_1", ChargeID: "ch_1"},
		EffectiveAt: testNow(),
	}
}

func appendLedger(t *testing.T, store *Store, txs ...domain.LedgerTransaction) error {
	t.Helper()
	return store.InTx(testContext(t), func(ctx context.Context, tx ports.Tx) error {
		for _, ltx := range txs {
			if err := tx.Ledger().Append(ctx, ltx); err != nil {
				return err
			}
		}
		return nil
	})
}

func pendingHold(t *testing.T, store *Store, paymentID string) (domain.LedgerTransaction, bool) {
	t.Helper()
	var hold domain.LedgerTransaction
	var found bool
	inTx(t, store, func(ctx context.Context, tx ports.Tx) error {
		var err error
		hold, found, err = tx.Ledger().PendingHold(ctx, paymentID)
		return err
	})
	return hold, found
}

func TestLedgerAppendAndPendingHold(t *testing.T) {
	store := newTestStore(t)
	record, hold := holdFixture(t)
	if err := appendLedger(t, store, hold); err != nil {
		t.Fatalf("Append hold: %v", err)
	}

	got, found := pendingHold(t, store, record.ID)
	if !found {
		t.Fatal("PendingHold found no hold")
	}
	got.Meta.EffectiveAt = got.Meta.EffectiveAt.UTC()
	if !reflect.DeepEqual(got, hold) {
		t.Errorf("PendingHold = %+v\nwant %+v", got, hold)
	}

	pool := migratedPool(t)
	var accounts int
	err := pool.QueryRow(testContext(t), `
		SELECT count(*) FROM ledger_accounts
		 WHERE (id = $1 AND normal_balance = 'credit') OR (id = 'customer_authorizations' AND normal_balance = 'debit')`,
		string(domain.AgentPayableAccount(record.AgentID))).Scan(&accounts)
	if err != nil {
		t.Fatal(err)
	}
	if accounts != 2 {
		t.Errorf("found %d of the 2 expected accounts with their normal balance", accounts)
	}
	var pendingEntries int
	err = pool.QueryRow(testContext(t), `
		SELECT count(*) FROM ledger_entries WHERE transaction_id = $1 AND pending AND effective_at = $2`,
		hold.ID, hold.Meta.EffectiveAt).Scan(&pendingEntries)
	if err != nil {
		t.Fatal(err)
	}
	if pendingEntries != len(hold.Entries) {
		t.Errorf("%d entries carry the hold's pending flag and effective time, want %d", pendingEntries, len(hold.Entries))
	}
}

func TestLedgerHoldResolvesOnce(t *testing.T) {
	store := newTestStore(t)
	record, hold := holdFixture(t)
	capture, err := domain.CapturePosting(uniqueID("ltx_"), hold.ID, record, ledgerMeta(record))
	if err != nil {
		t.Fatal(err)
	}
	if err := appendLedger(t, store, hold, capture); err != nil {
		t.Fatalf("Append hold and capture: %v", err)
	}
	if _, found := pendingHold(t, store, record.ID); found {
		t.Error("PendingHold still finds the captured hold")
	}

	void := domain.VoidPosting(uniqueID("ltx_"), hold.ID, ledgerMeta(record))
	if err := appendLedger(t, store, void); !errors.Is(err, domain.ErrConflict) {
		t.Errorf("a void of a captured hold returned %v, want ErrConflict", err)
	}
	secondCapture := capture
	secondCapture.ID = uniqueID("ltx_")
	if err := appendLedger(t, store, secondCapture); !errors.Is(err, domain.ErrConflict) {
		t.Errorf("a second capture returned %v, want ErrConflict", err)
	}
}

func TestLedgerVoidOfUnknownHold(t *testing.T) {
	store := newTestStore(t)
	record, _ := holdFixture(t)
	void := domain.VoidPosting(uniqueID("ltx_"), uniqueID("ltx_"), ledgerMeta(record))
	if err := appendLedger(t, store, void); !errors.Is(err, domain.ErrNotFound) {
		t.Errorf("a void of a missing hold returned %v, want ErrNotFound", err)
	}
}

func TestLedgerResolvesOnlyHolds(t *testing.T) {
	store := newTestStore(t)
	record, hold := holdFixture(t)
	record.StripeFee = 50
	settlement, err := domain.SettlementPosting(uniqueID("ltx_"), record, ledgerMeta(record))
	if err != nil {
		t.Fatal(err)
	}
	if err := appendLedger(t, store, hold, settlement); err != nil {
		t.Fatal(err)
	}
	void := domain.VoidPosting(uniqueID("ltx_"), settlement.ID, ledgerMeta(record))
	if err := appendLedger(t, store, void); !errors.Is(err, domain.ErrConflict) {
		t.Errorf("a void of a settlement returned %v, want ErrConflict", err)
	}
}

func TestLedgerAppendRejectsUnbalanced(t *testing.T) {
	store := newTestStore(t)
	record, hold := holdFixture(t)
	hold.Entries[0].Amount++
	if err := appendLedger(t, store, hold); !errors.Is(err, domain.ErrUnbalanced) {
		t.Errorf("Append of an unbalanced transaction returned %v, want ErrUnbalanced", err)
	}
	if _, found := pendingHold(t, store, record.ID); found {
		t.Error("the unbalanced hold was stored")
	}
}

// insertUnbalanced writes a transaction whose entries sum to 1, bypassing
// Validate, as a buggy writer would.
const insertUnbalanced = `
	WITH accounts AS (
		INSERT INTO ledger_accounts (id, normal_balance) VALUES ('platform_cash', 'debit')
		ON CONFLICT (id) DO NOTHING
	), transaction AS (
		INSERT INTO ledger_transactions (id, kind, actor, effective_at) VALUES ($1, 'settlement', 'test', now())
		RETURNING id
	)
	INSERT INTO ledger_entries (transaction_id, account_id, currency, amount, pending, effective_at)
	SELECT id, 'platform_cash', 'usd', 1, false, now() FROM transaction`

func TestDatabaseRejectsUnbalancedAtCommit(t *testing.T) {
	ctx := testContext(t)
	pool := migratedPool(t)
	id := uniqueID("ltx_")

	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	if _, err := tx.Exec(ctx, `INSERT INTO ledger_accounts (id, normal_balance) VALUES ('platform_cash', 'debit')
		ON CONFLICT (id) DO NOTHING`); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO ledger_transactions (id, kind, actor, effective_at)
		VALUES ($1, 'settlement', 'test', now())`, id); err != nil {
		t.Fatalf("insert transaction: %v", err)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO ledger_entries (transaction_id, account_id, currency, amount, pending, effective_at)
		VALUES ($1, 'platform_cash', 'usd', 1, false, now())`, id); err != nil {
		t.Fatalf("the unbalanced entry was rejected before commit, so the check is not deferred: %v", err)
	}

	err = tx.Commit(ctx)
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "23514" {
		t.Fatalf("COMMIT of an unbalanced transaction returned %v, want check_violation", err)
	}
	var stored bool
	if err := pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM ledger_transactions WHERE id = $1)`, id).Scan(&stored); err != nil {
		t.Fatal(err)
	}
	if stored {
		t.Error("the unbalanced transaction was committed")
	}
}

func TestInTxReportsUnbalancedBeforeCommit(t *testing.T) {
	store := newTestStore(t)
	store.commit = func(context.Context, pgx.Tx) error {
		t.Error("InTx reached COMMIT although the deferred balance check must fail first")
		return nil
	}
	id := uniqueID("ltx_")

	err := store.InTx(testContext(t), func(ctx context.Context, tx ports.Tx) error {
		_, err := tx.(*unitOfWork).tx.Exec(ctx, insertUnbalanced, id)
		return err
	})
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "23514" {
		t.Errorf("InTx returned %v, want check_violation", err)
	}
	if errors.Is(err, ErrCommitUnknown) {
		t.Error("a failed balance check was reported as a commit of unknown outcome")
	}
}

func TestLedgerRowsAreImmutable(t *testing.T) {
	store := newTestStore(t)
	record, hold := holdFixture(t)
	if err := appendLedger(t, store, hold); err != nil {
		t.Fatal(err)
	}
	ctx := testContext(t)
	pool := migratedPool(t)

	statements := map[string]string{
		"update transaction": `UPDATE ledger_transactions SET reason = 'edited' WHERE id = $1`,
		"delete transaction": `DELETE FROM ledger_transactions WHERE id = $1`,
		"update entry":       `UPDATE ledger_entries SET amount = amount * 2 WHERE transaction_id = $1`,
		"delete entry":       `DELETE FROM ledger_entries WHERE transaction_id = $1`,
	}
	for name, sql := range statements {
		_, err := pool.Exec(ctx, sql, hold.ID)
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "42501" {
			t.Errorf("%s returned %v, want insufficient_privilege", name, err)
		}
	}
	if _, err := pool.Exec(ctx, `TRUNCATE ledger_entries`); err == nil {
		t.Error("TRUNCATE ledger_entries succeeded")
	}

	got, found := pendingHold(t, store, record.ID)
	if !found || len(got.Entries) != len(hold.Entries) || got.Meta.Reason != hold.Meta.Reason {
		t.Errorf("the hold changed after the rejected statements: %+v", got)
	}
}

func TestLedgerReaderFiltersAndPages(t *testing.T) {
	store := newTestStore(t)
	record, hold := holdFixture(t)
	capture, err := domain.CapturePosting(uniqueID("ltx_"), hold.ID, record, ledgerMeta(record))
	if err != nil {
		t.Fatal(err)
	}
	if err := appendLedger(t, store, hold, capture); err != nil {
		t.Fatal(err)
	}
	// Another payment's hold must not show up under this payment's filter.
	_, unrelated := holdFixture(t)
	if err := appendLedger(t, store, unrelated); err != nil {
		t.Fatal(err)
	}
	reader := NewLedgerReader(migratedPool(t))
	ctx := testContext(t)

	all, more, err := reader.Entries(ctx, ports.LedgerEntryFilter{PaymentID: record.ID}, ports.EntryPage{})
	if err != nil {
		t.Fatal(err)
	}
	wantCount := len(hold.Entries) + len(capture.Entries)
	if len(all) != wantCount || more {
		t.Fatalf("payment filter returned %d entries and hasMore %v, want %d and false", len(all), more, wantCount)
	}
	for i := 1; i < len(all); i++ {
		if all[i].ID <= all[i-1].ID {
			t.Errorf("entries are not in ascending id order: %d after %d", all[i].ID, all[i-1].ID)
		}
	}
	first := all[0]
	if first.RecordedAt.IsZero() {
		t.Error("first entry has no recorded time")
	}
	first.EffectiveAt = first.EffectiveAt.UTC()
	wantFirst := ports.LedgerEntryView{
		ID: first.ID, TransactionID: hold.ID, Kind: domain.LedgerHold,
		Account: hold.Entries[0].Account, Currency: "usd", Amount: hold.Entries[0].Amount, Pending: true,
		Actor: "system", RequestID: hold.Meta.RequestID, Reason: "test", TaskID: record.TaskID, PaymentID: record.ID,
		Stripe: hold.Meta.Stripe, EffectiveAt: hold.Meta.EffectiveAt, RecordedAt: first.RecordedAt,
		Sequence: first.Sequence,
	}
	if first.Sequence == 0 {
		t.Error("first entry is listed without a seal sequence")
	}
	if first != wantFirst {
		t.Errorf("first entry = %+v\nwant %+v", first, wantFirst)
	}
	last := all[len(all)-1]
	if last.TransactionID != capture.ID || last.ResolvesID != hold.ID || last.Pending {
		t.Errorf("last entry = %+v, want a posted capture entry resolving %s", last, hold.ID)
	}

	byTask, _, err := reader.Entries(ctx, ports.LedgerEntryFilter{TaskID: record.TaskID}, ports.EntryPage{})
	if err != nil || len(byTask) != wantCount {
		t.Errorf("task filter returned %d entries (err %v), want %d", len(byTask), err, wantCount)
	}
	payable := string(domain.AgentPayableAccount(record.AgentID))
	byAccount, _, err := reader.Entries(ctx, ports.LedgerEntryFilter{AccountID: payable}, ports.EntryPage{})
	if err != nil || len(byAccount) != 2 {
		t.Errorf("account filter returned %d entries (err %v), want 2 (hold and capture)", len(byAccount), err)
	}

	filter := ports.LedgerEntryFilter{PaymentID: record.ID}
	page1, more, err := reader.Entries(ctx, filter, ports.EntryPage{Limit: 2})
	if err != nil || len(page1) != 2 || !more {
		t.Fatalf("first page: %d entries, hasMore %v, err %v; want 2, true", len(page1), more, err)
	}
	page2, more, err := reader.Entries(ctx, filter, ports.EntryPage{Limit: 2, After: page1[1].ID})
	if err != nil || len(page2) != 2 || !more {
		t.Fatalf("second page: %d entries, hasMore %v, err %v; want 2, true", len(page2), more, err)
	}
	if page2[0].ID != all[2].ID {
		t.Errorf("second page starts at entry %d, want %d", page2[0].ID, all[2].ID)
	}
	back, more, err := reader.Entries(ctx, filter, ports.EntryPage{Limit: 2, Before: page2[0].ID})
	if err != nil {
		t.Fatalf("backward page: %v", err)
	}
	if len(back) != 2 || back[0].ID != page1[0].ID || back[1].ID != page1[1].ID {
		t.Errorf("page before entry %d = %v, want the first page in ascending order", page2[0].ID, entryIDs(back))
	}
	if more {
		t.Error("the page before the second page reported more older entries, but it is the first page")
	}

	_, _, err = reader.Entries(ctx, filter, ports.EntryPage{After: 1, Before: 2})
	var invalid *domain.ValidationError
	if !errors.As(err, &invalid) {
		t.Errorf("After and Before together returned %v, want a *domain.ValidationError", err)
	}
}

func entryIDs(views []ports.LedgerEntryView) []int64 {
	ids := make([]int64, len(views))
	for i, v := range views {
		ids[i] = v.ID
	}
	return ids
}
