package stripe

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/taskpod/billing/domain"
	"github.com/taskpod/billing/ports"
)

// stubGateway returns fixed results. Methods the test does not call panic
// through the nil embedded interface.
type stubGateway struct {
	ports.PaymentGateway
	authorizeErr error
}

func (s stubGateway) CreateCustomer(context.Context, ports.CreateCustomerInput) (string, error) {
	return "cus_1", nil
}

func (s stubGateway) Authorize(_ context.Context, in ports.AuthorizeInput) (ports.PaymentIntent, error) {
	return ports.PaymentIntent{}, s.authorizeErr
}

func TestMeteredCountsOutcomes(t *testing.T) {
	declined := &ports.GatewayError{
		Kind:        ports.GatewayCardError,
		Code:        "card_declined",
		DeclineCode: "insufficient_funds",
		HTTPStatus:  402,
		PaymentIntent: &ports.PaymentIntent{
			ID:           "pi_declined",
			ClientSecret: "pi_declined_secret_do_not_log",
		},
	}
	var logs bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&logs, nil))
	reg := prometheus.NewPedanticRegistry()

	gw, err := NewMetered(stubGateway{authorizeErr: declined}, reg, WithLogger(logger))
	if err != nil {
		t.Fatalf("NewMetered: %v", err)
	}

	ctx := context.Background()
	if _, err := gw.CreateCustomer(ctx, ports.CreateCustomerInput{UserID: "user_1", IdempotencyKey: "k1"}); err != nil {
		t.Fatalf("CreateCustomer: %v", err)
	}
	_, err = gw.Authorize(ctx, ports.AuthorizeInput{
		PaymentID: "pay_1", TaskID: "task_1", CustomerID: "cus_1", PaymentMethodID: "pm_1",
		Amount: domain.MustMoney(1000, "usd"), IdempotencyKey: "k2",
	})
	if err != declined {
		t.Fatalf("Authorize error = %v, want the stub's error unchanged", err)
	}

	requests, err := reg.Gather()
	if err != nil {
		t.Fatalf("Gather: %v", err)
	}
	if len(requests) != 2 {
		t.Errorf("registry has %d metric families, want 2", len(requests))
	}

	counts := []struct {
		operation, outcome string
		want               float64
	}{
		{"create_customer", "success", 1},
		{"create_customer", "api_error", 0},
		{"authorize", "card_error", 1},
		{"authorize", "success", 0},
		{"capture", "network", 0},
	}
	counter := gw.(*meteredGateway).requests
	for _, c := range counts {
		got := testutil.ToFloat64(counter.WithLabelValues(c.operation, c.outcome))
		if got != c.want {
			t.Errorf("requests_total{operation=%q,outcome=%q} = %v, want %v", c.operation, c.outcome, got, c.want)
		}
	}

	// Every operation and outcome pair exists before its first call.
	wantSeries := len(operations) * len(outcomes)
	if got := testutil.CollectAndCount(counter, "taskpod_billing_stripe_requests_total"); got != wantSeries {
		t.Errorf("requests_total has %d series, want %d", got, wantSeries)
	}
	histogram := gw.(*meteredGateway).duration
	if got := testutil.CollectAndCount(histogram, "taskpod_billing_stripe_request_duration_seconds"); got != len(operations) {
		t.Errorf("request_duration_seconds has %d series, want %d", got, len(operations))
	}

	const wantText = `
# HELP taskpod_billing_stripe_requests_total Stripe gateway calls by operation and outcome. The outcome is success or the gateway error kind.
# TYPE taskpod_billing_stripe_requests_total counter
taskpod_billing_stripe_requests_total{operation="authorize",outcome="card_error"} 1
taskpod_billing_stripe_requests_total{operation="authorize",outcome="success"} 0
`
	if err := testutil.CollectAndCompare(&filteredCollector{counter, "authorize", []string{"card_error", "success"}},
		strings.NewReader(wantText)); err != nil {
		t.Errorf("exposition differs: %v", err)
	}

	logText := logs.String()
	if n := strings.Count(logText, "stripe request failed"); n != 1 {
		t.Errorf("logged %d failures, want 1:\n%s", n, logText)
	}
	for _, want := range []string{"level=WARN", "operation=authorize", "outcome=card_error", "decline_code=insufficient_funds", "payment_intent_id=pi_declined", "payment_id=pay_1"} {
		if !strings.Contains(logText, want) {
			t.Errorf("log lacks %q:\n%s", want, logText)
		}
	}
	if strings.Contains(logText, "secret") {
		t.Errorf("log contains a client secret:\n%s", logText)
	}
}

func TestMeteredSharesRegistry(t *testing.T) {
	reg := prometheus.NewRegistry()
	first, err := NewMetered(stubGateway{}, reg)
	if err != nil {
		t.Fatalf("first NewMetered: %v", err)
	}
	second, err := NewMetered(stubGateway{}, reg)
	if err != nil {
		t.Fatalf("second NewMetered on the same registry: %v", err)
	}
	if _, err := first.CreateCustomer(context.Background(), ports.CreateCustomerInput{}); err != nil {
		t.Fatal(err)
	}
	if _, err := second.CreateCustomer(context.Background(), ports.CreateCustomerInput{}); err != nil {
		t.Fatal(err)
	}
	counter := second.(*meteredGateway).requests
	if got := testutil.ToFloat64(counter.WithLabelValues("create_customer", "success")); got != 2 {
		t.Errorf("shared requests_total{create_customer,success} = %v, want 2", got)
	}
}

// filteredCollector exposes only some series of a counter vector so that
// CollectAndCompare can check exact exposition text for them.
type filteredCollector struct {
	vec       *prometheus.CounterVec
	operation string
	outcomes  []string
}

func (f *filteredCollector) Describe(ch chan<- *prometheus.Desc) { f.vec.Describe(ch) }

func (f *filteredCollector) Collect(ch chan<- prometheus.Metric) {
	for _, outcome := range f.outcomes {
		ch <- f.vec.WithLabelValues(f.operation, outcome)
	}
}
