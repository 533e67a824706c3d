package postgres

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/taskpod/billing/ports"
)

// eventRepository implements ports.EventRepository on stripe_events. Only
// the envelope and the body are stored; the fields read from data.object
// come back by parsing the body again.
type eventRepository struct {
	tx pgx.Tx
}

var _ ports.EventRepository = eventRepository{}

// Insert relies on the primary key: under READ COMMITTED a second insert of
// the same id waits for the first unit of work and then does nothing.
func (r eventRepository) Insert(ctx context.Context, e ports.StoredEvent) (bool, error) {
	ev := e.Event
	tag, err := r.tx.Exec(ctx, `
		INSERT INTO stripe_events (id, type, api_version, object_id, object_type, stripe_created_at, body,
		       status, attempts, next_attempt_at, last_error, received_at, updated_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12)
		ON CONFLICT (id) DO NOTHING`,
		ev.ID, ev.Type, ev.APIVersion, ev.ObjectID, ev.ObjectType, ev.Created, ev.Body,
		string(e.Status), max(e.Attempts, 1), nextAttempt(e), e.LastError, e.ReceivedAt)
	if err != nil {
		return false, mapError(err, "insert stripe event "+ev.ID)
	}
	return tag.RowsAffected() == 1, nil
}

func nextAttempt(e ports.StoredEvent) *time.Time {
	if e.Status != ports.EventPending {
		return nil
	}
	t := e.NextAttemptAt
	return &t
}

func (r eventRepository) GetForUpdate(ctx context.Context, id string) (ports.StoredEvent, bool, error) {
	var e ports.StoredEvent
	var status string
	var next *time.Time
	err := r.tx.QueryRow(ctx, `
		SELECT id, type, api_version, object_id, object_type, stripe_created_at, body,
		       status, attempts, next_attempt_at, last_error, received_at
		  FROM stripe_events WHERE id = $1 FOR UPDATE SKIP LOCKED`, id).
		Scan(&e.Event.ID, &e.Event.Type, &e.Event.APIVersion, &e.Event.ObjectID, &e.Event.ObjectType,
			&e.Event.Created, &e.Event.Body, &status, &e.Attempts, &next, &e.LastError, &e.ReceivedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return ports.StoredEvent{}, false, nil
	}
	if err != nil {
		return ports.StoredEvent{}, false, mapError(err, "read stripe event "+id)
	}
	e.Status = ports.EventStatus(status)
	e.NextAttemptAt = timeOrZero(next)
	return e, true, nil
}

func (r eventRepository) Update(ctx context.Context, e ports.StoredEvent) error {
	tag, err := r.tx.Exec(ctx, `
		UPDATE stripe_events SET status = $2, attempts = $3, next_attempt_at = $4, last_error = $5, updated_at = now()
		 WHERE id = $1`,
		e.Event.ID, string(e.Status), max(e.Attempts, 1), nextAttempt(e), e.LastError)
	if err != nil {
		return mapError(err, "update stripe event "+e.Event.ID)
	}
	if tag.RowsAffected() == 0 {
		return notFound("stripe event", e.Event.ID)
	}
	return nil
}

func (r eventRepository) DueIDs(ctx context.Context, now time.Time, limit int) ([]string, error) {
	rows, err := r.tx.Query(ctx, `
		SELECT id FROM stripe_events WHERE status = 'pending' AND next_attempt_at <= $1
		 ORDER BY next_attempt_at, id LIMIT $2`, now, limit)
	if err != nil {
		return nil, mapError(err, "list due stripe events")
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	return ids, mapError(err, "list due stripe events")
}
