package application

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/taskpod/billing/domain"
	"github.com/taskpod/billing/ports"
)

// Tasks creates tasks for agents and moves them through their lifecycle,
// queueing the money steps each change requires in the same unit of work.
type Tasks struct {
	store   ports.Store
	billing *Billing
	steps   *Steps
	clock   ports.Clock
	ids     ports.IDGenerator
	feeRate domain.BasisPoints
	log     *slog.Logger
}

// TasksConfig carries the fixed settings of the task use cases.
type TasksConfig struct {
	FeeRate domain.BasisPoints
	// Currencies lists the currencies tasks may be charged in.
	Currencies []domain.Currency
}

// NewTasks builds the task use cases.
func NewTasks(store ports.Store, billing *Billing, steps *Steps, clock ports.Clock, ids ports.IDGenerator, cfg TasksConfig, log *slog.Logger) *Tasks {
	return &Tasks{store: store, billing: billing, steps: steps, clock: clock, ids: ids, feeRate: cfg.FeeRate, log: log}
}

// inlineStepGrace delays the relay's copy of an authorize message that
// Create runs itself, so the two do not race for the step and the response
// carries the hold's outcome. It exceeds a normal Stripe round trip; a
// slower inline call only makes the relay retry after the lease.
const inlineStepGrace = 10 * time.Second

// TaskView is a task with its payment, if it has one.
type TaskView struct {
	Task    domain.TaskRecord
	Payment *domain.PaymentRecord
}

// CreateTaskInput is a customer's request for a task.
type CreateTaskInput struct {
	// ID is the task id reserved by the caller (the API's Idempotency-Key
	// layer); empty generates one. Inserting a reserved id twice fails with
	// domain.ErrConflict, so a retried request never creates two tasks.
	ID          string
	Title       string
	Description string
	AgentID     string
	MaxPrice    int64
}

// Create stores a task for an agent. For a paid agent it commits the task,
// its payment and the authorize message together, then runs the message at
// once so the response can carry the hold's outcome; if that attempt fails
// before it ends, the relay finishes it and the payment stays authorizing.
func (s *Tasks) Create(ctx context.Context, customerID string, in CreateTaskInput) (TaskView, error) {
	agent, err := s.activeAgent(ctx, in.AgentID)
	if err != nil {
		return TaskView{}, err
	}
	id := in.ID
	if id == "" {
		id = s.ids.NewID("task")
	}
	task, err := domain.NewTask(domain.NewTaskInput{
		ID: id, CustomerID: customerID, Title: in.Title, Description: in.Description,
		MaxPrice: in.MaxPrice, Agent: agent, Now: s.clock.Now(),
	})
	if err != nil {
		return TaskView{}, err
	}
	if !agent.IsPaid() {
		return s.createFree(ctx, task)
	}

	// A PaymentIntent needs a Stripe customer even when the customer will
	// confirm it in the browser.
	customer, err := s.billing.EnsureStripeCustomer(ctx, customerID)
	if err != nil {
		return TaskView{}, err
	}
	payment, err := domain.NewPayment(s.ids.NewID("pay"), task, agent, customer.StripeCustomerID,
		customer.DefaultPaymentMethodID, s.feeRate, s.clock.Now())
	if err != nil {
		return TaskView{}, err
	}
	task.AttachPayment(payment.ID())

	msg := ports.OutboxMessage{PaymentID: payment.ID(), Step: domain.StepAuthorize, RequestID: ActorFrom(ctx).RequestID,
		Delay: inlineStepGrace}
	err = s.store.InTx(ctx, func(ctx context.Context, tx ports.Tx) error {
		if err := tx.Tasks().Insert(ctx, task); err != nil {
			return err
		}
		if err := tx.Payments().Insert(ctx, payment); err != nil {
			return err
		}
		return tx.Outbox().Enqueue(ctx, msg)
	})
	if err != nil {
		return TaskView{}, fmt.Errorf("store task: %w", err)
	}
	s.log.InfoContext(ctx, "paid task created", "task_id", task.ID(), "payment_id", payment.ID(),
		"agent_id", agent.ID, "amount", payment.Amount().Amount(), "currency", payment.Amount().Currency())

	if err := s.steps.Run(ctx, msg); err != nil {
		// The message stays in the outbox; the relay owns it from here.
		s.log.WarnContext(ctx, "authorization deferred to the relay", "task_id", task.ID(), "payment_id", payment.ID(), "error", err)
	}
	return s.view(ctx, task.ID())
}

func (s *Tasks) createFree(ctx context.Context, task domain.Task) (TaskView, error) {
	err := s.store.InTx(ctx, func(ctx context.Context, tx ports.Tx) error {
		return tx.Tasks().Insert(ctx, task)
	})
	if err != nil {
		return TaskView{}, fmt.Errorf("store task: %w", err)
	}
	return TaskView{Task: task.Record()}, nil
}

func (s *Tasks) activeAgent(ctx context.Context, id string) (domain.Agent, error) {
	if id == "" {
		return domain.Agent{}, domain.Invalid("agentId", "missing_field", "agentId is required")
	}
	var agent domain.Agent
	err := s.store.InTx(ctx, func(ctx context.Context, tx ports.Tx) error {
		var err error
		agent, err = tx.Agents().Get(ctx, id)
		return err
	})
	if errors.Is(err, domain.ErrNotFound) {
		return domain.Agent{}, domain.Invalid("agentId", "agent_not_found", "agent %q does not exist; list agents with GET /v1/agents", id)
	}
	if err != nil {
		return domain.Agent{}, err
	}
	if !agent.Active {
		return domain.Agent{}, domain.Invalid("agentId", "agent_inactive", "agent %q is not active; choose an active agent from GET /v1/agents", id)
	}
	return agent, nil
}

// Get returns a task the actor may see: a customer's own task or a task
// assigned to the calling agent. Others' tasks are not found.
func (s *Tasks) Get(ctx context.Context, actor Actor, id string) (TaskView, error) {
	v, err := s.view(ctx, id)
	if err != nil {
		return TaskView{}, err
	}
	if !canSee(actor, v.Task) {
		return TaskView{}, fmt.Errorf("task %s: %w", id, domain.ErrNotFound)
	}
	return v, nil
}

// List returns one page of the actor's tasks, newest first.
func (s *Tasks) List(ctx context.Context, actor Actor, page ports.Page) ([]TaskView, bool, error) {
	filter := ports.TaskFilter{CustomerID: actor.Subject}
	if actor.Role == RoleAgent {
		filter = ports.TaskFilter{AgentID: actor.Subject}
	}
	var views []TaskView
	var more bool
	err := s.store.InTx(ctx, func(ctx context.Context, tx ports.Tx) error {
		tasks, hasMore, err := tx.Tasks().List(ctx, filter, page)
		if err != nil {
			return err
		}
		more = hasMore
		for _, t := range tasks {
			v, err := viewOf(ctx, tx, t)
			if err != nil {
				return err
			}
			views = append(views, v)
		}
		return nil
	})
	return views, more, err
}

// Complete records the agent's completion and queues the capture of the
// final amount (the whole hold when finalAmount is nil); the rest of the
// hold is released by the partial capture.
func (s *Tasks) Complete(ctx context.Context, actor Actor, id string, finalAmount *int64) (TaskView, error) {
	return s.transition(ctx, actor, id, func(task *domain.Task, payment *domain.Payment) (domain.Step, error) {
		if err := task.Complete(s.clock.Now()); err != nil {
			return "", err
		}
		if payment == nil {
			if finalAmount != nil && *finalAmount != 0 {
				return "", domain.Invalid("finalAmountCents", "task_is_free", "this task is free; omit finalAmountCents")
			}
			return "", nil
		}
		if finalAmount != nil {
			if err := payment.SetCaptureAmount(*finalAmount); err != nil {
				return "", err
			}
		}
		if payment.Status() == domain.PaymentCaptured {
			// Stripe reported the capture before completion (a webhook of a
			// capture made outside TaskPod); only the transfer is left.
			return domain.StepTransfer, nil
		}
		return domain.StepCapture, nil
	})
}

// Fail records that the agent could not do the task and queues the release of the hold.
func (s *Tasks) Fail(ctx context.Context, actor Actor, id string) (TaskView, error) {
	return s.transition(ctx, actor, id, func(task *domain.Task, payment *domain.Payment) (domain.Step, error) {
		if err := task.Fail(s.clock.Now()); err != nil {
			return "", err
		}
		return releaseStep(payment), nil
	})
}

// Cancel records that the customer withdrew the task and queues the release of the hold.
func (s *Tasks) Cancel(ctx context.Context, actor Actor, id string) (TaskView, error) {
	return s.transition(ctx, actor, id, func(task *domain.Task, payment *domain.Payment) (domain.Step, error) {
		if err := task.Cancel(s.clock.Now()); err != nil {
			return "", err
		}
		return releaseStep(payment), nil
	})
}

// releaseStep returns the release step when the payment may hold money at
// Stripe, or none when it never will.
func releaseStep(p *domain.Payment) domain.Step {
	if p == nil {
		return ""
	}
	switch p.Status() {
	case domain.PaymentAuthorizing, domain.PaymentRequiresCustomerAction, domain.PaymentAuthorized, domain.PaymentReauthorizing:
		return domain.StepRelease
	}
	return ""
}

// transition locks the task and its payment, applies change, and queues the
// step it returns, all in one unit of work. The task's state machine makes
// completion and cancellation exclusive, so a capture and a release can
// never both be queued for one payment.
func (s *Tasks) transition(ctx context.Context, actor Actor, id string,
	change func(*domain.Task, *domain.Payment) (domain.Step, error)) (TaskView, error) {
	var step domain.Step
	var paymentID string
	err := s.store.InTx(ctx, func(ctx context.Context, tx ports.Tx) error {
		task, err := tx.Tasks().GetForUpdate(ctx, id)
		if err != nil {
			return err
		}
		if !canSee(actor, task.Record()) {
			return fmt.Errorf("task %s: %w", id, domain.ErrNotFound)
		}

		var payment *domain.Payment
		if task.PaymentID() != "" {
			p, err := tx.Payments().GetForUpdate(ctx, task.PaymentID())
			if err != nil {
				return err
			}
			payment = &p
		}
		step, err = change(&task, payment)
		if err != nil {
			return err
		}

		if err := tx.Tasks().Update(ctx, task); err != nil {
			return err
		}
		if payment == nil || step == "" {
			return nil
		}
		paymentID = payment.ID()
		if err := tx.Payments().Update(ctx, *payment); err != nil {
			return err
		}
		return tx.Outbox().Enqueue(ctx, ports.OutboxMessage{PaymentID: payment.ID(), Step: step, RequestID: actor.RequestID})
	})
	if err != nil {
		return TaskView{}, err
	}
	if step != "" {
		s.log.InfoContext(ctx, "payment step queued", "task_id", id, "payment_id", paymentID, "step", step)
	}
	return s.view(ctx, id)
}

func canSee(actor Actor, t domain.TaskRecord) bool {
	switch actor.Role {
	case RoleCustomer:
		return t.CustomerID == actor.Subject
	case RoleAgent:
		return t.AgentID == actor.Subject
	case RoleAdmin, RoleSystem:
		return true
	}
	return false
}

func (s *Tasks) view(ctx context.Context, id string) (TaskView, error) {
	var v TaskView
	err := s.store.InTx(ctx, func(ctx context.Context, tx ports.Tx) error {
		task, err := tx.Tasks().Get(ctx, id)
		if err != nil {
			return err
		}
		v, err = viewOf(ctx, tx, task)
		return err
	})
	return v, err
}

func viewOf(ctx context.Context, tx ports.Tx, task domain.Task) (TaskView, error) {
	v := TaskView{Task: task.Record()}
	if task.PaymentID() == "" {
		return v, nil
	}
	p, err := tx.Payments().Get(ctx, task.PaymentID())
	if err != nil {
		return TaskView{}, err
	}
	rec := p.Record()
	v.Payment = &rec
	return v, nil
}

// GetPayment returns a payment the actor may see through its task.
func (s *Tasks) GetPayment(ctx context.Context, actor Actor, id string) (domain.PaymentRecord, error) {
	var rec domain.PaymentRecord
	err := s.store.InTx(ctx, func(ctx context.Context, tx ports.Tx) error {
		p, err := tx.Payments().Get(ctx, id)
		if err != nil {
			return err
		}
		task, err := tx.Tasks().Get(ctx, p.TaskID())
		if err != nil {
			return err
		}
		if !canSee(actor, task.Record()) {
			return fmt.Errorf("payment %s: %w", id, domain.ErrNotFound)
		}
		rec = p.Record()
		return nil
	})
	return rec, err
}
