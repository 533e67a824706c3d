package ports

import (
	"context"
	"time"

	"github.com/taskpod/billing/domain"
)

// AdminStore runs the units of work of admin operations. They see every
// repository of Tx plus the outbox quarantine, and commit and retry exactly
// as Store.InTx does.
type AdminStore interface {
	InAdminTx(ctx context.Context, fn func(ctx context.Context, tx AdminTx) error) error
}

// AdminTx is one open admin unit of work.
type AdminTx interface {
	Tx
	Quarantine() QuarantineRepository
}

// QuarantineRepository reads and resolves outbox messages that failed every
// relay attempt.
type QuarantineRepository interface {
	// List returns one page of quarantined messages, newest first. Page
	// cursors are ids of QuarantinedMessage.
	List(ctx context.Context, f QuarantineFilter, page Page) ([]QuarantinedMessage, bool, error)
	// GetForUpdate returns one quarantined message and locks it until the
	// unit of work ends; an unknown id wraps domain.ErrNotFound.
	GetForUpdate(ctx context.Context, id string) (QuarantinedMessage, error)
	// MarkRequeued records that an operator put the message back in the outbox.
	MarkRequeued(ctx context.Context, id, by string, at time.Time) error
}

// QuarantineStatus narrows a quarantine listing.
type QuarantineStatus string

// Quarantine statuses.
const (
	// QuarantineOpen lists messages still waiting for an operator.
	QuarantineOpen QuarantineStatus = "open"
	// QuarantineRequeued lists messages already put back in the outbox.
	QuarantineRequeued QuarantineStatus = "requeued"
	// QuarantineAll lists both.
	QuarantineAll QuarantineStatus = "all"
)

// QuarantineFilter narrows a quarantine listing; a zero field matches all.
type QuarantineFilter struct {
	Status    QuarantineStatus
	PaymentID string
}

// QuarantinedMessage is an outbox message the relay gave up on.
type QuarantinedMessage struct {
	// ID is the quarantine entry's id, such as oq_42.
	ID string
	// MessageUUID is the Watermill id of the message that failed last.
	MessageUUID string
	// PaymentID and Step are empty when the message could not be decoded.
	PaymentID string
	Step      domain.Step
	RequestID string
	// Attempts is how many times the relay ran the message.
	Attempts      int
	LastError     string
	QuarantinedAt time.Time
	// RequeuedAt is zero while the message waits for an operator.
	RequeuedAt time.Time
	RequeuedBy string
}
