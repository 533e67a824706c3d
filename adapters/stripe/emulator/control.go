package emulator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"

	"github.com/jackc/pgx/v5"
)

// The control API under /_emulator/ takes and returns JSON and needs no API
// key. It exists for tests and must never be exposed beyond them.
func (e *Emulator) controlRoutes(mux *http.ServeMux) {
	mux.HandleFunc("POST /_emulator/faults", e.addFault)
	mux.HandleFunc("GET /_emulator/faults", e.listFaults)
	mux.HandleFunc("DELETE /_emulator/faults", e.clearFaults)
	mux.HandleFunc("GET /_emulator/objects", e.listObjectsControl)
	mux.HandleFunc("GET /_emulator/requests", e.listRequestCounts)
	mux.HandleFunc("GET /_emulator/requests/count", e.getRequestCount)
	mux.HandleFunc("GET /_emulator/clock", e.getClock)
	mux.HandleFunc("POST /_emulator/clock/advance", e.advanceClock)
	mux.HandleFunc("POST /_emulator/reset", e.reset)
	mux.HandleFunc("POST /_emulator/disputes", e.createDispute)
	mux.HandleFunc("POST /_emulator/disputes/{id}/close", e.closeDispute)
	mux.HandleFunc("POST /_emulator/connected-accounts/{acct}/insufficient-funds", e.setInsufficientFunds)
	mux.HandleFunc("POST /_emulator/webhooks/mode", e.setWebhookMode)
	mux.HandleFunc("POST /_emulator/webhooks/pause", e.pauseWebhooks)
	mux.HandleFunc("POST /_emulator/webhooks/resume", e.resumeWebhooks)
	mux.HandleFunc("POST /_emulator/webhooks/flush", e.flushWebhooks)
	mux.HandleFunc("GET /_emulator/events", e.listEvents)
}

func controlError(w http.ResponseWriter, status int, message string) {
	writeJSON(w, status, map[string]string{"error": message}, nil)
}

// decodeControlBody reads a JSON body into dst; an empty body leaves dst as is.
func decodeControlBody(w http.ResponseWriter, r *http.Request, dst any) error {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("invalid JSON body: %w", err)
	}
	return nil
}

func (e *Emulator) addFault(w http.ResponseWriter, r *http.Request) {
	var rule faultRule
	if err := decodeControlBody(w, r, &rule); err != nil {
		controlError(w, http.StatusBadRequest, err.Error())
		return
	}
	added, err := e.faults.add(rule)
	if err != nil {
		controlError(w, http.StatusBadRequest, "invalid fault: "+err.Error())
		return
	}
	e.log.Info("fault rule added", "fault_id", added.ID, "method", added.Method, "path", added.Path,
		"rate", added.Rate, "drop_response_rate", added.DropResponseRate, "latency_ms", added.LatencyMs)
	writeJSON(w, http.StatusOK, added, nil)
}

func (e *Emulator) listFaults(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{"faults": e.faults.list()}, nil)
}

func (e *Emulator) clearFaults(w http.ResponseWriter, r *http.Request) {
	e.faults.clear()
	writeJSON(w, http.StatusOK, map[string]any{"faults": []faultRule{}}, nil)
}

// objectFilterFields are the top-level JSON fields that GET /_emulator/objects
// accepts as equality filters besides type.
var objectFilterFields = []string{
	"customer", "payment_intent", "charge", "payment_method", "source_transaction",
	"transfer", "transfer_group", "destination", "status", "source",
}

// listObjectsControl returns every stored object of one type, oldest first:
// GET /_emulator/objects?type=payment_intent&customer=cus_...
func (e *Emulator) listObjectsControl(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	typ := q.Get("type")
	if typ == "" {
		controlError(w, http.StatusBadRequest, "query parameter type is required, for example type=payment_intent")
		return
	}
	if err := e.expireAuthorizations(r.Context()); err != nil {
		controlError(w, http.StatusInternalServerError, "expire authorizations: "+err.Error())
		return
	}
	where := []string{"type = $1"}
	args := []any{typ}
	for _, field := range objectFilterFields {
		if v := q.Get(field); v != "" {
			args = append(args, v)
			where = append(where, fmt.Sprintf("data->>'%s' = $%d", field, len(args)))
		}
	}
	rows, err := e.pool.Query(r.Context(), `SELECT data FROM stripe_emulator.objects WHERE `+
		strings.Join(where, " AND ")+` ORDER BY seq`, args...)
	if err != nil {
		controlError(w, http.StatusInternalServerError, "list objects: "+err.Error())
		return
	}
	data, err := pgx.CollectRows(rows, pgx.RowTo[json.RawMessage])
	if err != nil {
		controlError(w, http.StatusInternalServerError, "list objects: "+err.Error())
		return
	}
	if data == nil {
		data = []json.RawMessage{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"object": "list", "data": data}, nil)
}

// requestCount is the counter row of one method and concrete path.
type requestCount struct {
	Method string `json:"method"`
	Path   string `json:"path"`
	// Requests counts every authenticated request, including replays and
	// injected faults.
	Requests int64 `json:"requests"`
	// Mutations counts POSTs that ran and committed: successes and card
	// declines, not replays, injected failures or rejected requests.
	Mutations int64 `json:"mutations"`
	// Replays counts responses replayed from the idempotency store.
	Replays int64 `json:"replays"`
}

func (e *Emulator) countRequest(ctx context.Context, method, path string) {
	_, err := e.pool.Exec(ctx, `
		INSERT INTO stripe_emulator.request_counts (method, path, requests) VALUES ($1, $2, 1)
		ON CONFLICT (method, path) DO UPDATE SET requests = request_counts.requests + 1`, method, path)
	if err != nil {
		e.log.Error("count request failed", "method", method, "path", path, "error", err)
	}
}

func (e *Emulator) countMutation(ctx context.Context, q querier, method, path string) error {
	if method != http.MethodPost {
		return nil
	}
	_, err := q.Exec(ctx, `
		INSERT INTO stripe_emulator.request_counts (method, path, mutations) VALUES ($1, $2, 1)
		ON CONFLICT (method, path) DO UPDATE SET mutations = request_counts.mutations + 1`, method, path)
	return err
}

func (e *Emulator) countReplay(ctx context.Context, q querier, method, path string) error {
	_, err := q.Exec(ctx, `
		INSERT INTO stripe_emulator.request_counts (method, path, replays) VALUES ($1, $2, 1)
		ON CONFLICT (method, path) DO UPDATE SET replays = request_counts.replays + 1`, method, path)
	return err
}

func (e *Emulator) listRequestCounts(w http.ResponseWriter, r *http.Request) {
	rows, err := e.pool.Query(r.Context(), `
		SELECT method, path, requests, mutations, replays FROM stripe_emulator.request_counts ORDER BY path, method`)
	if err != nil {
		controlError(w, http.StatusInternalServerError, "list request counts: "+err.Error())
		return
	}
	counts, err := pgx.CollectRows(rows, pgx.RowToStructByPos[requestCount])
	if err != nil {
		controlError(w, http.StatusInternalServerError, "list request counts: "+err.Error())
		return
	}
	if counts == nil {
		counts = []requestCount{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"requests": counts}, nil)
}

// getRequestCount sums the counters of all paths that match a pattern:
// GET /_emulator/requests/count?method=POST&path=/v1/payment_intents/*/capture
func (e *Emulator) getRequestCount(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	pattern := q.Get("path")
	if pattern == "" {
		controlError(w, http.StatusBadRequest, "query parameter path is required; '*' matches one path segment")
		return
	}
	method := strings.ToUpper(q.Get("method"))
	re := "^" + strings.ReplaceAll(regexp.QuoteMeta(pattern), `\*`, `[^/]+`) + "$"
	out := requestCount{Method: method, Path: pattern}
	err := e.pool.QueryRow(r.Context(), `
		SELECT coalesce(sum(requests), 0), coalesce(sum(mutations), 0), coalesce(sum(replays), 0)
		FROM stripe_emulator.request_counts WHERE path ~ $1 AND ($2 = '' OR method = $2)`, re, method).
		Scan(&out.Requests, &out.Mutations, &out.Replays)
	if err != nil {
		controlError(w, http.StatusInternalServerError, "count requests: "+err.Error())
		return
	}
	writeJSON(w, http.StatusOK, out, nil)
}

func (e *Emulator) getClock(w http.ResponseWriter, r *http.Request) {
	now, err := e.clockNow(r.Context(), e.pool)
	if err != nil {
		controlError(w, http.StatusInternalServerError, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, map[string]int64{"now": now}, nil)
}

// advanceClock moves the emulator clock forward by {"seconds": N} and expires
// authorizations whose capture deadline has passed.
func (e *Emulator) advanceClock(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Seconds int64 `json:"seconds"`
	}
	if err := decodeControlBody(w, r, &body); err != nil {
		controlError(w, http.StatusBadRequest, err.Error())
		return
	}
	if body.Seconds < 0 {
		controlError(w, http.StatusBadRequest, fmt.Sprintf("seconds must not be negative, got %d; the clock only moves forward", body.Seconds))
		return
	}
	_, err := e.pool.Exec(r.Context(), `UPDATE stripe_emulator.clock SET offset_seconds = offset_seconds + $1`, body.Seconds)
	if err != nil {
		controlError(w, http.StatusInternalServerError, "advance clock: "+err.Error())
		return
	}
	if err := e.expireAuthorizations(r.Context()); err != nil {
		controlError(w, http.StatusInternalServerError, "expire authorizations: "+err.Error())
		return
	}
	e.getClock(w, r)
}

// reset deletes all emulator state and fault rules.
func (e *Emulator) reset(w http.ResponseWriter, r *http.Request) {
	err := pgx.BeginFunc(r.Context(), e.pool, func(tx pgx.Tx) error {
		_, err := tx.Exec(r.Context(), `
			TRUNCATE stripe_emulator.objects, stripe_emulator.idempotency_keys, stripe_emulator.request_counts,
				stripe_emulator.connected_accounts, stripe_emulator.events`)
		if err != nil {
			return err
		}
		_, err = tx.Exec(r.Context(), `UPDATE stripe_emulator.clock SET offset_seconds = 0`)
		return err
	})
	if err != nil {
		controlError(w, http.StatusInternalServerError, "reset: "+err.Error())
		return
	}
	e.faults.clear()
	e.hooks.resetMode()
	e.log.Info("emulator state reset")
	writeJSON(w, http.StatusOK, map[string]bool{"reset": true}, nil)
}
