package outbox_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/taskpod/billing/adapters/outbox"
	"github.com/taskpod/billing/application"
	"github.com/taskpod/billing/domain"
	"github.com/taskpod/billing/ports"
)

// recordingRunner counts deliveries per payment. fail, when set, decides
// whether the n-th run (from 1) of a message fails.
type recordingRunner struct {
	mu   sync.Mutex
	runs map[string]int
	fail func(m ports.OutboxMessage, n int) error
}

func newRecordingRunner(fail func(m ports.OutboxMessage, n int) error) *recordingRunner {
	return &recordingRunner{runs: map[string]int{}, fail: fail}
}

func (r *recordingRunner) Run(_ context.Context, m ports.OutboxMessage) error {
	r.mu.Lock()
	r.runs[m.PaymentID]++
	n := r.runs[m.PaymentID]
	r.mu.Unlock()
	if r.fail != nil {
		return r.fail(m, n)
	}
	return nil
}

func (r *recordingRunner) count(paymentID string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.runs[paymentID]
}

func (r *recordingRunner) snapshot() map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]int, len(r.runs))
	for k, v := range r.runs {
		out[k] = v
	}
	return out
}

// fastRelay returns relay settings that retry within milliseconds.
func fastRelay(maxAttempts int) outbox.RelayConfig {
	return outbox.RelayConfig{
		MaxAttempts: maxAttempts, BaseBackoff: 20 * time.Millisecond, MaxBackoff: 80 * time.Millisecond,
		PollInterval: 10 * time.Millisecond, AckDeadline: 10 * time.Second,
	}
}

// startRelay runs a relay until the test ends.
func startRelay(t *testing.T, pool *pgxpool.Pool, runner outbox.StepRunner, cfg outbox.RelayConfig) {
	t.Helper()
	relay, err := outbox.NewRelay(pool, runner, cfg, nil, testLogger())
	if err != nil {
		t.Fatalf("NewRelay: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- relay.Run(context.Background()) }()
	select {
	case <-relay.RunningChan():
	case err := <-done:
		t.Fatalf("relay stopped at start: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("relay did not start within 30s")
	}
	t.Cleanup(func() {
		if err := relay.Close(); err != nil {
			t.Errorf("close relay: %v", err)
		}
		if err := <-done; err != nil {
			t.Errorf("relay run: %v", err)
		}
	})
}

// enqueue commits messages in one transaction.
func enqueue(t *testing.T, pool *pgxpool.Pool, msgs ...ports.OutboxMessage) {
	t.Helper()
	ctx := context.Background()
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // a no-op after Commit
	for _, m := range msgs {
		if err := outbox.NewTxOutbox(tx).Enqueue(ctx, m); err != nil {
			t.Fatalf("enqueue %s: %v", m.PaymentID, err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
}

func captureOf(paymentID string) ports.OutboxMessage {
	return ports.OutboxMessage{PaymentID: paymentID, Step: domain.StepCapture}
}

// waitUntil polls cond until it holds. The deadline only stops a hung test;
// nothing here depends on how fast the relay is.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting until %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func pendingMessages(t *testing.T, pool *pgxpool.Pool) int {
	t.Helper()
	var n int
	if err := pool.QueryRow(context.Background(), `SELECT count(*) FROM watermill_payment_steps`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestRelayDeliversLowerOffsetCommittedLater(t *testing.T) {
	pool := migratedDatabase(t)
	ctx := context.Background()

	// The slow transaction takes the lower offset and keeps it uncommitted
	// while a later transaction commits a higher one.
	slow, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Rollback(ctx) //nolint:errcheck // a no-op after Commit
	if err := outbox.NewTxOutbox(slow).Enqueue(ctx, captureOf("pay_slow")); err != nil {
		t.Fatal(err)
	}
	var slowOffset, fastOffset int64
	if err := slow.QueryRow(ctx, `SELECT max("offset") FROM watermill_payment_steps`).Scan(&slowOffset); err != nil {
		t.Fatal(err)
	}
	enqueue(t, pool, captureOf("pay_fast"))
	if err := pool.QueryRow(ctx, `SELECT max("offset") FROM watermill_payment_steps`).Scan(&fastOffset); err != nil {
		t.Fatal(err)
	}
	if fastOffset <= slowOffset {
		t.Fatalf("offsets: fast %d, slow %d; the test needs the uncommitted message below the committed one", fastOffset, slowOffset)
	}

	runner := newRecordingRunner(nil)
	startRelay(t, pool, runner, fastRelay(3))
	waitUntil(t, "the committed higher offset is delivered", func() bool { return runner.count("pay_fast") == 1 })
	if n := runner.count("pay_slow"); n != 0 {
		t.Fatalf("uncommitted message delivered %d times", n)
	}

	if err := slow.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the lower offset is delivered after its commit", func() bool { return runner.count("pay_slow") == 1 })
	waitUntil(t, "the outbox is empty", func() bool { return pendingMessages(t, pool) == 0 })

	if got := runner.snapshot(); got["pay_fast"] != 1 || got["pay_slow"] != 1 || len(got) != 2 {
		t.Errorf("deliveries = %v, want pay_fast and pay_slow once each", got)
	}
}

func TestRelayDeliversInterleavedCommitsOnce(t *testing.T) {
	pool := migratedDatabase(t)
	runner := newRecordingRunner(nil)
	startRelay(t, pool, runner, fastRelay(3))

	// Writers take offsets in one order and commit in a random one; every
	// fifth rolls back, and its message must never run.
	const writers = 40
	committed := make(map[string]bool)
	var mu sync.Mutex
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for i := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := fmt.Sprintf("pay_%02d", i)
			ctx := context.Background()
			tx, err := pool.Begin(ctx)
			if err != nil {
				errs <- err
				return
			}
			defer tx.Rollback(ctx) //nolint:errcheck // a no-op after Commit
			if err := outbox.NewTxOutbox(tx).Enqueue(ctx, captureOf(id)); err != nil {
				errs <- err
				return
			}
			time.Sleep(time.Duration(rand.IntN(80)) * time.Millisecond)
			if i%5 == 4 {
				return
			}
			if err := tx.Commit(ctx); err != nil {
				errs <- err
				return
			}
			mu.Lock()
			committed[id] = true
			mu.Unlock()
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("writer: %v", err)
	}

	waitUntil(t, "every committed message is delivered", func() bool { return len(runner.snapshot()) >= len(committed) })
	waitUntil(t, "the outbox is empty", func() bool { return pendingMessages(t, pool) == 0 })
	got := runner.snapshot()
	for id := range committed {
		if got[id] != 1 {
			t.Errorf("%s delivered %d times, want once", id, got[id])
		}
	}
	for id, n := range got {
		if !committed[id] {
			t.Errorf("rolled-back message %s delivered %d times", id, n)
		}
	}
	if len(committed) != writers-writers/5 {
		t.Errorf("committed %d messages, want %d", len(committed), writers-writers/5)
	}
}

func TestRelayQuarantinesAfterMaxAttempts(t *testing.T) {
	pool := migratedDatabase(t)
	runner := newRecordingRunner(func(m ports.OutboxMessage, n int) error {
		if m.PaymentID == "pay_poison" {
			return fmt.Errorf("stripe answered 500 on run %d", n)
		}
		return nil
	})
	startRelay(t, pool, runner, fastRelay(3))
	enqueue(t, pool, captureOf("pay_poison"), captureOf("pay_ok_1"))
	enqueue(t, pool, captureOf("pay_ok_2"))

	type entry struct {
		paymentID, step, lastError string
		attempts                   int
	}
	var quarantined []entry
	waitUntil(t, "the poison message is quarantined", func() bool {
		rows, err := pool.Query(context.Background(), `SELECT payment_id, step, last_error, attempts FROM outbox_quarantine`)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		quarantined = nil
		for rows.Next() {
			var e entry
			if err := rows.Scan(&e.paymentID, &e.step, &e.lastError, &e.attempts); err != nil {
				t.Fatal(err)
			}
			quarantined = append(quarantined, e)
		}
		return len(quarantined) > 0
	})
	waitUntil(t, "the outbox is empty", func() bool { return pendingMessages(t, pool) == 0 })

	if len(quarantined) != 1 {
		t.Fatalf("quarantine = %+v, want one entry", quarantined)
	}
	q := quarantined[0]
	if q.paymentID != "pay_poison" || q.step != "capture" {
		t.Errorf("quarantined %s %s, want pay_poison capture", q.paymentID, q.step)
	}
	if q.attempts != 3 {
		t.Errorf("quarantined after %d attempts, want 3", q.attempts)
	}
	if !strings.Contains(q.lastError, "stripe answered 500 on run 3") {
		t.Errorf("last error = %q, want the third run's error", q.lastError)
	}
	if n := runner.count("pay_poison"); n != 3 {
		t.Errorf("poison message ran %d times, want 3", n)
	}
	for _, id := range []string{"pay_ok_1", "pay_ok_2"} {
		if n := runner.count(id); n != 1 {
			t.Errorf("%s ran %d times beside the poison message, want once", id, n)
		}
	}
}

func TestRelayRetriesUntilSuccess(t *testing.T) {
	pool := migratedDatabase(t)
	errFlaky := errors.New("stripe timed out")
	runner := newRecordingRunner(func(_ ports.OutboxMessage, n int) error {
		if n < 3 {
			return errFlaky
		}
		return nil
	})
	startRelay(t, pool, runner, fastRelay(3))
	enqueue(t, pool, captureOf("pay_flaky"))

	waitUntil(t, "the third run succeeds", func() bool { return runner.count("pay_flaky") >= 3 })
	waitUntil(t, "the outbox is empty", func() bool { return pendingMessages(t, pool) == 0 })
	if n := runner.count("pay_flaky"); n != 3 {
		t.Errorf("message ran %d times, want 3", n)
	}
	var quarantined int
	if err := pool.QueryRow(context.Background(), `SELECT count(*) FROM outbox_quarantine`).Scan(&quarantined); err != nil {
		t.Fatal(err)
	}
	if quarantined != 0 {
		t.Errorf("quarantine holds %d entries after a success on the last allowed attempt, want 0", quarantined)
	}
}

func TestEnqueueKeepsSubsecondDelay(t *testing.T) {
	pool := migratedDatabase(t)
	msg := captureOf("pay_delayed")
	msg.Delay = 1500 * time.Millisecond
	written := time.Now()
	enqueue(t, pool, msg)

	var raw string
	err := pool.QueryRow(context.Background(), `SELECT metadata->>'_watermill_delayed_until' FROM watermill_payment_steps
		WHERE payload->>'paymentId' = 'pay_delayed'`).Scan(&raw)
	if err != nil {
		t.Fatal(err)
	}
	due, err := time.Parse(time.RFC3339Nano, raw)
	if err != nil {
		t.Fatalf("stored due time %q: %v", raw, err)
	}
	// A due time cut to whole seconds would be up to a second early.
	if earliest := written.Add(msg.Delay); due.Before(earliest) {
		t.Errorf("stored due time %s is before the write time plus the delay, %s", due.Format(time.RFC3339Nano), earliest.Format(time.RFC3339Nano))
	}
}

// A step leased by another executor is waited for without spending the
// retry budget, so a message is never quarantined for a lease that ends.
func TestRelayBusyStepSpendsNoAttempt(t *testing.T) {
	pool := migratedDatabase(t)
	runner := newRecordingRunner(func(_ ports.OutboxMessage, n int) error {
		if n <= 5 {
			return application.ErrStepBusy
		}
		return nil
	})
	startRelay(t, pool, runner, fastRelay(2))
	enqueue(t, pool, captureOf("pay_busy"))

	waitUntil(t, "the sixth run succeeds", func() bool { return runner.count("pay_busy") >= 6 })
	waitUntil(t, "the outbox is empty", func() bool { return pendingMessages(t, pool) == 0 })
	var quarantined int
	if err := pool.QueryRow(context.Background(), `SELECT count(*) FROM outbox_quarantine`).Scan(&quarantined); err != nil {
		t.Fatal(err)
	}
	if quarantined != 0 {
		t.Errorf("quarantine holds %d entries for a step that was only busy, want 0", quarantined)
	}
}
