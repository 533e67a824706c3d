package metrics

import (
	"github.com/ThreeDotsLabs/watermill/components/metrics"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/prometheus/client_golang/prometheus"
)

// relaySubsystem puts Watermill's router metrics under
// taskpod_billing_relay_: handler_execution_time_seconds{handler_name,success},
// subscriber_messages_received_total{handler_name,subscriber_name,acked} and
// publish_time_seconds.
const relaySubsystem = "relay"

// InstrumentRouter adds Watermill's Prometheus middleware and decorators to
// router. It must be called before router.Run: the router reads its
// middleware and decorators when its handlers start, and ignores later ones.
// The handler duration series of every handler already added are created at
// zero, for success and for failure.
func InstrumentRouter(reg prometheus.Registerer, router *message.Router) {
	handlers := make([]string, 0, len(router.Handlers()))
	for name := range router.Handlers() {
		handlers = append(handlers, name)
	}
	builder := metrics.NewPrometheusMetricsBuilder(zeroSeries{Registerer: reg, handlers: handlers}, namespace, relaySubsystem)
	builder.AddPrometheusRouterMetrics(router)
}

// zeroSeries registers collectors on the wrapped registry and creates the
// handler duration series of each handler on the histogram that has those
// labels. Watermill registers its collectors itself, so registration is the
// only point where this code can reach them.
type zeroSeries struct {
	prometheus.Registerer
	handlers []string
}

func (z zeroSeries) Register(c prometheus.Collector) error {
	if err := z.Registerer.Register(c); err != nil {
		return err
	}
	vec, ok := c.(*prometheus.HistogramVec)
	if !ok {
		return nil
	}
	for _, h := range z.handlers {
		for _, success := range []string{"true", "false"} {
			// Histograms with other label names reject these labels; they
			// keep no zero series.
			_, _ = vec.GetMetricWith(prometheus.Labels{"handler_name": h, "success": success})
		}
	}
	return nil
}
