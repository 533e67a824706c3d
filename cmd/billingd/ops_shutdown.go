package main

import (
	"context"
	"log/slog"
	"net/http"
	"os"
	"syscall"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
)

// maxDrainDelay bounds the wait between failing readiness and closing the
// listener. Kubernetes removes a pod that fails readiness from its Service
// endpoints after a probe period plus propagation, which is seconds.
const maxDrainDelay = 5 * time.Second

// drainDelay returns how long the API keeps serving after readiness fails:
// a sixth of the shutdown budget, at most maxDrainDelay, so most of the
// budget remains for requests in flight and the relay.
func drainDelay(shutdownTimeout time.Duration) time.Duration {
	return min(shutdownTimeout/6, maxDrainDelay)
}

// drain waits, after a SIGTERM, for load balancers to notice the failed
// readiness while the API still serves. An interactive stop (SIGINT) skips
// the wait because nothing routes traffic to a developer's process.
func drain(ctx context.Context, sig os.Signal, shutdownTimeout time.Duration, log *slog.Logger) {
	if sig != syscall.SIGTERM {
		return
	}
	wait := drainDelay(shutdownTimeout)
	log.Info("draining connections before stopping", "delay", wait.String())
	timer := time.NewTimer(wait)
	defer timer.Stop()
	select {
	case <-timer.C:
	case <-ctx.Done():
	}
}

// closeWhenNotReady sets Connection: close on each response sent while the
// service is not ready (starting or stopping), so the server closes the
// connection after it.
func closeWhenNotReady(next http.Handler, health *healthState) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !health.ready.Load() {
			w.Header().Set("Connection", "close")
		}
		next.ServeHTTP(w, r)
	})
}

// finishStepOnClose lets the relay's step in hand finish when the relay
// closes. Watermill cancels the message's context as soon as Close starts,
// which would abort a Stripe call halfway and leave the step's lease taken
// until it expires. The step keeps the ack deadline it had. Its message is
// not acknowledged, because the subscriber stops waiting for the ack, so it
// is delivered again after a restart and skipped as done.
//
// NOTE: a step that fails while the relay closes writes its delayed retry
// into the subscriber's transaction, which Watermill ends at the same
// moment. That write fails and the message runs again after a restart.
func finishStepOnClose(h message.HandlerFunc) message.HandlerFunc {
	return func(msg *message.Message) ([]*message.Message, error) {
		ctx := msg.Context()
		detached := context.WithoutCancel(ctx)
		if deadline, ok := ctx.Deadline(); ok {
			var cancel context.CancelFunc
			detached, cancel = context.WithDeadline(detached, deadline)
			defer cancel()
		}
		msg.SetContext(detached)
		return h(msg)
	}
}
