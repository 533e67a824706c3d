package emulator_test

import (
	"errors"
	"net/http"
	"sync"
	"testing"

	"github.com/stripe/stripe-go/v76"

	"github.com/taskpod/billing/adapters/stripe/emulator"
)

func TestConcurrentTransfersStayWithinCharge(t *testing.T) {
	h := newHarness(t, emulator.Config{})
	pi := h.capturedCharge(10000)

	const workers = 10
	var wg sync.WaitGroup
	errs := make([]error, workers)
	for i := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = h.sc.Transfers.New(&stripe.TransferParams{
				Amount: stripe.Int64(2000), Currency: stripe.String("usd"), Destination: stripe.String("acct_worker"),
				SourceTransaction: stripe.String(pi.LatestCharge.ID),
			})
		}()
	}
	wg.Wait()

	succeeded := 0
	for i, err := range errs {
		if err == nil {
			succeeded++
			continue
		}
		var se *stripe.Error
		if !errors.As(err, &se) || se.HTTPStatusCode != http.StatusBadRequest {
			t.Errorf("transfer %d: %v, want success or a 400", i, err)
		}
	}
	if succeeded != 5 {
		t.Errorf("%d transfers of 2000 succeeded from a 10000 charge, want 5", succeeded)
	}
	var total float64
	for _, tr := range h.objects("type=transfer&source_transaction=" + pi.LatestCharge.ID) {
		total += tr["amount"].(float64)
	}
	if total != 10000 {
		t.Errorf("stored transfers sum to %v, want 10000", total)
	}
}

func TestConcurrentSameKeyCreatesOnce(t *testing.T) {
	h := newHarness(t, emulator.Config{})
	cus := h.customer()

	const workers = 8
	var wg sync.WaitGroup
	ids := make([]string, workers)
	errs := make([]error, workers)
	for i := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := &stripe.PaymentIntentParams{Amount: stripe.Int64(700), Currency: stripe.String("usd"), Customer: stripe.String(cus.ID)}
			p.SetIdempotencyKey("same-key")
			pi, err := h.sc.PaymentIntents.New(p)
			errs[i] = err
			if err == nil {
				ids[i] = pi.ID
			}
		}()
	}
	wg.Wait()

	first := ""
	for i := range workers {
		if errs[i] != nil {
			var se *stripe.Error
			if !errors.As(errs[i], &se) || se.HTTPStatusCode != http.StatusConflict || se.Code != "idempotency_key_in_use" {
				t.Errorf("request %d: %v, want success or 409 idempotency_key_in_use", i, errs[i])
			}
			continue
		}
		if first == "" {
			first = ids[i]
		}
		if ids[i] != first {
			t.Errorf("request %d created %s, another got %s", i, ids[i], first)
		}
	}
	if got := len(h.objects("type=payment_intent&customer=" + cus.ID)); got != 1 {
		t.Errorf("stored payment intents = %d, want 1", got)
	}
}
