package http

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"runtime"
	"runtime/metrics"
	"strconv"
	"strings"
	"testing"
	"time"
)

// bulkStatementSQL writes $1 transactions of $2 pairs of entries each:
// platform_cash is debited j and agent_payable:bulk credited j for j in
// 1..$2, one millisecond of effective time apart per transaction from $3.
const bulkStatementSQL = `
	WITH accounts AS (
		INSERT INTO ledger_accounts (id, normal_balance) VALUES ('platform_cash', 'debit'), ('agent_payable:bulk', 'credit')
		ON CONFLICT (id) DO NOTHING
	), txs AS (
		INSERT INTO ledger_transactions (id, kind, actor, reason, effective_at)
		SELECT 'ltx_bulk_' || g, 'settlement', 'test', 'bulk', $3::timestamptz + g * interval '1 millisecond'
		  FROM generate_series(1, $1::int) g
		RETURNING id, effective_at
	)
	INSERT INTO ledger_entries (transaction_id, account_id, currency, amount, pending, effective_at)
	SELECT txs.id, side.account, 'usd', side.sign * j, false, txs.effective_at
	  FROM txs, generate_series(1, $2::int) j,
	       (VALUES ('platform_cash', 1), ('agent_payable:bulk', -1)) AS side (account, sign)`

// streamRecorder is a ResponseWriter that keeps only counts: the bytes
// written, the bytes written when the first flush came, the flushes, and
// the largest live heap seen while rows were written.
type streamRecorder struct {
	header        http.Header
	status        int
	bytes         int
	firstFlushAt  int
	flushes       int
	maxLiveHeap   uint64
	writes        int
	tail          bytes.Buffer
	keepTailBytes int
}

func (r *streamRecorder) Header() http.Header { return r.header }

func (r *streamRecorder) WriteHeader(status int) { r.status = status }

func (r *streamRecorder) Write(p []byte) (int, error) {
	r.bytes += len(p)
	r.writes++
	if r.writes%50 == 0 {
		r.sampleHeap()
	}
	r.tail.Write(p)
	if r.tail.Len() > 2*r.keepTailBytes {
		kept := append([]byte(nil), r.tail.Bytes()[r.tail.Len()-r.keepTailBytes:]...)
		r.tail.Reset()
		r.tail.Write(kept)
	}
	return len(p), nil
}

func (r *streamRecorder) Flush() {
	if r.flushes == 0 {
		r.firstFlushAt = r.bytes
	}
	r.flushes++
}

// sampleHeap reads the heap that was live at the last garbage collection.
func (r *streamRecorder) sampleHeap() {
	sample := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	metrics.Read(sample)
	if v := sample[0].Value.Uint64(); v > r.maxLiveHeap {
		r.maxLiveHeap = v
	}
}

// TestStatementCSVStreamsWithFlatMemory streams a statement of 150 000
// entries as CSV straight into a counting writer. Rows must be flushed all
// along, the live heap must not grow with the body, and the closing balance
// must match the account's balance.
func TestStatementCSVStreamsWithFlatMemory(t *testing.T) {
	env := newAuditEnv(t)
	const txCount, pairs = 1000, 150
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	if _, err := env.pool.Exec(env.ctx, bulkStatementSQL, txCount, pairs, start); err != nil {
		t.Fatal(err)
	}
	rows := txCount * pairs

	req := httptest.NewRequestWithContext(env.ctx, "GET", "/v1/ledger/accounts/platform_cash/statement", nil)
	req.Header.Set("Authorization", "Bearer "+auditAuditorToken)
	req.Header.Set("Accept", "text/csv")
	rec := &streamRecorder{header: http.Header{}, keepTailBytes: 4096}
	runtime.GC()
	rec.sampleHeap()
	baseline := rec.maxLiveHeap
	env.server.ServeHTTP(rec, req)

	if rec.status != http.StatusOK || !strings.HasPrefix(rec.header.Get("Content-Type"), "text/csv") {
		t.Fatalf("statement = %d %s, want 200 text/csv", rec.status, rec.header.Get("Content-Type"))
	}
	if want := rows / statementFlushRows; rec.flushes < want {
		t.Errorf("%d flushes for %d rows, want at least %d", rec.flushes, rows, want)
	}
	if rec.firstFlushAt > rec.bytes/100 {
		t.Errorf("first flush after %d of %d bytes; the body was not streamed", rec.firstFlushAt, rec.bytes)
	}
	// Buffering the body would keep it all live; streaming keeps a few
	// buffers. The bound is a quarter of the body, far above the buffers.
	if growth := int64(rec.maxLiveHeap) - int64(baseline); growth > int64(rec.bytes/4) {
		t.Errorf("live heap grew by %d bytes while streaming a %d-byte body", growth, rec.bytes)
	}

	lines := strings.Split(strings.TrimSpace(rec.tail.String()), "\n")
	closing, err := csv.NewReader(strings.NewReader(lines[len(lines)-1])).Read()
	if err != nil {
		t.Fatal(err)
	}
	// Sum of 1..pairs per transaction, all debits.
	wantBalance := int64(txCount) * int64(pairs*(pairs+1)/2)
	if closing[0] != "closing" || closing[6] != "usd" || closing[7] != strconv.FormatInt(wantBalance, 10) ||
		closing[9] != strconv.FormatInt(wantBalance, 10) {
		t.Errorf("closing row = %v, want usd debits and balance %d", closing, wantBalance)
	}
	t.Logf("streamed %d rows, %d bytes, %d flushes, live heap %d -> %d bytes",
		rows, rec.bytes, rec.flushes, baseline, rec.maxLiveHeap)
}

func TestStatementJSONOpeningAndClosing(t *testing.T) {
	env := newAuditEnv(t)
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	// Ten transactions, one millisecond apart, of pairs 1 and 2.
	if _, err := env.pool.Exec(env.ctx, bulkStatementSQL, 10, 2, start); err != nil {
		t.Fatal(err)
	}
	from := start.Add(4 * time.Millisecond)
	to := start.Add(7 * time.Millisecond)
	path := "/v1/ledger/accounts/" + "agent_payable:bulk" + "/statement?from=" + from.Format(time.RFC3339Nano) + "&to=" + to.Format(time.RFC3339Nano)

	status, body, err := env.call("GET", path, auditAuditorToken, "")
	if err != nil || status != http.StatusOK {
		t.Fatalf("GET statement = %d %s (%v)", status, body, err)
	}
	var st struct {
		Account       string                 `json:"account"`
		NormalBalance string                 `json:"normalBalance"`
		Opening       []statementOpeningView `json:"opening"`
		Entries       []statementEntryView   `json:"entries"`
		Closing       []statementClosingView `json:"closing"`
	}
	if err := json.Unmarshal(body, &st); err != nil {
		t.Fatalf("decode %s: %v", body, err)
	}
	// Transactions 1..3 precede from; 4, 5 and 6 fall inside; each credits 3.
	if len(st.Opening) != 1 || st.Opening[0].BalanceCents != 9 {
		t.Errorf("opening = %+v, want 9 in usd", st.Opening)
	}
	if len(st.Entries) != 6 || st.Entries[5].BalanceCents != 18 || st.Entries[0].BalanceCents != 10 {
		t.Errorf("entries = %d, running balances %+v, want 6 from 10 to 18", len(st.Entries), st.Entries)
	}
	want := statementClosingView{Currency: "usd", OpeningCents: 9, DebitsCents: 0, CreditsCents: 9, BalanceCents: 18}
	if len(st.Closing) != 1 || st.Closing[0] != want {
		t.Errorf("closing = %+v, want %+v", st.Closing, want)
	}

	var balance accountBalanceView
	asOf := to.Add(-time.Microsecond).Format(time.RFC3339Nano)
	env.expect(http.StatusOK, "GET", "/v1/ledger/accounts/agent_payable:bulk/balance?asOf="+asOf, auditAuditorToken, "", &balance)
	if len(balance.Balances) != 1 || balance.Balances[0].PostedCents != st.Closing[0].BalanceCents {
		t.Errorf("balance just before to = %+v, want the closing balance %d", balance.Balances, st.Closing[0].BalanceCents)
	}

	status, body, _ = env.call("GET", "/v1/ledger/accounts/nobody/statement", auditAuditorToken, "")
	if status != http.StatusNotFound {
		t.Errorf("statement of an unknown account = %d %s, want 404", status, body)
	}
	status, _, _ = env.call("GET", "/v1/ledger/accounts/platform_cash/statement?from="+to.Format(time.RFC3339)+"&to="+from.Format(time.RFC3339), auditAuditorToken, "")
	if status != http.StatusBadRequest {
		t.Errorf("statement with from after to = %d, want 400", status)
	}
}
