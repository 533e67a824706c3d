// Package outbox is the transactional outbox of money steps on watermill-sql:
// messages are written in the caller's PostgreSQL transaction and relayed
// after commit by a Watermill router.
package outbox

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wsql "github.com/ThreeDotsLabs/watermill-sql/v4/pkg/sql"
	"github.com/ThreeDotsLabs/watermill/components/delay"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"

	"github.com/taskpod/billing/domain"
	"github.com/taskpod/billing/ports"
)

// Topic is the Watermill topic of money steps; its table is
// watermill_payment_steps, created by the migrations.
const Topic = "payment_steps"

// Metadata keys set on outbox messages.
const (
	metaAttempt   = "relay_attempt"
	metaPaymentID = "payment_id"
	metaStep      = "step"
)

// payload is the JSON body of a step message.
type payload struct {
	PaymentID string `json:"paymentId"`
	Step      string `json:"step"`
	RequestID string `json:"requestId,omitempty"`
}

// NewTxOutbox returns an outbox writing into tx, so the message commits or
// rolls back with the state change that caused it.
func NewTxOutbox(tx pgx.Tx) ports.Outbox {
	return txOutbox{tx: tx}
}

type txOutbox struct {
	tx pgx.Tx
}

// Enqueue writes a message for immediate relay.
func (o txOutbox) Enqueue(ctx context.Context, m ports.OutboxMessage) error {
	msg, err := newMessage(m, 1)
	if err != nil {
		return err
	}
	return publishInTx(ctx, wsql.TxFromPgx(o.tx), msg, m.Delay)
}

func newMessage(m ports.OutboxMessage, attempt int) (*message.Message, error) {
	body, err := json.Marshal(payload{PaymentID: m.PaymentID, Step: string(m.Step), RequestID: m.RequestID})
	if err != nil {
		return nil, fmt.Errorf("encode outbox message: %w", err)
	}
	msg := message.NewMessage(watermill.NewUUID(), body)
	msg.Metadata.Set(metaAttempt, strconv.Itoa(attempt))
	msg.Metadata.Set(metaPaymentID, m.PaymentID)
	msg.Metadata.Set(metaStep, string(m.Step))
	return msg, nil
}

// publishInTx inserts msg through watermill-sql's delayed PostgreSQL
// publisher bound to an open transaction. A zero wait makes it due at once.
func publishInTx(ctx context.Context, db wsql.ContextExecutor, msg *message.Message, wait time.Duration) error {
	pub, err := wsql.NewDelayedPostgreSQLPublisher(db, wsql.DelayedPostgreSQLPublisherConfig{
		DelayPublisherConfig: delay.PublisherConfig{AllowNoDelay: true},
		OverridePublisherConfig: func(c *wsql.PublisherConfig) error {
			// The table comes from the migrations; watermill refuses to
			// create tables inside a transaction anyway.
			c.AutoInitializeSchema = false
			return nil
		},
	})
	if err != nil {
		return fmt.Errorf("create outbox publisher: %w", err)
	}
	if wait > 0 {
		delay.Message(msg, delay.For(wait))
		// watermill stores the due time in whole seconds (RFC 3339), which
		// cuts up to a second off every wait and drops sub-second ones.
		msg.Metadata.Set(delay.DelayedUntilKey, time.Now().UTC().Add(wait).Format(time.RFC3339Nano))
	}
	msg.SetContext(ctx)
	if err := pub.Publish(Topic, msg); err != nil {
		return fmt.Errorf("write outbox message: %w", err)
	}
	return nil
}

// decode reads a relayed message back into a step request.
func decode(msg *message.Message) (ports.OutboxMessage, int, error) {
	var p payload
	if err := json.Unmarshal(msg.Payload, &p); err != nil {
		return ports.OutboxMessage{}, 0, fmt.Errorf("decode outbox message %s: %w", msg.UUID, err)
	}
	step, err := domain.ParseStep(p.Step)
	if err != nil {
		return ports.OutboxMessage{}, 0, err
	}
	attempt, err := strconv.Atoi(msg.Metadata.Get(metaAttempt))
	if err != nil || attempt < 1 {
		attempt = 1
	}
	return ports.OutboxMessage{PaymentID: p.PaymentID, Step: step, RequestID: p.RequestID}, attempt, nil
}
