package postgres

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/taskpod/billing/domain"
	"github.com/taskpod/billing/ports"
)

func agentExists(t *testing.T, id string) bool {
	t.Helper()
	var exists bool
	err := migratedPool(t).QueryRow(testContext(t), "SELECT EXISTS (SELECT 1 FROM agents WHERE id = $1)", id).Scan(&exists)
	if err != nil {
		t.Fatal(err)
	}
	return exists
}

func mustAgent(t *testing.T, id string) domain.Agent {
	t.Helper()
	agent, err := domain.NewAgent(id, "Rollback probe", domain.MustMoney(0, "usd"), "", testNow())
	if err != nil {
		t.Fatal(err)
	}
	return agent
}

func TestInTxRollsBackOnError(t *testing.T) {
	store := newTestStore(t)
	agent := mustAgent(t, uniqueID("agt_"))
	failure := errors.New("closure failed")

	err := store.InTx(testContext(t), func(ctx context.Context, tx ports.Tx) error {
		if err := tx.Agents().Insert(ctx, agent); err != nil {
			return err
		}
		return failure
	})
	if !errors.Is(err, failure) {
		t.Fatalf("InTx returned %v, want the closure's error", err)
	}
	if agentExists(t, agent.ID) {
		t.Error("the agent inserted before the closure failed was committed")
	}
}

func TestInTxRollsBackOnPanic(t *testing.T) {
	store := newTestStore(t)
	agent := mustAgent(t, uniqueID("agt_"))

	func() {
		defer func() {
			if recover() == nil {
				t.Error("InTx swallowed the closure's panic")
			}
		}()
		_ = store.InTx(testContext(t), func(ctx context.Context, tx ports.Tx) error {
			if err := tx.Agents().Insert(ctx, agent); err != nil {
				return err
			}
			panic("closure panicked")
		})
	}()
	if agentExists(t, agent.ID) {
		t.Error("the agent inserted before the panic was committed")
	}
}

func TestInTxRetriesSerializationFailure(t *testing.T) {
	store := newTestStore(t)
	store.retryDelay = func(int) time.Duration { return time.Millisecond }
	var ids []string

	err := store.InTx(testContext(t), func(ctx context.Context, tx ports.Tx) error {
		agent := mustAgent(t, uniqueID("agt_"))
		ids = append(ids, agent.ID)
		if err := tx.Agents().Insert(ctx, agent); err != nil {
			return err
		}
		if len(ids) < 3 {
			return &pgconn.PgError{Code: codeSerializationFailure, Message: "injected"}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("InTx: %v", err)
	}
	if len(ids) != 3 {
		t.Fatalf("closure ran %d times, want 3", len(ids))
	}
	for i, id := range ids[:2] {
		if agentExists(t, id) {
			t.Errorf("attempt %d's agent was committed although the attempt failed", i+1)
		}
	}
	if !agentExists(t, ids[2]) {
		t.Error("the successful attempt's agent was not committed")
	}
}

func TestInTxStopsAfterFiveAttempts(t *testing.T) {
	store := newTestStore(t)
	store.retryDelay = func(int) time.Duration { return time.Millisecond }
	calls := 0

	err := store.InTx(testContext(t), func(ctx context.Context, tx ports.Tx) error {
		calls++
		return &pgconn.PgError{Code: codeDeadlockDetected, Message: "injected"}
	})
	if calls != maxTxAttempts {
		t.Errorf("closure ran %d times, want %d", calls, maxTxAttempts)
	}
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != codeDeadlockDetected {
		t.Errorf("InTx returned %v, want the last deadlock error", err)
	}
}

func TestInTxDoesNotRetryOtherErrors(t *testing.T) {
	store := newTestStore(t)
	calls := 0

	err := store.InTx(testContext(t), func(ctx context.Context, tx ports.Tx) error {
		calls++
		return &pgconn.PgError{Code: codeUniqueViolation, Message: "injected"}
	})
	if err == nil {
		t.Fatal("InTx returned nil")
	}
	if calls != 1 {
		t.Errorf("closure ran %d times, want 1", calls)
	}
}

func TestInTxStopsRetryingOnCancel(t *testing.T) {
	store := newTestStore(t)
	store.retryDelay = func(int) time.Duration { return time.Hour }
	ctx, cancel := context.WithCancel(testContext(t))
	calls := 0

	err := store.InTx(ctx, func(ctx context.Context, tx ports.Tx) error {
		calls++
		cancel()
		return &pgconn.PgError{Code: codeSerializationFailure, Message: "injected"}
	})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("InTx returned %v, want context.Canceled", err)
	}
	if calls != 1 {
		t.Errorf("closure ran %d times, want 1", calls)
	}
}

// TestInTxRetriesRealDeadlock makes two units of work lock two agents in
// opposite orders. PostgreSQL aborts one with 40P01 after deadlock_timeout
// (1 s by default), and InTx must run that one again to success.
func TestInTxRetriesRealDeadlock(t *testing.T) {
	store := newTestStore(t)
	store.retryDelay = func(int) time.Duration { return time.Millisecond }
	first, second := insertAgent(t, store), insertAgent(t, store)

	var bothLocked sync.WaitGroup
	bothLocked.Add(2)
	var attempts atomic.Int32
	lockInOrder := func(a, b string, firstAttempt *atomic.Bool) error {
		return store.InTx(testContext(t), func(ctx context.Context, tx ports.Tx) error {
			attempts.Add(1)
			if _, err := tx.Agents().GetForUpdate(ctx, a); err != nil {
				return err
			}
			if firstAttempt.CompareAndSwap(true, false) {
				bothLocked.Done()
				bothLocked.Wait()
			}
			_, err := tx.Agents().GetForUpdate(ctx, b)
			return err
		})
	}

	var wg sync.WaitGroup
	errs := make([]error, 2)
	var firstA, firstB atomic.Bool
	firstA.Store(true)
	firstB.Store(true)
	wg.Go(func() { errs[0] = lockInOrder(first.ID, second.ID, &firstA) })
	wg.Go(func() { errs[1] = lockInOrder(second.ID, first.ID, &firstB) })
	wg.Wait()

	for i, err := range errs {
		if err != nil {
			t.Errorf("unit of work %d: %v", i, err)
		}
	}
	if got := attempts.Load(); got < 3 {
		t.Errorf("closures ran %d times in all, want at least 3 (one retry after the deadlock)", got)
	}
}

func TestInTxCommitErrorIsUnknown(t *testing.T) {
	store := newTestStore(t)
	store.retryDelay = func(int) time.Duration { return time.Millisecond }
	// The commit succeeds but the caller sees an error, as when the
	// connection drops before the COMMIT response arrives. The error is a
	// serialization failure to show that commit errors are never retried.
	store.commit = func(ctx context.Context, tx pgx.Tx) error {
		if err := tx.Commit(ctx); err != nil {
			return err
		}
		return &pgconn.PgError{Code: codeSerializationFailure, Message: "injected after commit"}
	}
	agent := mustAgent(t, uniqueID("agt_"))
	calls := 0

	err := store.InTx(testContext(t), func(ctx context.Context, tx ports.Tx) error {
		calls++
		return tx.Agents().Insert(ctx, agent)
	})
	if !errors.Is(err, ErrCommitUnknown) {
		t.Fatalf("InTx returned %v, want ErrCommitUnknown", err)
	}
	if calls != 1 {
		t.Errorf("closure ran %d times, want 1", calls)
	}
	if !agentExists(t, agent.ID) {
		t.Error("the agent is missing although COMMIT went through")
	}
}

func TestOutboxWithoutFactoryFails(t *testing.T) {
	store := newTestStore(t)
	err := store.InTx(testContext(t), func(ctx context.Context, tx ports.Tx) error {
		return tx.Outbox().Enqueue(ctx, ports.OutboxMessage{PaymentID: "pay_1", Step: domain.StepAuthorize})
	})
	if !errors.Is(err, errOutboxNotConfigured) {
		t.Errorf("Enqueue without an outbox factory returned %v, want errOutboxNotConfigured", err)
	}
}

type recordingOutbox struct {
	tx       pgx.Tx
	messages []ports.OutboxMessage
}

func (o *recordingOutbox) Enqueue(_ context.Context, m ports.OutboxMessage) error {
	o.messages = append(o.messages, m)
	return nil
}

func TestOutboxFactoryGetsTransaction(t *testing.T) {
	var built *recordingOutbox
	store := NewStore(migratedPool(t), func(tx pgx.Tx) ports.Outbox {
		built = &recordingOutbox{tx: tx}
		return built
	})
	message := ports.OutboxMessage{PaymentID: "pay_1", Step: domain.StepCapture, RequestID: "req_1"}

	inTx(t, store, func(ctx context.Context, tx ports.Tx) error {
		if err := tx.Outbox().Enqueue(ctx, message); err != nil {
			return err
		}
		var one int
		return built.tx.QueryRow(ctx, "SELECT 1").Scan(&one)
	})
	if built == nil || len(built.messages) != 1 || built.messages[0] != message {
		t.Errorf("outbox received %+v, want one message %+v", built, message)
	}
}

// TestConstraintNamesExist checks that every constraint name mapped to a
// domain error names a constraint or index of the migrated schema, so a
// renamed constraint cannot silently lose its mapping.
func TestConstraintNamesExist(t *testing.T) {
	pool := migratedPool(t)
	ctx := testContext(t)
	for name := range constraintErrors {
		var exists bool
		err := pool.QueryRow(ctx, `
			SELECT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = $1)
			    OR EXISTS (SELECT 1 FROM pg_indexes WHERE indexname = $1)`, name).Scan(&exists)
		if err != nil {
			t.Fatal(err)
		}
		if !exists {
			t.Errorf("constraint %s is mapped but missing from the schema", name)
		}
	}
}
