package main

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/taskpod/billing/adapters/logging"
	"github.com/taskpod/billing/adapters/outbox"
	"github.com/taskpod/billing/adapters/postgres"
	"github.com/taskpod/billing/adapters/stripe"
	"github.com/taskpod/billing/adapters/system"
	"github.com/taskpod/billing/application"
	"github.com/taskpod/billing/domain"
)

// inproc is the application wired in this process the way billingd serve
// wires it, minus HTTP: it records the templates of the baselines and runs
// the in-process reruns that are profiled.
type inproc struct {
	pool  *pgxpool.Pool
	tasks *application.Tasks
	steps *application.Steps
	ids   *recordingIDs
	log   *slog.Logger
}

// newInproc wires the use cases on pool. The Stripe gateway's transport
// records the requests of contexts that carry a recorder.
func (b *bench) newInproc(pool *pgxpool.Pool) (*inproc, error) {
	log := logging.New(io.Discard, slog.LevelInfo)
	// The service's gateway sends through http.DefaultTransport too.
	gw, err := stripe.New(stripe.Config{
		SecretKey: "sk_test_billbench", APIBase: b.env.emulatorURL, Logger: log,
		HTTPClient: &http.Client{Timeout: stripe.DefaultTimeout, Transport: recordingTransport{next: http.DefaultTransport}},
	})
	if err != nil {
		return nil, err
	}
	metered, err := stripe.NewMetered(gw, prometheus.NewRegistry(), stripe.WithLogger(log))
	if err != nil {
		return nil, err
	}
	store := postgres.NewStore(pool, outbox.NewTxOutbox).WithLogger(log)
	clock := system.Clock{}
	ids := &recordingIDs{}
	steps := application.NewSteps(store, metered, clock, ids, nil, application.StepsConfig{LeaseTTL: 2 * stripe.DefaultTimeout}, log)
	billing := application.NewBilling(store, metered, clock, log)
	tasks := application.NewTasks(store, billing, steps, clock, ids,
		application.TasksConfig{FeeRate: 250, Currencies: []domain.Currency{"usd"}}, log)
	return &inproc{pool: pool, tasks: tasks, steps: steps, ids: ids, log: log}, nil
}

// recordingIDs generates ids like the service and, while recording, keeps
// them in order, so a replay can swap each for a fresh id of its prefix.
type recordingIDs struct {
	mu        sync.Mutex
	recording bool
	generated []string
}

func (r *recordingIDs) NewID(prefix string) string {
	id := system.IDs{}.NewID(prefix)
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.recording {
		r.generated = append(r.generated, id)
	}
	return id
}

// record starts keeping ids and returns a function that stops and returns them.
func (r *recordingIDs) record() func() []string {
	r.mu.Lock()
	r.recording, r.generated = true, nil
	r.mu.Unlock()
	return func() []string {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.recording = false
		return r.generated
	}
}

// freshIDs maps each recorded id to a new id with the same prefix.
func freshIDs(sub *substitution, recorded []string) {
	for _, id := range recorded {
		prefix, _, ok := strings.Cut(id, "_")
		if !ok {
			prefix = ""
		}
		sub.set(id, system.IDs{}.NewID(prefix))
	}
}

// template is a recorded operation with the ids it generated.
type template struct {
	rec     *recorder
	ids     []string
	request string
}

// recordTemplate runs fn with a recorder and an actor carrying a new request id.
func recordTemplate(ctx context.Context, app *inproc, actor application.Actor, fn func(ctx context.Context) error) (template, error) {
	actor.RequestID = system.IDs{}.NewID("req")
	rec := &recorder{started: time.Now()}
	ctx = withRecorder(application.WithActor(ctx, actor), rec)
	stop := app.ids.record()
	err := fn(ctx)
	return template{rec: rec, ids: stop(), request: actor.RequestID}, err
}

// substitution returns a fresh-id substitution for one replay of t on top of base.
func (t template) substitution(base *substitution) *substitution {
	sub := base.clone()
	freshIDs(sub, t.ids)
	sub.set(t.request, system.IDs{}.NewID("req"))
	sub.shift = time.Since(t.rec.started)
	return sub
}
