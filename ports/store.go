package ports

import (
	"context"
	"time"

	"github.com/taskpod/billing/domain"
)

// Store runs units of work against the system of record. The adapter owns
// the database transaction: InTx commits when fn returns nil and rolls back
// otherwise, so a state change, its ledger postings and its outbox messages
// commit together or not at all. Implementations retry fn on serialization
// failures and deadlocks, so fn must have no effects outside tx.
type Store interface {
	InTx(ctx context.Context, fn func(ctx context.Context, tx Tx) error) error
}

// Tx is one open unit of work. Methods named ...ForUpdate lock the row until
// the unit of work ends.
type Tx interface {
	Customers() CustomerRepository
	Agents() AgentRepository
	Tasks() TaskRepository
	Payments() PaymentRepository
	Ledger() LedgerRepository
	Outbox() Outbox
	Operations() OperationRepository
	Audit() AuditLog
}

// CustomerRepository stores customers and their cached payment methods.
type CustomerRepository interface {
	Get(ctx context.Context, userID string) (domain.Customer, error)
	GetForUpdate(ctx context.Context, userID string) (domain.Customer, error)
	// Ensure inserts the customer if missing and returns the stored row.
	Ensure(ctx context.Context, c domain.Customer) (domain.Customer, error)
	Update(ctx context.Context, c domain.Customer) error
	UpsertPaymentMethod(ctx context.Context, pm domain.PaymentMethod) error
	DeletePaymentMethod(ctx context.Context, customerUserID, paymentMethodID string) error
	ListPaymentMethods(ctx context.Context, customerUserID string) ([]domain.PaymentMethod, error)
	GetPaymentMethod(ctx context.Context, customerUserID, paymentMethodID string) (domain.PaymentMethod, error)
}

// AgentRepository stores agents.
type AgentRepository interface {
	Get(ctx context.Context, id string) (domain.Agent, error)
	GetForUpdate(ctx context.Context, id string) (domain.Agent, error)
	Insert(ctx context.Context, a domain.Agent) error
	Update(ctx context.Context, a domain.Agent) error
	List(ctx context.Context, f AgentFilter, page Page) ([]domain.Agent, bool, error)
}

// AgentFilter narrows an agent listing.
type AgentFilter struct {
	ActiveOnly bool
}

// Page asks for one page of a list ordered by creation, newest first.
// StartingAfter and EndingBefore are ids of items on a previous page; at
// most one is set.
type Page struct {
	Limit         int
	StartingAfter string
	EndingBefore  string
}

// TaskRepository stores tasks.
type TaskRepository interface {
	Get(ctx context.Context, id string) (domain.Task, error)
	GetForUpdate(ctx context.Context, id string) (domain.Task, error)
	Insert(ctx context.Context, t domain.Task) error
	Update(ctx context.Context, t domain.Task) error
	List(ctx context.Context, f TaskFilter, page Page) ([]domain.Task, bool, error)
}

// TaskFilter narrows a task listing to one customer or one agent.
type TaskFilter struct {
	CustomerID string
	AgentID    string
}

// PaymentRepository stores payments and the attempt counters of their steps.
type PaymentRepository interface {
	Get(ctx context.Context, id string) (domain.Payment, error)
	GetForUpdate(ctx context.Context, id string) (domain.Payment, error)
	GetByPaymentIntent(ctx context.Context, paymentIntentID string) (domain.Payment, error)
	Insert(ctx context.Context, p domain.Payment) error
	Update(ctx context.Context, p domain.Payment) error
	// Step returns the stored state of one money step, zero-valued with
	// attempt 1 when the step has not been claimed yet.
	Step(ctx context.Context, paymentID string, step domain.Step) (StepState, error)
	SaveStep(ctx context.Context, s StepState) error
}

// StepState is the stored progress of one money step of a payment.
type StepState struct {
	PaymentID string
	Step      domain.Step
	// Attempt numbers the Stripe idempotency key; it only grows after
	// Stripe showed the previous attempt had no effect.
	Attempt int
	// Claimed is true once an executor has sent, or may have sent, the
	// request of this attempt to Stripe.
	Claimed bool
	// LeaseUntil keeps other executors off the step while one is calling Stripe.
	LeaseUntil time.Time
	Done       bool
	LastError  string
}

// LedgerRepository appends ledger transactions and reads them back.
type LedgerRepository interface {
	Append(ctx context.Context, t domain.LedgerTransaction) error
	// PendingHold returns the unresolved hold of a payment.
	PendingHold(ctx context.Context, paymentID string) (domain.LedgerTransaction, bool, error)
	LedgerHistory
}

// Outbox queues money steps in the caller's unit of work; a relay runs them
// after commit.
type Outbox interface {
	Enqueue(ctx context.Context, m OutboxMessage) error
}

// OutboxMessage asks the relay to run one step of one payment.
type OutboxMessage struct {
	PaymentID string
	Step      domain.Step
	// RequestID ties the relayed work to the API request that caused it.
	RequestID string
	// Delay keeps the relay off the message for a while, for a step its
	// writer runs itself right after commit; the relay is the fallback.
	Delay time.Duration
}

// OperationRepository stores ids of direct Stripe calls (card management), so
// a retried request reuses its idempotency key and a new request gets a new one.
type OperationRepository interface {
	// Begin returns the id of the open operation of kind for subject, creating
	// one if none is open.
	Begin(ctx context.Context, subject, kind string) (string, error)
	// Finish closes an operation so the next Begin starts a new one.
	Finish(ctx context.Context, id string) error
}

// AuditLog records admin actions outside the ledger, append-only.
type AuditLog interface {
	Record(ctx context.Context, e AuditEvent) error
}

// AuditEvent is one admin action.
type AuditEvent struct {
	Actor     string
	Action    string
	Subject   string
	RequestID string
	Details   map[string]any
	At        time.Time
}

// Clock returns the current time; tests replace it.
type Clock interface {
	Now() time.Time
}

// IDGenerator creates prefixed, random identifiers.
type IDGenerator interface {
	NewID(prefix string) string
}
