package emulator

// pendingEvent is a state change that a handler recorded and that becomes a
// Stripe event when the request's transaction commits.
type pendingEvent struct {
	eventType string
	object    any
}

// emit records an event of eventType whose data.object is obj.
func (c *call) emit(eventType string, obj any) {
	c.events = append(c.events, pendingEvent{eventType: eventType, object: obj})
}

// flushEvents stores the request's events. Webhook delivery is not built
// yet, so events are dropped.
func (c *call) flushEvents() error {
	c.events = nil
	return nil
}

// webhookState is the delivery worker's shared state.
type webhookState struct{}

func newWebhookState() *webhookState { return &webhookState{} }

func (h *webhookState) wake() {}

func (h *webhookState) resetMode() {}
