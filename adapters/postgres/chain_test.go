package postgres

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/taskpod/billing/adapters/postgres/pgtest"

	"github.com/taskpod/billing/domain"
	"github.com/taskpod/billing/migrations"
)

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// paymentPostings returns a hold, its capture, settlement and transfer for
// a 100-cent usd payment with Stripe's 33-cent fee.
func paymentPostings(t *testing.T) []domain.LedgerTransaction {
	t.Helper()
	record := domain.PaymentRecord{
		ID: uniqueID("pay_"), TaskID: uniqueID("task_"), AgentID: uniqueID("agt_"),
		Amount: domain.MustMoney(100, "usd"), FeeRate: 250,
		CapturedAmount: 100, PlatformFee: 3, AgentShare: 97, StripeFee: 33,
	}
	meta := ledgerMeta(record)
	hold, err := domain.HoldPosting(uniqueID("ltx_"), record, meta)
	if err != nil {
		t.Fatal(err)
	}
	capture, err := domain.CapturePosting(uniqueID("ltx_"), hold.ID, record, meta)
	if err != nil {
		t.Fatal(err)
	}
	settlement, err := domain.SettlementPosting(uniqueID("ltx_"), record, meta)
	if err != nil {
		t.Fatal(err)
	}
	transfer, err := domain.TransferPosting(uniqueID("ltx_"), record, meta)
	if err != nil {
		t.Fatal(err)
	}
	return []domain.LedgerTransaction{hold, capture, settlement, transfer}
}

// sealedLedger returns a migrated database of its own holding two sealed
// payments, and the ids of their transactions in seal order.
func sealedLedger(t *testing.T) (*pgxpool.Pool, []string) {
	t.Helper()
	ctx := testContext(t)
	pool, _ := freshPool(t)
	if _, err := Migrate(ctx, pool, migrations.FS); err != nil {
		t.Fatal(err)
	}
	store := NewStore(pool, nil)
	var ids []string
	for range 2 {
		for _, tx := range paymentPostings(t) {
			if err := appendLedger(t, store, tx); err != nil {
				t.Fatal(err)
			}
			ids = append(ids, tx.ID)
		}
	}
	sealed, err := NewChain(pool).SealPending(ctx)
	if err != nil || sealed != len(ids) {
		t.Fatalf("SealPending sealed %d (err %v), want %d", sealed, err, len(ids))
	}
	return pool, ids
}

func TestChainSealsInOrderAndVerifies(t *testing.T) {
	pool, ids := sealedLedger(t)
	ctx := testContext(t)
	chain := NewChain(pool)

	rows, err := pool.Query(ctx, `SELECT sequence, transaction_id, prev_hash, hash FROM ledger_seals ORDER BY sequence`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	prev := zeroHash
	var n int
	for rows.Next() {
		var seq int64
		var id string
		var prevHash, hash []byte
		if err := rows.Scan(&seq, &id, &prevHash, &hash); err != nil {
			t.Fatal(err)
		}
		if seq != int64(n+1) || id != ids[n] {
			t.Errorf("seal %d is sequence %d of %s, want sequence %d of %s", n, seq, id, n+1, ids[n])
		}
		if !bytes.Equal(prevHash, prev) {
			t.Errorf("seal %d does not link to the previous hash", seq)
		}
		prev = hash
		n++
	}
	if n != len(ids) {
		t.Fatalf("%d seals, want %d", n, len(ids))
	}

	head, err := chain.Head(ctx)
	if err != nil || head.Sequence != int64(len(ids)) || head.TransactionID != ids[len(ids)-1] || !bytes.Equal(head.Hash, prev) {
		t.Errorf("Head = %+v (err %v), want sequence %d of %s", head, err, len(ids), ids[len(ids)-1])
	}
	report, err := chain.Verify(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !report.OK() || report.Checked != int64(len(ids)) || report.Unsealed != 0 || report.Unqueued != 0 {
		t.Errorf("Verify = %+v, want an intact chain of %d seals", report, len(ids))
	}
	if sealed, err := chain.SealPending(ctx); err != nil || sealed != 0 {
		t.Errorf("a second SealPending sealed %d (err %v), want 0", sealed, err)
	}
}

// tamper runs statements as the superuser with the ledger's triggers off,
// the way an operator with database access could rewrite history.
func tamper(t *testing.T, pool *pgxpool.Pool, statements ...string) {
	t.Helper()
	ctx := testContext(t)
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	if _, err := tx.Exec(ctx, `SET LOCAL session_replication_role = replica`); err != nil {
		t.Fatal(err)
	}
	for _, sql := range statements {
		if _, err := tx.Exec(ctx, sql); err != nil {
			t.Fatalf("tamper with %q: %v", sql, err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestChainVerifyNamesTamperedTransaction(t *testing.T) {
	cases := []struct {
		name string
		// target is the index of the transaction to alter, in seal order.
		target     int
		statements func(id string) []string
		problem    string
	}{
		{"entry amount changed", 5, func(id string) []string {
			return []string{`UPDATE ledger_entries SET amount = amount * 2 WHERE transaction_id = '` + id + `'`}
		}, "differ from what was sealed"},
		{"reason changed", 2, func(id string) []string {
			return []string{`UPDATE ledger_transactions SET reason = 'edited' WHERE id = '` + id + `'`}
		}, "differ from what was sealed"},
		{"entry deleted", 6, func(id string) []string {
			return []string{`DELETE FROM ledger_entries WHERE id = (SELECT max(id) FROM ledger_entries WHERE transaction_id = '` + id + `')`}
		}, "differ from what was sealed"},
		{"entry added", 3, func(id string) []string {
			return []string{`INSERT INTO ledger_entries (transaction_id, account_id, currency, amount, pending, effective_at)
				SELECT transaction_id, account_id, currency, 1, pending, effective_at FROM ledger_entries
				 WHERE transaction_id = '` + id + `' LIMIT 1`}
		}, "differ from what was sealed"},
		{"transaction deleted", 1, func(id string) []string {
			return []string{`DELETE FROM ledger_entries WHERE transaction_id = '` + id + `'`,
				`DELETE FROM ledger_transactions WHERE id = '` + id + `'`}
		}, "no longer exists"},
		{"seal deleted", 4, func(id string) []string {
			return []string{`DELETE FROM ledger_seals WHERE transaction_id = '` + id + `'`}
		}, "a seal is missing"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			pool, ids := sealedLedger(t)
			tamper(t, pool, tc.statements(ids[tc.target])...)

			report, err := NewChain(pool).Verify(testContext(t))
			if err != nil {
				t.Fatal(err)
			}
			if report.OK() || report.Broken == nil {
				t.Fatalf("Verify = %+v, want a broken chain", report)
			}
			wantID, wantSeq := ids[tc.target], int64(tc.target+1)
			if tc.name == "seal deleted" {
				// The gap shows at the seal after the deleted one.
				wantID, wantSeq = ids[tc.target+1], int64(tc.target+2)
			}
			if report.Broken.TransactionID != wantID || report.Broken.Sequence != wantSeq {
				t.Errorf("first broken link = %+v, want sequence %d, transaction %s", report.Broken, wantSeq, wantID)
			}
			if report.Checked != int64(tc.target) {
				t.Errorf("Checked = %d, want the %d seals before the tampered one", report.Checked, tc.target)
			}
			if !strings.Contains(report.Broken.Problem, tc.problem) {
				t.Errorf("problem %q does not mention %q", report.Broken.Problem, tc.problem)
			}
		})
	}
}

func TestChainVerifyReportsUnqueuedTransaction(t *testing.T) {
	pool, _ := sealedLedger(t)
	id := uniqueID("ltx_")
	// With triggers off, neither the balance check nor the sealing queue
	// sees this transaction.
	tamper(t, pool,
		`INSERT INTO ledger_transactions (id, kind, actor, effective_at) VALUES ('`+id+`', 'settlement', 'intruder', now())`,
		`INSERT INTO ledger_entries (transaction_id, account_id, currency, amount, pending, effective_at)
		 VALUES ('`+id+`', 'platform_cash', 'usd', 500, false, now())`)

	report, err := NewChain(pool).Verify(testContext(t))
	if err != nil {
		t.Fatal(err)
	}
	if report.OK() || report.Unqueued != 1 || report.Broken != nil {
		t.Errorf("Verify = %+v, want an intact chain with 1 unqueued transaction and OK false", report)
	}
}

func TestSealsRejectForksAndChanges(t *testing.T) {
	pool, ids := sealedLedger(t)
	ctx := testContext(t)
	head, err := NewChain(pool).Head(ctx)
	if err != nil {
		t.Fatal(err)
	}
	other := paymentPostings(t)[0]
	if err := appendLedger(t, NewStore(pool, nil), other); err != nil {
		t.Fatal(err)
	}

	inserts := map[string][]any{
		"wrong previous hash": {head.Sequence + 1, other.ID, zeroHash, zeroHash},
		"skipped sequence":    {head.Sequence + 2, other.ID, head.Hash, zeroHash},
		"reused sequence":     {head.Sequence, other.ID, head.Hash, zeroHash},
	}
	for name, args := range inserts {
		_, err := pool.Exec(ctx, `INSERT INTO ledger_seals (sequence, transaction_id, prev_hash, hash) VALUES ($1, $2, $3, $4)`, args...)
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || (pgErr.Code != "23514" && pgErr.Code != "23505") {
			t.Errorf("%s: insert returned %v, want a check or unique violation", name, err)
		}
	}

	for name, sql := range map[string]string{
		"update": `UPDATE ledger_seals SET hash = prev_hash WHERE transaction_id = $1`,
		"delete": `DELETE FROM ledger_seals WHERE transaction_id = $1`,
	} {
		_, err := pool.Exec(ctx, sql, ids[0])
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "42501" {
			t.Errorf("%s of a seal returned %v, want insufficient_privilege", name, err)
		}
	}
}

// TestAppRoleCannotRewriteLedger runs the store, the sealer and the reader
// as taskpod_billing_app and checks that the role may append but never
// change or delete ledger rows.
func TestAppRoleCannotRewriteLedger(t *testing.T) {
	migratedPool(t)
	ctx := testContext(t)
	cfg, err := pgxpool.ParseConfig(pgtest.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	cfg.AfterConnect = func(ctx context.Context, conn *pgx.Conn) error {
		_, err := conn.Exec(ctx, `SET ROLE taskpod_billing_app`)
		return err
	}
	appPool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer appPool.Close()

	postings := paymentPostings(t)
	if err := appendLedger(t, NewStore(appPool, nil), postings...); err != nil {
		t.Fatalf("the app role could not append: %v", err)
	}
	if _, err := sealPending(ctx, appPool, 100); err != nil {
		t.Fatalf("the app role could not seal: %v", err)
	}
	if _, err := NewLedgerReader(appPool).Account(ctx, domain.AccountPlatformCash, time.Time{}); err != nil {
		t.Fatalf("the app role could not read balances: %v", err)
	}

	for _, sql := range []string{
		`UPDATE ledger_entries SET amount = amount WHERE transaction_id = $1`,
		`DELETE FROM ledger_entries WHERE transaction_id = $1`,
		`UPDATE ledger_transactions SET reason = 'x' WHERE id = $1`,
		`DELETE FROM ledger_transactions WHERE id = $1`,
		`DELETE FROM ledger_seals WHERE transaction_id = $1`,
		`UPDATE audit_log SET actor = 'x' WHERE subject = $1`,
	} {
		_, err := appPool.Exec(ctx, sql, postings[0].ID)
		if err == nil || !strings.Contains(err.Error(), "permission denied for table") {
			t.Errorf("%s as the app role returned %v, want permission denied", sql, err)
		}
	}
	if _, err := appPool.Exec(ctx, `TRUNCATE ledger_entries`); err == nil || !strings.Contains(err.Error(), "permission denied") {
		t.Errorf("TRUNCATE as the app role returned %v, want permission denied", err)
	}
}

// TestConcurrentSealersKeepOneChain seals while writers commit, with two
// background sealers and readers sealing on demand, and checks that every
// transaction got exactly one position in one gap-free chain.
func TestConcurrentSealersKeepOneChain(t *testing.T) {
	ctx := testContext(t)
	pool, _ := freshPool(t)
	if _, err := Migrate(ctx, pool, migrations.FS); err != nil {
		t.Fatal(err)
	}
	store := NewStore(pool, nil)
	sealCtx, stopSealers := context.WithCancel(ctx)
	var sealers sync.WaitGroup
	for range 2 {
		sealers.Add(1)
		go func() {
			defer sealers.Done()
			_ = NewSealer(pool, 5*time.Millisecond, nil, discardLogger()).Run(sealCtx)
		}()
	}

	const writers, payments = 4, 10
	var wg sync.WaitGroup
	errs := make(chan error, writers*payments+writers)
	for range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range payments {
				for _, tx := range paymentPostings(t) {
					if err := appendLedger(t, store, tx); err != nil {
						errs <- err
						return
					}
				}
			}
			if _, err := NewChain(pool).SealPending(ctx); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	stopSealers()
	sealers.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}

	if _, err := NewChain(pool).SealPending(ctx); err != nil {
		t.Fatal(err)
	}
	report, err := NewChain(pool).Verify(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := int64(writers * payments * 4)
	if !report.OK() || report.Checked != want || report.Head.Sequence != want || report.Unsealed != 0 {
		t.Errorf("Verify = %+v, want %d seals and nothing unsealed", report, want)
	}
}

type recordingObserver struct {
	unsealed int64
	oldest   time.Duration
	calls    int
}

func (o *recordingObserver) ObserveSealerLag(unsealed int64, oldest time.Duration) {
	o.unsealed, o.oldest, o.calls = unsealed, oldest, o.calls+1
}

func TestSealerReportsLag(t *testing.T) {
	ctx := testContext(t)
	pool, _ := freshPool(t)
	if _, err := Migrate(ctx, pool, migrations.FS); err != nil {
		t.Fatal(err)
	}
	if err := appendLedger(t, NewStore(pool, nil), paymentPostings(t)...); err != nil {
		t.Fatal(err)
	}
	observer := &recordingObserver{}
	sealer := NewSealer(pool, 0, observer, discardLogger())

	unsealed, oldest, err := sealer.lag(ctx)
	if err != nil || unsealed != 4 || oldest <= 0 {
		t.Errorf("lag before sealing = %d, %v (err %v), want 4 transactions of positive age", unsealed, oldest, err)
	}
	if err := sealer.pass(ctx); err != nil {
		t.Fatal(err)
	}
	if observer.calls != 1 || observer.unsealed != 0 || observer.oldest != 0 {
		t.Errorf("observer after a pass = %+v, want one call reporting no lag", observer)
	}
}
