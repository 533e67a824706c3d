package emulator_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stripe/stripe-go/v76"
	"github.com/stripe/stripe-go/v76/client"

	"github.com/taskpod/billing/adapters/postgres/pgtest"
	"github.com/taskpod/billing/adapters/stripe/emulator"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// harness is one emulator behind an httptest server with a stripe-go client.
// Tests share the package database and run one after another, because each
// starts with POST /_emulator/reset.
type harness struct {
	t   *testing.T
	em  *emulator.Emulator
	srv *httptest.Server
	sc  *client.API
}

func newHarness(t *testing.T, cfg emulator.Config) *harness {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	em, err := emulator.New(context.Background(), pgtest.Pool(t), cfg)
	if err != nil {
		t.Fatalf("emulator.New: %v", err)
	}
	srv := httptest.NewServer(em.Handler())
	t.Cleanup(srv.Close)
	h := &harness{t: t, em: em, srv: srv}
	h.sc = h.client("sk_test_emulator")
	h.control("POST", "/_emulator/reset", nil, nil)
	return h
}

func (h *harness) client(key string) *client.API {
	backend := stripe.GetBackendWithConfig(stripe.APIBackend, &stripe.BackendConfig{
		URL:               stripe.String(h.srv.URL),
		MaxNetworkRetries: stripe.Int64(0),
		LeveledLogger:     &stripe.LeveledLogger{Level: stripe.LevelNull},
	})
	return client.New(key, &stripe.Backends{API: backend, Connect: backend, Uploads: backend})
}

// control calls the control API and decodes its JSON response into out.
func (h *harness) control(method, path string, body, out any) {
	h.t.Helper()
	var reader io.Reader
	if body != nil {
		raw, err := json.Marshal(body)
		if err != nil {
			h.t.Fatal(err)
		}
		reader = bytes.NewReader(raw)
	}
	req, err := http.NewRequest(method, h.srv.URL+path, reader)
	if err != nil {
		h.t.Fatal(err)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		h.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusOK {
		h.t.Fatalf("%s %s: status %d: %s", method, path, res.StatusCode, raw)
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			h.t.Fatalf("decode %s %s: %v: %s", method, path, err, raw)
		}
	}
}

type requestCount struct {
	Requests  int64 `json:"requests"`
	Mutations int64 `json:"mutations"`
	Replays   int64 `json:"replays"`
}

func (h *harness) count(method, path string) requestCount {
	h.t.Helper()
	var out requestCount
	h.control("GET", "/_emulator/requests/count?method="+method+"&path="+path, nil, &out)
	return out
}

func (h *harness) objects(query string) []map[string]any {
	h.t.Helper()
	var out struct {
		Data []map[string]any `json:"data"`
	}
	h.control("GET", "/_emulator/objects?"+query, nil, &out)
	return out.Data
}

func (h *harness) now() int64 {
	h.t.Helper()
	var out struct {
		Now int64 `json:"now"`
	}
	h.control("GET", "/_emulator/clock", nil, &out)
	return out.Now
}

func (h *harness) customer() *stripe.Customer {
	h.t.Helper()
	cus, err := h.sc.Customers.New(&stripe.CustomerParams{
		Email:  stripe.String("ada@example.com"),
		Name:   stripe.String("Ada"),
		Params: stripe.Params{Metadata: map[string]string{"user_id": "u_1"}},
	})
	if err != nil {
		h.t.Fatalf("create customer: %v", err)
	}
	return cus
}

// savedCard saves a test card for cus through a confirmed SetupIntent and
// returns the attached PaymentMethod id.
func (h *harness) savedCard(cus *stripe.Customer, token string) string {
	h.t.Helper()
	si, err := h.sc.SetupIntents.New(&stripe.SetupIntentParams{
		Customer:           stripe.String(cus.ID),
		Usage:              stripe.String("off_session"),
		PaymentMethodTypes: stripe.StringSlice([]string{"card"}),
	})
	if err != nil {
		h.t.Fatalf("create setup intent: %v", err)
	}
	si, err = h.sc.SetupIntents.Confirm(si.ID, &stripe.SetupIntentConfirmParams{PaymentMethod: stripe.String(token)})
	if err != nil {
		h.t.Fatalf("confirm setup intent with %s: %v", token, err)
	}
	return si.PaymentMethod.ID
}

// authorize creates and confirms an off-session manual-capture PaymentIntent.
func (h *harness) authorize(cus *stripe.Customer, pm string, amount int64) (*stripe.PaymentIntent, error) {
	h.t.Helper()
	params := &stripe.PaymentIntentParams{
		Amount:             stripe.Int64(amount),
		Currency:           stripe.String("usd"),
		Customer:           stripe.String(cus.ID),
		PaymentMethod:      stripe.String(pm),
		CaptureMethod:      stripe.String("manual"),
		Confirm:            stripe.Bool(true),
		OffSession:         stripe.Bool(true),
		PaymentMethodTypes: stripe.StringSlice([]string{"card"}),
		TransferGroup:      stripe.String("task_1"),
	}
	params.AddMetadata("payment_id", "pay_1")
	params.AddExpand("latest_charge")
	return h.sc.PaymentIntents.New(params)
}

func (h *harness) mustAuthorize(cus *stripe.Customer, amount int64) *stripe.PaymentIntent {
	h.t.Helper()
	pi, err := h.authorize(cus, h.savedCard(cus, "pm_card_visa"), amount)
	if err != nil {
		h.t.Fatalf("authorize: %v", err)
	}
	return pi
}

func stripeError(t *testing.T, err error) *stripe.Error {
	t.Helper()
	var se *stripe.Error
	if !errors.As(err, &se) {
		t.Fatalf("got error %v (%T), want *stripe.Error", err, err)
	}
	return se
}

func TestSetupIntentSavesCard(t *testing.T) {
	h := newHarness(t, emulator.Config{})
	cus := h.customer()
	if cus.Email != "ada@example.com" || cus.Metadata["user_id"] != "u_1" || !strings.HasPrefix(cus.ID, "cus_") {
		t.Fatalf("customer = %+v", cus)
	}

	si, err := h.sc.SetupIntents.New(&stripe.SetupIntentParams{
		Customer:           stripe.String(cus.ID),
		Usage:              stripe.String("off_session"),
		PaymentMethodTypes: stripe.StringSlice([]string{"card"}),
		Params:             stripe.Params{Metadata: map[string]string{"purpose": "save"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if si.Status != stripe.SetupIntentStatusRequiresPaymentMethod {
		t.Errorf("status = %s, want requires_payment_method", si.Status)
	}
	if !strings.HasPrefix(si.ClientSecret, si.ID+"_secret_") {
		t.Errorf("client_secret = %q, want prefix %s_secret_", si.ClientSecret, si.ID)
	}

	si, err = h.sc.SetupIntents.Confirm(si.ID, &stripe.SetupIntentConfirmParams{PaymentMethod: stripe.String("pm_card_visa")})
	if err != nil {
		t.Fatal(err)
	}
	if si.Status != stripe.SetupIntentStatusSucceeded {
		t.Errorf("status = %s, want succeeded", si.Status)
	}
	if si.PaymentMethod == nil || !strings.HasPrefix(si.PaymentMethod.ID, "pm_") || si.PaymentMethod.ID == "pm_card_visa" {
		t.Fatalf("payment_method = %+v, want a new pm_ id", si.PaymentMethod)
	}

	pm, err := h.sc.PaymentMethods.Get(si.PaymentMethod.ID, nil)
	if err != nil {
		t.Fatal(err)
	}
	if pm.Customer == nil || pm.Customer.ID != cus.ID {
		t.Errorf("payment method customer = %+v, want %s", pm.Customer, cus.ID)
	}
	wantYear := int64(time.Now().UTC().Year() + 3)
	if pm.Card.Brand != "visa" || pm.Card.Last4 != "4242" || pm.Card.ExpMonth != 12 || pm.Card.ExpYear != wantYear ||
		pm.Card.Funding != "credit" || pm.Card.Country != "US" {
		t.Errorf("card = %+v", pm.Card)
	}

	iter := h.sc.Customers.ListPaymentMethods(&stripe.CustomerListPaymentMethodsParams{
		Customer: stripe.String(cus.ID), Type: stripe.String("card"),
	})
	var ids []string
	for iter.Next() {
		ids = append(ids, iter.PaymentMethod().ID)
	}
	if err := iter.Err(); err != nil {
		t.Fatal(err)
	}
	if len(ids) != 1 || ids[0] != pm.ID {
		t.Errorf("customer payment methods = %v, want [%s]", ids, pm.ID)
	}

	cus, err = h.sc.Customers.Update(cus.ID, &stripe.CustomerParams{
		InvoiceSettings: &stripe.CustomerInvoiceSettingsParams{DefaultPaymentMethod: stripe.String(pm.ID)},
	})
	if err != nil {
		t.Fatal(err)
	}
	if cus.InvoiceSettings.DefaultPaymentMethod == nil || cus.InvoiceSettings.DefaultPaymentMethod.ID != pm.ID {
		t.Errorf("default payment method = %+v, want %s", cus.InvoiceSettings.DefaultPaymentMethod, pm.ID)
	}

	pm, err = h.sc.PaymentMethods.Detach(pm.ID, nil)
	if err != nil {
		t.Fatal(err)
	}
	if pm.Customer != nil {
		t.Errorf("detached payment method customer = %s, want none", pm.Customer.ID)
	}
	cus, err = h.sc.Customers.Get(cus.ID, nil)
	if err != nil {
		t.Fatal(err)
	}
	if cus.InvoiceSettings.DefaultPaymentMethod != nil {
		t.Errorf("default payment method after detach = %s, want none", cus.InvoiceSettings.DefaultPaymentMethod.ID)
	}
}

func TestTestCardBehaviour(t *testing.T) {
	h := newHarness(t, emulator.Config{})
	cases := []struct {
		token       string
		brand       string
		last4       string
		chargeCode  string // empty when the off-session charge is authorized
		declineCode string
	}{
		{"pm_card_visa", "visa", "4242", "", ""},
		{"pm_card_mastercard", "mastercard", "4444", "", ""},
		{"pm_card_chargeCustomerFail", "visa", "0341", "card_declined", "generic_decline"},
		{"pm_card_authenticationRequired", "visa", "3184", "authentication_required", "authentication_required"},
	}
	for _, tc := range cases {
		t.Run(tc.token, func(t *testing.T) {
			cus := h.customer()
			pmID := h.savedCard(cus, tc.token)
			pm, err := h.sc.PaymentMethods.Get(pmID, nil)
			if err != nil {
				t.Fatal(err)
			}
			if string(pm.Card.Brand) != tc.brand || pm.Card.Last4 != tc.last4 {
				t.Errorf("card = %s %s, want %s %s", pm.Card.Brand, pm.Card.Last4, tc.brand, tc.last4)
			}

			pi, err := h.authorize(cus, pmID, 2500)
			if tc.chargeCode == "" {
				if err != nil {
					t.Fatalf("authorize: %v", err)
				}
				if pi.Status != stripe.PaymentIntentStatusRequiresCapture || pi.AmountCapturable != 2500 {
					t.Errorf("status = %s, amount_capturable = %d, want requires_capture and 2500", pi.Status, pi.AmountCapturable)
				}
				return
			}
			se := stripeError(t, err)
			if se.HTTPStatusCode != http.StatusPaymentRequired || se.Type != stripe.ErrorTypeCard {
				t.Errorf("status %d type %s, want 402 card_error", se.HTTPStatusCode, se.Type)
			}
			if string(se.Code) != tc.chargeCode || string(se.DeclineCode) != tc.declineCode {
				t.Errorf("code %s decline_code %s, want %s %s", se.Code, se.DeclineCode, tc.chargeCode, tc.declineCode)
			}
			var cardErr *stripe.CardError
			if !errors.As(err, &cardErr) || string(cardErr.DeclineCode) != tc.declineCode {
				t.Errorf("CardError = %+v, want decline code %s", cardErr, tc.declineCode)
			}
			if se.PaymentIntent == nil {
				t.Fatal("error has no payment_intent")
			}
			if se.PaymentIntent.Status != stripe.PaymentIntentStatusRequiresPaymentMethod {
				t.Errorf("payment intent status = %s, want requires_payment_method", se.PaymentIntent.Status)
			}
			if se.PaymentIntent.LastPaymentError == nil || string(se.PaymentIntent.LastPaymentError.Code) != tc.chargeCode {
				t.Errorf("last_payment_error = %+v, want code %s", se.PaymentIntent.LastPaymentError, tc.chargeCode)
			}
			if se.PaymentIntent.ClientSecret == "" {
				t.Error("payment intent in the error has no client_secret")
			}
			stored, err := h.sc.PaymentIntents.Get(se.PaymentIntent.ID, nil)
			if err != nil {
				t.Fatal(err)
			}
			if stored.Status != stripe.PaymentIntentStatusRequiresPaymentMethod || stored.LatestCharge == nil {
				t.Errorf("stored payment intent = %s with charge %v", stored.Status, stored.LatestCharge)
			}
			ch, err := h.sc.Charges.Get(stored.LatestCharge.ID, nil)
			if err != nil {
				t.Fatal(err)
			}
			if ch.Status != stripe.ChargeStatusFailed || ch.FailureCode != tc.chargeCode {
				t.Errorf("charge status %s failure_code %s, want failed %s", ch.Status, ch.FailureCode, tc.chargeCode)
			}
		})
	}

	t.Run("pm_card_chargeDeclined", func(t *testing.T) {
		cus := h.customer()
		si, err := h.sc.SetupIntents.New(&stripe.SetupIntentParams{Customer: stripe.String(cus.ID)})
		if err != nil {
			t.Fatal(err)
		}
		_, err = h.sc.SetupIntents.Confirm(si.ID, &stripe.SetupIntentConfirmParams{PaymentMethod: stripe.String("pm_card_chargeDeclined")})
		se := stripeError(t, err)
		if se.HTTPStatusCode != http.StatusPaymentRequired || se.Code != stripe.ErrorCodeCardDeclined || se.DeclineCode != "generic_decline" {
			t.Errorf("confirm error = %d %s %s, want 402 card_declined generic_decline", se.HTTPStatusCode, se.Code, se.DeclineCode)
		}
		if se.SetupIntent == nil || se.SetupIntent.Status != stripe.SetupIntentStatusRequiresPaymentMethod {
			t.Fatalf("error setup_intent = %+v, want status requires_payment_method", se.SetupIntent)
		}
		si, err = h.sc.SetupIntents.Get(si.ID, nil)
		if err != nil {
			t.Fatal(err)
		}
		if si.Status != stripe.SetupIntentStatusRequiresPaymentMethod || si.LastSetupError == nil || si.LastSetupError.Code != stripe.ErrorCodeCardDeclined {
			t.Errorf("setup intent = %s, last_setup_error %+v", si.Status, si.LastSetupError)
		}
		_, err = h.sc.PaymentMethods.Attach("pm_card_chargeDeclined", &stripe.PaymentMethodAttachParams{Customer: stripe.String(cus.ID)})
		se = stripeError(t, err)
		if se.HTTPStatusCode != http.StatusPaymentRequired || se.Code != stripe.ErrorCodeCardDeclined {
			t.Errorf("attach error = %d %s, want 402 card_declined", se.HTTPStatusCode, se.Code)
		}
		iter := h.sc.PaymentMethods.List(&stripe.PaymentMethodListParams{Customer: stripe.String(cus.ID), Type: stripe.String("card")})
		for iter.Next() {
			t.Errorf("customer has payment method %s, want none", iter.PaymentMethod().ID)
		}
		if err := iter.Err(); err != nil {
			t.Fatal(err)
		}
	})
}

func TestOffSessionAuthorization(t *testing.T) {
	h := newHarness(t, emulator.Config{})
	cus := h.customer()
	before := h.now()
	pi := h.mustAuthorize(cus, 10000)

	if !strings.HasPrefix(pi.ID, "pi_") || pi.Status != stripe.PaymentIntentStatusRequiresCapture {
		t.Fatalf("payment intent %s status %s, want pi_ in requires_capture", pi.ID, pi.Status)
	}
	if pi.Amount != 10000 || pi.AmountCapturable != 10000 || pi.AmountReceived != 0 {
		t.Errorf("amounts = %d/%d/%d, want 10000/10000/0", pi.Amount, pi.AmountCapturable, pi.AmountReceived)
	}
	if pi.CaptureMethod != stripe.PaymentIntentCaptureMethodManual || pi.Metadata["payment_id"] != "pay_1" || pi.TransferGroup != "task_1" {
		t.Errorf("capture_method %s metadata %v transfer_group %s", pi.CaptureMethod, pi.Metadata, pi.TransferGroup)
	}
	if pi.Customer == nil || pi.Customer.ID != cus.ID {
		t.Errorf("customer = %+v, want %s", pi.Customer, cus.ID)
	}
	ch := pi.LatestCharge
	if ch == nil || !strings.HasPrefix(ch.ID, "ch_") || ch.Amount != 10000 {
		t.Fatalf("latest_charge = %+v, want an expanded charge of 10000", ch)
	}
	if ch.Captured || ch.AmountCaptured != 0 || !ch.Paid || ch.Status != stripe.ChargeStatusSucceeded {
		t.Errorf("charge captured %v amount_captured %d paid %v status %s", ch.Captured, ch.AmountCaptured, ch.Paid, ch.Status)
	}
	wantDeadline := before + (4*24+18)*3600
	if got := ch.PaymentMethodDetails.Card.CaptureBefore; got < wantDeadline || got > wantDeadline+5 {
		t.Errorf("capture_before = %d, want %d (now + 4 days 18 hours)", got, wantDeadline)
	}
	if ch.PaymentIntent == nil || ch.PaymentIntent.ID != pi.ID {
		t.Errorf("charge payment_intent = %+v, want %s", ch.PaymentIntent, pi.ID)
	}

	// An on-session confirmation through the client secret holds for 7 days.
	pi2, err := h.sc.PaymentIntents.New(&stripe.PaymentIntentParams{
		Amount: stripe.Int64(5000), Currency: stripe.String("usd"), Customer: stripe.String(cus.ID),
		CaptureMethod: stripe.String("manual"),
	})
	if err != nil {
		t.Fatal(err)
	}
	if pi2.Status != stripe.PaymentIntentStatusRequiresPaymentMethod || !strings.HasPrefix(pi2.ClientSecret, pi2.ID+"_secret_") {
		t.Errorf("new payment intent status %s client_secret %q", pi2.Status, pi2.ClientSecret)
	}
	confirmParams := &stripe.PaymentIntentConfirmParams{PaymentMethod: stripe.String("pm_card_visa")}
	confirmParams.AddExpand("latest_charge")
	pi2, err = h.sc.PaymentIntents.Confirm(pi2.ID, confirmParams)
	if err != nil {
		t.Fatal(err)
	}
	if pi2.Status != stripe.PaymentIntentStatusRequiresCapture {
		t.Errorf("confirmed status = %s, want requires_capture", pi2.Status)
	}
	if got, want := pi2.LatestCharge.PaymentMethodDetails.Card.CaptureBefore, before+7*24*3600; got < want || got > want+5 {
		t.Errorf("on-session capture_before = %d, want %d", got, want)
	}

	iter := h.sc.PaymentIntents.List(&stripe.PaymentIntentListParams{Customer: stripe.String(cus.ID)})
	var ids []string
	for iter.Next() {
		ids = append(ids, iter.PaymentIntent().ID)
	}
	if err := iter.Err(); err != nil {
		t.Fatal(err)
	}
	if len(ids) != 2 || ids[0] != pi2.ID || ids[1] != pi.ID {
		t.Errorf("list = %v, want [%s %s] newest first", ids, pi2.ID, pi.ID)
	}
}

func TestAmountBelowMinimum(t *testing.T) {
	h := newHarness(t, emulator.Config{})
	for _, tc := range []struct {
		currency string
		amount   int64
		ok       bool
	}{
		{"usd", 49, false}, {"usd", 50, true}, {"gbp", 29, false}, {"gbp", 30, true}, {"eur", 49, false}, {"jpy", 50, true},
	} {
		_, err := h.sc.PaymentIntents.New(&stripe.PaymentIntentParams{
			Amount: stripe.Int64(tc.amount), Currency: stripe.String(tc.currency),
		})
		if tc.ok {
			if err != nil {
				t.Errorf("%d %s: %v", tc.amount, tc.currency, err)
			}
			continue
		}
		se := stripeError(t, err)
		if se.HTTPStatusCode != 400 || se.Code != stripe.ErrorCodeAmountTooSmall || se.Param != "amount" {
			t.Errorf("%d %s: error %d %s param %s, want 400 amount_too_small param amount", tc.amount, tc.currency, se.HTTPStatusCode, se.Code, se.Param)
		}
	}
	_, err := h.sc.PaymentIntents.New(&stripe.PaymentIntentParams{Amount: stripe.Int64(100), Currency: stripe.String("xyz")})
	if se := stripeError(t, err); se.HTTPStatusCode != 400 || se.Param != "currency" {
		t.Errorf("unknown currency: %d param %s, want 400 param currency", se.HTTPStatusCode, se.Param)
	}
}

func TestPartialCapture(t *testing.T) {
	h := newHarness(t, emulator.Config{})
	cus := h.customer()
	pi := h.mustAuthorize(cus, 10000)

	_, err := h.sc.PaymentIntents.Capture(pi.ID, &stripe.PaymentIntentCaptureParams{AmountToCapture: stripe.Int64(10001)})
	if se := stripeError(t, err); se.HTTPStatusCode != 400 || se.Param != "amount_to_capture" {
		t.Errorf("over-capture: %d param %s, want 400 param amount_to_capture", se.HTTPStatusCode, se.Param)
	}

	params := &stripe.PaymentIntentCaptureParams{AmountToCapture: stripe.Int64(6000)}
	params.AddExpand("latest_charge.balance_transaction")
	pi, err = h.sc.PaymentIntents.Capture(pi.ID, params)
	if err != nil {
		t.Fatal(err)
	}
	if pi.Status != stripe.PaymentIntentStatusSucceeded || pi.AmountReceived != 6000 || pi.AmountCapturable != 0 {
		t.Errorf("status %s amount_received %d amount_capturable %d, want succeeded 6000 0", pi.Status, pi.AmountReceived, pi.AmountCapturable)
	}
	ch := pi.LatestCharge
	if !ch.Captured || ch.AmountCaptured != 6000 || ch.AmountRefunded != 4000 || ch.Refunded {
		t.Errorf("charge captured %v amount_captured %d amount_refunded %d refunded %v, want true 6000 4000 false",
			ch.Captured, ch.AmountCaptured, ch.AmountRefunded, ch.Refunded)
	}
	txn := ch.BalanceTransaction
	// 2.9 % of 6000 is 174, plus the fixed 30.
	if txn == nil || txn.Amount != 6000 || txn.Fee != 204 || txn.Net != 5796 || txn.Type != stripe.BalanceTransactionTypeCharge {
		t.Fatalf("balance transaction = %+v, want amount 6000 fee 204 net 5796", txn)
	}
	if len(txn.FeeDetails) != 1 || txn.FeeDetails[0].Amount != 204 || txn.FeeDetails[0].Type != "stripe_fee" {
		t.Errorf("fee_details = %+v", txn.FeeDetails)
	}
	got, err := h.sc.BalanceTransactions.Get(txn.ID, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got.Fee != 204 || got.Source == nil || got.Source.ID != ch.ID {
		t.Errorf("retrieved balance transaction fee %d source %+v", got.Fee, got.Source)
	}

	_, err = h.sc.PaymentIntents.Capture(pi.ID, nil)
	if se := stripeError(t, err); se.HTTPStatusCode != 400 || se.Code != stripe.ErrorCodePaymentIntentUnexpectedState {
		t.Errorf("second capture: %d %s, want 400 payment_intent_unexpected_state", se.HTTPStatusCode, se.Code)
	}
}

func TestFeeRounding(t *testing.T) {
	h := newHarness(t, emulator.Config{FeePercentBps: 250, FeeFixed: 25})
	cus := h.customer()
	pi := h.mustAuthorize(cus, 1010) // 2.5 % of 1010 is 25.25, rounded to 25
	params := &stripe.PaymentIntentCaptureParams{}
	params.AddExpand("latest_charge.balance_transaction")
	pi, err := h.sc.PaymentIntents.Capture(pi.ID, params)
	if err != nil {
		t.Fatal(err)
	}
	if txn := pi.LatestCharge.BalanceTransaction; txn.Fee != 50 || txn.Net != 960 {
		t.Errorf("fee %d net %d, want 50 and 960", txn.Fee, txn.Net)
	}
	pi = h.mustAuthorize(cus, 1020) // 25.5 rounds half up to 26
	pi, err = h.sc.PaymentIntents.Capture(pi.ID, params)
	if err != nil {
		t.Fatal(err)
	}
	if txn := pi.LatestCharge.BalanceTransaction; txn.Fee != 51 {
		t.Errorf("fee %d, want 51", txn.Fee)
	}
}

func TestCancel(t *testing.T) {
	h := newHarness(t, emulator.Config{})
	cus := h.customer()
	pi := h.mustAuthorize(cus, 3000)

	pi, err := h.sc.PaymentIntents.Cancel(pi.ID, &stripe.PaymentIntentCancelParams{CancellationReason: stripe.String("abandoned")})
	if err != nil {
		t.Fatal(err)
	}
	if pi.Status != stripe.PaymentIntentStatusCanceled || pi.CancellationReason != "abandoned" || pi.CanceledAt == 0 || pi.AmountCapturable != 0 {
		t.Errorf("status %s reason %s canceled_at %d amount_capturable %d", pi.Status, pi.CancellationReason, pi.CanceledAt, pi.AmountCapturable)
	}
	ch, err := h.sc.Charges.Get(pi.LatestCharge.ID, nil)
	if err != nil {
		t.Fatal(err)
	}
	if ch.Captured || !ch.Refunded || ch.AmountRefunded != 3000 {
		t.Errorf("released charge captured %v refunded %v amount_refunded %d", ch.Captured, ch.Refunded, ch.AmountRefunded)
	}
	_, err = h.sc.PaymentIntents.Capture(pi.ID, nil)
	if se := stripeError(t, err); se.HTTPStatusCode != 400 || se.Code != stripe.ErrorCodePaymentIntentUnexpectedState {
		t.Errorf("capture after cancel: %d %s, want 400 payment_intent_unexpected_state", se.HTTPStatusCode, se.Code)
	}

	done := h.mustAuthorize(cus, 3000)
	if _, err := h.sc.PaymentIntents.Capture(done.ID, nil); err != nil {
		t.Fatal(err)
	}
	_, err = h.sc.PaymentIntents.Cancel(done.ID, nil)
	if se := stripeError(t, err); se.HTTPStatusCode != 400 || se.Code != stripe.ErrorCodePaymentIntentUnexpectedState {
		t.Errorf("cancel after capture: %d %s, want 400 payment_intent_unexpected_state", se.HTTPStatusCode, se.Code)
	}
}

func TestTransferFromCharge(t *testing.T) {
	h := newHarness(t, emulator.Config{})
	cus := h.customer()
	uncaptured := h.mustAuthorize(cus, 5000)
	_, err := h.sc.Transfers.New(&stripe.TransferParams{
		Amount: stripe.Int64(100), Currency: stripe.String("usd"), Destination: stripe.String("acct_worker"),
		SourceTransaction: stripe.String(uncaptured.LatestCharge.ID),
	})
	if se := stripeError(t, err); se.HTTPStatusCode != 400 || se.Param != "source_transaction" {
		t.Errorf("transfer from uncaptured charge: %d param %s, want 400 source_transaction", se.HTTPStatusCode, se.Param)
	}

	pi := h.mustAuthorize(cus, 10000)
	pi, err = h.sc.PaymentIntents.Capture(pi.ID, &stripe.PaymentIntentCaptureParams{AmountToCapture: stripe.Int64(8000)})
	if err != nil {
		t.Fatal(err)
	}
	newTransfer := func(amount int64, destination string) (*stripe.Transfer, error) {
		params := &stripe.TransferParams{
			Amount: stripe.Int64(amount), Currency: stripe.String("usd"), Destination: stripe.String(destination),
			SourceTransaction: stripe.String(pi.LatestCharge.ID), TransferGroup: stripe.String("task_1"),
		}
		params.AddMetadata("payout_id", "po_1")
		return h.sc.Transfers.New(params)
	}
	tr, err := newTransfer(7000, "acct_worker")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(tr.ID, "tr_") || tr.Amount != 7000 || tr.Destination.ID != "acct_worker" ||
		tr.SourceTransaction.ID != pi.LatestCharge.ID || tr.Metadata["payout_id"] != "po_1" || tr.TransferGroup != "task_1" {
		t.Errorf("transfer = %+v", tr)
	}
	txn, err := h.sc.BalanceTransactions.Get(tr.BalanceTransaction.ID, nil)
	if err != nil {
		t.Fatal(err)
	}
	if txn.Amount != -7000 || txn.Type != stripe.BalanceTransactionTypeTransfer {
		t.Errorf("transfer balance transaction amount %d type %s, want -7000 transfer", txn.Amount, txn.Type)
	}

	_, err = newTransfer(1001, "acct_worker")
	if se := stripeError(t, err); se.HTTPStatusCode != 400 {
		t.Errorf("over-transfer: status %d, want 400", se.HTTPStatusCode)
	}
	if _, err := newTransfer(1000, "acct_worker"); err != nil {
		t.Errorf("transfer of the remaining 1000: %v", err)
	}
	_, err = newTransfer(1, "acct_invalid")
	if se := stripeError(t, err); se.HTTPStatusCode != 400 || se.Code != stripe.ErrorCodeResourceMissing || se.Param != "destination" {
		t.Errorf("invalid destination: %d %s param %s, want 400 resource_missing param destination", se.HTTPStatusCode, se.Code, se.Param)
	}

	iter := h.sc.Transfers.List(&stripe.TransferListParams{TransferGroup: stripe.String("task_1")})
	var total int64
	for iter.Next() {
		total += iter.Transfer().Amount
	}
	if err := iter.Err(); err != nil {
		t.Fatal(err)
	}
	if total != 8000 {
		t.Errorf("transfers in group task_1 sum to %d, want 8000", total)
	}
}

func TestIdempotentReplay(t *testing.T) {
	h := newHarness(t, emulator.Config{})
	cus := h.customer()
	params := func(amount int64) *stripe.PaymentIntentParams {
		p := &stripe.PaymentIntentParams{Amount: stripe.Int64(amount), Currency: stripe.String("usd"), Customer: stripe.String(cus.ID)}
		p.SetIdempotencyKey("create-pi-1")
		return p
	}
	first, err := h.sc.PaymentIntents.New(params(1500))
	if err != nil {
		t.Fatal(err)
	}
	second, err := h.sc.PaymentIntents.New(params(1500))
	if err != nil {
		t.Fatal(err)
	}
	if second.ID != first.ID || second.Amount != 1500 {
		t.Errorf("replay returned %s (%d), want %s", second.ID, second.Amount, first.ID)
	}
	if got := second.LastResponse.Header.Get("Idempotent-Replayed"); got != "true" {
		t.Errorf("Idempotent-Replayed = %q, want true", got)
	}
	if got := first.LastResponse.Header.Get("Idempotent-Replayed"); got != "" {
		t.Errorf("first response has Idempotent-Replayed = %q", got)
	}

	_, err = h.sc.PaymentIntents.New(params(1600))
	se := stripeError(t, err)
	var idemErr *stripe.IdempotencyError
	if se.HTTPStatusCode != 400 || se.Type != stripe.ErrorTypeIdempotency || !errors.As(err, &idemErr) {
		t.Errorf("mismatched params: %d %s, want 400 idempotency_error", se.HTTPStatusCode, se.Type)
	}

	other := &stripe.CustomerParams{Email: stripe.String("x@example.com")}
	other.SetIdempotencyKey("create-pi-1")
	_, err = h.sc.Customers.New(other)
	if se := stripeError(t, err); se.HTTPStatusCode != 400 || se.Type != stripe.ErrorTypeIdempotency {
		t.Errorf("key reused on another path: %d %s, want 400 idempotency_error", se.HTTPStatusCode, se.Type)
	}

	if got := len(h.objects("type=payment_intent&customer=" + cus.ID)); got != 1 {
		t.Errorf("stored payment intents = %d, want 1", got)
	}
	c := h.count("POST", "/v1/payment_intents")
	if c.Mutations != 1 || c.Replays != 1 || c.Requests != 3 {
		t.Errorf("counters = %+v, want 3 requests, 1 mutation, 1 replay", c)
	}
}

func TestIdempotencyKeyExpires(t *testing.T) {
	h := newHarness(t, emulator.Config{})
	p := &stripe.CustomerParams{Email: stripe.String("a@example.com")}
	p.SetIdempotencyKey("cus-key")
	first, err := h.sc.Customers.New(p)
	if err != nil {
		t.Fatal(err)
	}
	h.control("POST", "/_emulator/clock/advance", map[string]int64{"seconds": 24*3600 + 1}, nil)
	second, err := h.sc.Customers.New(p)
	if err != nil {
		t.Fatal(err)
	}
	if second.ID == first.ID {
		t.Errorf("request after 24 hours replayed %s, want a new customer", first.ID)
	}
}

func TestIdempotencyKeyInUse(t *testing.T) {
	h := newHarness(t, emulator.Config{})
	// Hold the key's lock from another session, as a request in flight does.
	conn, err := pgtest.Pool(t).Acquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	lockKey := "sk_test_emulator\nbusy-key"
	if _, err := conn.Exec(context.Background(), `SELECT pg_advisory_lock(hashtextextended($1, 0))`, lockKey); err != nil {
		t.Fatal(err)
	}
	defer conn.Exec(context.Background(), `SELECT pg_advisory_unlock(hashtextextended($1, 0))`, lockKey) //nolint:errcheck

	p := &stripe.CustomerParams{Email: stripe.String("a@example.com")}
	p.SetIdempotencyKey("busy-key")
	_, err = h.sc.Customers.New(p)
	se := stripeError(t, err)
	if se.HTTPStatusCode != http.StatusConflict || se.Type != stripe.ErrorTypeIdempotency || se.Code != "idempotency_key_in_use" {
		t.Errorf("error = %d %s %s, want 409 idempotency_error idempotency_key_in_use", se.HTTPStatusCode, se.Type, se.Code)
	}
}

func TestInjected500IsReplayed(t *testing.T) {
	h := newHarness(t, emulator.Config{})
	cus := h.customer()
	h.control("POST", "/_emulator/faults", map[string]any{"method": "POST", "path": "/v1/payment_intents", "status": 500, "rate": 1.0, "count": 1}, nil)

	p := &stripe.PaymentIntentParams{Amount: stripe.Int64(2000), Currency: stripe.String("usd"), Customer: stripe.String(cus.ID)}
	p.SetIdempotencyKey("pi-500")
	_, err := h.sc.PaymentIntents.New(p)
	se := stripeError(t, err)
	if se.HTTPStatusCode != 500 || se.Type != stripe.ErrorTypeAPI {
		t.Fatalf("injected fault: %d %s, want 500 api_error", se.HTTPStatusCode, se.Type)
	}
	if got := len(h.objects("type=payment_intent&customer=" + cus.ID)); got != 0 {
		t.Errorf("payment intents after injected failure = %d, want 0", got)
	}

	// The rule is used up, yet the same key replays the stored 500.
	_, err = h.sc.PaymentIntents.New(p)
	se = stripeError(t, err)
	if se.HTTPStatusCode != 500 || se.LastResponse.Header.Get("Idempotent-Replayed") != "true" {
		t.Errorf("retry: status %d replayed %q, want the stored 500", se.HTTPStatusCode, se.LastResponse.Header.Get("Idempotent-Replayed"))
	}

	p.SetIdempotencyKey("pi-500-new-key")
	pi, err := h.sc.PaymentIntents.New(p)
	if err != nil {
		t.Fatalf("new key: %v", err)
	}
	if pi.Amount != 2000 {
		t.Errorf("amount = %d, want 2000", pi.Amount)
	}
}

func TestDropResponseStillApplies(t *testing.T) {
	h := newHarness(t, emulator.Config{})
	cus := h.customer()
	pi := h.mustAuthorize(cus, 4000)
	h.control("POST", "/_emulator/faults", map[string]any{"method": "POST", "path": "/v1/payment_intents/*/capture", "dropResponseRate": 1.0, "count": 1}, nil)

	p := &stripe.PaymentIntentCaptureParams{}
	p.SetIdempotencyKey("capture-1")
	_, err := h.sc.PaymentIntents.Capture(pi.ID, p)
	if err == nil {
		t.Fatal("capture with a dropped response returned no error")
	}
	var se *stripe.Error
	if errors.As(err, &se) {
		t.Fatalf("dropped response produced a Stripe error %v, want a network error", se)
	}

	stored := h.objects("type=payment_intent&customer=" + cus.ID)
	if len(stored) != 1 || stored[0]["status"] != "succeeded" {
		t.Fatalf("stored payment intents = %v, want one succeeded", stored)
	}

	again, err := h.sc.PaymentIntents.Capture(pi.ID, p)
	if err != nil {
		t.Fatalf("retry with the same key: %v", err)
	}
	if again.Status != stripe.PaymentIntentStatusSucceeded || again.AmountReceived != 4000 ||
		again.LastResponse.Header.Get("Idempotent-Replayed") != "true" {
		t.Errorf("retry: status %s amount_received %d replayed %q", again.Status, again.AmountReceived, again.LastResponse.Header.Get("Idempotent-Replayed"))
	}
	if c := h.count("POST", "/v1/payment_intents/*/capture"); c.Mutations != 1 || c.Replays != 1 {
		t.Errorf("capture counters = %+v, want 1 mutation and 1 replay", c)
	}
}

func TestFaultRateIsSeeded(t *testing.T) {
	h := newHarness(t, emulator.Config{})
	outcomes := func() string {
		h.control("POST", "/_emulator/faults", map[string]any{"method": "POST", "path": "/v1/customers", "rate": 0.5, "seed": 7}, nil)
		defer h.control("DELETE", "/_emulator/faults", nil, nil)
		var b strings.Builder
		for range 20 {
			_, err := h.sc.Customers.New(&stripe.CustomerParams{})
			if err != nil {
				b.WriteByte('x')
			} else {
				b.WriteByte('.')
			}
		}
		return b.String()
	}
	first, second := outcomes(), outcomes()
	if first != second {
		t.Errorf("same seed gave %s then %s", first, second)
	}
	if !strings.Contains(first, "x") || !strings.Contains(first, ".") {
		t.Errorf("rate 0.5 over 20 requests gave %s, want both failures and successes", first)
	}
}

func TestClockAdvanceExpiresHold(t *testing.T) {
	h := newHarness(t, emulator.Config{})
	cus := h.customer()
	pi := h.mustAuthorize(cus, 2500)

	h.control("POST", "/_emulator/clock/advance", map[string]int64{"seconds": (4*24+18)*3600 - 60}, nil)
	got, err := h.sc.PaymentIntents.Get(pi.ID, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != stripe.PaymentIntentStatusRequiresCapture {
		t.Fatalf("status a minute before the deadline = %s, want requires_capture", got.Status)
	}

	h.control("POST", "/_emulator/clock/advance", map[string]int64{"seconds": 120}, nil)
	got, err = h.sc.PaymentIntents.Get(pi.ID, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != stripe.PaymentIntentStatusCanceled || got.CancellationReason != "automatic" {
		t.Errorf("status %s reason %s, want canceled automatic", got.Status, got.CancellationReason)
	}
	_, err = h.sc.PaymentIntents.Capture(pi.ID, nil)
	if se := stripeError(t, err); se.Code != stripe.ErrorCodePaymentIntentUnexpectedState {
		t.Errorf("capture of expired hold: %s, want payment_intent_unexpected_state", se.Code)
	}
}

func TestConcurrentCapturesOneWins(t *testing.T) {
	h := newHarness(t, emulator.Config{})
	cus := h.customer()
	pi := h.mustAuthorize(cus, 9000)

	const workers = 8
	var wg sync.WaitGroup
	results := make([]error, workers)
	for i := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, results[i] = h.sc.PaymentIntents.Capture(pi.ID, nil)
		}()
	}
	wg.Wait()

	succeeded := 0
	for i, err := range results {
		if err == nil {
			succeeded++
			continue
		}
		var se *stripe.Error
		if !errors.As(err, &se) || se.Code != stripe.ErrorCodePaymentIntentUnexpectedState {
			t.Errorf("worker %d: %v, want payment_intent_unexpected_state", i, err)
		}
	}
	if succeeded != 1 {
		t.Errorf("%d captures succeeded, want 1", succeeded)
	}
	charges := 0
	for _, txn := range h.objects("type=balance_transaction") {
		if txn["source"] == pi.LatestCharge.ID {
			charges++
		}
	}
	if charges != 1 {
		t.Errorf("balance transactions for the charge = %d, want 1", charges)
	}
	if c := h.count("POST", fmt.Sprintf("/v1/payment_intents/%s/capture", pi.ID)); c.Mutations != 1 || c.Requests != workers {
		t.Errorf("capture counters = %+v, want %d requests and 1 mutation", c, workers)
	}
}

func TestRequestsNeedTestKey(t *testing.T) {
	h := newHarness(t, emulator.Config{})
	for _, key := range []string{"sk_live_x", "pk_test_x"} {
		_, err := h.client(key).Customers.New(&stripe.CustomerParams{})
		if se := stripeError(t, err); se.HTTPStatusCode != http.StatusUnauthorized || se.Type != stripe.ErrorTypeInvalidRequest {
			t.Errorf("key %s: %d %s, want 401 invalid_request_error", key, se.HTTPStatusCode, se.Type)
		}
	}
	_, err := h.sc.Customers.Get("cus_missing", nil)
	if se := stripeError(t, err); se.HTTPStatusCode != 404 || se.Code != stripe.ErrorCodeResourceMissing {
		t.Errorf("missing customer: %d %s, want 404 resource_missing", se.HTTPStatusCode, se.Code)
	}
}

func TestListPagination(t *testing.T) {
	h := newHarness(t, emulator.Config{})
	cus := h.customer()
	var created []string
	for range 5 {
		pi, err := h.sc.PaymentIntents.New(&stripe.PaymentIntentParams{Amount: stripe.Int64(100), Currency: stripe.String("usd"), Customer: stripe.String(cus.ID)})
		if err != nil {
			t.Fatal(err)
		}
		created = append(created, pi.ID)
	}
	params := &stripe.PaymentIntentListParams{Customer: stripe.String(cus.ID)}
	params.Limit = stripe.Int64(2)
	iter := h.sc.PaymentIntents.List(params)
	var got []string
	for iter.Next() {
		got = append(got, iter.PaymentIntent().ID)
	}
	if err := iter.Err(); err != nil {
		t.Fatal(err)
	}
	want := []string{created[4], created[3], created[2], created[1], created[0]}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("pages = %v, want %v", got, want)
	}
}

func stringsReader(s string) io.Reader { return strings.NewReader(s) }
