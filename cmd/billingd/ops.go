package main

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/fx"

	"github.com/taskpod/billing/adapters/metrics"
	"github.com/taskpod/billing/adapters/outbox"
)

// opsModule adds what operators need beyond the API: the relay's Watermill
// metrics, zero series for every supported currency, and the connection
// draining that lets a SIGTERM stop lose no request.
//
// Its invokes run while the application is built, before any OnStart hook,
// so the relay's router is instrumented before startRelay runs it.
var opsModule = fx.Module("ops",
	fx.Invoke(instrumentRelay, initCurrencySeries, drainConnections),
)

// instrumentRelay registers Watermill's router metrics and the middleware
// that lets the step in hand finish when the relay closes.
func instrumentRelay(relay *outbox.Relay, reg prometheus.Registerer) {
	router := relay.Router()
	metrics.InstrumentRouter(reg, router)
	router.AddMiddleware(finishStepOnClose)
}

func initCurrencySeries(m *metrics.Metrics, cfg Config) {
	m.InitCurrencies(cfg.Currencies)
}

// drainConnections makes every response sent after readiness has failed
// close its connection, so keep-alive clients reconnect elsewhere instead
// of reusing a connection that the shutdown is about to close.
func drainConnections(srv *http.Server, health *healthState) {
	srv.Handler = closeWhenNotReady(srv.Handler, health)
}
