package postgres

import (
	"context"
	"testing"
	"time"

	"github.com/taskpod/billing/domain"
	"github.com/taskpod/billing/ports"
)

// testNow returns the current time at PostgreSQL's microsecond precision,
// so stored and expected times compare equal.
func testNow() time.Time {
	return time.Now().UTC().Truncate(time.Microsecond)
}

// inTx runs fn in a unit of work of a store on the shared database and
// fails the test on error.
func inTx(t *testing.T, store *Store, fn func(ctx context.Context, tx ports.Tx) error) {
	t.Helper()
	if err := store.InTx(testContext(t), fn); err != nil {
		t.Fatalf("InTx: %v", err)
	}
}

func newTestStore(t *testing.T) *Store {
	t.Helper()
	return NewStore(migratedPool(t), nil)
}

// insertAgent stores a paid USD agent with a random id.
func insertAgent(t *testing.T, store *Store) domain.Agent {
	t.Helper()
	agent, err := domain.NewAgent(uniqueID("agt_"), "Summariser", domain.MustMoney(1500, "usd"), "acct_test123", testNow())
	if err != nil {
		t.Fatal(err)
	}
	inTx(t, store, func(ctx context.Context, tx ports.Tx) error {
		return tx.Agents().Insert(ctx, agent)
	})
	return agent
}

// newTask builds a task for agent created at createdAt.
func newTask(t *testing.T, agent domain.Agent, customerID string, createdAt time.Time) domain.Task {
	t.Helper()
	task, err := domain.NewTask(domain.NewTaskInput{
		ID: uniqueID("task_"), CustomerID: customerID, Title: "Summarise the report",
		Description: "Two pages", MaxPrice: 2000, Agent: agent, Now: createdAt,
	})
	if err != nil {
		t.Fatal(err)
	}
	return task
}

// insertTask stores a new task for agent.
func insertTask(t *testing.T, store *Store, agent domain.Agent, customerID string, createdAt time.Time) domain.Task {
	t.Helper()
	task := newTask(t, agent, customerID, createdAt)
	inTx(t, store, func(ctx context.Context, tx ports.Tx) error {
		return tx.Tasks().Insert(ctx, task)
	})
	return task
}

// insertPayment stores a payment in the authorizing state for a new task.
func insertPayment(t *testing.T, store *Store) domain.Payment {
	t.Helper()
	agent := insertAgent(t, store)
	task := insertTask(t, store, agent, uniqueID("user_"), testNow())
	payment, err := domain.NewPayment(uniqueID("pay_"), task, agent, "cus_"+task.ID(), "", 1000, testNow())
	if err != nil {
		t.Fatal(err)
	}
	inTx(t, store, func(ctx context.Context, tx ports.Tx) error {
		return tx.Payments().Insert(ctx, payment)
	})
	return payment
}
