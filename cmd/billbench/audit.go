package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/taskpod/billing/adapters/postgres"
)

// The bulk ledger consists of transfer-shaped transactions of two entries.
// Each debits one of 100 agent payables and credits platform_cash. They are
// one second of effective time apart and end an hour before the run. So a
// ledger of n entries holds n/2 platform_cash entries, and the statement of
// platform_cash lists one entry per bulk transaction.
const (
	statementAccount = "platform_cash"
	bulkAgents       = 100
	bulkChunk        = 20_000 // transactions per database transaction
)

// bulkLoader appends balanced transactions to the ledger with generated
// SQL. The ledger's triggers stay on: each chunk inserts its transactions
// and their entries in one database transaction, and the balance check
// runs for every transaction at commit.
type bulkLoader struct {
	pool *pgxpool.Pool
	// loaded is how many bulk transactions exist.
	loaded int
	// origin is the effective time of bulk transaction 0.
	origin time.Time
	// capacity is the most transactions this run will load; it fixes origin.
	capacity int
}

func newBulkLoader(pool *pgxpool.Pool, capacity int) *bulkLoader {
	origin := time.Now().Add(-time.Hour - time.Duration(capacity)*time.Second).UTC().Truncate(time.Second)
	return &bulkLoader{pool: pool, origin: origin, capacity: capacity}
}

// effectiveAt returns the effective time of bulk transaction g.
func (l *bulkLoader) effectiveAt(g int) time.Time {
	return l.origin.Add(time.Duration(g) * time.Second)
}

// loadTo loads bulk transactions until there are total.
func (l *bulkLoader) loadTo(ctx context.Context, total int) error {
	pool := l.pool
	if l.loaded == 0 {
		_, err := pool.Exec(ctx, `
			INSERT INTO ledger_accounts (id, normal_balance)
			SELECT 'agent_payable:bulk_agent_' || a, 'credit' FROM generate_series(0, $1 - 1) a
			UNION ALL SELECT $2, 'debit'
			ON CONFLICT (id) DO NOTHING`, bulkAgents, statementAccount)
		if err != nil {
			return fmt.Errorf("create bulk accounts: %w", err)
		}
	}
	started, from := time.Now(), l.loaded
	for l.loaded < total {
		n := min(bulkChunk, total-l.loaded)
		if err := l.loadChunk(ctx, l.loaded, n); err != nil {
			return err
		}
		l.loaded += n
	}
	if l.loaded > from {
		logf("loaded %d bulk transactions (%d entries) in %s", l.loaded-from, 2*(l.loaded-from), time.Since(started).Round(time.Second))
	}
	return nil
}

func (l *bulkLoader) loadChunk(ctx context.Context, first, n int) error {
	tx, err := l.pool.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(context.WithoutCancel(ctx))

	_, err = tx.Exec(ctx, `
		INSERT INTO ledger_transactions (id, kind, actor, reason, effective_at)
		SELECT 'ltx_bulk_' || g, 'transfer', 'system:billbench', 'bulk load', $3::timestamptz + g * interval '1 second'
		  FROM generate_series($1::int, $1::int + $2::int - 1) g`, first, n, l.origin)
	if err != nil {
		return fmt.Errorf("insert bulk transactions %d..%d: %w", first, first+n-1, err)
	}
	_, err = tx.Exec(ctx, `
		INSERT INTO ledger_entries (transaction_id, account_id, currency, amount, pending, effective_at)
		SELECT 'ltx_bulk_' || g, e.account_id, 'usd', e.amount, false, $3::timestamptz + g * interval '1 second'
		  FROM generate_series($1::int, $1::int + $2::int - 1) g
		 CROSS JOIN LATERAL (VALUES
		       ('agent_payable:bulk_agent_' || (g % $4::int), 100 + g % 900),
		       ($5::text, -(100 + g % 900))) AS e (account_id, amount)
		 ORDER BY g`, first, n, l.origin, bulkAgents, statementAccount)
	if err != nil {
		return fmt.Errorf("insert bulk entries %d..%d: %w", first, first+n-1, err)
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("commit bulk chunk %d..%d: %w", first, first+n-1, err)
	}
	return nil
}

// auditDB is a second database holding only the bulk ledger, with a
// service of its own, so the auditor and export scenarios know exactly how
// many entries the ledger holds whatever the other scenarios wrote.
type auditDB struct {
	pool   *pgxpool.Pool
	url    string
	svc    *service
	loader *bulkLoader
	token  string
}

func (b *bench) openAuditDB(ctx context.Context) (*auditDB, error) {
	if b.audit != nil {
		return b.audit, nil
	}
	url, pool, err := b.env.createDatabase(ctx)
	if err != nil {
		return nil, err
	}
	a := &auditDB{pool: pool, url: url, loader: newBulkLoader(pool, b.cfg.statementEntries)}
	b.audit = a
	if _, a.token, err = postgres.NewTokens(pool).Create(ctx, "auditor", "billbench", nil); err != nil {
		return nil, err
	}
	if a.svc, err = b.env.startService(ctx, url); err != nil {
		return nil, err
	}
	return a, nil
}

// sealBulk seals a bulk load in this process with the adapter's own
// sealing code, on connections with JIT compilation off. In one run the
// service's sealer, with PostgreSQL's default jit = on, sealed about 50
// transactions a second after a load of 500 000: its queue query took 1 to
// 2 s per batch of 500 in pg_stat_activity, against 25 ms when run by hand.
// NOTE: JIT compilation of the prepared query's generic plan is the likely
// cause, not a confirmed one. The load is setup, not a measurement, so it
// is sealed here before the timed requests.
func sealBulk(ctx context.Context, databaseURL string) error {
	cfg, err := pgxpool.ParseConfig(databaseURL)
	if err != nil {
		return err
	}
	cfg.ConnConfig.RuntimeParams["jit"] = "off"
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return err
	}
	defer pool.Close()
	started := time.Now()
	n, err := postgres.NewChain(pool).SealPending(ctx)
	if err != nil {
		return fmt.Errorf("seal the bulk load: %w", err)
	}
	logf("sealed %d bulk transactions in %s", n, time.Since(started).Round(time.Second))
	return nil
}

// waitSealed waits until the service's ledger sealer has given every
// committed transaction its place in the hash chain. Listings show sealed
// entries only and seal a little on each read, so timing them before the
// sealer caught up with a bulk load would time the sealing.
func waitSealed(ctx context.Context, pool *pgxpool.Pool) error {
	started := time.Now()
	deadline := started.Add(20 * time.Minute)
	for {
		var queued int64
		if err := pool.QueryRow(ctx, `SELECT count(*) FROM ledger_unsealed`).Scan(&queued); err != nil {
			return fmt.Errorf("read the sealer's queue: %w", err)
		}
		if queued == 0 {
			if waited := time.Since(started); waited > time.Second {
				logf("the ledger sealer caught up in %s", waited.Round(time.Second))
			}
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d ledger transactions are still unsealed after 20 minutes", queued)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// vacuumLedger runs VACUUM (ANALYZE) on the ledger tables after a bulk
// load, as autovacuum would after a load of this size. Until then the
// planner works from stale row estimates and index-only scans read the
// heap, so timings would depend on when autovacuum last ran.
func vacuumLedger(ctx context.Context, pool *pgxpool.Pool) error {
	started := time.Now()
	if err := vacuum(ctx, pool, "ledger_accounts", "ledger_transactions", "ledger_entries", "ledger_seals", "ledger_unsealed"); err != nil {
		return err
	}
	logf("vacuumed the ledger tables in %s", time.Since(started).Round(time.Second))
	return nil
}

// auditQuery is one auditor request whose time the scenario compares.
type auditQuery struct {
	name, measure string
	path          func(ctx context.Context, a *auditDB) (string, error)
	// check validates the first response, so a route that ignores a
	// parameter cannot pass as fast.
	check func(ctx context.Context, a *auditDB, body []byte) error
	// bound is true for the queries whose time at the large size must stay
	// within twice the time at the small size.
	bound bool
}

// middleOfHistory is an instant half a second after the middle bulk
// transaction, so no entry sits exactly on it whatever the route's
// inclusivity.
func middleOfHistory(a *auditDB) time.Time {
	return a.loader.effectiveAt(a.loader.loaded / 2).Add(500 * time.Millisecond)
}

var auditQueries = []auditQuery{
	{
		name: "entries page", measure: "first page of 50 entries", bound: true,
		path: func(context.Context, *auditDB) (string, error) { return "/v1/ledger/entries?limit=50", nil },
		check: func(_ context.Context, _ *auditDB, body []byte) error {
			return checkEntries(body, 0, "")
		},
	},
	{
		name: "entries page", measure: "page of 50 " + statementAccount + " entries after a cursor in the middle", bound: true,
		path: func(ctx context.Context, a *auditDB) (string, error) {
			cursor, err := a.middleEntry(ctx)
			return fmt.Sprintf("/v1/ledger/entries?accountId=%s&startingAfter=le_%d&limit=50", statementAccount, cursor), err
		},
		check: func(ctx context.Context, a *auditDB, body []byte) error {
			cursor, err := a.middleEntry(ctx)
			if err != nil {
				return err
			}
			return checkEntries(body, cursor, statementAccount)
		},
	},
	{
		name: "balance as of", measure: "balance of " + statementAccount + " as of the middle of the history", bound: true,
		path: func(_ context.Context, a *auditDB) (string, error) {
			return "/v1/ledger/accounts/" + statementAccount + "/balance?asOf=" + url.QueryEscape(middleOfHistory(a).Format(time.RFC3339Nano)), nil
		},
		check: checkBalance,
	},
	{
		name: "trial balance", measure: "trial balance as of the middle of the history",
		path: func(_ context.Context, a *auditDB) (string, error) {
			return "/v1/ledger/trial-balance?asOf=" + url.QueryEscape(middleOfHistory(a).Format(time.RFC3339Nano)), nil
		},
		check: func(_ context.Context, _ *auditDB, body []byte) error {
			var tb struct {
				Balanced   bool  `json:"balanced"`
				Currencies []any `json:"currencies"`
			}
			if err := json.Unmarshal(body, &tb); err != nil {
				return err
			}
			if !tb.Balanced || len(tb.Currencies) == 0 {
				return fmt.Errorf("trial balance is not balanced or lists no currency: %s", truncate(string(body), 300))
			}
			return nil
		},
	},
}

// checkEntries checks a page of 50 entries, all after cursor and, when
// account is set, all of that account.
func checkEntries(body []byte, cursor int64, account string) error {
	var page struct {
		Data []struct {
			ID      string `json:"id"`
			Account string `json:"account"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &page); err != nil {
		return err
	}
	if len(page.Data) != 50 {
		return fmt.Errorf("the page has %d entries, want 50", len(page.Data))
	}
	for _, e := range page.Data {
		id, err := strconv.ParseInt(strings.TrimPrefix(e.ID, "le_"), 10, 64)
		if err != nil || id <= cursor {
			return fmt.Errorf("entry %s is not after the cursor le_%d", e.ID, cursor)
		}
		if account != "" && e.Account != account {
			return fmt.Errorf("entry %s is of account %s, want %s", e.ID, e.Account, account)
		}
	}
	return nil
}

// checkBalance compares the posted balance with the sum of the entries
// effective up to the instant, whatever sign convention the route uses.
func checkBalance(ctx context.Context, a *auditDB, body []byte) error {
	var balance struct {
		Balances []struct {
			Currency    string `json:"currency"`
			PostedCents int64  `json:"postedCents"`
		} `json:"balances"`
	}
	if err := json.Unmarshal(body, &balance); err != nil {
		return err
	}
	var want int64
	err := a.pool.QueryRow(ctx, `SELECT coalesce(sum(amount), 0) FROM ledger_entries WHERE account_id = $1 AND effective_at <= $2`,
		statementAccount, middleOfHistory(a)).Scan(&want)
	if err != nil {
		return err
	}
	if len(balance.Balances) != 1 || abs(balance.Balances[0].PostedCents) != abs(want) {
		return fmt.Errorf("balance %s, want posted %d usd: %s", statementAccount, abs(want), truncate(string(body), 300))
	}
	return nil
}

func abs(v int64) int64 {
	if v < 0 {
		return -v
	}
	return v
}

// auditScenario times the auditor's queries on a ledger of the small and
// of the large size.
func (b *bench) auditScenario(ctx context.Context) error {
	a, err := b.openAuditDB(ctx)
	if err != nil {
		return err
	}

	sizes := []int{b.cfg.smallLedger, b.cfg.largeLedger}
	times := make([]map[int]time.Duration, len(sizes))
	var missing []string
	for si, entries := range sizes {
		if err := a.loader.loadTo(ctx, entries/2); err != nil {
			return err
		}
		var total int
		if err := a.pool.QueryRow(ctx, `SELECT count(*) FROM ledger_entries`).Scan(&total); err != nil {
			return err
		}
		if total != entries {
			return fmt.Errorf("the audit ledger contains %d entries, want %d", total, entries)
		}
		if err := sealBulk(ctx, a.url); err != nil {
			return err
		}
		if err := waitSealed(ctx, a.pool); err != nil {
			return err
		}
		if err := vacuumLedger(ctx, a.pool); err != nil {
			return err
		}
		times[si] = map[int]time.Duration{}
		for qi, q := range auditQueries {
			path, err := q.path(ctx, a)
			if err != nil {
				return err
			}
			d, err := b.timeQuery(ctx, a, path, q)
			var apiErr *apiError
			if errors.As(err, &apiErr) && apiErr.status == http.StatusNotFound {
				if si == 0 {
					missing = append(missing, path)
				}
				continue
			}
			if err != nil {
				return fmt.Errorf("%s at %d entries: %w", q.name, total, err)
			}
			times[si][qi] = d
		}
		logf("auditor queries timed at %d entries", total)
	}

	for qi, q := range auditQueries {
		small, okSmall := times[0][qi]
		large, okLarge := times[1][qi]
		if !okSmall || !okLarge {
			continue
		}
		row := resultRow{
			scenario: "auditor queries", measure: fmt.Sprintf("%s: %s, median ms", q.name, q.measure),
			appLabel: fmt.Sprintf("%d entries", sizes[1]), baseLabel: fmt.Sprintf("%d entries", sizes[0]), unit: "ms",
			app: ms(large), base: ms(small), target: "report",
		}
		if q.bound {
			// The ratio is time at the large size over time at the small
			// one, so the target is an upper bound: pass when ≤ 2.
			row.target = "time ≤ 2× (ratio ≤ 2)"
			row.maxRatio = 2
		}
		b.addRatio(row)
		if row.failed() || (!q.bound && row.ratio() > 2) {
			b.explainLater(ctx, a, qi, sizes[1])
		}
	}
	for _, p := range missing {
		b.note("The auditor route %s answered 404, so it was not measured.", p)
	}
	return nil
}

// explainLater adds the plan of a slow auditor query to the report and
// queues an in-process rerun of its reader call for profiling.
func (b *bench) explainLater(ctx context.Context, a *auditDB, qi, entries int) {
	q := auditQueries[qi]
	title := fmt.Sprintf("%s: %s at %d entries", q.name, q.measure, entries)
	plan, err := b.explainAudit(ctx, a, qi)
	if err != nil {
		b.note("Explaining %s failed: %v", title, err)
	} else {
		b.section("Query plan: "+title, plan)
	}
	b.profiles = append(b.profiles, pendingProfile{name: title + ", reader called in-process", databaseBound: true, run: func(ctx context.Context) error {
		pool, err := newPoolOn(ctx, a.url, 0, false)
		if err != nil {
			return err
		}
		defer pool.Close()
		for range b.cfg.queryRepeats {
			if err := readAudit(ctx, pool, a, qi); err != nil {
				return err
			}
		}
		return nil
	}})
}

// middleEntry returns the id of the middle platform_cash entry.
func (a *auditDB) middleEntry(ctx context.Context) (int64, error) {
	var id int64
	err := a.pool.QueryRow(ctx, `
		SELECT id FROM ledger_entries WHERE account_id = $1 ORDER BY id
		OFFSET (SELECT count(*) / 2 FROM ledger_entries WHERE account_id = $1) LIMIT 1`, statementAccount).Scan(&id)
	return id, err
}

// timeQuery checks the response of path, then returns the median time of
// queryRepeats GET requests after two untimed ones.
func (b *bench) timeQuery(ctx context.Context, a *auditDB, path string, q auditQuery) (time.Duration, error) {
	var body json.RawMessage
	if _, err := a.svc.call(ctx, http.MethodGet, path, a.token, nil, &body); err != nil {
		return 0, err
	}
	if err := q.check(ctx, a, body); err != nil {
		return 0, fmt.Errorf("GET %s: %w", path, err)
	}
	var samples []time.Duration
	for i := range b.cfg.queryRepeats + 1 {
		start := time.Now()
		if _, err := a.svc.call(ctx, http.MethodGet, path, a.token, nil, nil); err != nil {
			return 0, err
		}
		if i >= 1 {
			samples = append(samples, time.Since(start))
		}
	}
	return percentile(samples, 50), nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// exportScenario streams the CSV statement of platform_cash with every
// bulk transaction loaded, from a freshly started service, and reports the
// service's memory growth: VmHWM after the export minus VmRSS before it.
func (b *bench) exportScenario(ctx context.Context) error {
	a, err := b.openAuditDB(ctx)
	if err != nil {
		return err
	}
	if err := a.loader.loadTo(ctx, b.cfg.statementEntries); err != nil {
		return err
	}
	if err := sealBulk(ctx, a.url); err != nil {
		return err
	}
	if err := waitSealed(ctx, a.pool); err != nil {
		return err
	}
	if err := vacuumLedger(ctx, a.pool); err != nil {
		return err
	}

	// A fresh process, so VmHWM reflects this export and not earlier load.
	a.svc.proc.stop()
	if a.svc, err = b.env.startService(ctx, a.url); err != nil {
		return err
	}
	path := "/v1/ledger/accounts/" + statementAccount + "/statement"
	if _, err := a.svc.call(ctx, http.MethodGet, "/v1/ledger/entries?limit=1", a.token, nil, nil); err != nil {
		return fmt.Errorf("warm-up request: %w", err)
	}
	before, _, err := memory(a.svc.proc.pid())
	if err != nil {
		return err
	}
	sampler := sampleMemory(a.svc.proc.pid(), 50*time.Millisecond)
	start := time.Now()
	lines, err := a.streamCSV(ctx, path)
	elapsed := time.Since(start)
	peak, sampleErr := sampler.stop()
	var apiErr *apiError
	if errors.As(err, &apiErr) && apiErr.status == http.StatusNotFound {
		b.note("The statement route %s answered 404, so the export was not measured.", path)
		return nil
	}
	if err != nil {
		return err
	}
	if sampleErr != nil {
		return sampleErr
	}
	_, hwm, err := memory(a.svc.proc.pid())
	if err != nil {
		return err
	}
	if lines < b.cfg.statementEntries {
		return fmt.Errorf("the statement has %d lines, want at least %d entries", lines, b.cfg.statementEntries)
	}
	b.addAbsolute(resultRow{
		scenario: "export", measure: fmt.Sprintf("memory growth of billingd serve streaming a CSV statement of %d entries", b.cfg.statementEntries),
		unit: "MiB", value: mib(hwm - before), limit: 64, target: "< 64 MiB",
		detail: fmt.Sprintf("VmRSS %.1f MiB before, VmHWM %.1f MiB after, peak VmRSS sampled every 50 ms %.1f MiB; %d lines in %s (%.0f lines/s)",
			mib(before), mib(hwm), mib(peak), lines, elapsed.Round(time.Millisecond), float64(lines)/elapsed.Seconds()),
	})
	return nil
}

// streamCSV reads a CSV statement to its end and returns its line count.
func (a *auditDB) streamCSV(ctx context.Context, path string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.svc.base+path, nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+a.token)
	req.Header.Set("Accept", "text/csv")
	client := &http.Client{Timeout: 30 * time.Minute}
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return 0, &apiError{status: resp.StatusCode, body: string(body)}
	}
	scanner := bufio.NewScanner(resp.Body)
	lines := 0
	for scanner.Scan() {
		lines++
	}
	return lines, scanner.Err()
}
