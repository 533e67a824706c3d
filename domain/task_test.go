package domain_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/taskpod/billing/domain"
)

// documentedTaskStatuses and documentedTaskMoves restate the task state
// table of docs/payments.md. They are written here, not read from the
// domain package, so a change to either side fails this test.
var documentedTaskStatuses = []domain.TaskStatus{
	"pending_payment", "matched", "completed", "failed", "cancelled",
}

var documentedTaskMoves = map[[2]domain.TaskStatus]bool{
	{"pending_payment", "matched"}:   true,
	{"pending_payment", "cancelled"}: true,
	{"pending_payment", "failed"}:    true,
	{"matched", "completed"}:         true,
	{"matched", "failed"}:            true,
	{"matched", "cancelled"}:         true,
}

var taskT0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

func paidAgent(t *testing.T) domain.Agent {
	t.Helper()
	a, err := domain.NewAgent("kbYsAVcJPYeQ", "Habit AI", domain.MustMoney(100, "usd"), "acct_1HabitAI", taskT0)
	if err != nil {
		t.Fatalf("NewAgent: %v", err)
	}
	return a
}

func storedTask(status domain.TaskStatus) domain.Task {
	return domain.UnmarshalTaskFromDatabase(domain.TaskRecord{
		ID: "task_1", CustomerID: "user_42", AgentID: "kbYsAVcJPYeQ", AgentName: "Habit AI",
		Title: "Analyze this meal", MaxPrice: domain.MustMoney(100, "usd"), Status: status,
		PaymentID: "pay_1", CreatedAt: taskT0, UpdatedAt: taskT0,
	})
}

func TestTaskStatusesMatchDocs(t *testing.T) {
	got := domain.TaskStatuses()
	if len(got) != len(documentedTaskStatuses) {
		t.Fatalf("TaskStatuses() = %v, docs list %v", got, documentedTaskStatuses)
	}
	for i := range got {
		if got[i] != documentedTaskStatuses[i] {
			t.Errorf("TaskStatuses()[%d] = %q, docs list %q", i, got[i], documentedTaskStatuses[i])
		}
	}
}

func TestCanTaskMoveCrossProduct(t *testing.T) {
	for _, from := range documentedTaskStatuses {
		for _, to := range documentedTaskStatuses {
			want := documentedTaskMoves[[2]domain.TaskStatus{from, to}]
			if got := domain.CanTaskMove(from, to); got != want {
				t.Errorf("CanTaskMove(%s, %s) = %v, docs say %v", from, to, got, want)
			}
		}
	}
}

// taskMethods maps each target status to the method that moves a task there.
// pending_payment has no method because a task only starts there.
var taskMethods = map[domain.TaskStatus]func(*domain.Task, time.Time) error{
	"matched":   (*domain.Task).MarkMatched,
	"completed": (*domain.Task).Complete,
	"failed":    (*domain.Task).Fail,
	"cancelled": (*domain.Task).Cancel,
}

func TestTaskMethodsCrossProduct(t *testing.T) {
	later := taskT0.Add(time.Hour)
	for _, from := range documentedTaskStatuses {
		for to, method := range taskMethods {
			task := storedTask(from)
			err := method(&task, later)
			allowed := documentedTaskMoves[[2]domain.TaskStatus{from, to}]

			if allowed {
				if err != nil {
					t.Errorf("%s → %s: %v, want success", from, to, err)
					continue
				}
				if task.Status() != to || task.Record().UpdatedAt != later {
					t.Errorf("%s → %s: status %s updated %v, want %s at %v", from, to, task.Status(), task.Record().UpdatedAt, to, later)
				}
				continue
			}

			if !errors.Is(err, domain.ErrInvalidTransition) {
				t.Errorf("%s → %s: err = %v, want ErrInvalidTransition", from, to, err)
				continue
			}
			var te *domain.TransitionError
			if !errors.As(err, &te) || te.From != string(from) || te.To != string(to) {
				t.Errorf("%s → %s: err = %#v, want a TransitionError naming both states", from, to, err)
			}
			if task.Status() != from || task.Record().UpdatedAt != taskT0 {
				t.Errorf("%s → %s rejected but the task changed to %s at %v", from, to, task.Status(), task.Record().UpdatedAt)
			}
		}
	}
}

func TestTaskFinalStatesStayFinal(t *testing.T) {
	for _, final := range []domain.TaskStatus{"completed", "failed", "cancelled"} {
		for _, to := range documentedTaskStatuses {
			if domain.CanTaskMove(final, to) {
				t.Errorf("final status %s may move to %s", final, to)
			}
		}
	}
}

func TestNewTaskStartsByAgentPrice(t *testing.T) {
	paid := paidAgent(t)
	task, err := domain.NewTask(domain.NewTaskInput{
		ID: "task_1", CustomerID: "user_42", Title: "  Analyze this meal  ", MaxPrice: 100, Agent: paid, Now: taskT0,
	})
	if err != nil {
		t.Fatal(err)
	}
	if task.Status() != domain.TaskPendingPayment {
		t.Errorf("paid task status = %s, want pending_payment", task.Status())
	}
	r := task.Record()
	if r.Title != "Analyze this meal" || r.AgentName != "Habit AI" || r.MaxPrice != domain.MustMoney(100, "usd") {
		t.Errorf("record = %+v, want trimmed title, agent name and max price 100 usd", r)
	}

	free, err := domain.NewAgent("free1", "Free AI", domain.MustMoney(0, "usd"), "", taskT0)
	if err != nil {
		t.Fatal(err)
	}
	task, err = domain.NewTask(domain.NewTaskInput{ID: "task_2", CustomerID: "user_42", Title: "t", MaxPrice: 0, Agent: free, Now: taskT0})
	if err != nil {
		t.Fatal(err)
	}
	if task.Status() != domain.TaskMatched {
		t.Errorf("free task status = %s, want matched", task.Status())
	}
}

func TestNewTaskValidation(t *testing.T) {
	paid := paidAgent(t)
	inactive := paid
	inactive.Active = false
	cases := []struct {
		name      string
		in        domain.NewTaskInput
		field     string
		errorCode string
	}{
		{"empty title", domain.NewTaskInput{Title: "   ", MaxPrice: 100, Agent: paid}, "title", "invalid_title"},
		{"long title", domain.NewTaskInput{Title: strings.Repeat("a", 501), MaxPrice: 100, Agent: paid}, "title", "invalid_title"},
		{"long description", domain.NewTaskInput{Title: "t", Description: strings.Repeat("d", 10001), MaxPrice: 100, Agent: paid}, "description", "invalid_description"},
		{"inactive agent", domain.NewTaskInput{Title: "t", MaxPrice: 100, Agent: inactive}, "agentId", "agent_inactive"},
		{"negative max price", domain.NewTaskInput{Title: "t", MaxPrice: -1, Agent: paid}, "maxPriceCents", "invalid_amount"},
		{"price above max", domain.NewTaskInput{Title: "t", MaxPrice: 99, Agent: paid}, "maxPriceCents", "price_above_max"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := domain.NewTask(c.in)
			var ve *domain.ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("err = %v, want a ValidationError", err)
			}
			if ve.Field != c.field || ve.Code != c.errorCode {
				t.Errorf("field %q code %q, want %q %q", ve.Field, ve.Code, c.field, c.errorCode)
			}
		})
	}
}

func TestNewTaskAcceptsLimits(t *testing.T) {
	_, err := domain.NewTask(domain.NewTaskInput{
		Title: strings.Repeat("a", 500), Description: strings.Repeat("d", 10000), MaxPrice: 100, Agent: paidAgent(t),
	})
	if err != nil {
		t.Errorf("500-character title and 10000-character description: %v", err)
	}
}

func TestNewAgentValidation(t *testing.T) {
	cases := []struct {
		name      string
		price     domain.Money
		account   string
		errorCode string
	}{
		{"paid without account", domain.MustMoney(100, "usd"), "", "missing_account"},
		{"malformed account", domain.MustMoney(100, "usd"), "acct-1", "invalid_account"},
		{"below minimum charge", domain.MustMoney(49, "usd"), "acct_1", "amount_too_small"},
		{"below jpy minimum", domain.MustMoney(49, "jpy"), "acct_1", "amount_too_small"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := domain.NewAgent("a1", "Agent", c.price, c.account, taskT0)
			var ve *domain.ValidationError
			if !errors.As(err, &ve) || ve.Code != c.errorCode {
				t.Errorf("err = %v, want code %s", err, c.errorCode)
			}
		})
	}
	if _, err := domain.NewAgent("a1", " ", domain.MustMoney(0, "usd"), "", taskT0); err == nil {
		t.Error("blank name accepted")
	}
}

func TestAgentRepriceKeepsOldPriceOnError(t *testing.T) {
	a := paidAgent(t)
	if err := a.Reprice(domain.MustMoney(10, "usd")); err == nil {
		t.Fatal("a price below the minimum charge was accepted")
	}
	if a.Price != domain.MustMoney(100, "usd") {
		t.Errorf("price after a rejected change = %v, want 1.00 USD", a.Price)
	}
	if err := a.ChangeConnectAccount("not-an-account"); err == nil {
		t.Fatal("a malformed account id was accepted")
	}
	if a.ConnectAccountID != "acct_1HabitAI" {
		t.Errorf("account after a rejected change = %q", a.ConnectAccountID)
	}
}
