package postgres

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/taskpod/billing/adapters/outbox"
	"github.com/taskpod/billing/application"
	"github.com/taskpod/billing/domain"
	"github.com/taskpod/billing/ports"
)

// quarantineRow inserts one quarantined message the way the relay does and
// returns its id.
func quarantineRow(t *testing.T, store *Store, paymentID, step string) string {
	t.Helper()
	var n int64
	err := store.pool.QueryRow(testContext(t), `INSERT INTO outbox_quarantine
		(message_uuid, payment_id, step, request_id, attempts, last_error, payload)
		VALUES ($1, $2, $3, 'req_q', 3, 'stripe answered 500', $4) RETURNING id`,
		uniqueID("uuid_"), paymentID, step, `{"paymentId":"`+paymentID+`","step":"`+step+`"}`).Scan(&n)
	if err != nil {
		t.Fatalf("insert quarantine row: %v", err)
	}
	return quarantineID(n)
}

func listQuarantined(t *testing.T, store *Store, f ports.QuarantineFilter, page ports.Page) ([]ports.QuarantinedMessage, bool) {
	t.Helper()
	var items []ports.QuarantinedMessage
	var more bool
	err := store.InAdminTx(testContext(t), func(ctx context.Context, tx ports.AdminTx) error {
		var err error
		items, more, err = tx.Quarantine().List(ctx, f, page)
		return err
	})
	if err != nil {
		t.Fatalf("list quarantine: %v", err)
	}
	return items, more
}

func quarantineIDsOf(items []ports.QuarantinedMessage) []string {
	out := make([]string, len(items))
	for i, m := range items {
		out[i] = m.ID
	}
	return out
}

func TestQuarantineListPagesNewestFirst(t *testing.T) {
	store := newTestStore(t)
	paymentID := uniqueID("pay_")
	var inserted []string
	for range 5 {
		inserted = append(inserted, quarantineRow(t, store, paymentID, "capture"))
	}
	f := ports.QuarantineFilter{Status: ports.QuarantineAll, PaymentID: paymentID}

	first, more := listQuarantined(t, store, f, ports.Page{Limit: 2})
	if got, want := quarantineIDsOf(first), []string{inserted[4], inserted[3]}; !slices.Equal(got, want) || !more {
		t.Fatalf("first page = %v (hasMore %v), want %v with more", got, more, want)
	}
	second, more := listQuarantined(t, store, f, ports.Page{Limit: 2, StartingAfter: first[1].ID})
	if got, want := quarantineIDsOf(second), []string{inserted[2], inserted[1]}; !slices.Equal(got, want) || !more {
		t.Fatalf("second page = %v (hasMore %v), want %v with more", got, more, want)
	}
	last, more := listQuarantined(t, store, f, ports.Page{Limit: 2, StartingAfter: second[1].ID})
	if got, want := quarantineIDsOf(last), []string{inserted[0]}; !slices.Equal(got, want) || more {
		t.Fatalf("last page = %v (hasMore %v), want %v without more", got, more, want)
	}
	back, more := listQuarantined(t, store, f, ports.Page{Limit: 2, EndingBefore: second[0].ID})
	if got, want := quarantineIDsOf(back), []string{inserted[4], inserted[3]}; !slices.Equal(got, want) || more {
		t.Fatalf("page before %s = %v (hasMore %v), want %v without more", second[0].ID, got, more, want)
	}

	m := first[0]
	if m.PaymentID != paymentID || m.Step != domain.StepCapture || m.Attempts != 3 ||
		m.LastError != "stripe answered 500" || m.RequestID != "req_q" || m.QuarantinedAt.IsZero() || !m.RequeuedAt.IsZero() {
		t.Errorf("listed entry = %+v", m)
	}
}

func TestQuarantineListRejectsBadCursor(t *testing.T) {
	store := newTestStore(t)
	err := store.InAdminTx(testContext(t), func(ctx context.Context, tx ports.AdminTx) error {
		_, _, err := tx.Quarantine().List(ctx, ports.QuarantineFilter{}, ports.Page{StartingAfter: "pay_1"})
		return err
	})
	var ve *domain.ValidationError
	if !errors.As(err, &ve) || ve.Field != "startingAfter" {
		t.Fatalf("list with cursor pay_1: err = %v, want a validation error on startingAfter", err)
	}
}

func newQuarantineAdmin(t *testing.T) (*application.Admin, *Store) {
	t.Helper()
	store := NewStore(migratedPool(t), outbox.NewTxOutbox)
	return application.NewAdmin(store, quarantineClock{testNow()}, slog.New(slog.NewTextHandler(io.Discard, nil))), store
}

type quarantineClock struct{ now time.Time }

func (c quarantineClock) Now() time.Time { return c.now }

// pendingAttempts returns the relay_attempt metadata of every pending outbox
// message of one payment and step.
func pendingAttempts(t *testing.T, store *Store, paymentID, step string) []string {
	t.Helper()
	rows, err := store.pool.Query(testContext(t), `SELECT coalesce(metadata->>'relay_attempt', '')
		FROM watermill_payment_steps WHERE payload->>'paymentId' = $1 AND payload->>'step' = $2 ORDER BY "offset"`,
		paymentID, step)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var a string
		if err := rows.Scan(&a); err != nil {
			t.Fatal(err)
		}
		out = append(out, a)
	}
	return out
}

func TestAdminRequeueQueuesOnce(t *testing.T) {
	admin, store := newQuarantineAdmin(t)
	paymentID := uniqueID("pay_")
	id := quarantineRow(t, store, paymentID, "capture")
	actor := application.Actor{Role: application.RoleAdmin, Subject: "ops", TokenID: "tok_ops", RequestID: "req_requeue"}

	first, err := admin.Requeue(testContext(t), actor, id)
	if err != nil {
		t.Fatalf("first requeue: %v", err)
	}
	if first.RequeuedAt.IsZero() || first.RequeuedBy != "tok_ops" {
		t.Errorf("first requeue returned %+v, want requeued by tok_ops", first)
	}
	again, err := admin.Requeue(testContext(t), actor, id)
	if err != nil {
		t.Fatalf("second requeue: %v", err)
	}
	if !again.RequeuedAt.Equal(first.RequeuedAt) {
		t.Errorf("second requeue moved requeuedAt from %v to %v", first.RequeuedAt, again.RequeuedAt)
	}

	if got := pendingAttempts(t, store, paymentID, "capture"); len(got) != 1 || got[0] != "1" {
		t.Errorf("outbox holds relay attempts %v for the payment, want exactly [1]", got)
	}
	open, _ := listQuarantined(t, store, ports.QuarantineFilter{Status: ports.QuarantineOpen, PaymentID: paymentID}, ports.Page{})
	if len(open) != 0 {
		t.Errorf("open quarantine after requeue = %v, want none", quarantineIDsOf(open))
	}
	requeued, _ := listQuarantined(t, store, ports.QuarantineFilter{Status: ports.QuarantineRequeued, PaymentID: paymentID}, ports.Page{})
	if len(requeued) != 1 {
		t.Errorf("requeued entries = %v, want [%s]", quarantineIDsOf(requeued), id)
	}

	var audits int
	err = store.pool.QueryRow(testContext(t), `SELECT count(*) FROM audit_log
		WHERE action = 'outbox.requeued' AND subject = $1 AND actor = 'tok_ops' AND details->>'paymentId' = $2`, id, paymentID).Scan(&audits)
	if err != nil {
		t.Fatal(err)
	}
	if audits != 1 {
		t.Errorf("audit events for the requeue = %d, want 1", audits)
	}
}

func TestAdminRequeueRejectsUnknownAndUnreadable(t *testing.T) {
	admin, store := newQuarantineAdmin(t)
	actor := application.Actor{Role: application.RoleAdmin, TokenID: "tok_ops"}

	if _, err := admin.Requeue(testContext(t), actor, "oq_999999999"); !errors.Is(err, domain.ErrNotFound) {
		t.Errorf("requeue of an unknown id: err = %v, want not found", err)
	}
	if _, err := admin.Requeue(testContext(t), actor, "12"); !errors.Is(err, domain.ErrNotFound) {
		t.Errorf("requeue of an id without the oq_ prefix: err = %v, want not found", err)
	}

	unreadable := quarantineRow(t, store, "", "")
	_, err := admin.Requeue(testContext(t), actor, unreadable)
	var ve *domain.ValidationError
	if !errors.As(err, &ve) || ve.Code != "message_unreadable" {
		t.Fatalf("requeue of an undecodable message: err = %v, want message_unreadable", err)
	}
	open, _ := listQuarantined(t, store, ports.QuarantineFilter{Status: ports.QuarantineOpen}, ports.Page{Limit: 100})
	found := false
	for _, m := range open {
		found = found || m.ID == unreadable
	}
	if !found {
		t.Errorf("undecodable entry %s left the open quarantine after a rejected requeue", unreadable)
	}
}
