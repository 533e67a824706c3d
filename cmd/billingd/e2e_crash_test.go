package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"testing"
	"time"

	"github.com/taskpod/billing/adapters/outbox"
	"github.com/taskpod/billing/domain"
	"github.com/taskpod/billing/ports"
)

// testCrashRecovery kills `billingd serve` with SIGKILL at each point of
// the money path and restarts it, then checks that every task ended with
// one hold, one capture and one transfer at most, and a ledger equal to the
// emulator's records. The emulator runs as its own process, so its state
// and fault rules outlive every crash of the service.
//
// Short mode (the default) kills serve 12 times over 16 tasks; TEST_LONG=1
// kills it 41 times over 65 tasks.
func testCrashRecovery(t *testing.T, bin string) {
	c := newCluster(t, bin)
	s := c.startServe()
	a := c.registerAgent(s, "agent_crash", "acct_crash", 1000)
	cust := c.newCustomer(s, "user_crash")
	var all []*paidTask

	// A completion commits the task, the payment and the capture message
	// together before the response, so a crash right after must still lead
	// to exactly one capture and one transfer.
	for range pick(3, 10) {
		task := c.mustCreateTask(s, cust, a)
		c.waitMatched(s, task)
		c.mustEnd(s, task, completeTask)
		s.kill()
		s = c.startServe()
		all = append(all, task)
	}
	c.waitPayments(all)

	// The hold is placed at Stripe but its response is lost, so the task
	// is created as authorizing (202), and the process dies. After the
	// restart the relay must find that hold instead of placing another.
	for range pick(1, 3) {
		before := c.stripeMutations("/v1/payment_intents")
		c.addFault(fault{Method: http.MethodPost, Path: "/v1/payment_intents", DropResponseRate: 1, Count: ptr(int64(1))})
		task := c.mustCreateTask(s, cust, a)
		if after := c.stripeMutations("/v1/payment_intents"); after != before+1 {
			t.Fatalf("PaymentIntents created for the task = %d, want 1", after-before)
		}
		s.kill()
		s = c.startServe()
		c.waitMatched(s, task)
		c.mustEnd(s, task, completeTask)
		all = append(all, task)
	}

	// A cancellation queues the release of the hold, and the process dies
	// right after the response.
	for range pick(1, 3) {
		task := c.mustCreateTask(s, cust, a)
		c.waitMatched(s, task)
		c.mustEnd(s, task, cancelTask)
		s.kill()
		s = c.startServe()
		all = append(all, task)
	}
	c.waitPayments(all)

	// Stripe captured but the service never learned it: the response is
	// dropped after the capture took effect, and the process dies before
	// the relay retries. A slow backoff keeps the retry after the kill.
	for range pick(1, 3) {
		// Settled tasks keep other Stripe calls from meeting the fault.
		c.waitPayments(all)
		s = c.restartWith(s, "OUTBOX_BASE_BACKOFF=5s", "OUTBOX_MAX_BACKOFF=5s")
		task := c.mustCreateTask(s, cust, a)
		c.waitMatched(s, task)
		capturePath := "/v1/payment_intents/" + c.paymentIntentOf(task) + "/capture"
		c.addFault(fault{Method: http.MethodPost, Path: capturePath, DropResponseRate: 1, Count: ptr(int64(1))})
		c.mustEnd(s, task, completeTask)
		waitFor(t, "Stripe applies the capture whose response is dropped", func() error {
			if c.stripeMutations(capturePath) == 0 {
				return errNotYet
			}
			return nil
		})
		s.kill()
		if status, _ := c.paymentStatus(task.paymentID); status != "authorized" {
			t.Fatalf("payment %s is %s at the crash, want authorized: the crash missed the window after Stripe's capture", task.paymentID, status)
		}
		s = c.startServe()
		all = append(all, task)
	}

	// The capture is recorded and the transfer reached Stripe, but its
	// response is lost and the process dies before the retry.
	for range pick(1, 3) {
		c.waitPayments(all)
		s = c.restartWith(s, "OUTBOX_BASE_BACKOFF=5s", "OUTBOX_MAX_BACKOFF=5s")
		before := c.stripeMutations("/v1/transfers")
		c.addFault(fault{Method: http.MethodPost, Path: "/v1/transfers", DropResponseRate: 1, Count: ptr(int64(1))})
		task := c.mustCreateTask(s, cust, a)
		c.waitMatched(s, task)
		c.mustEnd(s, task, completeTask)
		waitFor(t, "Stripe creates the transfer whose response is dropped", func() error {
			if c.stripeMutations("/v1/transfers") == before {
				return errNotYet
			}
			return nil
		})
		s.kill()
		if status, _ := c.paymentStatus(task.paymentID); status != "captured" {
			t.Fatalf("payment %s is %s at the crash, want captured", task.paymentID, status)
		}
		s = c.startServe()
		all = append(all, task)
	}

	// Between capture and transfer: Stripe fails every transfer with a
	// 500 until the fault is cleared, and the process dies meanwhile.
	for range pick(1, 3) {
		c.waitPayments(all)
		c.addFault(fault{Method: http.MethodPost, Path: "/v1/transfers", Rate: 1})
		task := c.mustCreateTask(s, cust, a)
		c.waitMatched(s, task)
		c.mustEnd(s, task, completeTask)
		waitFor(t, "the capture is recorded and a transfer attempt failed", func() error {
			status, _ := c.paymentStatus(task.paymentID)
			failed := c.count(`SELECT count(*) FROM payment_steps WHERE payment_id = $1 AND step = 'transfer' AND last_error <> ''`, task.paymentID)
			if status != "captured" || failed == 0 {
				return fmt.Errorf("payment %s, %d failed transfer steps", status, failed)
			}
			return nil
		})
		s.kill()
		c.clearFaults()
		s = c.startServe()
		all = append(all, task)
	}
	c.waitPayments(all)

	// After the commit, before the acknowledgement: the step's outcome is
	// in the database but its message is still in the outbox, so it runs
	// again after the restart. The test puts those messages back for tasks
	// that are done, while the service is down.
	s.kill()
	stripeBefore := c.stripeMutationTotals()
	c.redeliver(all[:min(3, len(all))], domain.StepAuthorize, domain.StepCapture, domain.StepTransfer)
	s = c.startServe()
	c.waitSettled(all)
	if after := c.stripeMutationTotals(); after != stripeBefore {
		t.Errorf("redelivered messages changed Stripe: mutations %+v before, %+v after", stripeBefore, after)
	}

	// Crashes at random moments while many tasks settle.
	var storm []*paidTask
	for range pick(8, 40) {
		task := c.mustCreateTask(s, cust, a)
		storm = append(storm, task)
	}
	for _, task := range storm {
		c.waitMatched(s, task)
		c.mustEnd(s, task, completeTask)
	}
	for range pick(3, 15) {
		time.Sleep(time.Duration(20+rand.IntN(400)) * time.Millisecond)
		s.kill()
		s = c.startServe()
	}
	all = append(all, storm...)
	c.waitSettled(all)

	totals := c.verifyMoney(s, all)
	if open := c.count(`SELECT count(*) FROM outbox_quarantine WHERE requeued_at IS NULL`); open != 0 {
		t.Errorf("%d messages quarantined", open)
	}
	t.Logf("after %d serve processes: %v", c.serves, totals)
}

// restartWith stops s gracefully and starts serve with extra settings.
func (c *cluster) restartWith(s *server, extra ...string) *server {
	c.t.Helper()
	s.stop()
	return c.startServe(extra...)
}

func (c *cluster) paymentIntentOf(task *paidTask) string {
	c.t.Helper()
	var id string
	err := c.db.QueryRow(context.Background(), `SELECT coalesce(stripe_payment_intent_id, '') FROM payments WHERE id = $1`, task.paymentID).Scan(&id)
	if err != nil || id == "" {
		c.t.Fatalf("payment %s has no PaymentIntent (%v)", task.paymentID, err)
	}
	return id
}

// stripeMutationTotals counts every state change at the emulator: holds,
// captures, releases and transfers.
type mutationTotals struct {
	intents, captures, cancels, transfers int64
}

func (c *cluster) stripeMutationTotals() mutationTotals {
	return mutationTotals{
		intents:   c.stripeMutations("/v1/payment_intents"),
		captures:  c.stripeMutations("/v1/payment_intents/*/capture"),
		cancels:   c.stripeMutations("/v1/payment_intents/*/cancel"),
		transfers: c.stripeMutations("/v1/transfers"),
	}
}

// redeliver writes messages for steps of tasks into the outbox, as a crash
// after a step's commit and before its acknowledgement leaves them.
func (c *cluster) redeliver(tasks []*paidTask, steps ...domain.Step) {
	c.t.Helper()
	ctx := context.Background()
	tx, err := c.db.Begin(ctx)
	if err != nil {
		c.t.Fatal(err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // a no-op after Commit
	for _, task := range tasks {
		for _, step := range steps {
			if err := outbox.NewTxOutbox(tx).Enqueue(ctx, ports.OutboxMessage{PaymentID: task.paymentID, Step: step}); err != nil {
				c.t.Fatal(err)
			}
		}
	}
	if err := tx.Commit(ctx); err != nil {
		c.t.Fatal(err)
	}
}

func ptr[T any](v T) *T { return &v }
