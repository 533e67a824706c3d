package stripe

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/taskpod/billing/domain"
	"github.com/taskpod/billing/ports"
)

// Operation labels of the Stripe metrics, one per PaymentGateway method.
const (
	opCreateCustomer      = "create_customer"
	opCreateSetupIntent   = "create_setup_intent"
	opGetSetupIntent      = "get_setup_intent"
	opGetPaymentMethod    = "get_payment_method"
	opListPaymentMethods  = "list_payment_methods"
	opDetachPaymentMethod = "detach_payment_method"
	opAuthorize           = "authorize"
	opGetPaymentIntent    = "get_payment_intent"
	opFindPaymentIntent   = "find_payment_intent"
	opCapture             = "capture"
	opGetCapture          = "get_capture"
	opCancelPaymentIntent = "cancel_payment_intent"
	opCreateTransfer      = "create_transfer"
	opFindTransfer        = "find_transfer"
)

var operations = []string{
	opCreateCustomer, opCreateSetupIntent, opGetSetupIntent, opGetPaymentMethod,
	opListPaymentMethods, opDetachPaymentMethod, opAuthorize, opGetPaymentIntent,
	opFindPaymentIntent, opCapture, opGetCapture, opCancelPaymentIntent,
	opCreateTransfer, opFindTransfer,
}

// outcomeSuccess is the outcome label of a call that returned no error. The
// other outcomes are the ports.GatewayErrorKind values.
const outcomeSuccess = "success"

var outcomes = []string{
	outcomeSuccess,
	string(ports.GatewayCardError),
	string(ports.GatewayInvalidRequest),
	string(ports.GatewayIdempotencyError),
	string(ports.GatewayRateLimited),
	string(ports.GatewayAPIError),
	string(ports.GatewayNetwork),
}

// durationBuckets are the histogram buckets in seconds. The last one is the
// gateway's default HTTP timeout of 30 s, and list calls that page may take
// longer.
var durationBuckets = []float64{0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}

// MeteredOption changes a gateway built by NewMetered.
type MeteredOption func(*meteredGateway)

// WithLogger sets the logger that receives a warning for each failed call.
// The default is slog.Default().
func WithLogger(l *slog.Logger) MeteredOption {
	return func(m *meteredGateway) {
		if l != nil {
			m.log = l
		}
	}
}

// NewMetered wraps next so that each call is counted in
// taskpod_billing_stripe_requests_total{operation,outcome}, timed in
// taskpod_billing_stripe_request_duration_seconds{operation}, and logged at
// warn level when it fails. Every operation and outcome pair is created at
// zero so that dashboards see the series before the first failure. Several
// gateways may share one registry: the collectors registered first are reused.
func NewMetered(next ports.PaymentGateway, reg prometheus.Registerer, opts ...MeteredOption) (ports.PaymentGateway, error) {
	if next == nil {
		return nil, errors.New("stripe: NewMetered needs a gateway to wrap, got nil")
	}
	if reg == nil {
		return nil, errors.New("stripe: NewMetered needs a prometheus.Registerer, got nil")
	}

	requests := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "taskpod_billing_stripe_requests_total",
		Help: "Stripe gateway calls by operation and outcome. The outcome is success or the gateway error kind.",
	}, []string{"operation", "outcome"})
	duration := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "taskpod_billing_stripe_request_duration_seconds",
		Help:    "Duration of Stripe gateway calls in seconds, including every page of list calls.",
		Buckets: durationBuckets,
	}, []string{"operation"})

	var err error
	if requests, err = registerOrReuse(reg, requests); err != nil {
		return nil, err
	}
	if duration, err = registerOrReuse(reg, duration); err != nil {
		return nil, err
	}

	for _, op := range operations {
		for _, outcome := range outcomes {
			requests.WithLabelValues(op, outcome)
		}
		duration.WithLabelValues(op)
	}

	m := &meteredGateway{next: next, requests: requests, duration: duration, log: slog.Default()}
	for _, opt := range opts {
		opt(m)
	}
	return m, nil
}

// registerOrReuse registers c, or returns the equal collector that reg
// already holds.
func registerOrReuse[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	err := reg.Register(c)
	if err == nil {
		return c, nil
	}
	var already prometheus.AlreadyRegisteredError
	if errors.As(err, &already) {
		if existing, ok := already.ExistingCollector.(C); ok {
			return existing, nil
		}
	}
	var zero C
	return zero, fmt.Errorf("stripe: register metrics: %w", err)
}

type meteredGateway struct {
	next     ports.PaymentGateway
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	log      *slog.Logger
}

// outcomeOf returns the outcome label for a call's error. An error that is
// not a *ports.GatewayError counts as network when the context ended and as
// api_error otherwise, because in both cases the result is unknown.
func outcomeOf(err error) string {
	if err == nil {
		return outcomeSuccess
	}
	var ge *ports.GatewayError
	if errors.As(err, &ge) {
		return string(ge.Kind)
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return string(ports.GatewayNetwork)
	}
	return string(ports.GatewayAPIError)
}

// observe records one call. ids are slog attributes naming the Stripe and
// TaskPod ids involved. Callers pass ids only, never a secret key or a
// client secret.
func (m *meteredGateway) observe(ctx context.Context, operation string, start time.Time, err error, ids ...slog.Attr) {
	outcome := outcomeOf(err)
	m.duration.WithLabelValues(operation).Observe(time.Since(start).Seconds())
	m.requests.WithLabelValues(operation, outcome).Inc()
	if err == nil {
		return
	}

	attrs := append([]slog.Attr{
		slog.String("operation", operation),
		slog.String("outcome", outcome),
		slog.String("error", err.Error()),
	}, ids...)
	var ge *ports.GatewayError
	if errors.As(err, &ge) {
		if ge.Code != "" {
			attrs = append(attrs, slog.String("code", ge.Code))
		}
		if ge.DeclineCode != "" {
			attrs = append(attrs, slog.String("decline_code", ge.DeclineCode))
		}
		if ge.HTTPStatus != 0 {
			attrs = append(attrs, slog.Int("http_status", ge.HTTPStatus))
		}
		if ge.PaymentIntent != nil {
			attrs = append(attrs, slog.String("payment_intent_id", ge.PaymentIntent.ID))
		}
	}
	m.log.LogAttrs(ctx, slog.LevelWarn, "stripe request failed", attrs...)
}

func (m *meteredGateway) CreateCustomer(ctx context.Context, in ports.CreateCustomerInput) (string, error) {
	start := time.Now()
	id, err := m.next.CreateCustomer(ctx, in)
	m.observe(ctx, opCreateCustomer, start, err, slog.String("user_id", in.UserID))
	return id, err
}

func (m *meteredGateway) CreateSetupIntent(ctx context.Context, customerID, idempotencyKey string) (ports.SetupIntent, error) {
	start := time.Now()
	si, err := m.next.CreateSetupIntent(ctx, customerID, idempotencyKey)
	m.observe(ctx, opCreateSetupIntent, start, err, slog.String("customer_id", customerID))
	return si, err
}

func (m *meteredGateway) GetSetupIntent(ctx context.Context, id string) (ports.SetupIntent, error) {
	start := time.Now()
	si, err := m.next.GetSetupIntent(ctx, id)
	m.observe(ctx, opGetSetupIntent, start, err, slog.String("setup_intent_id", id))
	return si, err
}

func (m *meteredGateway) GetPaymentMethod(ctx context.Context, id string) (domain.PaymentMethod, error) {
	start := time.Now()
	pm, err := m.next.GetPaymentMethod(ctx, id)
	m.observe(ctx, opGetPaymentMethod, start, err, slog.String("payment_method_id", id))
	return pm, err
}

func (m *meteredGateway) ListPaymentMethods(ctx context.Context, customerID string) ([]domain.PaymentMethod, error) {
	start := time.Now()
	pms, err := m.next.ListPaymentMethods(ctx, customerID)
	m.observe(ctx, opListPaymentMethods, start, err, slog.String("customer_id", customerID))
	return pms, err
}

func (m *meteredGateway) DetachPaymentMethod(ctx context.Context, id, idempotencyKey string) error {
	start := time.Now()
	err := m.next.DetachPaymentMethod(ctx, id, idempotencyKey)
	m.observe(ctx, opDetachPaymentMethod, start, err, slog.String("payment_method_id", id))
	return err
}

func (m *meteredGateway) Authorize(ctx context.Context, in ports.AuthorizeInput) (ports.PaymentIntent, error) {
	start := time.Now()
	pi, err := m.next.Authorize(ctx, in)
	m.observe(ctx, opAuthorize, start, err,
		slog.String("payment_id", in.PaymentID), slog.String("task_id", in.TaskID),
		slog.String("customer_id", in.CustomerID), slog.String("payment_method_id", in.PaymentMethodID))
	return pi, err
}

func (m *meteredGateway) GetPaymentIntent(ctx context.Context, id string) (ports.PaymentIntent, error) {
	start := time.Now()
	pi, err := m.next.GetPaymentIntent(ctx, id)
	m.observe(ctx, opGetPaymentIntent, start, err, slog.String("payment_intent_id", id))
	return pi, err
}

func (m *meteredGateway) FindPaymentIntent(ctx context.Context, customerID, paymentID string) (ports.PaymentIntent, bool, error) {
	start := time.Now()
	pi, found, err := m.next.FindPaymentIntent(ctx, customerID, paymentID)
	m.observe(ctx, opFindPaymentIntent, start, err,
		slog.String("customer_id", customerID), slog.String("payment_id", paymentID))
	return pi, found, err
}

func (m *meteredGateway) Capture(ctx context.Context, paymentIntentID string, amount int64, idempotencyKey string) (ports.Capture, error) {
	start := time.Now()
	c, err := m.next.Capture(ctx, paymentIntentID, amount, idempotencyKey)
	m.observe(ctx, opCapture, start, err,
		slog.String("payment_intent_id", paymentIntentID), slog.Int64("amount", amount))
	return c, err
}

func (m *meteredGateway) GetCapture(ctx context.Context, paymentIntentID string) (ports.Capture, error) {
	start := time.Now()
	c, err := m.next.GetCapture(ctx, paymentIntentID)
	m.observe(ctx, opGetCapture, start, err, slog.String("payment_intent_id", paymentIntentID))
	return c, err
}

func (m *meteredGateway) CancelPaymentIntent(ctx context.Context, paymentIntentID, idempotencyKey string) (ports.PaymentIntent, error) {
	start := time.Now()
	pi, err := m.next.CancelPaymentIntent(ctx, paymentIntentID, idempotencyKey)
	m.observe(ctx, opCancelPaymentIntent, start, err, slog.String("payment_intent_id", paymentIntentID))
	return pi, err
}

func (m *meteredGateway) CreateTransfer(ctx context.Context, in ports.TransferInput) (ports.Transfer, error) {
	start := time.Now()
	tr, err := m.next.CreateTransfer(ctx, in)
	m.observe(ctx, opCreateTransfer, start, err,
		slog.String("payment_id", in.PaymentID), slog.String("charge_id", in.SourceChargeID),
		slog.String("destination_account", in.DestinationAccount), slog.String("transfer_group", in.TransferGroup))
	return tr, err
}

func (m *meteredGateway) FindTransfer(ctx context.Context, transferGroup, paymentID string) (ports.Transfer, bool, error) {
	start := time.Now()
	tr, found, err := m.next.FindTransfer(ctx, transferGroup, paymentID)
	m.observe(ctx, opFindTransfer, start, err,
		slog.String("transfer_group", transferGroup), slog.String("payment_id", paymentID))
	return tr, found, err
}
