package main

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/fx"

	"github.com/taskpod/billing/adapters/metrics"
	"github.com/taskpod/billing/adapters/outbox"
	"github.com/taskpod/billing/application"
)

// opsModule adds what operators need beyond the API: the relay's Watermill
// metrics, zero series for every supported currency, and the connection
// draining that lets a SIGTERM stop lose no request.
//
// Its invokes run while the application is built, before any OnStart hook,
// so the relay's router is instrumented before startRelay runs it.
var opsModule = fx.Module("ops",
	fx.Invoke(instrumentRelay, initZeroSeries, drainConnections),
)

// instrumentRelay registers Watermill's router metrics and the middleware
// that lets the step in hand finish when the relay closes.
func instrumentRelay(relay *outbox.Relay, reg prometheus.Registerer) {
	router := relay.Router()
	metrics.InstrumentRouter(reg, router)
	router.AddMiddleware(finishStepOnClose)
}

// initZeroSeries creates the series that alerts and dashboards read before
// anything has happened to them: the amounts in every supported currency
// and the outcomes of retried Stripe events, which the webhook handler
// counts under the event type "retry".
func initZeroSeries(m *metrics.Metrics, cfg Config) {
	m.InitCurrencies(cfg.Currencies)
	outcomes := []application.EventOutcome{
		application.EventApplied, application.EventNoEffect, application.EventDuplicate,
		application.EventDeferred, application.EventGaveUp,
	}
	labels := make([]string, len(outcomes))
	for i, o := range outcomes {
		labels[i] = string(o)
	}
	m.InitWebhooks([]string{"retry"}, labels)
}

// drainConnections makes every response sent after readiness has failed
// close its connection, so keep-alive clients reconnect elsewhere instead
// of reusing a connection that the shutdown is about to close.
func drainConnections(srv *http.Server, health *healthState) {
	srv.Handler = closeWhenNotReady(srv.Handler, health)
}
