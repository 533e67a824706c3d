package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wsql "github.com/ThreeDotsLabs/watermill-sql/v4/pkg/sql"
	"github.com/ThreeDotsLabs/watermill/components/delay"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/taskpod/billing/adapters/outbox"
	"github.com/taskpod/billing/application"
	"github.com/taskpod/billing/domain"
	"github.com/taskpod/billing/ports"
)

// The relay's subscriber settings, as outbox.NewRelay sets them with the
// service's defaults: one message per query transaction, delete on ack,
// 200 ms polling when idle.
const (
	relayPollInterval = 200 * time.Millisecond
	relayBatchSize    = 1
)

func outboxMessage(paymentID, step, requestID string) ports.OutboxMessage {
	return ports.OutboxMessage{PaymentID: paymentID, Step: domain.Step(step), RequestID: requestID}
}

// relayScenario measures how many outbox messages per second the service's
// relay runs at saturation. The baseline is a watermill-sql subscriber with
// the same settings whose handler replays the recorded step statements and
// Stripe requests. Then it measures the time from an accepted completion to
// the recorded transfer at half the saturation rate.
func (b *bench) relayScenario(ctx context.Context) error {
	if err := b.prepareTasks(ctx); err != nil {
		return err
	}
	n := b.cfg.relayTasks

	// Each side of a round starts with the service's ledger sealer idle and
	// the outbox tables vacuumed, because a sealing backlog, or dead rows
	// left by earlier load, would slow whichever side met them.
	var appRates, baseRates []float64
	appMetrics := serviceMetrics{}
	var baseCalls, baseNanos int64
	for range b.cfg.rounds {
		if err := b.settle(ctx); err != nil {
			return err
		}
		before, err := b.svc.metrics(ctx)
		if err != nil {
			return err
		}
		rate, err := b.appRelaySaturation(ctx, n)
		if err != nil {
			return fmt.Errorf("service relay at saturation: %w", err)
		}
		appRates = append(appRates, rate)
		after, err := b.svc.metrics(ctx)
		if err != nil {
			return err
		}
		appMetrics.add(after.minus(before))

		if err := b.settle(ctx); err != nil {
			return err
		}
		r, err := b.baselineRelaySaturation(ctx, n)
		if err != nil {
			return fmt.Errorf("watermill-sql baseline at saturation: %w", err)
		}
		baseRates = append(baseRates, r.rate)
		baseCalls += r.httpCalls
		baseNanos += r.httpNanos
	}
	noopRate, err := b.noopWatermill(ctx, 2*n)
	if err != nil {
		return fmt.Errorf("watermill-sql with an empty handler: %w", err)
	}
	appRate := median(appRates)
	row := resultRow{
		scenario: "completion to transfer", measure: "relay messages/s at saturation",
		appLabel: "relay", baseLabel: "watermill-sql + raw steps", unit: "/s",
		app: appRate, base: median(baseRates), target: "≥ 0.8", min: 0.8,
		detail: fmt.Sprintf("%d completions per round, 2 messages each (capture, transfer); relay rounds %s; baseline rounds %s; "+
			"watermill-sql with an empty handler on the same database: %.1f messages/s; %s; baseline emulator requests: %s mean over %d",
			n, formatRates(appRates), formatRates(baseRates), noopRate, appMetrics.describe(),
			formatDuration(meanDuration(baseNanos, baseCalls)), baseCalls),
	}
	b.addRatio(row)
	if row.failed() || b.cfg.profileAll {
		b.profileRelay(n)
	}

	if err := b.settle(ctx); err != nil {
		return err
	}

	latencies, err := b.completionLatency(ctx, b.cfg.latencyTasks, appRate/4)
	if err != nil {
		return fmt.Errorf("completion to transfer latency: %w", err)
	}
	b.addAbsolute(resultRow{
		scenario: "completion to transfer", measure: fmt.Sprintf("p99 time from complete accepted to transfer recorded, %.1f completions/s", appRate/4),
		unit: "ms", value: float64(percentile(latencies, 99)) / float64(time.Millisecond), target: "report",
		detail: fmt.Sprintf("half the saturation rate (%.1f messages/s is %.1f completions/s); p50 %s, max %s over %d completions; idle polling every %s adds up to that much per message",
			appRate, appRate/2, formatDuration(percentile(latencies, 50)), formatDuration(percentile(latencies, 100)), len(latencies), relayPollInterval),
	})
	return nil
}

// settle waits for the ledger sealer and vacuums the outbox tables of the
// service and of the baseline, as autovacuum would after enough churn.
func (b *bench) settle(ctx context.Context) error {
	if err := waitSealed(ctx, b.env.pool); err != nil {
		return err
	}
	return vacuum(ctx, b.env.pool, "watermill_payment_steps", relayOutboxTable)
}

// vacuum runs VACUUM (ANALYZE) on tables, so timings do not depend on when
// autovacuum last visited them.
func vacuum(ctx context.Context, pool *pgxpool.Pool, tables ...string) error {
	for _, table := range tables {
		if _, err := pool.Exec(ctx, "VACUUM (ANALYZE) "+pgx.Identifier{table}.Sanitize()); err != nil {
			return fmt.Errorf("vacuum %s: %w", table, err)
		}
	}
	return nil
}

// profileRelay queues an in-process rerun of the relay: the same relay and
// step executor as the service's, draining n completions made in-process
// while the service is stopped.
func (b *bench) profileRelay(n int) {
	b.profileLater(fmt.Sprintf("relay in-process draining %d completions", n), func(ctx context.Context) error {
		tasks, err := b.appTasks.take(n)
		if err != nil {
			return err
		}
		pool, err := b.newPool(ctx, 0, false)
		if err != nil {
			return err
		}
		defer pool.Close()
		app, err := b.newInproc(pool)
		if err != nil {
			return err
		}
		relay, err := outbox.NewRelay(pool, app.steps, outbox.RelayConfig{}, nil, app.log)
		if err != nil {
			return err
		}
		done := make(chan error, 1)
		go func() { done <- relay.Run(context.WithoutCancel(ctx)) }()
		defer func() {
			relay.Close()
			<-done
		}()

		agent := application.Actor{Role: application.RoleAgent, Subject: benchAgentID, TokenID: b.fix.agentTokID, RequestID: "req_billbench"}
		if err := parallel(ctx, n, 8, func(ctx context.Context, i int) error {
			_, err := app.tasks.Complete(application.WithActor(ctx, agent), agent, tasks[i].taskID, nil)
			return err
		}); err != nil {
			return err
		}
		_, err = b.waitTransfers(ctx, tasks)
		return err
	})
}

// appTasksFor returns n authorized tasks created through the API, creating
// the ones the task scenario did not leave.
func (b *bench) appTasksFor(ctx context.Context, n int) ([]paidTask, error) {
	if missing := n - b.appTasks.size(); missing > 0 {
		if err := parallel(ctx, missing, 8, func(ctx context.Context, i int) error {
			t, err := b.createTask(ctx, b.fix.customers[i%len(b.fix.customers)])
			if err == nil {
				b.appTasks.add(t)
			}
			return err
		}); err != nil {
			return nil, err
		}
	}
	return b.appTasks.take(n)
}

// complete is POST /v1/tasks/{id}/complete by the agent.
func (b *bench) complete(ctx context.Context, t paidTask) error {
	var task struct {
		Status string `json:"status"`
	}
	status, err := b.svc.call(ctx, http.MethodPost, "/v1/tasks/"+t.taskID+"/complete", b.fix.agentToken, map[string]any{}, &task)
	if err != nil {
		return err
	}
	if status != http.StatusOK || task.Status != "completed" {
		return fmt.Errorf("complete %s returned %d with status %q, want 200 and completed", t.taskID, status, task.Status)
	}
	return nil
}

// appRelaySaturation completes n tasks as fast as 8 clients can and returns
// the relay's messages per second from the first completion to the last
// transfer it recorded.
func (b *bench) appRelaySaturation(ctx context.Context, n int) (float64, error) {
	tasks, err := b.appTasksFor(ctx, n)
	if err != nil {
		return 0, err
	}
	if err := b.waitOutboxEmpty(ctx); err != nil {
		return 0, err
	}
	start := time.Now()
	if err := parallel(ctx, n, 8, func(ctx context.Context, i int) error { return b.complete(ctx, tasks[i]) }); err != nil {
		return 0, err
	}
	last, err := b.waitTransfers(ctx, tasks)
	if err != nil {
		return 0, err
	}
	return float64(2*n) / last.Sub(start).Seconds(), nil
}

// waitOutboxEmpty waits until the service's relay has no message left, so
// a saturation run starts from an idle relay.
func (b *bench) waitOutboxEmpty(ctx context.Context) error {
	deadline := time.Now().Add(5 * time.Minute)
	for {
		var pending int
		if err := b.env.pool.QueryRow(ctx, `SELECT count(*) FROM watermill_payment_steps`).Scan(&pending); err != nil {
			return err
		}
		if pending == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the service's outbox still contains %d messages after 5 minutes", pending)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitTransfers waits until every task's transfer is in the ledger and
// every payment is transferred, and returns when the last transfer was
// recorded (the database clock, the same machine clock as time.Now).
func (b *bench) waitTransfers(ctx context.Context, tasks []paidTask) (time.Time, error) {
	ids := make([]string, len(tasks))
	for i, t := range tasks {
		ids[i] = t.paymentID
	}
	deadline := time.Now().Add(10 * time.Minute)
	for {
		var done, transferred int
		var last *time.Time
		err := b.env.pool.QueryRow(ctx, `
			SELECT count(t.id), max(t.recorded_at),
			       (SELECT count(*) FROM payments WHERE id = ANY($1) AND status = 'transferred')
			  FROM ledger_transactions t WHERE t.kind = 'transfer' AND t.payment_id = ANY($1)`, ids).Scan(&done, &last, &transferred)
		if err != nil {
			return time.Time{}, err
		}
		if done == len(ids) && transferred == len(ids) {
			return *last, nil
		}
		if time.Now().After(deadline) {
			return time.Time{}, fmt.Errorf("%d of %d transfers recorded after 10 minutes (%d payments transferred)", done, len(ids), transferred)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// completionLatency completes n tasks at rate completions per second and
// returns, per task, the time from the accepted completion to the recorded
// transfer.
func (b *bench) completionLatency(ctx context.Context, n int, rate float64) ([]time.Duration, error) {
	tasks, err := b.appTasksFor(ctx, n)
	if err != nil {
		return nil, err
	}
	if err := b.waitOutboxEmpty(ctx); err != nil {
		return nil, err
	}
	accepted := make([]time.Time, n)
	errs := make([]error, n)
	interval := time.Duration(float64(time.Second) / rate)
	var wg sync.WaitGroup
	next := time.Now()
	for i := range tasks {
		time.Sleep(time.Until(next))
		next = next.Add(interval)
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = b.complete(ctx, tasks[i])
			accepted[i] = time.Now()
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if _, err := b.waitTransfers(ctx, tasks); err != nil {
		return nil, err
	}

	ids := make([]string, n)
	for i, t := range tasks {
		ids[i] = t.paymentID
	}
	rows, err := b.env.pool.Query(ctx, `SELECT payment_id, recorded_at FROM ledger_transactions WHERE kind = 'transfer' AND payment_id = ANY($1)`, ids)
	if err != nil {
		return nil, err
	}
	recorded := map[string]time.Time{}
	for rows.Next() {
		var id string
		var at time.Time
		if err := rows.Scan(&id, &at); err != nil {
			rows.Close()
			return nil, err
		}
		recorded[id] = at
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	latencies := make([]time.Duration, n)
	for i, t := range tasks {
		latencies[i] = recorded[t.paymentID].Sub(accepted[i])
	}
	return latencies, nil
}

// baselineRelaySaturation replays the complete template for n baseline
// tasks into a table of its own and drains it with a watermill-sql
// subscriber set up like the relay, whose handler replays the capture and
// transfer templates. It returns messages per second from the first
// completion to the last transfer.
func (b *bench) baselineRelaySaturation(ctx context.Context, n int) (baselineRelayResult, error) {
	var res baselineRelayResult
	pool, err := b.newPool(ctx, 0, false)
	if err != nil {
		return res, err
	}
	defer pool.Close()
	r := &replayer{pool: pool, client: b.svc.client}

	if missing := n - b.baseTasks.size(); missing > 0 {
		creator := &replayer{pool: pool, client: b.svc.client}
		if err := parallel(ctx, missing, 8, func(ctx context.Context, i int) error {
			t, err := b.replayCreate(ctx, creator, b.fix.customers[i%len(b.fix.customers)])
			if err == nil {
				b.baseTasks.add(t)
			}
			return err
		}); err != nil {
			return res, err
		}
	}
	tasks, err := b.baseTasks.take(n)
	if err != nil {
		return res, err
	}
	byPayment := map[string]*paidTask{}
	for i := range tasks {
		byPayment[tasks[i].paymentID] = &tasks[i]
	}
	tables := strings.NewReplacer("watermill_payment_steps", relayOutboxTable)

	// subMu guards the sub field of tasks, which the completion workers
	// and the subscriber's handler both use.
	var subMu sync.Mutex
	var handled, transfers atomic.Int64
	allDone := make(chan struct{})
	var handlerErr error
	var errOnce sync.Once
	handle := func(ctx context.Context, msg *message.Message) error {
		var body struct {
			PaymentID string `json:"paymentId"`
			Step      string `json:"step"`
		}
		if err := json.Unmarshal(msg.Payload, &body); err != nil {
			return err
		}
		t := byPayment[body.PaymentID]
		if t == nil {
			return fmt.Errorf("message %s names payment %q, which this run did not create", msg.UUID, body.PaymentID)
		}
		tmpl := b.tmpl.capture
		if body.Step == "transfer" {
			tmpl = b.tmpl.transfer
		} else if body.Step != "capture" {
			return fmt.Errorf("message %s has step %q", msg.UUID, body.Step)
		}
		subMu.Lock()
		sub := tmpl.substitution(t.sub)
		subMu.Unlock()
		sub.tables = tables
		if err := r.run(ctx, tmpl.rec.events, sub); err != nil {
			return fmt.Errorf("%s of %s: %w", body.Step, body.PaymentID, err)
		}
		subMu.Lock()
		t.sub = sub
		subMu.Unlock()
		handled.Add(1)
		if body.Step == "transfer" && transfers.Add(1) == int64(n) {
			close(allDone)
		}
		return nil
	}

	subCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	messages, closeSub, err := subscribe(subCtx, pool, strings.TrimPrefix(relayOutboxTable, "watermill_"))
	if err != nil {
		return res, err
	}
	defer closeSub()
	go func() {
		for msg := range messages {
			if err := handle(msg.Context(), msg); err != nil {
				errOnce.Do(func() { handlerErr = err; cancel() })
				msg.Nack()
				continue
			}
			msg.Ack()
		}
	}()

	start := time.Now()
	if err := parallel(ctx, n, 8, func(ctx context.Context, i int) error {
		t := &tasks[i]
		subMu.Lock()
		sub := b.tmpl.complete.substitution(t.sub)
		sub.tables = tables
		// The capture message may reach the handler before run returns,
		// so the handler must already see this substitution.
		t.sub = sub
		subMu.Unlock()
		return r.run(ctx, b.tmpl.complete.rec.events, sub)
	}); err != nil {
		return res, err
	}
	select {
	case <-allDone:
	case <-subCtx.Done():
		if handlerErr != nil {
			return res, handlerErr
		}
		return res, subCtx.Err()
	case <-time.After(10 * time.Minute):
		return res, fmt.Errorf("%d of %d baseline messages handled after 10 minutes", handled.Load(), 2*n)
	}
	res.rate = float64(2*n) / time.Since(start).Seconds()
	res.httpCalls, res.httpNanos = r.httpCalls.Load(), r.httpNanos.Load()
	return res, nil
}

// baselineRelayResult is one baseline relay round: its rate and the
// emulator requests its handler made (the replayed completions make none).
type baselineRelayResult struct {
	rate                 float64
	httpCalls, httpNanos int64
}

// noopWatermill publishes n messages with watermill-sql and drains them
// with an empty handler: the messaging ceiling of the database.
func (b *bench) noopWatermill(ctx context.Context, n int) (float64, error) {
	pool, err := b.newPool(ctx, 0, false)
	if err != nil {
		return 0, err
	}
	defer pool.Close()
	const topic = "bench_noop"
	if _, err := pool.Exec(ctx, `CREATE TABLE IF NOT EXISTS watermill_bench_noop (LIKE watermill_payment_steps INCLUDING ALL)`); err != nil {
		return 0, err
	}
	pub, err := wsql.NewPublisher(wsql.BeginnerFromPgx(pool), wsql.PublisherConfig{SchemaAdapter: queueSchema()}, watermill.NopLogger{})
	if err != nil {
		return 0, err
	}
	for i := range n {
		msg := message.NewMessage(watermill.NewUUID(), []byte(fmt.Sprintf(`{"paymentId":"pay_noop%d","step":"capture"}`, i)))
		if err := pub.Publish(topic, msg); err != nil {
			return 0, err
		}
	}

	subCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	start := time.Now()
	messages, closeSub, err := subscribe(subCtx, pool, topic)
	if err != nil {
		return 0, err
	}
	defer closeSub()
	for range n {
		select {
		case msg := <-messages:
			msg.Ack()
		case <-time.After(time.Minute):
			return 0, errors.New("no message from watermill-sql for a minute")
		}
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

func queueSchema() wsql.PostgreSQLQueueSchema {
	return wsql.PostgreSQLQueueSchema{
		GenerateWhereClause: func(wsql.GenerateWhereClauseParams) (string, []any) {
			key := delay.DelayedUntilKey
			return fmt.Sprintf("((metadata->>'%s') IS NULL OR (metadata->>'%s')::timestamptz < NOW())", key, key), nil
		},
		SubscribeBatchSize: relayBatchSize,
	}
}

// subscribe opens a watermill-sql subscription with the relay's settings.
func subscribe(ctx context.Context, pool *pgxpool.Pool, topic string) (<-chan *message.Message, func(), error) {
	ackDeadline := 2 * time.Minute
	sub, err := wsql.NewSubscriber(wsql.BeginnerFromPgx(pool), wsql.SubscriberConfig{
		SchemaAdapter:  queueSchema(),
		OffsetsAdapter: wsql.PostgreSQLQueueOffsetsAdapter{DeleteOnAck: true},
		PollInterval:   relayPollInterval,
		ResendInterval: time.Second,
		AckDeadline:    &ackDeadline,
	}, watermill.NewSlogLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	if err != nil {
		return nil, nil, err
	}
	messages, err := sub.Subscribe(ctx, topic)
	if err != nil {
		sub.Close()
		return nil, nil, err
	}
	return messages, func() { sub.Close() }, nil
}

// parallel runs fn for i in [0, n) on workers goroutines and returns the
// first error.
func parallel(ctx context.Context, n, workers int, fn func(ctx context.Context, i int) error) error {
	var next atomic.Int64
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n || ctx.Err() != nil {
					return
				}
				if err := fn(ctx, i); err != nil {
					errs[w] = err
					return
				}
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}
