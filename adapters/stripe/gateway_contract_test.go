package stripe

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"net/http/httptest"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	stripego "github.com/stripe/stripe-go/v76"
	"github.com/stripe/stripe-go/v76/client"

	"github.com/taskpod/billing/adapters/postgres/pgtest"
	"github.com/taskpod/billing/adapters/stripe/emulator"
	"github.com/taskpod/billing/domain"
	"github.com/taskpod/billing/ports"
)

func TestMain(m *testing.M) {
	os.Exit(pgtest.Main(m))
}

// stripeMockPath is the default location of the stripe-mock binary, where
// go install puts it for root. STRIPE_MOCK_BIN overrides it.
const stripeMockPath = "/root/go/bin/stripe-mock"

// contractTestKey is a made-up test key. stripe-mock rejects keys that do not
// look like test keys, and it rejected sk_test_taskpod_contract.
const contractTestKey = "sk_test_TaskPodContract"

// contractTarget describes the server a contract run talks to.
type contractTarget struct {
	// baseURL is the server's API base, used to confirm SetupIntents the
	// way Stripe.js would.
	baseURL string
	// stateful is true for a server that keeps objects between requests.
	// A stateless server such as stripe-mock returns a fixture for every
	// request, so the suite then checks only that requests are accepted and
	// that responses decode.
	stateful bool
	// connectedAccount is the destination of transfers.
	connectedAccount string
}

func TestContractStripeMock(t *testing.T) {
	baseURL := startStripeMock(t)
	gw, err := New(Config{SecretKey: contractTestKey, APIBase: baseURL})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	runContract(t, gw, contractTarget{baseURL: baseURL, connectedAccount: "acct_1TaskPodAgent"})
}

func TestContractEmulator(t *testing.T) {
	ctx := context.Background()
	em, err := emulator.New(ctx, pgtest.Pool(t), emulator.Config{
		Logger:        slog.New(slog.NewTextHandler(io.Discard, nil)),
		FeePercentBps: 290,
		FeeFixed:      30,
	})
	if err != nil {
		t.Fatalf("emulator.New: %v", err)
	}
	server := httptest.NewServer(em.Handler())
	t.Cleanup(server.Close)

	inner, err := New(Config{SecretKey: contractTestKey, APIBase: server.URL})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	reg := prometheus.NewRegistry()
	gw, err := NewMetered(inner, reg, WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	if err != nil {
		t.Fatalf("NewMetered: %v", err)
	}

	runContract(t, gw, contractTarget{baseURL: server.URL, stateful: true, connectedAccount: "acct_1TaskPodAgent"})

	// The suite makes two off-session authorizations that the emulator
	// declines: one with a failing card and one that needs authentication.
	counter := gw.(*meteredGateway).requests
	if got := testutil.ToFloat64(counter.WithLabelValues(opAuthorize, string(ports.GatewayCardError))); got != 2 {
		t.Errorf("requests_total{authorize,card_error} = %v, want 2", got)
	}
	if got := testutil.ToFloat64(counter.WithLabelValues(opCapture, outcomeSuccess)); got != 2 {
		t.Errorf("requests_total{capture,success} = %v, want 2 (a capture and its replay)", got)
	}
}

// runContract runs the same scenarios against any PaymentGateway. Values are
// asserted only when target.stateful is true.
func runContract(t *testing.T, gw ports.PaymentGateway, target contractTarget) {
	run := newRunID(t)

	t.Run("save card", func(t *testing.T) {
		customerID, pmID := saveCard(t, gw, target, run+"-save", "pm_card_visa")

		methods, err := gw.ListPaymentMethods(context.Background(), customerID)
		if err != nil {
			t.Fatalf("ListPaymentMethods: %v", err)
		}
		pm, err := gw.GetPaymentMethod(context.Background(), pmID)
		if err != nil {
			t.Fatalf("GetPaymentMethod: %v", err)
		}
		requirePrefix(t, "GetPaymentMethod ID", pm.ID, "pm_")
		if !target.stateful {
			return
		}

		if len(methods) != 1 {
			t.Fatalf("ListPaymentMethods returned %d cards, want 1: %+v", len(methods), methods)
		}
		card := methods[0]
		if card.ID != pmID {
			t.Errorf("listed card ID = %q, want %q", card.ID, pmID)
		}
		if card.Brand != "visa" {
			t.Errorf("Brand = %q, want visa", card.Brand)
		}
		if card.Last4 != "4242" {
			t.Errorf("Last4 = %q, want 4242", card.Last4)
		}
		if card.CustomerID != customerID {
			t.Errorf("CustomerID = %q, want %q", card.CustomerID, customerID)
		}
		if card.ExpMonth < 1 || card.ExpMonth > 12 {
			t.Errorf("ExpMonth = %d, want 1..12", card.ExpMonth)
		}
		if card.ExpYear < time.Now().Year() {
			t.Errorf("ExpYear = %d, want this year or later", card.ExpYear)
		}
		if pm != card {
			t.Errorf("GetPaymentMethod = %+v, want the listed card %+v", pm, card)
		}
	})

	t.Run("customer key replay", func(t *testing.T) {
		in := ports.CreateCustomerInput{UserID: "user-" + run, IdempotencyKey: "customer:" + run}
		first, err := gw.CreateCustomer(context.Background(), in)
		if err != nil {
			t.Fatalf("CreateCustomer: %v", err)
		}
		second, err := gw.CreateCustomer(context.Background(), in)
		if err != nil {
			t.Fatalf("CreateCustomer replay: %v", err)
		}
		requirePrefix(t, "customer ID", first, "cus_")
		if target.stateful && second != first {
			t.Errorf("replayed CreateCustomer = %q, want %q", second, first)
		}
	})

	t.Run("authorize capture transfer", func(t *testing.T) {
		contractAuthorizeCaptureTransfer(t, gw, target, run)
	})

	t.Run("cancel", func(t *testing.T) {
		ctx := context.Background()
		customerID, pmID := saveCard(t, gw, target, run+"-cancel", "pm_card_visa")
		pi, err := gw.Authorize(ctx, authorizeInput(run+"-cancel", customerID, pmID, domain.MustMoney(1500, "usd")))
		if err != nil {
			t.Fatalf("Authorize: %v", err)
		}
		canceled, err := gw.CancelPaymentIntent(ctx, pi.ID, "cancel:"+run)
		if err != nil {
			t.Fatalf("CancelPaymentIntent: %v", err)
		}
		requirePrefix(t, "canceled ID", canceled.ID, "pi_")
		if !target.stateful {
			return
		}

		if canceled.ID != pi.ID {
			t.Errorf("canceled ID = %q, want %q", canceled.ID, pi.ID)
		}
		if canceled.Status != ports.PICanceled {
			t.Errorf("Status = %q, want canceled", canceled.Status)
		}
		got, err := gw.GetPaymentIntent(ctx, pi.ID)
		if err != nil {
			t.Fatalf("GetPaymentIntent: %v", err)
		}
		if got.Status != ports.PICanceled {
			t.Errorf("read-back Status = %q, want canceled", got.Status)
		}
		if got.AmountCapturable != 0 {
			t.Errorf("AmountCapturable = %d, want 0 after cancel", got.AmountCapturable)
		}
	})

	t.Run("declined card", func(t *testing.T) {
		if !target.stateful {
			t.Skip("a stateless server approves every card")
		}
		ctx := context.Background()
		customerID, pmID := saveCard(t, gw, target, run+"-decline", "pm_card_chargeCustomerFail")
		in := authorizeInput(run+"-decline", customerID, pmID, domain.MustMoney(1000, "usd"))

		_, err := gw.Authorize(ctx, in)
		ge := requireGatewayError(t, err, ports.GatewayCardError)
		if ge.Code != "card_declined" {
			t.Errorf("Code = %q, want card_declined", ge.Code)
		}
		if ge.DeclineCode == "" {
			t.Error("DeclineCode is empty, want the issuer's reason")
		}
		if ge.HTTPStatus != 402 {
			t.Errorf("HTTPStatus = %d, want 402", ge.HTTPStatus)
		}
		if ge.Retryable() {
			t.Error("a card decline is retryable, want final")
		}
		if ge.PaymentIntent == nil {
			t.Fatal("PaymentIntent is nil, want the declined intent")
		}
		requirePrefix(t, "declined intent ID", ge.PaymentIntent.ID, "pi_")
		if ge.PaymentIntent.Status != ports.PIRequiresPaymentMethod {
			t.Errorf("declined intent Status = %q, want requires_payment_method", ge.PaymentIntent.Status)
		}
		if ge.PaymentIntent.PaymentID != in.PaymentID {
			t.Errorf("declined intent PaymentID = %q, want %q", ge.PaymentIntent.PaymentID, in.PaymentID)
		}
		if ge.PaymentIntent.LastErrorCode != "card_declined" {
			t.Errorf("declined intent LastErrorCode = %q, want card_declined", ge.PaymentIntent.LastErrorCode)
		}
		if ge.PaymentIntent.LastDeclineCode != ge.DeclineCode {
			t.Errorf("declined intent LastDeclineCode = %q, want %q", ge.PaymentIntent.LastDeclineCode, ge.DeclineCode)
		}

		found, ok, err := gw.FindPaymentIntent(ctx, customerID, in.PaymentID)
		if err != nil {
			t.Fatalf("FindPaymentIntent: %v", err)
		}
		if !ok || found.ID != ge.PaymentIntent.ID {
			t.Errorf("FindPaymentIntent = %q (found %v), want the declined intent %q", found.ID, ok, ge.PaymentIntent.ID)
		}
	})

	t.Run("authentication required", func(t *testing.T) {
		if !target.stateful {
			t.Skip("a stateless server approves every card")
		}
		customerID, pmID := saveCard(t, gw, target, run+"-3ds", "pm_card_authenticationRequired")
		_, err := gw.Authorize(context.Background(), authorizeInput(run+"-3ds", customerID, pmID, domain.MustMoney(1000, "usd")))
		ge := requireGatewayError(t, err, ports.GatewayCardError)
		if ge.Code != "authentication_required" {
			t.Errorf("Code = %q, want authentication_required", ge.Code)
		}
		if ge.PaymentIntent == nil {
			t.Fatal("PaymentIntent is nil, want the intent that needs authentication")
		}
		if ge.PaymentIntent.LastErrorCode != "authentication_required" {
			t.Errorf("intent LastErrorCode = %q, want authentication_required", ge.PaymentIntent.LastErrorCode)
		}
	})

	t.Run("zero-decimal currency", func(t *testing.T) {
		customerID, pmID := saveCard(t, gw, target, run+"-jpy", "pm_card_visa")
		pi, err := gw.Authorize(context.Background(), authorizeInput(run+"-jpy", customerID, pmID, domain.MustMoney(500, "jpy")))
		if err != nil {
			t.Fatalf("Authorize: %v", err)
		}
		requirePrefix(t, "intent ID", pi.ID, "pi_")
		if !target.stateful {
			return
		}
		if pi.Amount != 500 {
			t.Errorf("Amount = %d, want 500: JPY amounts are whole yen", pi.Amount)
		}
		if pi.Currency != "jpy" {
			t.Errorf("Currency = %q, want jpy", pi.Currency)
		}
		if pi.Status != ports.PIRequiresCapture {
			t.Errorf("Status = %q, want requires_capture", pi.Status)
		}
	})

	t.Run("unconfirmed intent", func(t *testing.T) {
		customerID, err := gw.CreateCustomer(context.Background(),
			ports.CreateCustomerInput{UserID: "user-" + run + "-browser", IdempotencyKey: "customer:" + run + "-browser"})
		if err != nil {
			t.Fatalf("CreateCustomer: %v", err)
		}
		pi, err := gw.Authorize(context.Background(), authorizeInput(run+"-browser", customerID, "", domain.MustMoney(2000, "eur")))
		if err != nil {
			t.Fatalf("Authorize: %v", err)
		}
		requirePrefix(t, "intent ID", pi.ID, "pi_")
		if pi.ClientSecret == "" {
			t.Error("ClientSecret is empty, want the secret the browser confirms with")
		}
		if !target.stateful {
			return
		}
		if pi.Status != ports.PIRequiresPaymentMethod {
			t.Errorf("Status = %q, want requires_payment_method", pi.Status)
		}
		if !pi.CaptureBefore.IsZero() {
			t.Errorf("CaptureBefore = %v, want zero before confirmation", pi.CaptureBefore)
		}
	})

	t.Run("missing object", func(t *testing.T) {
		if !target.stateful {
			t.Skip("a stateless server returns a fixture for any id")
		}
		_, err := gw.GetPaymentIntent(context.Background(), "pi_doesnotexist"+run)
		requireGatewayError(t, err, ports.GatewayInvalidRequest)
		if !errors.Is(err, ports.ErrGatewayNotFound) {
			t.Errorf("error = %v, want one wrapping ErrGatewayNotFound", err)
		}
	})
}

// contractAuthorizeCaptureTransfer walks one paid task: a hold, a partial
// capture, the agent's transfer and the lookups used to recover after a crash.
func contractAuthorizeCaptureTransfer(t *testing.T, gw ports.PaymentGateway, target contractTarget, run string) {
	ctx := context.Background()
	customerID, pmID := saveCard(t, gw, target, run+"-pay", "pm_card_visa")
	in := authorizeInput(run+"-pay", customerID, pmID, domain.MustMoney(1000, "usd"))

	before := time.Now().Add(-time.Minute)
	pi, err := gw.Authorize(ctx, in)
	if err != nil {
		t.Fatalf("Authorize: %v", err)
	}
	requirePrefix(t, "intent ID", pi.ID, "pi_")

	replayed, err := gw.Authorize(ctx, in)
	if err != nil {
		t.Fatalf("Authorize replay: %v", err)
	}

	found, ok, err := gw.FindPaymentIntent(ctx, customerID, in.PaymentID)
	if err != nil {
		t.Fatalf("FindPaymentIntent: %v", err)
	}
	_, missingFound, err := gw.FindPaymentIntent(ctx, customerID, "pay-unknown-"+run)
	if err != nil {
		t.Fatalf("FindPaymentIntent for an unknown payment: %v", err)
	}

	if target.stateful {
		if pi.Status != ports.PIRequiresCapture {
			t.Errorf("Status = %q, want requires_capture", pi.Status)
		}
		if pi.Amount != 1000 || pi.AmountCapturable != 1000 {
			t.Errorf("Amount = %d, AmountCapturable = %d, want 1000 and 1000", pi.Amount, pi.AmountCapturable)
		}
		if pi.Currency != "usd" {
			t.Errorf("Currency = %q, want usd", pi.Currency)
		}
		if pi.CustomerID != customerID || pi.PaymentMethodID != pmID || pi.PaymentID != in.PaymentID {
			t.Errorf("ids = customer %q method %q payment %q, want %q %q %q",
				pi.CustomerID, pi.PaymentMethodID, pi.PaymentID, customerID, pmID, in.PaymentID)
		}
		requirePrefix(t, "LatestChargeID", pi.LatestChargeID, "ch_")
		if !pi.CaptureBefore.After(before) {
			t.Errorf("CaptureBefore = %v, want a deadline after %v", pi.CaptureBefore, before)
		}
		if replayed.ID != pi.ID {
			t.Errorf("replayed Authorize ID = %q, want %q", replayed.ID, pi.ID)
		}
		if !ok || found.ID != pi.ID {
			t.Errorf("FindPaymentIntent = %q (found %v), want %q", found.ID, ok, pi.ID)
		}
		if !found.CaptureBefore.Equal(pi.CaptureBefore) {
			t.Errorf("found CaptureBefore = %v, want %v", found.CaptureBefore, pi.CaptureBefore)
		}
		if missingFound {
			t.Error("FindPaymentIntent found an intent for an unknown payment id")
		}

		conflicting := in
		conflicting.Amount = domain.MustMoney(1200, "usd")
		_, err = gw.Authorize(ctx, conflicting)
		requireGatewayError(t, err, ports.GatewayIdempotencyError)
	}

	captureKey := "capture:" + in.PaymentID
	captured, err := gw.Capture(ctx, pi.ID, 800, captureKey)
	if err != nil {
		t.Fatalf("Capture: %v", err)
	}
	requirePrefix(t, "ChargeID", captured.ChargeID, "ch_")
	requirePrefix(t, "BalanceTransactionID", captured.BalanceTransactionID, "txn_")

	replayedCapture, err := gw.Capture(ctx, pi.ID, 800, captureKey)
	if err != nil {
		t.Fatalf("Capture replay: %v", err)
	}

	// stripe-mock's PaymentIntent fixture is never succeeded, so GetCapture
	// can only be checked against a stateful server.
	if target.stateful {
		settled, err := gw.GetCapture(ctx, pi.ID)
		if err != nil {
			t.Fatalf("GetCapture: %v", err)
		}

		// The emulator charges 2.9 % + 30 of the captured amount:
		// 800 × 0.029 = 23.2, rounded to 23, plus 30.
		want := ports.Capture{
			PaymentIntentID:      pi.ID,
			ChargeID:             pi.LatestChargeID,
			BalanceTransactionID: captured.BalanceTransactionID,
			Amount:               800,
			StripeFee:            53,
		}
		if captured != want {
			t.Errorf("Capture = %+v, want %+v", captured, want)
		}
		if replayedCapture != captured {
			t.Errorf("replayed Capture = %+v, want %+v", replayedCapture, captured)
		}
		if settled != captured {
			t.Errorf("GetCapture = %+v, want %+v", settled, captured)
		}
		after, err := gw.GetPaymentIntent(ctx, pi.ID)
		if err != nil {
			t.Fatalf("GetPaymentIntent: %v", err)
		}
		if after.Status != ports.PISucceeded || after.AmountReceived != 800 {
			t.Errorf("after capture: Status = %q, AmountReceived = %d, want succeeded and 800", after.Status, after.AmountReceived)
		}
	}

	transferIn := ports.TransferInput{
		PaymentID:          in.PaymentID,
		Amount:             domain.MustMoney(780, "usd"),
		DestinationAccount: target.connectedAccount,
		SourceChargeID:     captured.ChargeID,
		TransferGroup:      in.TaskID,
		IdempotencyKey:     "transfer:" + in.PaymentID,
	}
	tr, err := gw.CreateTransfer(ctx, transferIn)
	if err != nil {
		t.Fatalf("CreateTransfer: %v", err)
	}
	requirePrefix(t, "transfer ID", tr.ID, "tr_")
	replayedTransfer, err := gw.CreateTransfer(ctx, transferIn)
	if err != nil {
		t.Fatalf("CreateTransfer replay: %v", err)
	}
	foundTransfer, transferFound, err := gw.FindTransfer(ctx, in.TaskID, in.PaymentID)
	if err != nil {
		t.Fatalf("FindTransfer: %v", err)
	}
	_, otherFound, err := gw.FindTransfer(ctx, in.TaskID, "pay-unknown-"+run)
	if err != nil {
		t.Fatalf("FindTransfer for an unknown payment: %v", err)
	}

	if target.stateful {
		if tr.Amount != 780 {
			t.Errorf("transfer Amount = %d, want 780", tr.Amount)
		}
		if replayedTransfer != tr {
			t.Errorf("replayed CreateTransfer = %+v, want %+v", replayedTransfer, tr)
		}
		if !transferFound || foundTransfer != tr {
			t.Errorf("FindTransfer = %+v (found %v), want %+v", foundTransfer, transferFound, tr)
		}
		if otherFound {
			t.Error("FindTransfer found a transfer for an unknown payment id")
		}
	}
}

// saveCard creates a customer and saves token's card through a SetupIntent
// confirmed server-side, as the browser would after collecting the card. It
// returns the customer and payment method ids.
func saveCard(t *testing.T, gw ports.PaymentGateway, target contractTarget, name, token string) (customerID, paymentMethodID string) {
	t.Helper()
	ctx := context.Background()

	customerID, err := gw.CreateCustomer(ctx, ports.CreateCustomerInput{UserID: "user-" + name, IdempotencyKey: "customer:" + name})
	if err != nil {
		t.Fatalf("CreateCustomer: %v", err)
	}
	requirePrefix(t, "customer ID", customerID, "cus_")

	si, err := gw.CreateSetupIntent(ctx, customerID, "setup:"+name)
	if err != nil {
		t.Fatalf("CreateSetupIntent: %v", err)
	}
	requirePrefix(t, "setup intent ID", si.ID, "seti_")
	if si.ClientSecret == "" {
		t.Error("setup intent ClientSecret is empty")
	}

	confirmSetupIntent(t, target.baseURL, si.ID, token)

	got, err := gw.GetSetupIntent(ctx, si.ID)
	if err != nil {
		t.Fatalf("GetSetupIntent: %v", err)
	}
	if !target.stateful {
		// stripe-mock's fixture may carry no payment method, and any pm_ id
		// is accepted by a stateless server.
		if got.PaymentMethodID != "" {
			return customerID, got.PaymentMethodID
		}
		return customerID, "pm_card_visa"
	}

	if si.CustomerID != customerID {
		t.Errorf("setup intent CustomerID = %q, want %q", si.CustomerID, customerID)
	}
	if si.Status == ports.SetupIntentSucceeded {
		t.Errorf("new setup intent Status = %q, want a status before confirmation", si.Status)
	}
	if got.Status != ports.SetupIntentSucceeded {
		t.Fatalf("confirmed setup intent Status = %q, want succeeded", got.Status)
	}
	requirePrefix(t, "saved PaymentMethodID", got.PaymentMethodID, "pm_")
	return customerID, got.PaymentMethodID
}

// confirmSetupIntent confirms a SetupIntent with a test card token through
// stripe-go directly, standing in for Stripe.js in the customer's browser.
func confirmSetupIntent(t *testing.T, baseURL, setupIntentID, token string) {
	t.Helper()
	api := client.New(contractTestKey, stripego.NewBackendsWithConfig(&stripego.BackendConfig{
		URL:               stripego.String(baseURL),
		MaxNetworkRetries: stripego.Int64(0),
		LeveledLogger:     &stripego.LeveledLogger{Level: stripego.LevelNull},
	}))
	params := &stripego.SetupIntentConfirmParams{PaymentMethod: stripego.String(token)}
	if _, err := api.SetupIntents.Confirm(setupIntentID, params); err != nil {
		t.Fatalf("confirm setup intent %s with %s: %v", setupIntentID, token, toGatewayError(err, nil))
	}
}

func authorizeInput(name, customerID, paymentMethodID string, amount domain.Money) ports.AuthorizeInput {
	return ports.AuthorizeInput{
		PaymentID:       "pay-" + name,
		TaskID:          "task-" + name,
		CustomerID:      customerID,
		PaymentMethodID: paymentMethodID,
		Amount:          amount,
		IdempotencyKey:  "authorize:" + name,
	}
}

func requireGatewayError(t *testing.T, err error, kind ports.GatewayErrorKind) *ports.GatewayError {
	t.Helper()
	var ge *ports.GatewayError
	if !errors.As(err, &ge) {
		t.Fatalf("error = %v, want a *ports.GatewayError of kind %s", err, kind)
	}
	if ge.Kind != kind {
		t.Fatalf("error kind = %q (%v), want %q", ge.Kind, ge, kind)
	}
	return ge
}

func requirePrefix(t *testing.T, label, id, prefix string) {
	t.Helper()
	if !strings.HasPrefix(id, prefix) {
		t.Errorf("%s = %q, want an id starting with %s", label, id, prefix)
	}
}

// newRunID returns a random suffix so that repeated runs against one
// server do not replay each other's idempotency keys.
func newRunID(t *testing.T) string {
	t.Helper()
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

var stripeMockListening = regexp.MustCompile(`Listening for HTTP at address: (\S+)`)

// startStripeMock runs stripe-mock on loopback ports chosen by the system
// and returns its HTTP base URL. Without the binary the test is skipped on
// a developer machine and fails in CI, where the CI variable is set.
func startStripeMock(t *testing.T) string {
	t.Helper()
	path := stripeMockPath
	if override := os.Getenv("STRIPE_MOCK_BIN"); override != "" {
		path = override
	}
	if _, err := os.Stat(path); err != nil {
		msg := "stripe-mock not found at " + path + " (set STRIPE_MOCK_BIN, or install it with go install github.com/stripe/stripe-mock@v0.203.0)"
		if os.Getenv("CI") == "" {
			t.Skip(msg)
		}
		t.Fatal(msg)
	}

	// Both listeners are bound to loopback: stripe-mock opens an HTTPS
	// listener on all interfaces unless told otherwise.
	cmd := exec.Command(path, "-http-addr", "127.0.0.1:0", "-https-addr", "127.0.0.1:0")
	addr := make(chan string, 1)
	output := &addressWriter{found: addr}
	cmd.Stdout = output
	cmd.Stderr = output
	if err := cmd.Start(); err != nil {
		t.Fatalf("start stripe-mock: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})

	select {
	case a := <-addr:
		return "http://" + a
	case <-time.After(15 * time.Second):
		t.Fatalf("stripe-mock did not report its HTTP address within 15 s; output:\n%s", output.text())
		return ""
	}
}

// addressWriter collects stripe-mock's output and sends the HTTP address
// once it appears.
type addressWriter struct {
	mu    sync.Mutex
	buf   strings.Builder
	found chan<- string
	sent  bool
}

func (w *addressWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	if !w.sent {
		if m := stripeMockListening.FindStringSubmatch(w.buf.String()); m != nil {
			w.found <- m[1]
			w.sent = true
		}
	}
	return len(p), nil
}

func (w *addressWriter) text() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}
