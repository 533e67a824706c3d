package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/taskpod/billing/adapters/postgres"
	"github.com/taskpod/billing/application"
)

// Task price and the connected account of the benchmark agent.
const (
	taskPrice      = 1000
	benchAgentID   = "benchagent01"
	benchConnectID = "acct_1BenchAgent"
	// The baselines write their outbox messages to tables of their own, so
	// the service's relay never reads them.
	createOutboxTable = "watermill_bench_authorize"
	relayOutboxTable  = "watermill_bench_steps"
)

// service is a running billingd serve process and a client for its API.
type service struct {
	proc   *process
	base   string
	client *http.Client
}

func (b *bench) startService(ctx context.Context) error {
	if b.svc != nil {
		return nil
	}
	var err error
	b.svc, err = b.env.startService(ctx, b.env.databaseURL)
	return err
}

func (e *env) startService(ctx context.Context, databaseURL string) (*service, error) {
	proc, base, err := e.service(ctx, databaseURL)
	if err != nil {
		return nil, err
	}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.MaxIdleConnsPerHost = 64
	logf("billingd serve pid %d at %s", proc.pid(), base)
	return &service{proc: proc, base: base, client: &http.Client{Timeout: time.Minute, Transport: transport}}, nil
}

func (b *bench) stopService() {
	if b.svc != nil {
		b.svc.proc.stop()
		b.svc = nil
	}
}

// apiError is a response outside 2xx.
type apiError struct {
	status int
	body   string
}

func (e *apiError) Error() string {
	return fmt.Sprintf("status %d: %s", e.status, truncate(e.body, 400))
}

// call sends a JSON request with a bearer token and decodes a 2xx response into out.
func (s *service) call(ctx context.Context, method, path, token string, body, out any) (int, error) {
	var reader io.Reader
	if body != nil {
		data, err := json.Marshal(body)
		if err != nil {
			return 0, err
		}
		reader = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(ctx, method, s.base+path, reader)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}

	resp, err := s.client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, err
	}
	if resp.StatusCode/100 != 2 {
		return resp.StatusCode, &apiError{status: resp.StatusCode, body: string(data)}
	}

	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return resp.StatusCode, fmt.Errorf("%s %s: decode response: %w", method, path, err)
		}
	}
	return resp.StatusCode, nil
}

// customer is a benchmark customer with a saved default card.
type customer struct {
	userID, token, tokenID   string
	stripeCustomerID, cardID string
	tokenHash                string
}

// fixtures are the agent and customers every HTTP scenario uses. Worker i
// of a load uses customers[i]. The template customer is kept apart, so its
// template ids never collide with a worker's.
type fixtures struct {
	adminToken             string
	agentToken, agentTokID string
	customers              []customer
	template               customer
}

const maxClients = 32

// prepareFixtures registers the agent and saves a card for each customer
// through the API, as a user would. It needs the service running.
func (b *bench) prepareFixtures(ctx context.Context) (*fixtures, error) {
	tokens := postgres.NewTokens(b.env.pool)
	f := &fixtures{}
	var err error
	if _, f.adminToken, err = tokens.Create(ctx, "admin", "billbench", nil); err != nil {
		return nil, err
	}
	if f.agentTokID, f.agentToken, err = tokens.Create(ctx, "agent", benchAgentID, nil); err != nil {
		return nil, err
	}
	_, err = b.svc.call(ctx, http.MethodPost, "/v1/agents", f.adminToken, map[string]any{
		"id": benchAgentID, "name": "Benchmark Agent", "priceCents": taskPrice, "currency": "usd", "stripeAccountId": benchConnectID,
	}, nil)
	if err != nil {
		return nil, fmt.Errorf("register agent: %w", err)
	}

	for i := range maxClients + 1 {
		userID := fmt.Sprintf("bench_customer_%02d", i)
		if i == maxClients {
			userID = "bench_customer_tmpl"
		}
		c, err := b.saveCard(ctx, tokens, userID)
		if err != nil {
			return nil, fmt.Errorf("save a card for %s: %w", userID, err)
		}
		if i == maxClients {
			f.template = c
		} else {
			f.customers = append(f.customers, c)
		}
	}
	return f, nil
}

func (b *bench) saveCard(ctx context.Context, tokens *postgres.Tokens, userID string) (customer, error) {
	c := customer{userID: userID}
	var err error
	if c.tokenID, c.token, err = tokens.Create(ctx, "customer", userID, nil); err != nil {
		return c, err
	}
	hash := sha256.Sum256([]byte(c.token))
	c.tokenHash = string(hash[:])

	var setup struct {
		SetupIntentID string `json:"setupIntentId"`
		CustomerID    string `json:"customerId"`
	}
	if _, err := b.svc.call(ctx, http.MethodPost, "/v1/billing/setup", c.token, map[string]any{}, &setup); err != nil {
		return c, fmt.Errorf("create setup intent: %w", err)
	}
	c.stripeCustomerID = setup.CustomerID

	// The browser would confirm the SetupIntent with Stripe.js; the
	// emulator accepts a server-side confirmation with a test card.
	form := url.Values{"payment_method": {"pm_card_visa"}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost,
		b.env.emulatorURL+"/v1/setup_intents/"+setup.SetupIntentID+"/confirm", strings.NewReader(form.Encode()))
	if err != nil {
		return c, err
	}
	req.Header.Set("Authorization", "Bearer sk_test_billbench")
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := b.svc.client.Do(req)
	if err != nil {
		return c, err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return c, fmt.Errorf("confirm setup intent %s at the emulator: status %d", setup.SetupIntentID, resp.StatusCode)
	}

	var card struct {
		ID string `json:"id"`
	}
	if _, err := b.svc.call(ctx, http.MethodPost, "/v1/billing/confirm-setup", c.token,
		map[string]any{"setupIntentId": setup.SetupIntentID}, &card); err != nil {
		return c, fmt.Errorf("confirm setup: %w", err)
	}
	c.cardID = card.ID
	return c, nil
}

// base maps the template customer to customer c.
func (f *fixtures) base(c customer) *substitution {
	t := f.template
	return newSubstitution(
		t.userID, c.userID, t.token, c.token, t.tokenID, c.tokenID, t.tokenHash, c.tokenHash,
		t.stripeCustomerID, c.stripeCustomerID, t.cardID, c.cardID,
	)
}

// taskTemplates are the recorded operations of one paid task's life.
type taskTemplates struct {
	create, complete, capture, transfer template
}

// paidTask is a task created for the benchmark and authorized.
type paidTask struct {
	taskID, paymentID string
	// sub maps the template payment to this one, for baseline tasks.
	sub *substitution
}

// prepareTasks sets up what the HTTP scenarios share: the fixtures, the
// templates recorded in-process while the service is stopped (its relay
// would otherwise race the template's own steps), then the service again.
func (b *bench) prepareTasks(ctx context.Context) error {
	if b.fix != nil {
		return nil
	}
	if err := b.startService(ctx); err != nil {
		return err
	}
	fix, err := b.prepareFixtures(ctx)
	if err != nil {
		return err
	}
	b.stopService()

	traced, err := b.newPool(ctx, 0, true)
	if err != nil {
		return err
	}
	defer traced.Close()
	if b.tmpl, err = b.recordTaskTemplates(ctx, traced, fix); err != nil {
		return fmt.Errorf("record templates: %w", err)
	}
	for _, table := range []string{createOutboxTable, relayOutboxTable} {
		if _, err := b.env.pool.Exec(ctx, fmt.Sprintf(`CREATE TABLE IF NOT EXISTS %q (LIKE watermill_payment_steps INCLUDING ALL)`, table)); err != nil {
			return fmt.Errorf("create baseline outbox table %s: %w", table, err)
		}
	}
	b.fix = fix
	if err := b.startService(ctx); err != nil {
		return err
	}
	// The ledger scenario leaves its postings for the service's sealer, and
	// sealing them during the timed runs would slow whichever side ran.
	return waitSealed(ctx, b.env.pool)
}

// recordTaskTemplates records, for the template customer, the request path
// of creating a paid task (token check included), of completing it, and the
// relay's capture and transfer steps.
func (b *bench) recordTaskTemplates(ctx context.Context, traced *pgxpool.Pool, fix *fixtures) (*taskTemplates, error) {
	app, err := b.newInproc(traced)
	if err != nil {
		return nil, err
	}
	tokens := postgres.NewTokens(traced)
	customerActor := application.Actor{Role: application.RoleCustomer, Subject: fix.template.userID, TokenID: fix.template.tokenID}
	agentActor := application.Actor{Role: application.RoleAgent, Subject: benchAgentID, TokenID: fix.agentTokID}
	input := application.CreateTaskInput{Title: "Benchmark task", AgentID: benchAgentID, MaxPrice: taskPrice}

	// A first task warms the statement caches. A first use of each token
	// records its last use, which is written at most once a minute. So the
	// recorded operations are the steady state.
	if _, err := app.tasks.Create(application.WithActor(ctx, customerActor), fix.template.userID, input); err != nil {
		return nil, err
	}
	for _, token := range []string{fix.template.token, fix.agentToken} {
		if _, err := tokens.Authenticate(ctx, token); err != nil {
			return nil, err
		}
	}

	t := &taskTemplates{}
	var view application.TaskView
	t.create, err = recordTemplate(ctx, app, customerActor, func(ctx context.Context) error {
		if _, err := tokens.Authenticate(ctx, fix.template.token); err != nil {
			return err
		}
		view, err = app.tasks.Create(ctx, fix.template.userID, input)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("create: %w", err)
	}
	if view.Payment == nil || view.Payment.Status != "authorized" {
		return nil, fmt.Errorf("create: the template task's payment is not authorized: %+v", view.Payment)
	}
	paymentID := view.Payment.ID

	t.complete, err = recordTemplate(ctx, app, agentActor, func(ctx context.Context) error {
		if _, err := tokens.Authenticate(ctx, fix.agentToken); err != nil {
			return err
		}
		_, err := app.tasks.Complete(ctx, application.ActorFrom(ctx), view.Task.ID, nil)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("complete: %w", err)
	}

	relay := application.Actor{Role: application.RoleSystem}
	for _, step := range []struct {
		name string
		tmpl *template
	}{{"capture", &t.capture}, {"transfer", &t.transfer}} {
		*step.tmpl, err = recordTemplate(ctx, app, relay, func(ctx context.Context) error {
			return app.steps.Run(ctx, outboxMessage(paymentID, step.name, t.complete.request))
		})
		if err != nil {
			return nil, fmt.Errorf("%s step: %w", step.name, err)
		}
	}
	var status string
	if err := b.env.pool.QueryRow(ctx, `SELECT status FROM payments WHERE id = $1`, paymentID).Scan(&status); err != nil {
		return nil, err
	}
	if status != "transferred" {
		return nil, fmt.Errorf("the template payment %s ended %s, not transferred", paymentID, status)
	}
	b.section("Create paid task: statements of one request", traceBlock(t.create.rec.events))
	b.section("Completion and relay: statements of complete, capture and transfer",
		"complete:\n\n"+traceBlock(t.complete.rec.events)+"\n\ncapture step:\n\n"+traceBlock(t.capture.rec.events)+
			"\n\ntransfer step:\n\n"+traceBlock(t.transfer.rec.events))
	return t, nil
}

// createTask is one POST /v1/tasks by customer c, checked to be authorized.
func (b *bench) createTask(ctx context.Context, c customer) (paidTask, error) {
	var task struct {
		ID      string `json:"id"`
		Status  string `json:"status"`
		Payment *struct {
			ID     string `json:"id"`
			Status string `json:"status"`
		} `json:"payment"`
	}
	status, err := b.svc.call(ctx, http.MethodPost, "/v1/tasks", c.token,
		map[string]any{"title": "Benchmark task", "agentId": benchAgentID, "maxPriceCents": taskPrice}, &task)
	if err != nil {
		return paidTask{}, err
	}
	if status != http.StatusCreated || task.Status != "matched" || task.Payment == nil || task.Payment.Status != "authorized" {
		return paidTask{}, fmt.Errorf("POST /v1/tasks returned %d with task %s %s, payment %+v; want 201, matched, authorized",
			status, task.ID, task.Status, task.Payment)
	}
	return paidTask{taskID: task.ID, paymentID: task.Payment.ID}, nil
}

// replayCreate replays the create template for customer c and returns the
// new task with the substitution that names its ids.
func (b *bench) replayCreate(ctx context.Context, r *replayer, c customer) (paidTask, error) {
	base := b.fix.base(c)
	base.tables = strings.NewReplacer("watermill_payment_steps", createOutboxTable)
	sub := b.tmpl.create.substitution(base)
	if err := r.run(ctx, b.tmpl.create.rec.events, sub); err != nil {
		return paidTask{}, err
	}
	return paidTask{taskID: sub.apply(b.tmplTaskID()), paymentID: sub.apply(b.tmplPaymentID()), sub: sub}, nil
}

// tmplTaskID and tmplPaymentID are the template task's ids, the first task_
// and pay_ ids the create template generated.
func (b *bench) tmplTaskID() string    { return firstWithPrefix(b.tmpl.create.ids, "task_") }
func (b *bench) tmplPaymentID() string { return firstWithPrefix(b.tmpl.create.ids, "pay_") }

func firstWithPrefix(ids []string, prefix string) string {
	for _, id := range ids {
		if strings.HasPrefix(id, prefix) {
			return id
		}
	}
	return ""
}

// taskPool collects the tasks each side created, for the relay scenario.
type taskPool struct {
	mu    sync.Mutex
	tasks []paidTask
}

func (p *taskPool) add(t paidTask) {
	p.mu.Lock()
	p.tasks = append(p.tasks, t)
	p.mu.Unlock()
}

// take removes and returns n tasks, or an error when fewer are left.
func (p *taskPool) take(n int) ([]paidTask, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.tasks) < n {
		return nil, fmt.Errorf("%d authorized tasks left, need %d", len(p.tasks), n)
	}
	out := p.tasks[:n:n]
	p.tasks = p.tasks[n:]
	return out, nil
}

func (p *taskPool) size() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.tasks)
}

// tasksScenario measures POST /v1/tasks against the service at 8 and 32
// clients, against the replayed create template, and the service's
// resident memory during the 32-client runs.
func (b *bench) tasksScenario(ctx context.Context) error {
	if err := b.prepareTasks(ctx); err != nil {
		return err
	}
	basePool, err := b.newPool(ctx, 0, false)
	if err != nil {
		return err
	}
	defer basePool.Close()
	r := &replayer{pool: basePool, client: b.svc.client}

	for _, clients := range []int{8, 32} {
		var sampler *memorySampler
		if clients == 32 {
			sampler = sampleMemory(b.svc.proc.pid(), 100*time.Millisecond)
		}
		cmp, err := compare(ctx, b.cfg.rounds,
			variant{"app", func(ctx context.Context) (loadResult, error) {
				return runLoad(ctx, clients, b.cfg.duration, 2, func(ctx context.Context, w int) error {
					t, err := b.createTask(ctx, b.fix.customers[w])
					if err == nil {
						b.appTasks.add(t)
					}
					return err
				}), nil
			}},
			variant{"baseline", func(ctx context.Context) (loadResult, error) {
				return runLoad(ctx, clients, b.cfg.duration, 2, func(ctx context.Context, w int) error {
					t, err := b.replayCreate(ctx, r, b.fix.customers[w])
					if err == nil {
						b.baseTasks.add(t)
					}
					return err
				}), nil
			}},
		)
		var memoryRow *resultRow
		if sampler != nil {
			peak, sampleErr := sampler.stop()
			_, hwm, memErr := memory(b.svc.proc.pid())
			if err := errors.Join(sampleErr, memErr); err != nil {
				b.note("Reading the service's memory failed: %v", err)
			} else {
				memoryRow = &resultRow{
					scenario: "service memory", measure: "VmHWM of billingd serve during the 32-client runs",
					unit: "MiB", value: mib(hwm), limit: 150, target: "< 150 MiB",
					detail: fmt.Sprintf("peak VmRSS sampled every 100 ms: %.1f MiB; VmHWM is the peak since the process started", mib(peak)),
				}
			}
		}
		if err != nil {
			return fmt.Errorf("create paid task at %d clients: %w", clients, err)
		}

		appLat, baseLat := cmp.latencies("app"), cmp.latencies("baseline")
		b.addRatio(resultRow{
			scenario: "create paid task", measure: fmt.Sprintf("tasks/s, %d clients", clients),
			appLabel: "HTTP", baseLabel: "raw SQL + emulator", unit: "/s",
			app: cmp.rate("app"), base: cmp.rate("baseline"), target: "≥ 0.5", min: 0.5,
			detail: fmt.Sprintf("HTTP p50 %s, p99 %s; baseline p50 %s, p99 %s; HTTP rounds %s; baseline rounds %s",
				formatDuration(percentile(appLat, 50)), formatDuration(percentile(appLat, 99)),
				formatDuration(percentile(baseLat, 50)), formatDuration(percentile(baseLat, 99)),
				formatRates(cmp.rates("app")), formatRates(cmp.rates("baseline"))),
		})
		b.addAbsolute(resultRow{
			scenario: "create paid task", measure: fmt.Sprintf("p99 latency, %d clients", clients),
			unit: "ms", value: float64(percentile(appLat, 99)) / float64(time.Millisecond), target: "report",
			detail: fmt.Sprintf("p50 %s over %d requests", formatDuration(percentile(appLat, 50)), len(appLat)),
		})
		if memoryRow != nil {
			b.addAbsolute(*memoryRow)
		}
		if cmp.rate("app") < 0.5*cmp.rate("baseline") || (b.cfg.profileAll && clients == 32) {
			b.profileCreate(clients)
		}
	}
	return nil
}

// profileCreate queues an in-process rerun of task creation, without HTTP,
// because the service itself is not profiled.
func (b *bench) profileCreate(clients int) {
	b.profileLater(fmt.Sprintf("create paid task in-process at %d clients", clients), func(ctx context.Context) error {
		pool, err := b.newPool(ctx, 0, false)
		if err != nil {
			return err
		}
		defer pool.Close()
		app, err := b.newInproc(pool)
		if err != nil {
			return err
		}
		res := runLoad(ctx, clients, b.cfg.duration, 1, func(ctx context.Context, w int) error {
			c := b.fix.customers[w]
			actor := application.Actor{Role: application.RoleCustomer, Subject: c.userID, TokenID: c.tokenID, RequestID: "req_billbench"}
			_, err := app.tasks.Create(application.WithActor(ctx, actor), c.userID,
				application.CreateTaskInput{Title: "Benchmark task", AgentID: benchAgentID, MaxPrice: taskPrice})
			return err
		})
		return res.firstErr
	})
}
