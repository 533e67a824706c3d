package domain

import (
	"strings"
	"time"
)

// TaskStatus is the lifecycle state of a task.
type TaskStatus string

// Task statuses. A paid task waits in pending_payment until its hold is
// authorized; a free task starts matched.
const (
	TaskPendingPayment TaskStatus = "pending_payment"
	TaskMatched        TaskStatus = "matched"
	TaskCompleted      TaskStatus = "completed"
	TaskFailed         TaskStatus = "failed"
	TaskCancelled      TaskStatus = "cancelled"
)

// taskTransitions is the complete table of allowed task state changes.
var taskTransitions = map[TaskStatus][]TaskStatus{
	TaskPendingPayment: {TaskMatched, TaskCancelled, TaskFailed},
	TaskMatched:        {TaskCompleted, TaskFailed, TaskCancelled},
}

// Task is a unit of work a customer asks an agent to do.
type Task struct {
	id          string
	customerID  string
	agentID     string
	agentName   string
	title       string
	description string
	maxPrice    Money
	status      TaskStatus
	paymentID   string
	createdAt   time.Time
	updatedAt   time.Time
}

// NewTaskInput is what a customer sends to create a task.
type NewTaskInput struct {
	ID          string
	CustomerID  string
	Title       string
	Description string
	MaxPrice    int64
	Agent       Agent
	Now         time.Time
}

// NewTask validates a task request against the chosen agent. A paid agent's
// task starts pending_payment; a free agent's task is matched at once.
func NewTask(in NewTaskInput) (Task, error) {
	title := strings.TrimSpace(in.Title)
	if title == "" || len(title) > 500 {
		return Task{}, Invalid("title", "invalid_title", "title must be 1 to 500 characters")
	}
	if len(in.Description) > 10000 {
		return Task{}, Invalid("description", "invalid_description", "description must be at most 10000 characters")
	}
	if !in.Agent.Active {
		return Task{}, Invalid("agentId", "agent_inactive", "agent %s is not active; choose an active agent from GET /v1/agents", in.Agent.ID)
	}
	if in.MaxPrice < 0 {
		return Task{}, Invalid("maxPriceCents", "invalid_amount", "maxPriceCents must be zero or more, got %d", in.MaxPrice)
	}
	price := in.Agent.Price
	if price.Amount() > in.MaxPrice {
		return Task{}, Invalid("maxPriceCents", "price_above_max",
			"agent %s costs %d %s, above maxPriceCents %d; raise maxPriceCents or pick another agent",
			in.Agent.ID, price.Amount(), price.Currency(), in.MaxPrice)
	}
	maxPrice, err := NewMoney(in.MaxPrice, price.Currency())
	if err != nil {
		return Task{}, Invalid("maxPriceCents", "invalid_amount", "%v", err)
	}

	status := TaskMatched
	if in.Agent.IsPaid() {
		status = TaskPendingPayment
	}
	return Task{
		id: in.ID, customerID: in.CustomerID, agentID: in.Agent.ID, agentName: in.Agent.Name,
		title: title, description: in.Description, maxPrice: maxPrice,
		status: status, createdAt: in.Now, updatedAt: in.Now,
	}, nil
}

// TaskRecord carries a stored task's fields; it exists only for loading.
type TaskRecord struct {
	ID, CustomerID, AgentID, AgentName, Title, Description string
	MaxPrice                                               Money
	Status                                                 TaskStatus
	PaymentID                                              string
	CreatedAt, UpdatedAt                                   time.Time
}

// UnmarshalTaskFromDatabase rebuilds a task from storage without validation,
// because stored rows were valid when written.
func UnmarshalTaskFromDatabase(r TaskRecord) Task {
	return Task{
		id: r.ID, customerID: r.CustomerID, agentID: r.AgentID, agentName: r.AgentName,
		title: r.Title, description: r.Description, maxPrice: r.MaxPrice, status: r.Status,
		paymentID: r.PaymentID, createdAt: r.CreatedAt, updatedAt: r.UpdatedAt,
	}
}

// Record returns the task's fields for storage and presentation.
func (t Task) Record() TaskRecord {
	return TaskRecord{
		ID: t.id, CustomerID: t.customerID, AgentID: t.agentID, AgentName: t.agentName,
		Title: t.title, Description: t.description, MaxPrice: t.maxPrice, Status: t.status,
		PaymentID: t.paymentID, CreatedAt: t.createdAt, UpdatedAt: t.updatedAt,
	}
}

func (t Task) ID() string         { return t.id }
func (t Task) CustomerID() string { return t.customerID }
func (t Task) AgentID() string    { return t.agentID }
func (t Task) Status() TaskStatus { return t.status }
func (t Task) PaymentID() string  { return t.paymentID }

// AttachPayment links the task to its payment when the task is created.
func (t *Task) AttachPayment(paymentID string) { t.paymentID = paymentID }

// MarkMatched records that the hold is authorized and the agent may start.
func (t *Task) MarkMatched(now time.Time) error { return t.moveTo(TaskMatched, now) }

// Complete records that the agent finished the task.
func (t *Task) Complete(now time.Time) error { return t.moveTo(TaskCompleted, now) }

// Fail records that the agent could not do the task, or that payment failed for good.
func (t *Task) Fail(now time.Time) error { return t.moveTo(TaskFailed, now) }

// Cancel records that the customer withdrew the task.
func (t *Task) Cancel(now time.Time) error { return t.moveTo(TaskCancelled, now) }

func (t *Task) moveTo(to TaskStatus, now time.Time) error {
	if !CanTaskMove(t.status, to) {
		return &TransitionError{Entity: "task " + t.id, From: string(t.status), To: string(to)}
	}
	t.status = to
	t.updatedAt = now
	return nil
}

// CanTaskMove reports whether the task state machine allows from → to.
func CanTaskMove(from, to TaskStatus) bool {
	for _, s := range taskTransitions[from] {
		if s == to {
			return true
		}
	}
	return false
}

// TaskStatuses lists every task status, for tests and documentation.
func TaskStatuses() []TaskStatus {
	return []TaskStatus{TaskPendingPayment, TaskMatched, TaskCompleted, TaskFailed, TaskCancelled}
}
