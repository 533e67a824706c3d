package http

import (
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/taskpod/billing/ports"
)

// timeParam parses an optional RFC 3339 query parameter; absent is zero.
func timeParam(q url.Values, name string) (time.Time, error) {
	raw := q.Get(name)
	if raw == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, raw)
	if err != nil {
		return time.Time{}, badRequest("invalid_time", name, name+" must be an RFC 3339 time such as 2026-01-31T23:59:59Z")
	}
	return t.UTC(), nil
}

// asOfParam parses asOf, defaulting to the current time at the database's
// microsecond precision.
func asOfParam(q url.Values) (time.Time, error) {
	t, err := timeParam(q, "asOf")
	if err != nil || !t.IsZero() {
		return t, err
	}
	return time.Now().UTC().Truncate(time.Microsecond), nil
}

// entryFilterOf reads the filters of GET /v1/ledger/entries: taskId,
// paymentId, accountId, stripeId, and the effective-time range from
// (inclusive) to (exclusive).
func entryFilterOf(q url.Values) (ports.LedgerEntryFilter, error) {
	f := ports.LedgerEntryFilter{
		TaskID: q.Get("taskId"), PaymentID: q.Get("paymentId"), AccountID: q.Get("accountId"), StripeID: q.Get("stripeId"),
	}
	var err error
	if f.From, err = timeParam(q, "from"); err != nil {
		return f, err
	}
	if f.To, err = timeParam(q, "to"); err != nil {
		return f, err
	}
	if !f.From.IsZero() && !f.To.IsZero() && !f.From.Before(f.To) {
		return f, badRequest("invalid_time_range", "to", "to must be after from")
	}
	return f, nil
}

// Audit event ids are sequence numbers; the API shows them as ae_<n>.
func auditCursor(id int64) string { return "ae_" + strconv.FormatInt(id, 10) }

func parseAuditCursor(raw, param string) (int64, error) {
	if raw == "" {
		return 0, nil
	}
	n, err := strconv.ParseInt(strings.TrimPrefix(raw, "ae_"), 10, 64)
	if err != nil || n < 1 {
		return 0, badRequest("invalid_cursor", param, param+" must be an audit event id such as ae_42")
	}
	return n, nil
}
