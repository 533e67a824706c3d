package emulator_test

import (
	"net/http"
	"testing"

	"github.com/stripe/stripe-go/v76"

	"github.com/taskpod/billing/adapters/stripe/emulator"
)

// capturedCharge authorizes and captures amount and returns the PaymentIntent
// with its charge expanded.
func (h *harness) capturedCharge(amount int64) *stripe.PaymentIntent {
	h.t.Helper()
	cus := h.customer()
	pi := h.mustAuthorize(cus, amount)
	params := &stripe.PaymentIntentCaptureParams{}
	params.AddExpand("latest_charge")
	pi, err := h.sc.PaymentIntents.Capture(pi.ID, params)
	if err != nil {
		h.t.Fatalf("capture: %v", err)
	}
	return pi
}

func TestRefundPartialThenRest(t *testing.T) {
	h := newHarness(t, emulator.Config{})
	pi := h.capturedCharge(5000)

	params := &stripe.RefundParams{PaymentIntent: stripe.String(pi.ID), Amount: stripe.Int64(2000), Reason: stripe.String("requested_by_customer")}
	params.AddMetadata("refund_id", "rf_1")
	re, err := h.sc.Refunds.New(params)
	if err != nil {
		t.Fatal(err)
	}
	if re.Amount != 2000 || re.Status != stripe.RefundStatusSucceeded || re.Charge.ID != pi.LatestCharge.ID ||
		re.PaymentIntent.ID != pi.ID || re.Reason != "requested_by_customer" || re.Metadata["refund_id"] != "rf_1" {
		t.Errorf("refund = %+v", re)
	}
	got, err := h.sc.Refunds.Get(re.ID, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got.Amount != 2000 {
		t.Errorf("retrieved refund amount = %d, want 2000", got.Amount)
	}
	txn, err := h.sc.BalanceTransactions.Get(re.BalanceTransaction.ID, nil)
	if err != nil {
		t.Fatal(err)
	}
	if txn.Amount != -2000 || txn.Type != stripe.BalanceTransactionTypeRefund {
		t.Errorf("refund balance transaction amount %d type %s, want -2000 refund", txn.Amount, txn.Type)
	}
	ch, err := h.sc.Charges.Get(pi.LatestCharge.ID, nil)
	if err != nil {
		t.Fatal(err)
	}
	if ch.AmountRefunded != 2000 || ch.Refunded {
		t.Errorf("charge amount_refunded %d refunded %v, want 2000 false", ch.AmountRefunded, ch.Refunded)
	}

	_, err = h.sc.Refunds.New(&stripe.RefundParams{Charge: stripe.String(ch.ID), Amount: stripe.Int64(3001)})
	if se := stripeError(t, err); se.HTTPStatusCode != 400 || se.Param != "amount" {
		t.Errorf("over-refund: %d param %s, want 400 param amount", se.HTTPStatusCode, se.Param)
	}

	rest, err := h.sc.Refunds.New(&stripe.RefundParams{Charge: stripe.String(ch.ID)})
	if err != nil {
		t.Fatal(err)
	}
	if rest.Amount != 3000 {
		t.Errorf("refund of the rest = %d, want 3000", rest.Amount)
	}
	ch, err = h.sc.Charges.Get(ch.ID, nil)
	if err != nil {
		t.Fatal(err)
	}
	if ch.AmountRefunded != 5000 || !ch.Refunded {
		t.Errorf("charge amount_refunded %d refunded %v, want 5000 true", ch.AmountRefunded, ch.Refunded)
	}
	_, err = h.sc.Refunds.New(&stripe.RefundParams{Charge: stripe.String(ch.ID)})
	if se := stripeError(t, err); se.Code != stripe.ErrorCodeChargeAlreadyRefunded {
		t.Errorf("refund of a refunded charge: %s, want charge_already_refunded", se.Code)
	}
}

func TestRefundAfterPartialCapture(t *testing.T) {
	h := newHarness(t, emulator.Config{})
	cus := h.customer()
	pi := h.mustAuthorize(cus, 10000)
	if _, err := h.sc.PaymentIntents.Capture(pi.ID, &stripe.PaymentIntentCaptureParams{AmountToCapture: stripe.Int64(7000)}); err != nil {
		t.Fatal(err)
	}
	_, err := h.sc.Refunds.New(&stripe.RefundParams{PaymentIntent: stripe.String(pi.ID), Amount: stripe.Int64(7001)})
	if se := stripeError(t, err); se.HTTPStatusCode != 400 {
		t.Errorf("refund above the captured amount: status %d, want 400", se.HTTPStatusCode)
	}
	re, err := h.sc.Refunds.New(&stripe.RefundParams{PaymentIntent: stripe.String(pi.ID)})
	if err != nil {
		t.Fatal(err)
	}
	if re.Amount != 7000 {
		t.Errorf("default refund amount = %d, want the captured 7000", re.Amount)
	}
}

func TestRefundOfUncapturedRejected(t *testing.T) {
	h := newHarness(t, emulator.Config{})
	cus := h.customer()
	pi := h.mustAuthorize(cus, 1000)
	_, err := h.sc.Refunds.New(&stripe.RefundParams{Charge: stripe.String(pi.LatestCharge.ID)})
	if se := stripeError(t, err); se.HTTPStatusCode != 400 || se.Param != "charge" {
		t.Errorf("refund of uncaptured charge: %d param %s, want 400 param charge", se.HTTPStatusCode, se.Param)
	}
}

func TestTransferReversal(t *testing.T) {
	h := newHarness(t, emulator.Config{})
	pi := h.capturedCharge(10000)
	tr, err := h.sc.Transfers.New(&stripe.TransferParams{
		Amount: stripe.Int64(8000), Currency: stripe.String("usd"), Destination: stripe.String("acct_worker"),
		SourceTransaction: stripe.String(pi.LatestCharge.ID),
	})
	if err != nil {
		t.Fatal(err)
	}

	rev, err := h.sc.TransferReversals.New(&stripe.TransferReversalParams{ID: stripe.String(tr.ID), Amount: stripe.Int64(3000)})
	if err != nil {
		t.Fatal(err)
	}
	if rev.Amount != 3000 || rev.Transfer.ID != tr.ID || rev.Object != "transfer_reversal" {
		t.Errorf("reversal = %+v", rev)
	}
	tr, err = h.sc.Transfers.Get(tr.ID, nil)
	if err != nil {
		t.Fatal(err)
	}
	if tr.AmountReversed != 3000 || tr.Reversed || tr.Reversals.TotalCount != 1 || len(tr.Reversals.Data) != 1 {
		t.Errorf("transfer amount_reversed %d reversed %v reversals %+v", tr.AmountReversed, tr.Reversed, tr.Reversals)
	}

	_, err = h.sc.TransferReversals.New(&stripe.TransferReversalParams{ID: stripe.String(tr.ID), Amount: stripe.Int64(5001)})
	if se := stripeError(t, err); se.HTTPStatusCode != 400 || se.Param != "amount" {
		t.Errorf("over-reversal: %d param %s, want 400 param amount", se.HTTPStatusCode, se.Param)
	}

	h.control("POST", "/_emulator/connected-accounts/acct_worker/insufficient-funds", map[string]bool{"enabled": true}, nil)
	_, err = h.sc.TransferReversals.New(&stripe.TransferReversalParams{ID: stripe.String(tr.ID)})
	if se := stripeError(t, err); se.HTTPStatusCode != 400 || se.Code != "insufficient_funds" {
		t.Errorf("reversal from a short account: %d %s, want 400 insufficient_funds", se.HTTPStatusCode, se.Code)
	}

	h.control("POST", "/_emulator/connected-accounts/acct_worker/insufficient-funds", map[string]bool{"enabled": false}, nil)
	rest, err := h.sc.TransferReversals.New(&stripe.TransferReversalParams{ID: stripe.String(tr.ID)})
	if err != nil {
		t.Fatal(err)
	}
	if rest.Amount != 5000 {
		t.Errorf("reversal of the rest = %d, want 5000", rest.Amount)
	}
	tr, err = h.sc.Transfers.Get(tr.ID, nil)
	if err != nil {
		t.Fatal(err)
	}
	if tr.AmountReversed != 8000 || !tr.Reversed {
		t.Errorf("transfer amount_reversed %d reversed %v, want 8000 true", tr.AmountReversed, tr.Reversed)
	}

	iter := h.sc.TransferReversals.List(&stripe.TransferReversalListParams{ID: stripe.String(tr.ID)})
	var total int64
	for iter.Next() {
		total += iter.TransferReversal().Amount
	}
	if err := iter.Err(); err != nil {
		t.Fatal(err)
	}
	if total != 8000 {
		t.Errorf("listed reversals sum to %d, want 8000", total)
	}
}

func TestDisputeLifecycle(t *testing.T) {
	h := newHarness(t, emulator.Config{})
	pi := h.capturedCharge(4000)

	var dp stripe.Dispute
	h.control("POST", "/_emulator/disputes", map[string]any{"charge": pi.LatestCharge.ID, "amount": 4000}, &dp)
	if dp.Status != stripe.DisputeStatusNeedsResponse || dp.Amount != 4000 || dp.Charge.ID != pi.LatestCharge.ID {
		t.Errorf("dispute = %+v", dp)
	}
	if len(dp.BalanceTransactions) != 1 || dp.BalanceTransactions[0].Amount != -4000 || dp.BalanceTransactions[0].Fee != 1500 {
		t.Errorf("dispute balance transactions = %+v, want one withdrawal of 4000 with a 1500 fee", dp.BalanceTransactions)
	}
	ch, err := h.sc.Charges.Get(pi.LatestCharge.ID, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !ch.Disputed {
		t.Error("charge is not marked disputed")
	}
	_, err = h.sc.Refunds.New(&stripe.RefundParams{Charge: stripe.String(ch.ID)})
	if se := stripeError(t, err); se.Code != stripe.ErrorCodeChargeDisputed {
		t.Errorf("refund of a disputed charge: %s, want charge_disputed", se.Code)
	}

	var closed stripe.Dispute
	h.control("POST", "/_emulator/disputes/"+dp.ID+"/close", map[string]string{"status": "won"}, &closed)
	if closed.Status != stripe.DisputeStatusWon || len(closed.BalanceTransactions) != 2 || closed.BalanceTransactions[1].Amount != 4000 {
		t.Errorf("closed dispute = status %s balance transactions %+v", closed.Status, closed.BalanceTransactions)
	}

	req, err := http.NewRequest("POST", h.srv.URL+"/_emulator/disputes/"+dp.ID+"/close", stringsReader(`{"status":"lost"}`))
	if err != nil {
		t.Fatal(err)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusBadRequest {
		t.Errorf("closing a closed dispute: status %d, want 400", res.StatusCode)
	}
}
