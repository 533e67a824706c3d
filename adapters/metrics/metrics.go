// Package metrics exposes the service's Prometheus metrics. Every name
// starts with taskpod_billing_, values are in base units (seconds, minor
// units of money), and labels are bounded: never a task, customer or token id.
package metrics

import (
	"context"
	"log/slog"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/taskpod/billing/domain"
)

const namespace = "taskpod_billing"

// paymentTargets are the payment states counted by the transition metrics.
// expired and refunded are not domain.PaymentStatus values: they name the
// event that moved the money.
var paymentTargets = []string{"authorized", "captured", "transferred", "released", "failed", "expired", "refunded"}

// Metrics holds the service's own collectors.
type Metrics struct {
	httpRequests     *prometheus.CounterVec
	httpDuration     *prometheus.HistogramVec
	transitions      *prometheus.CounterVec
	amounts          *prometheus.CounterVec
	relayAttempts    *prometheus.CounterVec
	webhooksReceived *prometheus.CounterVec
}

// New registers the service's metrics and the Go runtime's on reg.
func New(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		httpRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "http_requests_total",
			Help: "API requests by route pattern, method and status class (2xx, 4xx, 5xx).",
		}, []string{"route", "method", "status_class"}),
		httpDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Name: "http_request_duration_seconds",
			Help:    "API request duration by route pattern and method.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"route", "method"}),
		transitions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "payment_transitions_total",
			Help: "Payment state changes committed, by target state.",
		}, []string{"to"}),
		amounts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "payment_amount_minor_units_total",
			Help: "Money moved by payment state changes, in minor units of the currency.",
		}, []string{"to", "currency"}),
		relayAttempts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "outbox_relay_attempts_total",
			Help: "Outbox messages handled by the relay, by step and outcome (success, retry, quarantined).",
		}, []string{"step", "outcome"}),
		webhooksReceived: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "webhooks_received_total",
			Help: "Stripe webhook events received, by event type and outcome.",
		}, []string{"type", "outcome"}),
	}
	for _, c := range []prometheus.Collector{m.httpRequests, m.httpDuration, m.transitions, m.amounts, m.relayAttempts, m.webhooksReceived,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	for _, to := range paymentTargets {
		m.transitions.WithLabelValues(to)
	}
	steps := []domain.Step{
		domain.StepAuthorize, domain.StepCapture, domain.StepTransfer, domain.StepRelease,
		domain.StepReauthorize, domain.StepReleasePrevious, domain.StepRefund, domain.StepTransferReversal,
	}
	for _, step := range steps {
		for _, outcome := range []string{"success", "retry", "quarantined"} {
			m.relayAttempts.WithLabelValues(string(step), outcome)
		}
	}
	return m, nil
}

// InitCurrencies creates the amount series of every payment state in each
// currency at zero, so that rates and alerts see them before the first
// payment in that currency.
func (m *Metrics) InitCurrencies(currencies []domain.Currency) {
	for _, cur := range currencies {
		for _, to := range paymentTargets {
			m.amounts.WithLabelValues(to, string(cur))
		}
	}
}

// InitWebhooks creates the webhook series of every event type and outcome
// pair at zero, so that alerts on rare outcomes see them before the first
// such event.
func (m *Metrics) InitWebhooks(eventTypes, outcomes []string) {
	for _, t := range eventTypes {
		for _, o := range outcomes {
			m.webhooksReceived.WithLabelValues(t, o)
		}
	}
}

// ObserveRequest records one API request.
func (m *Metrics) ObserveRequest(route, method string, status int, elapsed time.Duration) {
	class := strconv.Itoa(status/100) + "xx"
	m.httpRequests.WithLabelValues(route, method, class).Inc()
	m.httpDuration.WithLabelValues(route, method).Observe(elapsed.Seconds())
}

// PaymentTransitioned records a committed payment state change.
func (m *Metrics) PaymentTransitioned(to domain.PaymentStatus, currency domain.Currency, amount int64) {
	m.transitions.WithLabelValues(string(to)).Inc()
	m.amounts.WithLabelValues(string(to), string(currency)).Add(float64(amount))
}

// RelayAttempt records one message handled by the relay.
func (m *Metrics) RelayAttempt(step, outcome string) {
	m.relayAttempts.WithLabelValues(step, outcome).Inc()
}

// WebhookReceived records one Stripe event.
func (m *Metrics) WebhookReceived(eventType, outcome string) {
	m.webhooksReceived.WithLabelValues(eventType, outcome).Inc()
}

// dbCollector reads gauges from PostgreSQL at scrape time, so they are
// right whichever instance did the work.
type dbCollector struct {
	pool        *pgxpool.Pool
	log         *slog.Logger
	pending     *prometheus.Desc
	oldest      *prometheus.Desc
	quarantined *prometheus.Desc
	imbalance   *prometheus.Desc
	nearExpiry  *prometheus.Desc
	poolConns   *prometheus.Desc
	poolMax     *prometheus.Desc
	poolWaits   *prometheus.Desc
	poolAcquire *prometheus.Desc
	poolWaited  *prometheus.Desc
	poolCancel  *prometheus.Desc
}

// RegisterDatabase adds the gauges read from the database and the pool.
func RegisterDatabase(reg prometheus.Registerer, pool *pgxpool.Pool, log *slog.Logger) error {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(namespace+"_"+name, help, labels, nil)
	}
	return reg.Register(&dbCollector{
		pool: pool, log: log,
		pending:     d("outbox_pending_messages", "Outbox messages not yet relayed, delayed retries included."),
		oldest:      d("outbox_oldest_pending_age_seconds", "Age of the oldest outbox message not yet relayed; 0 when none."),
		quarantined: d("outbox_quarantined_messages", "Outbox messages in quarantine awaiting an operator."),
		imbalance:   d("ledger_imbalance_minor_units", "Sum of all ledger entries per currency; anything but 0 is a defect.", "currency"),
		nearExpiry:  d("holds_near_expiry", "Authorized holds whose capture deadline is within 24 hours."),
		poolConns:   d("db_pool_connections", "Database pool connections by state.", "state"),
		poolMax:     d("db_pool_max_connections", "Maximum size of the database pool."),
		poolWaits:   d("db_pool_acquire_waits_total", "Pool acquisitions that had to wait for a connection."),
		poolAcquire: d("db_pool_acquires_total", "Successful pool acquisitions."),
		poolWaited:  d("db_pool_acquire_wait_seconds_total", "Time spent waiting for a connection by acquisitions that found the pool empty."),
		poolCancel:  d("db_pool_canceled_acquires_total", "Pool acquisitions whose context ended before they got a connection."),
	})
}

func (c *dbCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.pending, c.oldest, c.quarantined, c.imbalance, c.nearExpiry,
		c.poolConns, c.poolMax, c.poolWaits, c.poolAcquire, c.poolWaited, c.poolCancel} {
		ch <- d
	}
}

func (c *dbCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	var pending int64
	var oldest float64
	err := c.pool.QueryRow(ctx, `SELECT count(*), COALESCE(EXTRACT(EPOCH FROM now() - min(created_at)), 0)
		FROM watermill_payment_steps`).Scan(&pending, &oldest)
	c.gauge(ch, err, c.pending, float64(pending))
	c.gauge(ch, err, c.oldest, oldest)

	var quarantined int64
	err = c.pool.QueryRow(ctx, `SELECT count(*) FROM outbox_quarantine WHERE requeued_at IS NULL`).Scan(&quarantined)
	c.gauge(ch, err, c.quarantined, float64(quarantined))

	var near int64
	err = c.pool.QueryRow(ctx, `SELECT count(*) FROM payments WHERE status = 'authorized'
		AND capture_before IS NOT NULL AND capture_before < now() + interval '24 hours'`).Scan(&near)
	c.gauge(ch, err, c.nearExpiry, float64(near))

	c.collectImbalance(ctx, ch)

	stat := c.pool.Stat()
	ch <- prometheus.MustNewConstMetric(c.poolConns, prometheus.GaugeValue, float64(stat.AcquiredConns()), "acquired")
	ch <- prometheus.MustNewConstMetric(c.poolConns, prometheus.GaugeValue, float64(stat.IdleConns()), "idle")
	ch <- prometheus.MustNewConstMetric(c.poolConns, prometheus.GaugeValue, float64(stat.ConstructingConns()), "constructing")
	ch <- prometheus.MustNewConstMetric(c.poolMax, prometheus.GaugeValue, float64(stat.MaxConns()))
	ch <- prometheus.MustNewConstMetric(c.poolWaits, prometheus.CounterValue, float64(stat.EmptyAcquireCount()))
	ch <- prometheus.MustNewConstMetric(c.poolAcquire, prometheus.CounterValue, float64(stat.AcquireCount()))
	ch <- prometheus.MustNewConstMetric(c.poolWaited, prometheus.CounterValue, stat.EmptyAcquireWaitTime().Seconds())
	ch <- prometheus.MustNewConstMetric(c.poolCancel, prometheus.CounterValue, float64(stat.CanceledAcquireCount()))
}

// collectImbalance sums posted and pending entries per currency; each
// transaction balances on its own, so the total must be zero.
func (c *dbCollector) collectImbalance(ctx context.Context, ch chan<- prometheus.Metric) {
	rows, err := c.pool.Query(ctx, `SELECT currency, sum(amount) FROM ledger_entries GROUP BY currency`)
	if err != nil {
		c.log.Warn("metrics query failed", "metric", "ledger_imbalance_minor_units", "error", err)
		return
	}
	defer rows.Close()
	seen := false
	for rows.Next() {
		var cur string
		var sum int64
		if err := rows.Scan(&cur, &sum); err != nil {
			c.log.Warn("metrics scan failed", "error", err)
			return
		}
		seen = true
		ch <- prometheus.MustNewConstMetric(c.imbalance, prometheus.GaugeValue, float64(sum), cur)
	}
	if !seen {
		ch <- prometheus.MustNewConstMetric(c.imbalance, prometheus.GaugeValue, 0, "usd")
	}
}

func (c *dbCollector) gauge(ch chan<- prometheus.Metric, err error, desc *prometheus.Desc, v float64) {
	if err != nil {
		c.log.Warn("metrics query failed", "metric", desc.String(), "error", err)
		return
	}
	ch <- prometheus.MustNewConstMetric(desc, prometheus.GaugeValue, v)
}
