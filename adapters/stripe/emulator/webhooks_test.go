package emulator_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/stripe/stripe-go/v76"
	"github.com/stripe/stripe-go/v76/webhook"

	"github.com/taskpod/billing/adapters/stripe/emulator"
)

const webhookSecret = "whsec_test_emulator"

// receiver is a webhook endpoint that verifies signatures with stripe-go
// and records the events in arrival order.
type receiver struct {
	mu       sync.Mutex
	events   []stripe.Event
	failNext int // responds with 500 to this many more deliveries
	badSigs  int
}

func (rc *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if rc.failNext > 0 {
		rc.failNext--
		w.WriteHeader(http.StatusInternalServerError)
		return
	}
	ev, err := webhook.ConstructEvent(body, r.Header.Get("Stripe-Signature"), webhookSecret)
	if err != nil {
		rc.badSigs++
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	rc.events = append(rc.events, ev)
}

func (rc *receiver) types() []string {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	out := make([]string, len(rc.events))
	for i, ev := range rc.events {
		out[i] = string(ev.Type)
	}
	return out
}

// waitFor polls until cond holds or 10 seconds pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func newWebhookHarness(t *testing.T) (*harness, *receiver) {
	t.Helper()
	rc := &receiver{}
	endpoint := httptest.NewServer(rc)
	t.Cleanup(endpoint.Close)
	h := newHarness(t, emulator.Config{WebhookURL: endpoint.URL, WebhookSecret: webhookSecret})
	h.em.Start(context.Background())
	t.Cleanup(h.em.Close)
	return h, rc
}

func TestWebhooksForPaymentFlow(t *testing.T) {
	h, rc := newWebhookHarness(t)
	cus := h.customer()
	pi := h.mustAuthorize(cus, 5000) // setup_intent.succeeded, payment_intent.amount_capturable_updated
	params := &stripe.PaymentIntentCaptureParams{}
	params.SetIdempotencyKey("capture-webhook")
	if _, err := h.sc.PaymentIntents.Capture(pi.ID, params); err != nil {
		t.Fatal(err)
	}
	want := []string{"setup_intent.succeeded", "payment_intent.amount_capturable_updated", "payment_intent.succeeded"}
	waitFor(t, "three events", func() bool { return len(rc.types()) >= 3 })
	got := rc.types()
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("event %d = %s, want %s (all: %v)", i, got[i], want[i], got)
		}
	}

	rc.mu.Lock()
	last := rc.events[2]
	rc.mu.Unlock()
	if last.APIVersion != "2023-10-16" || last.Request == nil || last.Request.IdempotencyKey != "capture-webhook" {
		t.Errorf("event api_version %s request %+v", last.APIVersion, last.Request)
	}
	var captured stripe.PaymentIntent
	if err := captured.UnmarshalJSON(last.Data.Raw); err != nil {
		t.Fatal(err)
	}
	if captured.ID != pi.ID || captured.Status != stripe.PaymentIntentStatusSucceeded || captured.AmountReceived != 5000 {
		t.Errorf("data.object = %s %s %d, want %s succeeded 5000", captured.ID, captured.Status, captured.AmountReceived, pi.ID)
	}
	if rc.badSigs != 0 {
		t.Errorf("%d deliveries had a bad signature", rc.badSigs)
	}
}

func TestWebhookDeclineAndCancelEvents(t *testing.T) {
	h, rc := newWebhookHarness(t)
	cus := h.customer()
	if _, err := h.authorize(cus, h.savedCard(cus, "pm_card_chargeCustomerFail"), 1000); err == nil {
		t.Fatal("charge of pm_card_chargeCustomerFail succeeded")
	}
	pi := h.mustAuthorize(cus, 1000)
	if _, err := h.sc.PaymentIntents.Cancel(pi.ID, nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "payment_intent.canceled", func() bool {
		for _, typ := range rc.types() {
			if typ == "payment_intent.canceled" {
				return true
			}
		}
		return false
	})
	seen := map[string]int{}
	for _, typ := range rc.types() {
		seen[typ]++
	}
	if seen["payment_intent.payment_failed"] != 1 || seen["setup_intent.succeeded"] != 2 || seen["payment_intent.canceled"] != 1 {
		t.Errorf("events = %v", seen)
	}
}

func TestWebhookRetriesFailedDelivery(t *testing.T) {
	h, rc := newWebhookHarness(t)
	rc.mu.Lock()
	rc.failNext = 2
	rc.mu.Unlock()
	cus := h.customer()
	h.savedCard(cus, "pm_card_visa")
	// The first two attempts fail; the retries wait 1 s and then 2 s.
	waitFor(t, "delivery after two failures", func() bool { return len(rc.types()) == 1 })

	var listed struct {
		Data []struct {
			Type      string `json:"type"`
			Delivered bool   `json:"delivered"`
			Attempts  int    `json:"attempts"`
		} `json:"data"`
	}
	// The worker records the delivery after the endpoint has responded.
	waitFor(t, "the delivery to be recorded", func() bool {
		h.control("GET", "/_emulator/events", nil, &listed)
		return len(listed.Data) == 1 && listed.Data[0].Delivered
	})
	if len(listed.Data) != 1 || !listed.Data[0].Delivered || listed.Data[0].Attempts != 3 {
		t.Errorf("stored events = %+v, want one delivered on attempt 3", listed.Data)
	}
}

func TestWebhookPauseFlushAndModes(t *testing.T) {
	h, rc := newWebhookHarness(t)
	h.control("POST", "/_emulator/webhooks/pause", nil, nil)
	cus := h.customer()
	pmID := h.savedCard(cus, "pm_card_visa")
	if _, err := h.sc.PaymentMethods.Detach(pmID, nil); err != nil {
		t.Fatal(err)
	}
	time.Sleep(400 * time.Millisecond)
	if got := rc.types(); len(got) != 0 {
		t.Fatalf("paused worker delivered %v", got)
	}

	h.control("POST", "/_emulator/webhooks/mode", map[string]any{"duplicate": true, "reverse": true}, nil)
	var flushed struct {
		Delivered int `json:"delivered"`
		Failed    int `json:"failed"`
	}
	h.control("POST", "/_emulator/webhooks/flush", nil, &flushed)
	if flushed.Delivered != 2 || flushed.Failed != 0 {
		t.Errorf("flush = %+v, want 2 delivered", flushed)
	}
	want := []string{"payment_method.detached", "payment_method.detached", "setup_intent.succeeded", "setup_intent.succeeded"}
	got := rc.types()
	if len(got) != len(want) {
		t.Fatalf("deliveries = %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("delivery %d = %s, want %s", i, got[i], want[i])
		}
	}

	h.control("POST", "/_emulator/webhooks/mode", map[string]any{}, nil)
	h.control("POST", "/_emulator/webhooks/resume", nil, nil)
	h.customer()
	h.savedCard(h.customer(), "pm_card_visa")
	waitFor(t, "delivery after resume", func() bool { return len(rc.types()) == 5 })
}

func TestDisputeAndRefundEvents(t *testing.T) {
	h, rc := newWebhookHarness(t)
	pi := h.capturedCharge(3000)
	if _, err := h.sc.Refunds.New(&stripe.RefundParams{PaymentIntent: stripe.String(pi.ID), Amount: stripe.Int64(1000)}); err != nil {
		t.Fatal(err)
	}
	var dp stripe.Dispute
	h.control("POST", "/_emulator/disputes", map[string]any{"charge": pi.LatestCharge.ID, "amount": 2000}, &dp)
	h.control("POST", "/_emulator/disputes/"+dp.ID+"/close", map[string]string{"status": "lost"}, nil)
	tr, err := h.sc.Transfers.New(&stripe.TransferParams{
		Amount: stripe.Int64(500), Currency: stripe.String("usd"), Destination: stripe.String("acct_w"),
		SourceTransaction: stripe.String(pi.LatestCharge.ID),
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.sc.TransferReversals.New(&stripe.TransferReversalParams{ID: stripe.String(tr.ID)}); err != nil {
		t.Fatal(err)
	}
	for _, typ := range []string{"charge.refunded", "charge.dispute.created", "charge.dispute.closed", "transfer.reversed"} {
		waitFor(t, typ, func() bool {
			for _, got := range rc.types() {
				if got == typ {
					return true
				}
			}
			return false
		})
	}
}
