package postgres

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/taskpod/billing/ports"
)

// beginOperationAttempts bounds the insert-or-read loop of Begin. A second
// pass is needed only when the open operation is finished between the
// INSERT and the SELECT.
const beginOperationAttempts = 3

// operationRepository implements ports.OperationRepository.
type operationRepository struct {
	tx pgx.Tx
}

var _ ports.OperationRepository = operationRepository{}

// Begin returns the open operation of kind for subject, or opens one with a
// new random id. The partial unique index operations_open allows one open
// operation per (subject, kind). Under READ COMMITTED, an INSERT that meets a
// concurrent uncommitted insert waits for it, and the SELECT that follows
// reads the winner's row, so concurrent callers get the same id.
func (r operationRepository) Begin(ctx context.Context, subject, kind string) (string, error) {
	for range beginOperationAttempts {
		var id string
		err := r.tx.QueryRow(ctx, `
			INSERT INTO operations (id, subject, kind) VALUES ($1, $2, $3)
			ON CONFLICT (subject, kind) WHERE finished_at IS NULL DO NOTHING
			RETURNING id`,
			newID("op_"), subject, kind).Scan(&id)
		if err == nil {
			return id, nil
		}
		if !errors.Is(err, pgx.ErrNoRows) {
			return "", mapError(err, fmt.Sprintf("begin %s operation for %s", kind, subject))
		}

		err = r.tx.QueryRow(ctx, `
			SELECT id FROM operations WHERE subject = $1 AND kind = $2 AND finished_at IS NULL`,
			subject, kind).Scan(&id)
		if err == nil {
			return id, nil
		}
		if !errors.Is(err, pgx.ErrNoRows) {
			return "", mapError(err, fmt.Sprintf("read open %s operation for %s", kind, subject))
		}
	}
	return "", fmt.Errorf("begin %s operation for %s: the open operation kept finishing concurrently, %d attempts",
		kind, subject, beginOperationAttempts)
}

// Finish closes an operation. Finishing a finished operation is a no-op.
func (r operationRepository) Finish(ctx context.Context, id string) error {
	tag, err := r.tx.Exec(ctx, `UPDATE operations SET finished_at = now() WHERE id = $1 AND finished_at IS NULL`, id)
	if err != nil {
		return mapError(err, "finish operation "+id)
	}
	if tag.RowsAffected() == 1 {
		return nil
	}
	var exists bool
	if err := r.tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM operations WHERE id = $1)`, id).Scan(&exists); err != nil {
		return mapError(err, "finish operation "+id)
	}
	if !exists {
		return notFound("operation", id)
	}
	return nil
}

// newID returns prefix followed by 128 random bits in hex.
func newID(prefix string) string {
	b := make([]byte, 16)
	// crypto/rand.Read never returns an error since Go 1.24; it crashes
	// the program instead when the system source fails.
	_, _ = rand.Read(b)
	return prefix + hex.EncodeToString(b)
}
