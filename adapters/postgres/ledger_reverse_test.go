package postgres

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/taskpod/billing/application"
	"github.com/taskpod/billing/domain"
	"github.com/taskpod/billing/migrations"
	"github.com/taskpod/billing/ports"
)

// A capture whose share was already transferred cannot be reversed while
// another payment of the same agent keeps the pooled payable positive:
// its transfer and settlement must be reversed first.
func TestReverseCaptureAfterOwnTransfer(t *testing.T) {
	ctx := testContext(t)
	pool, _ := freshPool(t)
	if _, err := Migrate(ctx, pool, migrations.FS); err != nil {
		t.Fatal(err)
	}
	store := NewStore(pool, nil)
	clock := &stepClock{now: time.Now().UTC().Truncate(time.Second).Add(-time.Hour)}
	ledger := application.NewLedger(store, NewLedgerReader(pool), clock, randomIDs{}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	agent := uniqueID("agt_")

	post := func(amount int64, transfer bool) (capture, settlement, transferTx domain.LedgerTransaction) {
		t.Helper()
		clock.now = clock.now.Add(time.Second)
		r := domain.PaymentRecord{ID: uniqueID("pay_"), TaskID: uniqueID("task_"), AgentID: agent,
			Amount: domain.MustMoney(amount, "usd"), FeeRate: 250, CapturedAmount: amount}
		fee, share, err := domain.PlatformFee(domain.MustMoney(amount, "usd"), 250)
		if err != nil {
			t.Fatal(err)
		}
		r.PlatformFee, r.AgentShare, r.StripeFee = fee.Amount(), share.Amount(), 30
		meta := domain.LedgerMeta{Actor: "test", TaskID: r.TaskID, PaymentID: r.ID, EffectiveAt: clock.now}

		hold, err := domain.HoldPosting(uniqueID("ltx_"), r, meta)
		if err != nil {
			t.Fatal(err)
		}
		capture, err = domain.CapturePosting(uniqueID("ltx_"), hold.ID, r, meta)
		if err != nil {
			t.Fatal(err)
		}
		settlement, err = domain.SettlementPosting(uniqueID("ltx_"), r, meta)
		if err != nil {
			t.Fatal(err)
		}
		txs := []domain.LedgerTransaction{hold, capture, settlement}
		if transfer {
			if transferTx, err = domain.TransferPosting(uniqueID("ltx_"), r, meta); err != nil {
				t.Fatal(err)
			}
			txs = append(txs, transferTx)
		}
		err = store.InTx(ctx, func(ctx context.Context, tx ports.Tx) error {
			for _, x := range txs {
				if err := tx.Ledger().Append(ctx, x); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return capture, settlement, transferTx
	}

	post(5000, false) // keeps the agent's pooled payable at 4875
	_, _, _ = post(1000, true)
	captureB, settlementB, transferB := post(1000, true)
	admin := application.Actor{Role: application.RoleAdmin, Subject: "ops", TokenID: "tok_test"}

	_, err := ledger.Reverse(ctx, admin, captureB.ID, "correction")
	if !errors.Is(err, domain.ErrOverdraft) {
		t.Fatalf("reversing a capture after its own transfer returned %v, want ErrOverdraft", err)
	}

	for _, later := range []domain.LedgerTransaction{transferB, settlementB} {
		if _, err := ledger.Reverse(ctx, admin, later.ID, "correction"); err != nil {
			t.Fatalf("reversing the %s: %v", later.Kind, err)
		}
	}
	got, err := ledger.Reverse(ctx, admin, captureB.ID, "correction")
	if err != nil {
		t.Fatalf("reversing the capture after its transfer: %v", err)
	}
	if !got.Created {
		t.Error("the capture's reversal was not created")
	}
}
