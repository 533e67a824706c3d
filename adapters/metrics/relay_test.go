package metrics

import (
	"context"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestInstrumentRouterCountsHandledMessages(t *testing.T) {
	logger := watermill.NopLogger{}
	pubSub := gochannel.NewGoChannel(gochannel.Config{}, logger)
	router, err := message.NewRouter(message.RouterConfig{}, logger)
	if err != nil {
		t.Fatal(err)
	}
	handled := make(chan struct{}, 1)
	router.AddConsumerHandler("steps", "topic", pubSub, func(*message.Message) error {
		handled <- struct{}{}
		return nil
	})

	reg := prometheus.NewRegistry()
	InstrumentRouter(reg, router)

	// Before any message, the handler's series exist at zero.
	const name = "taskpod_billing_relay_handler_execution_time_seconds"
	if n, err := testutil.GatherAndCount(reg, name); err != nil || n != 2 {
		t.Fatalf("%s has %d series before the first message (err %v), want 2 at zero", name, n, err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = router.Run(ctx) }()
	<-router.Running()
	if err := pubSub.Publish("topic", message.NewMessage(watermill.NewUUID(), []byte("{}"))); err != nil {
		t.Fatal(err)
	}
	select {
	case <-handled:
	case <-time.After(10 * time.Second):
		t.Fatal("the handler did not run")
	}
	if err := router.Close(); err != nil {
		t.Fatal(err)
	}

	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	counts := map[string]uint64{}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			var handler, success string
			for _, l := range m.GetLabel() {
				switch l.GetName() {
				case "handler_name":
					handler = l.GetValue()
				case "success":
					success = l.GetValue()
				}
			}
			counts[handler+"/"+success] = m.GetHistogram().GetSampleCount()
		}
	}
	if counts["steps/true"] != 1 {
		t.Errorf("successful executions of handler steps = %d, want 1", counts["steps/true"])
	}
	if got, ok := counts["steps/false"]; !ok || got != 0 {
		t.Errorf("failed executions of handler steps = %d (present %v), want a zero series", got, ok)
	}
}
