package outbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wsql "github.com/ThreeDotsLabs/watermill-sql/v4/pkg/sql"
	"github.com/ThreeDotsLabs/watermill/components/delay"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/taskpod/billing/application"
	"github.com/taskpod/billing/ports"
)

// StepRunner performs one money step; the application's step executor.
type StepRunner interface {
	Run(ctx context.Context, m ports.OutboxMessage) error
}

// RelayObserver receives relay attempts, for metrics.
type RelayObserver interface {
	// RelayAttempt records one handled message; outcome is success, retry or quarantined.
	RelayAttempt(step, outcome string)
}

type nopRelayObserver struct{}

func (nopRelayObserver) RelayAttempt(string, string) {}

// RelayConfig sets the relay's retry budget and pacing.
type RelayConfig struct {
	// MaxAttempts is how many times a message runs before quarantine.
	MaxAttempts int
	// BaseBackoff is the wait after the first failure; each later failure
	// doubles it, up to MaxBackoff, with ±20 % jitter.
	BaseBackoff time.Duration
	MaxBackoff  time.Duration
	// PollInterval is how often an idle relay looks for new messages.
	PollInterval time.Duration
	// AckDeadline bounds one message's handling, Stripe calls included.
	AckDeadline time.Duration
}

func (c *RelayConfig) setDefaults() {
	if c.MaxAttempts <= 0 {
		c.MaxAttempts = 12
	}
	if c.BaseBackoff <= 0 {
		c.BaseBackoff = time.Second
	}
	if c.MaxBackoff <= 0 {
		c.MaxBackoff = 5 * time.Minute
	}
	if c.PollInterval <= 0 {
		c.PollInterval = 200 * time.Millisecond
	}
	if c.AckDeadline <= 0 {
		c.AckDeadline = 2 * time.Minute
	}
}

// Relay reads due outbox messages with watermill-sql and runs their steps.
// A failed step is never retried in place, which would block every message
// behind it: the handler commits a delayed copy with the next attempt
// number, then acknowledges the original, or after the last attempt moves
// the message to the quarantine table. A crash between the two leaves both
// messages, and the step executor makes the extra run harmless.
type Relay struct {
	pool     *pgxpool.Pool
	router   *message.Router
	runner   StepRunner
	cfg      RelayConfig
	observer RelayObserver
	log      *slog.Logger
	started  chan struct{}
}

// NewRelay builds a relay over the pool; Run starts it.
func NewRelay(pool *pgxpool.Pool, runner StepRunner, cfg RelayConfig, observer RelayObserver, log *slog.Logger) (*Relay, error) {
	cfg.setDefaults()
	if observer == nil {
		observer = nopRelayObserver{}
	}
	wlog := watermill.NewSlogLoggerWithLevelMapping(log.With("component", "watermill"), map[slog.Level]slog.Level{
		slog.LevelInfo: slog.LevelDebug,
	})

	sub, err := wsql.NewSubscriber(wsql.BeginnerFromPgx(pool), wsql.SubscriberConfig{
		SchemaAdapter: skipLocked{wsql.PostgreSQLQueueSchema{
			GenerateWhereClause: dueMessages,
			// One message per query transaction, so an acknowledgement is
			// committed as soon as its step ends.
			SubscribeBatchSize: 1,
		}},
		OffsetsAdapter: wsql.PostgreSQLQueueOffsetsAdapter{DeleteOnAck: true},
		PollInterval:   cfg.PollInterval,
		ResendInterval: cfg.BaseBackoff,
		AckDeadline:    &cfg.AckDeadline,
	}, wlog)
	if err != nil {
		return nil, fmt.Errorf("create outbox subscriber: %w", err)
	}

	router, err := message.NewRouter(message.RouterConfig{CloseTimeout: 30 * time.Second}, wlog)
	if err != nil {
		return nil, fmt.Errorf("create outbox router: %w", err)
	}
	r := &Relay{pool: pool, router: router, runner: runner, cfg: cfg, observer: observer, log: log, started: make(chan struct{})}
	router.AddConsumerHandler("payment_steps", Topic, sub, r.handle)
	return r, nil
}

// Router exposes the Watermill router, for its metrics.
func (r *Relay) Router() *message.Router { return r.router }

// Run relays until ctx ends or Close is called.
func (r *Relay) Run(ctx context.Context) error {
	return r.router.Run(ctx)
}

// Running reports whether the router is consuming messages. Watermill's
// IsRunning stays true after the router closes, so IsClosed is checked too.
func (r *Relay) Running() bool { return r.router.IsRunning() && !r.router.IsClosed() }

// RunningChan is closed once the router has started.
func (r *Relay) RunningChan() chan struct{} { return r.router.Running() }

// Close stops the relay, letting the message in hand finish.
func (r *Relay) Close() error { return r.router.Close() }

func (r *Relay) handle(msg *message.Message) error {
	ctx := msg.Context()
	m, attempt, err := decode(msg)
	if err != nil {
		// A message that cannot be read never will be; keep it for operators.
		return r.quarantine(ctx, msg, ports.OutboxMessage{}, attempt, err)
	}

	runErr := r.runner.Run(ctx, m)
	if runErr == nil {
		r.observer.RelayAttempt(string(m.Step), "success")
		return nil
	}
	// A step leased by another executor is not failing: the lease ends
	// within twice the Stripe timeout, so waiting for it spends no attempt.
	next := attempt + 1
	if errors.Is(runErr, application.ErrStepBusy) {
		next = attempt
	}
	if next > attempt && attempt >= r.cfg.MaxAttempts {
		r.log.ErrorContext(ctx, "outbox message quarantined after its last attempt",
			"payment_id", m.PaymentID, "step", m.Step, "attempts", attempt, "error", runErr)
		return r.quarantine(ctx, msg, m, attempt, runErr)
	}

	wait := r.backoff(attempt)
	r.log.WarnContext(ctx, "payment step will be retried", "payment_id", m.PaymentID, "step", m.Step,
		"attempt", attempt, "retry_in", wait.String(), "error", runErr)
	retry, err := newMessage(m, next)
	if err != nil {
		return err
	}
	err = r.inOwnTx(ctx, func(tx pgx.Tx) error {
		return publishInTx(ctx, wsql.TxFromPgx(tx), retry, wait)
	})
	if err != nil {
		return err
	}
	r.observer.RelayAttempt(string(m.Step), "retry")
	return nil
}

// inOwnTx runs fn in a transaction of the relay's own. The subscriber's
// transaction is not used: when the relay stops, watermill-sql commits it
// from another goroutine while the handler may still be running.
func (r *Relay) inOwnTx(ctx context.Context, fn func(pgx.Tx) error) error {
	tx, err := r.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("begin relay transaction: %w", err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	if err := fn(tx); err != nil {
		return err
	}
	return tx.Commit(ctx)
}

// backoff returns the wait before attempt+1: doubling from BaseBackoff,
// capped at MaxBackoff, with ±20 % jitter so retries of many payments spread out.
func (r *Relay) backoff(attempt int) time.Duration {
	wait := r.cfg.BaseBackoff
	for i := 1; i < attempt && wait < r.cfg.MaxBackoff; i++ {
		wait *= 2
	}
	wait = min(wait, r.cfg.MaxBackoff)
	jitter := 0.8 + 0.4*rand.Float64()
	return time.Duration(float64(wait) * jitter)
}

// quarantine stores the message in outbox_quarantine before the
// subscriber acknowledges it, so it leaves the queue only once it is kept.
func (r *Relay) quarantine(ctx context.Context, msg *message.Message, m ports.OutboxMessage, attempt int, cause error) error {
	body := json.RawMessage(msg.Payload)
	if !json.Valid(body) {
		body, _ = json.Marshal(string(msg.Payload))
	}
	// A redelivery after a crash before the acknowledgement finds the row
	// already there and adds no second entry.
	_, err := r.pool.Exec(ctx, `INSERT INTO outbox_quarantine
		(message_uuid, payment_id, step, request_id, attempts, last_error, payload)
		VALUES ($1, $2, $3, $4, $5, $6, $7)
		ON CONFLICT (message_uuid) WHERE requeued_at IS NULL DO NOTHING`,
		msg.UUID, m.PaymentID, string(m.Step), m.RequestID, attempt, truncate(cause.Error(), 2000), string(body))
	if err != nil {
		return fmt.Errorf("quarantine outbox message %s: %w", msg.UUID, err)
	}
	r.observer.RelayAttempt(string(m.Step), "quarantined")
	return nil
}

// skipLocked makes the queue schema skip rows another relay has locked, so
// relays of several instances work on different messages at once instead of
// queueing behind one row lock. Ordering within a payment does not depend
// on the queue: the step executor checks the payment's state first.
type skipLocked struct {
	wsql.PostgreSQLQueueSchema
}

// SelectQuery returns the queue schema's query with SKIP LOCKED added.
func (s skipLocked) SelectQuery(params wsql.SelectQueryParams) (wsql.Query, error) {
	q, err := s.PostgreSQLQueueSchema.SelectQuery(params)
	if err != nil {
		return q, err
	}
	if !strings.HasSuffix(strings.TrimSpace(q.Query), "FOR UPDATE") {
		return q, fmt.Errorf("unexpected watermill-sql queue query, cannot add SKIP LOCKED: %s", q.Query)
	}
	q.Query = strings.TrimSpace(q.Query) + " SKIP LOCKED"
	return q, nil
}

// dueMessages selects messages without a delay or whose delay has passed,
// the same condition as watermill-sql's delayed PostgreSQL subscriber.
func dueMessages(wsql.GenerateWhereClauseParams) (string, []any) {
	key := delay.DelayedUntilKey
	return fmt.Sprintf("((metadata->>'%s') IS NULL OR (metadata->>'%s')::timestamptz < NOW())", key, key), nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}
