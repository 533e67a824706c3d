package http

import (
	"log/slog"
	"net/http"
	"testing"
)

// Every log record of a request carries its request id: the request line,
// the use case's records and the error record, on paths that never touch
// the outbox relay.
func TestRequestIDInEveryLogRecord(t *testing.T) {
	env := newContractEnv(t)
	// writeError and the Stripe gateway log through slog.Default.
	previous := slog.Default()
	slog.SetDefault(env.log)
	t.Cleanup(func() { slog.SetDefault(previous) })

	customer := env.token("customer", "user_logs")
	requests := []struct {
		req      contractRequest
		status   int
		wantMsgs []string
	}{
		{contractRequest{Method: "POST", Path: "/v1/billing/setup", Token: customer, Body: "{}"}, http.StatusOK,
			[]string{"stripe customer created", "request"}},
		{contractRequest{Method: "POST", Path: "/v1/billing/confirm-setup", Token: customer, Body: `{"setupIntentId":"seti_missing"}`},
			http.StatusNotFound, []string{"request rejected", "request"}},
		{contractRequest{Method: "GET", Path: "/v1/tasks", Token: "tpk_unknown"}, http.StatusUnauthorized,
			[]string{"request rejected", "request"}},
	}
	for _, r := range requests {
		before := len(env.logs.records(t))
		resp := env.expect(r.status, r.req)
		id := resp.Header.Get("Request-Id")
		records := env.logs.records(t)[before:]

		seen := map[string]bool{}
		for _, rec := range records {
			seen[rec["msg"].(string)] = true
			if rec["request_id"] != id {
				t.Errorf("%s %s: record %q has request_id %v, want %s", r.req.Method, r.req.Path, rec["msg"], rec["request_id"], id)
			}
		}
		for _, msg := range r.wantMsgs {
			if !seen[msg] {
				t.Errorf("%s %s: no %q record among %d records", r.req.Method, r.req.Path, msg, len(records))
			}
		}
	}
}
