package postgres

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/taskpod/billing/ports"
)

// auditLog implements ports.AuditLog on the insert-only audit_log table.
type auditLog struct {
	tx pgx.Tx
}

var _ ports.AuditLog = auditLog{}

// Record inserts one event. A zero At is stored as the database's current
// time and nil Details as an empty JSON object.
func (a auditLog) Record(ctx context.Context, e ports.AuditEvent) error {
	details := []byte("{}")
	if e.Details != nil {
		var err error
		if details, err = json.Marshal(e.Details); err != nil {
			return fmt.Errorf("record audit event %s on %s: encode details as JSON: %w", e.Action, e.Subject, err)
		}
	}
	_, err := a.tx.Exec(ctx, `
		INSERT INTO audit_log (at, actor, action, subject, request_id, details)
		VALUES (coalesce($1, now()), $2, $3, $4, $5, $6::jsonb)`,
		nullTime(e.At), e.Actor, e.Action, e.Subject, e.RequestID, string(details))
	return mapError(err, fmt.Sprintf("record audit event %s on %s", e.Action, e.Subject))
}
