package main

import (
	"bufio"
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/taskpod/billing/adapters/postgres"
	"github.com/taskpod/billing/adapters/postgres/pgtest"
	"github.com/taskpod/billing/migrations"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// migratedBench returns a bench on the package's migrated database.
func migratedBench(t *testing.T) *bench {
	t.Helper()
	pool := pgtest.Pool(t)
	if _, err := postgres.Migrate(context.Background(), pool, migrations.FS); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	return &bench{cfg: shortConfig(), env: &env{pool: pool, databaseURL: pgtest.URL(t)}}
}

func TestPercentileNearestRank(t *testing.T) {
	var samples []time.Duration
	for i := 100; i >= 1; i-- {
		samples = append(samples, time.Duration(i)*time.Millisecond)
	}
	cases := []struct {
		p    float64
		want time.Duration
	}{
		{50, 50 * time.Millisecond},
		{99, 99 * time.Millisecond},
		{100, 100 * time.Millisecond},
		{0, time.Millisecond},
	}
	for _, c := range cases {
		if got := percentile(samples, c.p); got != c.want {
			t.Errorf("percentile(1..100 ms, %v) = %v, want %v", c.p, got, c.want)
		}
	}
	if got := percentile(nil, 50); got != 0 {
		t.Errorf("percentile of no samples = %v, want 0", got)
	}
	if samples[0] != 100*time.Millisecond {
		t.Errorf("percentile sorted its input in place: first sample is %v", samples[0])
	}
}

func TestMedianOddAndEven(t *testing.T) {
	if got := median([]float64{3, 1, 2}); got != 2 {
		t.Errorf("median(3, 1, 2) = %v, want 2", got)
	}
	if got := median([]float64{4, 1, 3, 2}); got != 2.5 {
		t.Errorf("median(4, 1, 3, 2) = %v, want 2.5", got)
	}
}

func TestSubstitutionAppliesToArguments(t *testing.T) {
	sub := newSubstitution("pay_old", "pay_new", "acct:tmpl", "acct:w01")
	sub.shift = time.Hour
	at := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)

	if got := sub.applyArg("taskpod:pay_old:capture:1"); got != "taskpod:pay_new:capture:1" {
		t.Errorf("string argument = %v", got)
	}
	got := sub.applyArg([]string{"acct:tmpl", "platform_cash"}).([]string)
	if got[0] != "acct:w01" || got[1] != "platform_cash" {
		t.Errorf("[]string argument = %v", got)
	}
	if got := string(sub.applyArg([]byte(`{"paymentId":"pay_old"}`)).([]byte)); got != `{"paymentId":"pay_new"}` {
		t.Errorf("[]byte argument = %s", got)
	}
	if got := sub.applyArg(at).(time.Time); !got.Equal(at.Add(time.Hour)) {
		t.Errorf("time argument = %v, want shifted by an hour", got)
	}
	if got := sub.applyArg(int64(7)); got != int64(7) {
		t.Errorf("int64 argument = %v, want unchanged", got)
	}

	sub.set("pay_old", "pay_newer")
	if got := sub.apply("pay_old"); got != "pay_newer" {
		t.Errorf("after a second set, apply = %q, want pay_newer", got)
	}
	clone := sub.clone()
	clone.set("acct:tmpl", "acct:w02")
	if got := sub.apply("acct:tmpl"); got != "acct:w01" {
		t.Errorf("changing a clone changed the original: %q", got)
	}
}

func TestLearnIDsMapsStripeIDs(t *testing.T) {
	template := `{"id":"pi_AAAAAAAA","status":"requires_capture","currency":"usd","latest_charge":{"id":"ch_BBBBBBBB"},
		"client_secret":"pi_AAAAAAAA_secret_CCCCCCCC","list":[{"id":"txn_DDDDDDDD"}]}`
	replayed := `{"id":"pi_XXXXXXXX","status":"requires_capture","currency":"usd","latest_charge":{"id":"ch_YYYYYYYY"},
		"client_secret":"pi_XXXXXXXX_secret_ZZZZZZZZ","list":[{"id":"txn_WWWWWWWW"}]}`
	sub := newSubstitution()
	if err := learnIDs([]byte(template), []byte(replayed), sub); err != nil {
		t.Fatal(err)
	}
	for old, want := range map[string]string{
		"pi_AAAAAAAA": "pi_XXXXXXXX", "ch_BBBBBBBB": "ch_YYYYYYYY", "txn_DDDDDDDD": "txn_WWWWWWWW",
		"pi_AAAAAAAA_secret_CCCCCCCC": "pi_XXXXXXXX_secret_ZZZZZZZZ", "usd": "usd",
	} {
		if got := sub.apply(old); got != want {
			t.Errorf("apply(%q) = %q, want %q", old, got, want)
		}
	}
}

func TestTagsMatch(t *testing.T) {
	cases := []struct {
		sql, got, want string
		match          bool
	}{
		{"UPDATE payments SET x = 1", "UPDATE 1", "UPDATE 1", true},
		{"UPDATE payments SET x = 1", "UPDATE 0", "UPDATE 1", false},
		{"INSERT INTO ledger_accounts SELECT 1 ON CONFLICT (id) DO NOTHING", "INSERT 0 3", "INSERT 0 0", true},
		{"INSERT INTO tasks VALUES (1)", "INSERT 0 0", "INSERT 0 1", false},
	}
	for _, c := range cases {
		if got := tagsMatch(c.sql, c.got, c.want); got != c.match {
			t.Errorf("tagsMatch(%q, %q, %q) = %v, want %v", c.sql, c.got, c.want, got, c.match)
		}
	}
}

func TestVerdicts(t *testing.T) {
	cases := []struct {
		name string
		row  resultRow
		want string
	}{
		{"ratio above min", resultRow{app: 8, base: 10, min: 0.7}, "pass"},
		{"ratio below min", resultRow{app: 6, base: 10, min: 0.7}, "FAIL"},
		{"ratio within max", resultRow{app: 19, base: 10, maxRatio: 2}, "pass"},
		{"ratio over max", resultRow{app: 21, base: 10, maxRatio: 2}, "FAIL"},
		{"absolute under limit", resultRow{absolute: true, value: 149, limit: 150}, "pass"},
		{"absolute at limit", resultRow{absolute: true, value: 150, limit: 150}, "FAIL"},
		{"no target", resultRow{app: 1, base: 10}, "—"},
	}
	for _, c := range cases {
		if got := c.row.verdict(); got != c.want {
			t.Errorf("%s: verdict = %q, want %q", c.name, got, c.want)
		}
	}
}

// TestPostingReplayMatchesApplication records one posting through the
// adapter and replays it for another writer: the replay must write the
// same shape of ledger rows under the new ids and accounts.
func TestPostingReplayMatchesApplication(t *testing.T) {
	b := migratedBench(t)
	ctx := context.Background()
	traced, err := b.newPool(ctx, 2, true)
	if err != nil {
		t.Fatal(err)
	}
	defer traced.Close()

	tmplIDs, rec, err := ledgerTemplate(ctx, traced, false)
	if err != nil {
		t.Fatalf("record template: %v", err)
	}
	if n := len(rec.events); n < 6 {
		t.Fatalf("template has %d events, want at least begin, inserts and commit", n)
	}
	if first := strings.ToLower(rec.events[0].SQL); !strings.HasPrefix(first, "begin") {
		t.Errorf("template starts with %q, want begin", first)
	}

	r := &replayer{pool: b.env.pool}
	for worker := range 3 {
		if err := replayPosting(ctx, r, tmplIDs, rec, worker); err != nil {
			t.Fatalf("replay for worker %d: %v", worker, err)
		}
	}

	var entries, unbalanced int
	err = b.env.pool.QueryRow(ctx, `
		SELECT count(*), (SELECT count(*) FROM (SELECT transaction_id FROM ledger_entries
		                   GROUP BY transaction_id HAVING sum(amount) <> 0) u)
		  FROM ledger_entries WHERE account_id = $1`, "agent_payable:"+accountOwner(1)).Scan(&entries, &unbalanced)
	if err != nil {
		t.Fatal(err)
	}
	if entries != 2 {
		t.Errorf("worker 1's payable has %d entries, want 2 (hold and capture)", entries)
	}
	if unbalanced != 0 {
		t.Errorf("%d ledger transactions do not balance", unbalanced)
	}
	var resolved int
	err = b.env.pool.QueryRow(ctx, `
		SELECT count(*) FROM ledger_transactions c JOIN ledger_transactions h ON h.id = c.resolves_id
		 WHERE c.kind = 'capture' AND h.kind = 'hold' AND c.task_id = h.task_id`).Scan(&resolved)
	if err != nil {
		t.Fatal(err)
	}
	if resolved != 5 {
		t.Errorf("%d captures resolve a hold of their own task, want 5 (2 template postings, 3 replays)", resolved)
	}
}

// TestReplayRejectsDivergence checks that a replay doing less work than
// its template fails instead of counting as a faster baseline.
func TestReplayRejectsDivergence(t *testing.T) {
	b := migratedBench(t)
	ctx := context.Background()
	events := []event{
		{SQL: "begin isolation level read committed", Tag: "BEGIN"},
		{SQL: "UPDATE ledger_accounts SET id = id WHERE id = $1", Args: []any{"no_such_account"}, Tag: "UPDATE 1"},
		{SQL: "commit", Tag: "COMMIT"},
	}
	err := (&replayer{pool: b.env.pool}).run(ctx, events, newSubstitution())
	if err == nil || !strings.Contains(err.Error(), "diverged") {
		t.Fatalf("replay error = %v, want a divergence", err)
	}
}

func TestBulkLoadIsBalanced(t *testing.T) {
	b := migratedBench(t)
	ctx := context.Background()
	loader := newBulkLoader(b.env.pool, 2*bulkChunk)
	if err := loader.loadTo(ctx, 500); err != nil {
		t.Fatal(err)
	}
	if err := loader.loadTo(ctx, 1200); err != nil {
		t.Fatal(err)
	}

	var entries, cash, unbalanced int
	var last time.Time
	err := b.env.pool.QueryRow(ctx, `
		SELECT count(*), count(*) FILTER (WHERE account_id = $1),
		       (SELECT count(*) FROM (SELECT transaction_id FROM ledger_entries GROUP BY transaction_id HAVING sum(amount) <> 0) u),
		       max(effective_at)
		  FROM ledger_entries WHERE transaction_id LIKE 'ltx_bulk_%'`, statementAccount).Scan(&entries, &cash, &unbalanced, &last)
	if err != nil {
		t.Fatal(err)
	}
	if entries != 2400 {
		t.Errorf("bulk entries = %d, want 2400", entries)
	}
	if cash != 1200 {
		t.Errorf("%s entries = %d, want 1200", statementAccount, cash)
	}
	if unbalanced != 0 {
		t.Errorf("%d bulk transactions do not balance", unbalanced)
	}
	if !last.Equal(loader.effectiveAt(1199)) {
		t.Errorf("last effective time = %v, want %v", last, loader.effectiveAt(1199))
	}
	if !last.Before(time.Now()) {
		t.Errorf("last effective time %v is in the future", last)
	}
}

func TestWriteReportKeepsHandWrittenText(t *testing.T) {
	path := t.TempDir() + "/benchmarks.md"
	if err := writeReport(path, "first run\n"); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	edited := "intro\n" + string(data) + "## Analysis\nkept\n"
	if err := os.WriteFile(path, []byte(edited), 0o644); err != nil {
		t.Fatal(err)
	}

	if err := writeReport(path, "second run\n"); err != nil {
		t.Fatal(err)
	}
	data, err = os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	got := string(data)
	want := "intro\n" + generatedBegin + "\nsecond run\n" + generatedEnd + "\n## Analysis\nkept\n"
	if got != want {
		t.Errorf("report after the second run:\n%s\nwant:\n%s", got, want)
	}
}

func TestParseMetricsSumsLabels(t *testing.T) {
	text := `# HELP taskpod_billing_db_pool_acquires_total Successful pool acquisitions.
# TYPE taskpod_billing_db_pool_acquires_total counter
taskpod_billing_db_pool_acquires_total 120
taskpod_billing_stripe_request_duration_seconds_sum{operation="capture"} 0.5
taskpod_billing_stripe_request_duration_seconds_sum{operation="transfer"} 0.25
taskpod_billing_stripe_request_duration_seconds_count{operation="capture"} 10
taskpod_billing_stripe_request_duration_seconds_count{operation="transfer"} 5
taskpod_billing_http_requests_total{route="x"} 7
`
	m, err := parseMetrics(bufio.NewScanner(strings.NewReader(text)))
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]float64{
		"taskpod_billing_db_pool_acquires_total":                120,
		"taskpod_billing_stripe_request_duration_seconds_sum":   0.75,
		"taskpod_billing_stripe_request_duration_seconds_count": 15,
	} {
		if got := m[name]; got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	if _, ok := m["taskpod_billing_http_requests_total"]; ok {
		t.Error("a metric outside relayMetricNames was kept")
	}
}
