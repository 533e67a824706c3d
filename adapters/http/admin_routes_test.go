package http_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"

	apihttp "github.com/taskpod/billing/adapters/http"
	"github.com/taskpod/billing/adapters/outbox"
	"github.com/taskpod/billing/adapters/postgres"
	"github.com/taskpod/billing/adapters/system"
	"github.com/taskpod/billing/application"
)

// adminAPI serves the shared stack's database with the admin routes wired,
// which the shared API leaves out.
func adminAPI(t *testing.T, s *stack) *stack {
	t.Helper()
	store := postgres.NewStore(s.pool, outbox.NewTxOutbox)
	api := httptest.NewServer(apihttp.NewServer(apihttp.Deps{
		Auth: tokenAuth{s.tokens}, Log: s.log,
		Admin: apihttp.AdminDeps{Admin: application.NewAdmin(store, system.Clock{}, s.log)},
	}))
	t.Cleanup(api.Close)
	return &stack{api: api, tokens: s.tokens, client: s.client, pool: s.pool, log: s.log}
}

// quarantined inserts a quarantine entry as the relay writes one and
// returns its API id.
func quarantined(t *testing.T, s *stack, paymentID, step string) string {
	t.Helper()
	var n int64
	err := s.pool.QueryRow(context.Background(), `INSERT INTO outbox_quarantine
		(message_uuid, payment_id, step, attempts, last_error, payload)
		VALUES (gen_random_uuid()::text, $1, $2, 12, 'stripe api_error: 500', '{}') RETURNING id`, paymentID, step).Scan(&n)
	if err != nil {
		t.Fatalf("insert quarantine entry: %v", err)
	}
	return "oq_" + strconv.FormatInt(n, 10)
}

func TestAdminQuarantineRoutes(t *testing.T) {
	shared := startStack(t)
	s := adminAPI(t, shared)
	admin := s.token(t, "admin", "ops")
	customer := s.token(t, "customer", s.uniqueID("user_"))
	paymentID := s.uniqueID("pay_admin_")
	ids := []string{
		quarantined(t, s, paymentID, "capture"), quarantined(t, s, paymentID, "transfer"), quarantined(t, s, paymentID, "release"),
	}
	t.Cleanup(func() {
		_, err := s.pool.Exec(context.Background(), `DELETE FROM watermill_payment_steps WHERE payload->>'paymentId' = $1`, paymentID)
		if err != nil {
			t.Errorf("remove the requeued message: %v", err)
		}
	})

	page := s.call(t, http.MethodGet, "/v1/admin/outbox/quarantine?limit=2&paymentId="+paymentID, admin, nil)
	data, _ := page.body["data"].([]any)
	if page.status != http.StatusOK || len(data) != 2 || page.body["hasMore"] != true {
		t.Fatalf("first page: %d %s, want 200 with 2 entries and more", page.status, page.raw)
	}
	if got := str(data[0].(map[string]any), "id"); got != ids[2] {
		t.Errorf("newest entry = %s, want %s", got, ids[2])
	}
	entry := data[1].(map[string]any)
	if str(entry, "step") != "transfer" || str(entry, "paymentId") != paymentID || entry["attempts"] != float64(12) ||
		str(entry, "lastError") == "" || str(entry, "quarantinedAt") == "" || entry["requeuedAt"] != nil {
		t.Errorf("listed entry = %v", entry)
	}
	rest := s.call(t, http.MethodGet, "/v1/admin/outbox/quarantine?limit=2&paymentId="+paymentID+"&startingAfter="+ids[1], admin, nil)
	if data, _ := rest.body["data"].([]any); rest.status != http.StatusOK || len(data) != 1 || rest.body["hasMore"] != false {
		t.Errorf("second page: %d %s, want 200 with the oldest entry only", rest.status, rest.raw)
	}

	if r := s.call(t, http.MethodGet, "/v1/admin/outbox/quarantine?status=stuck", admin, nil); r.status != http.StatusBadRequest || str(r.body, "error.code") != "invalid_status" {
		t.Errorf("status=stuck: %d %s, want 400 invalid_status", r.status, r.raw)
	}
	if r := s.call(t, http.MethodGet, "/v1/admin/outbox/quarantine", customer, nil); r.status != http.StatusForbidden {
		t.Errorf("customer lists the quarantine: %d, want 403", r.status)
	}

	first := s.call(t, http.MethodPost, "/v1/admin/outbox/quarantine/"+ids[0]+"/requeue", admin, nil)
	second := s.call(t, http.MethodPost, "/v1/admin/outbox/quarantine/"+ids[0]+"/requeue", admin, nil)
	if first.status != http.StatusOK || str(first.body, "requeuedAt") == "" || str(first.body, "requeuedBy") == "" {
		t.Fatalf("requeue: %d %s, want 200 with requeuedAt and requeuedBy", first.status, first.raw)
	}
	if second.status != http.StatusOK || str(second.body, "requeuedAt") != str(first.body, "requeuedAt") {
		t.Errorf("second requeue: %d %s, want 200 with the first requeuedAt", second.status, second.raw)
	}
	var queued int
	err := s.pool.QueryRow(context.Background(), `SELECT count(*) FROM watermill_payment_steps
		WHERE payload->>'paymentId' = $1 AND payload->>'step' = 'capture' AND metadata->>'relay_attempt' = '1'`, paymentID).Scan(&queued)
	if err != nil {
		t.Fatal(err)
	}
	if queued != 1 {
		t.Errorf("capture messages queued by two requeues = %d, want 1", queued)
	}
	open := s.call(t, http.MethodGet, "/v1/admin/outbox/quarantine?paymentId="+paymentID, admin, nil)
	if data, _ := open.body["data"].([]any); len(data) != 2 {
		t.Errorf("open entries after one requeue = %s, want 2", open.raw)
	}

	if r := s.call(t, http.MethodPost, "/v1/admin/outbox/quarantine/oq_999999999/requeue", admin, nil); r.status != http.StatusNotFound {
		t.Errorf("requeue of an unknown entry: %d %s, want 404", r.status, r.raw)
	}
	unreadable := quarantined(t, s, "", "")
	if r := s.call(t, http.MethodPost, "/v1/admin/outbox/quarantine/"+unreadable+"/requeue", admin, nil); r.status != http.StatusUnprocessableEntity || str(r.body, "error.code") != "message_unreadable" {
		t.Errorf("requeue of an undecodable message: %d %s, want 422 message_unreadable", r.status, r.raw)
	}
	if r := s.call(t, http.MethodPost, "/v1/admin/outbox/quarantine/"+ids[1]+"/requeue", customer, nil); r.status != http.StatusForbidden {
		t.Errorf("customer requeues: %d, want 403", r.status)
	}
}

func TestAdminRetryTransferRejects(t *testing.T) {
	s := adminAPI(t, startStack(t))
	admin := s.token(t, "admin", "ops")

	if r := s.call(t, http.MethodPost, "/v1/admin/payments/pay_missing/retry-transfer", admin, nil); r.status != http.StatusNotFound {
		t.Errorf("retry of an unknown payment: %d %s, want 404", r.status, r.raw)
	}
	if r := s.call(t, http.MethodPost, "/v1/admin/payments/pay_missing/retry-transfer", admin, `{"destination":"acct_1"}`); r.status != http.StatusBadRequest {
		t.Errorf("retry with an unknown field: %d %s, want 400", r.status, r.raw)
	}
}
