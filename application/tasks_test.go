package application_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/taskpod/billing/application"
	"github.com/taskpod/billing/domain"
	"github.com/taskpod/billing/ports"
)

func TestFreeAgentTaskIsMatched(t *testing.T) {
	e := newEnv(t)
	v := e.createTask(cardOwner, freeAgentID, 0)
	if v.Task.Status != domain.TaskMatched || v.Payment != nil {
		t.Errorf("free task: status %s payment %+v, want matched with no payment", v.Task.Status, v.Payment)
	}
	e.gateway.mu.Lock()
	n := len(e.gateway.calls)
	e.gateway.mu.Unlock()
	if n != 0 {
		t.Errorf("a free task made %d gateway calls", n)
	}
	if q := e.store.outboxMessages(); len(q) != 0 {
		t.Errorf("a free task queued %+v", q)
	}

	done, err := e.tasks.Complete(context.Background(), agent(freeAgentID), v.Task.ID, nil)
	if err != nil || done.Task.Status != domain.TaskCompleted {
		t.Errorf("Complete free task: %v, status %s", err, done.Task.Status)
	}
}

func TestCreateTaskValidation(t *testing.T) {
	e := newEnv(t)
	inactive, _ := domain.NewAgent("agent_off", "Off", domain.MustMoney(100, "usd"), "acct_1Off", e.clock.Now())
	inactive.Active = false
	e.store.seed(func(st *memState) { st.agents["agent_off"] = inactive })

	cases := []struct {
		name      string
		in        application.CreateTaskInput
		field     string
		errorCode string
	}{
		{"price above max", application.CreateTaskInput{Title: "t", AgentID: paidAgentID, MaxPrice: 99}, "maxPriceCents", "price_above_max"},
		{"unknown agent", application.CreateTaskInput{Title: "t", AgentID: "agent_nobody", MaxPrice: 100}, "agentId", "agent_not_found"},
		{"inactive agent", application.CreateTaskInput{Title: "t", AgentID: "agent_off", MaxPrice: 100}, "agentId", "agent_inactive"},
		{"missing agent", application.CreateTaskInput{Title: "t", MaxPrice: 100}, "agentId", "missing_field"},
		{"blank title", application.CreateTaskInput{Title: " ", AgentID: paidAgentID, MaxPrice: 100}, "title", "invalid_title"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := e.tasks.Create(context.Background(), cardOwner, c.in)
			var ve *domain.ValidationError
			if !errors.As(err, &ve) || ve.Field != c.field || ve.Code != c.errorCode {
				t.Errorf("err = %v, want %s on %s", err, c.errorCode, c.field)
			}
		})
	}
	e.store.read(func(st *memState) {
		if len(st.tasks) != 0 || len(st.payments) != 0 {
			t.Errorf("rejected requests stored %d tasks and %d payments", len(st.tasks), len(st.payments))
		}
	})
	if n := e.gateway.count("Authorize"); n != 0 {
		t.Errorf("rejected requests called Authorize %d times", n)
	}
}

func TestCompleteCancelledTaskIsInvalid(t *testing.T) {
	e := newEnv(t)
	v := e.createTask(cardOwner, paidAgentID, 100)
	e.store.takeOutbox()
	if _, err := e.tasks.Cancel(context.Background(), customer(cardOwner), v.Task.ID); err != nil {
		t.Fatal(err)
	}
	e.store.takeOutbox()

	_, err := e.tasks.Complete(context.Background(), agent(paidAgentID), v.Task.ID, nil)
	if !errors.Is(err, domain.ErrInvalidTransition) {
		t.Fatalf("Complete after Cancel: %v, want ErrInvalidTransition", err)
	}
	var te *domain.TransitionError
	if !errors.As(err, &te) || te.From != "cancelled" || te.To != "completed" {
		t.Errorf("err = %#v, want cancelled → completed named", err)
	}
	if q := e.store.outboxMessages(); len(q) != 0 {
		t.Errorf("a rejected completion queued %+v", q)
	}
	if got := e.store.task(v.Task.ID).Status; got != domain.TaskCancelled {
		t.Errorf("task = %s, want cancelled", got)
	}

	for name, call := range map[string]func() error{
		"fail": func() error { _, err := e.tasks.Fail(context.Background(), agent(paidAgentID), v.Task.ID); return err },
		"cancel": func() error {
			_, err := e.tasks.Cancel(context.Background(), customer(cardOwner), v.Task.ID)
			return err
		},
	} {
		if err := call(); !errors.Is(err, domain.ErrInvalidTransition) {
			t.Errorf("%s a cancelled task: %v, want ErrInvalidTransition", name, err)
		}
	}
}

func TestCompletePendingPaymentIsInvalid(t *testing.T) {
	e := newEnv(t)
	e.addCustomer("user_new", "")
	v := e.createTask("user_new", paidAgentID, 100)
	if _, err := e.tasks.Complete(context.Background(), agent(paidAgentID), v.Task.ID, nil); !errors.Is(err, domain.ErrInvalidTransition) {
		t.Errorf("Complete a pending_payment task: %v, want ErrInvalidTransition", err)
	}
}

func TestOtherCustomersTaskIsNotFound(t *testing.T) {
	e := newEnv(t)
	e.addCustomer("user_other", cardVisa)
	v := e.createTask(cardOwner, paidAgentID, 100)
	ctx := context.Background()

	if _, err := e.tasks.Get(ctx, customer("user_other"), v.Task.ID); !errors.Is(err, domain.ErrNotFound) {
		t.Errorf("Get another customer's task: %v, want ErrNotFound", err)
	}
	if _, err := e.tasks.Cancel(ctx, customer("user_other"), v.Task.ID); !errors.Is(err, domain.ErrNotFound) {
		t.Errorf("Cancel another customer's task: %v, want ErrNotFound", err)
	}
	if _, err := e.tasks.GetPayment(ctx, customer("user_other"), v.Payment.ID); !errors.Is(err, domain.ErrNotFound) {
		t.Errorf("GetPayment of another customer: %v, want ErrNotFound", err)
	}
	if _, err := e.tasks.Complete(ctx, agent(otherAgentID), v.Task.ID, nil); !errors.Is(err, domain.ErrNotFound) {
		t.Errorf("Complete by an agent not assigned: %v, want ErrNotFound", err)
	}
	if _, err := e.tasks.Get(ctx, customer(cardOwner), "task_missing"); !errors.Is(err, domain.ErrNotFound) {
		t.Errorf("Get a missing task: %v, want ErrNotFound", err)
	}
	if got := e.store.task(v.Task.ID).Status; got != domain.TaskMatched {
		t.Errorf("task = %s after rejected calls, want matched", got)
	}

	own, err := e.tasks.GetPayment(ctx, customer(cardOwner), v.Payment.ID)
	if err != nil || own.ID != v.Payment.ID {
		t.Errorf("GetPayment by its customer: %v", err)
	}
	if _, err := e.tasks.GetPayment(ctx, agent(paidAgentID), v.Payment.ID); err != nil {
		t.Errorf("GetPayment by the assigned agent: %v", err)
	}
}

func TestListTasksByRole(t *testing.T) {
	e := newEnv(t)
	e.addCustomer("user_other", cardVisa)
	mine := e.createTask(cardOwner, paidAgentID, 100)
	e.createTask("user_other", otherAgentID, 300)

	views, _, err := e.tasks.List(context.Background(), customer(cardOwner), ports.Page{Limit: 10})
	if err != nil || len(views) != 1 || views[0].Task.ID != mine.Task.ID || views[0].Payment == nil {
		t.Errorf("customer list = %+v, %v; want only the own task with its payment", views, err)
	}
	views, _, err = e.tasks.List(context.Background(), agent(otherAgentID), ports.Page{Limit: 10})
	if err != nil || len(views) != 1 || views[0].Task.AgentID != otherAgentID {
		t.Errorf("agent list = %+v, %v; want only the agent's task", views, err)
	}
}

func TestCompleteRejectsFinalAmount(t *testing.T) {
	cases := []struct {
		final     int64
		errorCode string
	}{{101, "amount_above_hold"}, {49, "amount_too_small"}, {0, "amount_too_small"}}
	for _, c := range cases {
		t.Run(fmt.Sprint(c.final), func(t *testing.T) {
			e := newEnv(t)
			v := e.createTask(cardOwner, paidAgentID, 100)
			e.store.takeOutbox()

			_, err := e.tasks.Complete(context.Background(), agent(paidAgentID), v.Task.ID, &c.final)
			var ve *domain.ValidationError
			if !errors.As(err, &ve) || ve.Code != c.errorCode || ve.Field != "finalAmountCents" {
				t.Fatalf("err = %v, want %s on finalAmountCents", err, c.errorCode)
			}
			// The task change happened before the amount check inside the
			// unit of work; the failed unit must leave none of it.
			if got := e.store.task(v.Task.ID).Status; got != domain.TaskMatched {
				t.Errorf("task = %s, want matched", got)
			}
			if got := e.store.payment(v.Payment.ID).CaptureAmount.Amount(); got != 100 {
				t.Errorf("capture amount = %d, want 100", got)
			}
			if q := e.store.outboxMessages(); len(q) != 0 {
				t.Errorf("outbox = %+v, want empty", q)
			}
		})
	}
}

func TestCompleteFreeTaskRejectsAmount(t *testing.T) {
	e := newEnv(t)
	v := e.createTask(cardOwner, freeAgentID, 0)
	amount := int64(50)
	_, err := e.tasks.Complete(context.Background(), agent(freeAgentID), v.Task.ID, &amount)
	var ve *domain.ValidationError
	if !errors.As(err, &ve) || ve.Code != "task_is_free" {
		t.Errorf("err = %v, want task_is_free", err)
	}
}

// Many requests race to close the same task. Exactly one may win, and
// exactly one money step may be queued for its payment.
func TestConcurrentCloseHasOneWinner(t *testing.T) {
	e := newEnv(t)
	v := e.createTask(cardOwner, paidAgentID, 100)
	e.store.takeOutbox()

	const workers = 24
	var wg sync.WaitGroup
	errs := make([]error, workers)
	start := make(chan struct{})
	for i := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			ctx := context.Background()
			switch i % 3 {
			case 0:
				_, errs[i] = e.tasks.Complete(ctx, agent(paidAgentID), v.Task.ID, nil)
			case 1:
				_, errs[i] = e.tasks.Cancel(ctx, customer(cardOwner), v.Task.ID)
			default:
				_, errs[i] = e.tasks.Fail(ctx, agent(paidAgentID), v.Task.ID)
			}
		}()
	}
	close(start)
	wg.Wait()

	winners := 0
	for i, err := range errs {
		switch {
		case err == nil:
			winners++
		case !errors.Is(err, domain.ErrInvalidTransition):
			t.Errorf("worker %d: %v, want success or ErrInvalidTransition", i, err)
		}
	}
	if winners != 1 {
		t.Fatalf("%d winners, want exactly 1", winners)
	}
	queued := e.store.outboxMessages()
	if len(queued) != 1 {
		t.Fatalf("outbox = %+v, want exactly one step", queued)
	}

	status := e.store.task(v.Task.ID).Status
	want := map[domain.TaskStatus]domain.Step{
		domain.TaskCompleted: domain.StepCapture, domain.TaskCancelled: domain.StepRelease, domain.TaskFailed: domain.StepRelease,
	}[status]
	if queued[0].Step != want {
		t.Errorf("task %s queued %s, want %s", status, queued[0].Step, want)
	}

	e.relayOK()
	p := e.store.payment(v.Payment.ID)
	if captured, released := e.gateway.count("Capture"), e.gateway.count("CancelPaymentIntent"); captured+released != 1 {
		t.Errorf("Capture %d and cancel %d calls, want one in all", captured, released)
	}
	if p.Status != domain.PaymentTransferred && p.Status != domain.PaymentReleased {
		t.Errorf("payment = %s, want transferred or released", p.Status)
	}
}

// Concurrent relays of the same message place one hold: one wins the
// lease, the others find it busy or done.
func TestConcurrentRunsCallOnce(t *testing.T) {
	e := newEnv(t)
	v := e.completedTask(nil)
	capture := e.store.takeOutbox()[0]

	const workers = 16
	var wg sync.WaitGroup
	errs := make([]error, workers)
	for i := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = e.steps.Run(context.Background(), capture)
		}()
	}
	wg.Wait()

	for i, err := range errs {
		if err != nil && !errors.Is(err, application.ErrStepBusy) {
			t.Errorf("worker %d: %v, want success or ErrStepBusy", i, err)
		}
	}
	if n := e.gateway.count("Capture"); n != 1 {
		t.Errorf("Capture called %d times, want 1", n)
	}
	if got := e.store.payment(v.Payment.ID).Status; got != domain.PaymentCaptured {
		t.Errorf("payment = %s, want captured", got)
	}
}
