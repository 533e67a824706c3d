package main

import (
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"
)

// quarantineEntry is one item of GET /v1/admin/outbox/quarantine.
type quarantineEntry struct {
	ID            string     `json:"id"`
	PaymentID     string     `json:"paymentId"`
	Step          string     `json:"step"`
	Attempts      int        `json:"attempts"`
	LastError     string     `json:"lastError"`
	QuarantinedAt time.Time  `json:"quarantinedAt"`
	RequeuedAt    *time.Time `json:"requeuedAt"`
}

func (c *cluster) quarantine(s *server, status string) []quarantineEntry {
	c.t.Helper()
	var out struct {
		Data    []quarantineEntry `json:"data"`
		HasMore bool              `json:"hasMore"`
	}
	c.mustCall(http.MethodGet, s.base+"/v1/admin/outbox/quarantine?limit=100&status="+status, c.admin, nil, &out)
	return out.Data
}

// testPoisonMessageRequeue makes every capture of one payment fail with a
// 500 until its message is quarantined after OUTBOX_MAX_ATTEMPTS, checks
// that the tasks around it settle meanwhile, then clears the fault and
// requeues the message through the admin API.
//
// Short mode runs 6 tasks beside the poison one; TEST_LONG=1 runs 30.
func testPoisonMessageRequeue(t *testing.T, bin string) {
	// The backoff leaves room for a step that is briefly busy in another
	// executor, such as an authorization the API is still placing, so that
	// only the poison message uses up its 3 attempts.
	c := newCluster(t, bin, "OUTBOX_MAX_ATTEMPTS=3", "OUTBOX_BASE_BACKOFF=300ms", "OUTBOX_MAX_BACKOFF=1s")
	s := c.startServe()
	a := c.registerAgent(s, "agent_poison", "acct_poison", 700)
	cust := c.newCustomer(s, "user_poison")

	poison := c.mustCreateTask(s, cust, a)
	c.waitMatched(s, poison)
	capturePath := "/v1/payment_intents/" + c.paymentIntentOf(poison) + "/capture"
	c.addFault(fault{Method: http.MethodPost, Path: capturePath, Rate: 1, Status: 500})
	c.mustEnd(s, poison, completeTask)

	var others []*paidTask
	for range pick(6, 30) {
		task := c.mustCreateTask(s, cust, a)
		c.waitMatched(s, task)
		c.mustEnd(s, task, completeTask)
		others = append(others, task)
	}

	var entry quarantineEntry
	waitFor(t, "the poison message is quarantined", func() error {
		for _, e := range c.quarantine(s, "open") {
			if e.PaymentID == poison.paymentID {
				entry = e
				return nil
			}
		}
		return errNotYet
	})
	c.waitSettled(others)
	if entry.Step != "capture" || entry.Attempts != 3 || entry.LastError == "" || entry.RequeuedAt != nil {
		t.Errorf("quarantine entry = %+v, want capture after 3 attempts with an error, not requeued", entry)
	}
	if open := c.quarantine(s, "open"); len(open) != 1 {
		t.Errorf("open quarantine has %d entries, want only the poison message: %+v", len(open), open)
	}
	if status, _ := c.paymentStatus(poison.paymentID); status != "authorized" {
		t.Errorf("poison payment is %s while quarantined, want authorized", status)
	}
	if n := c.stripeMutations(capturePath); n != 0 {
		t.Errorf("poison intent captured %d times while every capture failed", n)
	}
	customerStatus, err := call(http.MethodGet, s.base+"/v1/admin/outbox/quarantine", cust.token, nil, nil)
	if customerStatus != http.StatusForbidden {
		t.Errorf("customer lists the quarantine: status %d (%v), want 403", customerStatus, err)
	}

	c.clearFaults()
	var first, second quarantineEntry
	c.mustCall(http.MethodPost, s.base+"/v1/admin/outbox/quarantine/"+entry.ID+"/requeue", c.admin, nil, &first)
	c.mustCall(http.MethodPost, s.base+"/v1/admin/outbox/quarantine/"+entry.ID+"/requeue", c.admin, nil, &second)
	if first.RequeuedAt == nil || second.RequeuedAt == nil || !first.RequeuedAt.Equal(*second.RequeuedAt) {
		t.Errorf("requeue twice: requeuedAt %v then %v, want one set time", first.RequeuedAt, second.RequeuedAt)
	}
	status, err := call(http.MethodPost, s.base+"/v1/admin/outbox/quarantine/oq_999999/requeue", c.admin, nil, nil)
	if status != http.StatusNotFound {
		t.Errorf("requeue of an unknown entry: status %d (%v), want 404", status, err)
	}

	all := append([]*paidTask{poison}, others...)
	c.waitSettled(all)
	totals := c.verifyMoney(s, all)
	if open := c.quarantine(s, "open"); len(open) != 0 {
		t.Errorf("open quarantine after the requeue = %+v, want empty", open)
	}
	if requeued := c.quarantine(s, "requeued"); len(requeued) != 1 || requeued[0].ID != entry.ID {
		t.Errorf("requeued entries = %+v, want only %s", requeued, entry.ID)
	}
	if n := c.count(`SELECT count(*) FROM audit_log WHERE action = 'outbox.requeued' AND subject = $1`, entry.ID); n != 1 {
		t.Errorf("audit events for the requeue = %d, want 1", n)
	}
	t.Logf("poison %s quarantined after %d attempts (%s) and requeued; %v", poison.paymentID, entry.Attempts, entry.LastError, totals)
}

// testRetryTransfer sends a transfer to an account Stripe rejects, then
// retries it through the admin API to a corrected account.
func testRetryTransfer(t *testing.T, bin string) {
	c := newCluster(t, bin)
	s := c.startServe()
	// The emulator rejects transfers to acct_invalid as Stripe rejects an
	// unknown destination.
	a := c.registerAgent(s, "agent_moved", "acct_invalid", 400)
	cust := c.newCustomer(s, "user_moved")
	task := c.mustCreateTask(s, cust, a)
	task.transferFails = true
	c.waitMatched(s, task)
	c.mustEnd(s, task, completeTask)
	c.waitSettled([]*paidTask{task})
	if _, reason := c.paymentStatus(task.paymentID); reason == "" {
		t.Fatalf("payment %s has no transferFailedReason after a rejected transfer", task.paymentID)
	}

	retry := s.base + "/v1/admin/payments/" + task.paymentID + "/retry-transfer"
	if status, err := call(http.MethodPost, retry, cust.token, nil, nil); status != http.StatusForbidden {
		t.Errorf("customer retries a transfer: status %d (%v), want 403", status, err)
	}
	status, err := call(http.MethodPost, retry, c.admin, map[string]any{"stripeAccountId": "not-an-account"}, nil)
	var ae *apiError
	if status != http.StatusUnprocessableEntity || !errors.As(err, &ae) {
		t.Errorf("retry to an invalid account id: status %d (%v), want 422", status, err)
	}

	var payment struct {
		Status               string `json:"status"`
		TransferFailedReason string `json:"transferFailedReason"`
	}
	if status := c.mustCall(http.MethodPost, retry, c.admin, map[string]any{"stripeAccountId": "acct_movedAgent"}, &payment); status != http.StatusAccepted {
		t.Errorf("retry transfer: status %d, want 202", status)
	}
	if payment.Status != "captured" || payment.TransferFailedReason != "" {
		t.Errorf("retried payment = %+v, want captured with the reason cleared", payment)
	}
	task.transferFails = false
	c.waitSettled([]*paidTask{task})
	totals := c.verifyMoney(s, []*paidTask{task})

	transfers := c.stripeRecords().transfers[task.paymentID]
	if len(transfers) != 1 || transfers[0].Destination != "acct_movedAgent" {
		t.Errorf("transfers of the payment = %+v, want one to acct_movedAgent", transfers)
	}
	if status, err := call(http.MethodPost, retry, c.admin, nil, nil); status != http.StatusConflict {
		t.Errorf("retry of a transferred payment: status %d (%v), want 409", status, err)
	}
	audits := c.count(`SELECT count(*) FROM audit_log WHERE action = 'payment.transfer_retried' AND subject = $1
		AND details->>'destination' = 'acct_movedAgent' AND details->>'previousDestination' = 'acct_invalid'`, task.paymentID)
	if audits != 1 {
		t.Errorf("audit events for the retry = %d, want 1", audits)
	}
	t.Log(fmt.Sprint(totals))
}
