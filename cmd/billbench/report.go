package main

import (
	"fmt"
	"strings"
	"time"
)

// resultRow is one line of the results table. A ratio row compares app
// with base and passes when app/base is within its bound; an absolute row
// passes when value < limit. A row with neither has no target and reports
// context.
type resultRow struct {
	scenario, measure   string
	appLabel, baseLabel string
	unit                string

	app, base float64
	// min is the lowest passing app/base ratio; maxRatio the highest.
	min, maxRatio float64

	absolute bool
	value    float64
	limit    float64

	target string
	detail string
}

func (r resultRow) ratio() float64 {
	if r.base == 0 {
		return 0
	}
	return r.app / r.base
}

// verdict returns "pass", "FAIL" or "—" when the row has no target.
func (r resultRow) verdict() string {
	switch {
	case r.absolute && r.limit > 0:
		return passFail(r.value < r.limit)
	case !r.absolute && r.min > 0:
		return passFail(r.ratio() >= r.min)
	case !r.absolute && r.maxRatio > 0:
		return passFail(r.ratio() <= r.maxRatio)
	}
	return "—"
}

func (r resultRow) failed() bool { return r.verdict() == "FAIL" }

func passFail(ok bool) string {
	if ok {
		return "pass"
	}
	return "FAIL"
}

func (b *bench) addRatio(r resultRow) {
	b.rows = append(b.rows, r)
	logf("%s, %s: %s %s, %s %s, ratio %.2f (%s) %s", r.scenario, r.measure, r.appLabel, formatValue(r.app, r.unit),
		r.baseLabel, formatValue(r.base, r.unit), r.ratio(), r.target, r.verdict())
}

func (b *bench) addAbsolute(r resultRow) {
	r.absolute = true
	b.rows = append(b.rows, r)
	logf("%s, %s: %s (%s) %s", r.scenario, r.measure, formatValue(r.value, r.unit), r.target, r.verdict())
}

// section is a titled block of details below the table.
type section struct {
	title, body string
}

func (b *bench) section(title, body string) {
	b.sections = append(b.sections, section{title, body})
}

func (b *bench) note(format string, args ...any) {
	b.notes = append(b.notes, fmt.Sprintf(format, args...))
}

// failure records a scenario that could not run to its end.
func (b *bench) failure(scenario string, err error) {
	b.note("The %s scenario did not finish: %v", scenario, err)
}

func formatValue(v float64, unit string) string {
	switch unit {
	case "/s":
		return fmt.Sprintf("%.1f/s", v)
	case "ms":
		return fmt.Sprintf("%.2f ms", v)
	case "MiB":
		return fmt.Sprintf("%.1f MiB", v)
	}
	return fmt.Sprintf("%.2f %s", v, unit)
}

func formatRates(rates []float64) string {
	parts := make([]string, len(rates))
	for i, r := range rates {
		parts[i] = fmt.Sprintf("%.1f", r)
	}
	return strings.Join(parts, ", ")
}

func formatDuration(d time.Duration) string {
	return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond))
}

func mib(bytes int64) float64 { return float64(bytes) / (1 << 20) }

// table renders the results as a Markdown table.
func (b *bench) table() string {
	var s strings.Builder
	s.WriteString("| scenario | measured | result | baseline | ratio | target | verdict |\n")
	s.WriteString("|---|---|---|---|---|---|---|\n")
	for _, r := range b.rows {
		verdict := r.verdict()
		if b.cfg.short && verdict != "—" {
			verdict += " (short run, not judged)"
		}
		if r.absolute {
			fmt.Fprintf(&s, "| %s | %s | %s | — | — | %s | %s |\n", r.scenario, r.measure, formatValue(r.value, r.unit), r.target, verdict)
			continue
		}
		ratio := "—"
		if r.base > 0 {
			ratio = fmt.Sprintf("%.2f", r.ratio())
		}
		fmt.Fprintf(&s, "| %s | %s | %s: %s | %s: %s | %s | %s | %s |\n", r.scenario, r.measure,
			r.appLabel, formatValue(r.app, r.unit), r.baseLabel, formatValue(r.base, r.unit), ratio, r.target, verdict)
	}
	return s.String()
}

// markdown renders the whole report.
func (b *bench) markdown() string {
	var s strings.Builder
	m := b.machine
	s.WriteString("# Benchmarks\n\n")
	s.WriteString("These numbers come from `make bench`, which runs `go run ./cmd/billbench` and rewrites this page.\n")
	s.WriteString("Each speed figure is a ratio to a baseline measured in the same run on the same machine.\n")
	s.WriteString("The baseline sends the same SQL statements with pgx, and the same Stripe emulator requests with net/http, with no domain code, HTTP API or relay in between.\n")
	s.WriteString("Absolute times are there for context only, because they depend on the machine and on what else runs on it.\n")
	s.WriteString("Memory limits are absolute.\n\n")

	s.WriteString("## Machine\n\n")
	fmt.Fprintf(&s, "- CPUs (nproc): %d, %s\n", m.CPUs, m.CPUModel)
	fmt.Fprintf(&s, "- Memory: %.1f GiB\n", m.MemoryGiB)
	fmt.Fprintf(&s, "- Kernel: Linux %s\n", m.Kernel)
	fmt.Fprintf(&s, "- Go: %s\n", m.GoVersion)
	fmt.Fprintf(&s, "- PostgreSQL: %s on 127.0.0.1:5432, shared with the development databases\n", m.PostgreSQL)
	fmt.Fprintf(&s, "- Load average at the start of the run (1, 5, 15 min): %s\n", m.LoadAverage)
	fmt.Fprintf(&s, "- Commit: %s\n", m.Commit)
	fmt.Fprintf(&s, "- Run time: %s\n\n", b.elapsed.Round(time.Second))

	s.WriteString("## Commands\n\n")
	s.WriteString("```sh\n")
	s.WriteString("make bench         # go run ./cmd/billbench: the full run, rewrites docs/benchmarks.md\n")
	s.WriteString("make bench-short   # go run ./cmd/billbench -short: small sizes, checks that every scenario works, part of make test\n")
	s.WriteString("```\n\n")
	s.WriteString("The run creates its own database on the server named by `TEST_DATABASE_URL` (default the local PostgreSQL), migrates it, builds `billingd` with `go build`, and starts `billingd stripe-emulator` and `billingd serve` as separate processes on free loopback ports, with no added emulator latency.\n")
	s.WriteString("The service runs with its default settings except `RATE_LIMIT_PER_SECOND=0`, because one benchmark client sends far more than the per-token limit allows an interactive client.\n")
	s.WriteString("It drops its databases at the end (`-keep` keeps them).\n\n")

	s.WriteString("## Results\n\n")
	s.WriteString(b.table())
	s.WriteString("\n")
	for _, r := range b.rows {
		if r.detail != "" {
			fmt.Fprintf(&s, "- %s, %s: %s\n", r.scenario, r.measure, r.detail)
		}
	}
	s.WriteString("\n")

	s.WriteString(method)
	if len(b.notes) > 0 {
		s.WriteString("## Notes\n\n")
		for _, n := range b.notes {
			fmt.Fprintf(&s, "- %s\n", n)
		}
		s.WriteString("\n")
	}
	for _, sec := range b.sections {
		fmt.Fprintf(&s, "## %s\n\n%s\n\n", sec.title, strings.TrimSpace(sec.body))
	}
	return s.String()
}

// method explains how each scenario measures; it is the same for every run.
const method = `## Method

Each ratio comes from interleaved rounds: the application and its baseline take turns, and each side's figure is the median of its rounds.
Interleaving spreads the noise of a shared machine over both sides instead of charging a burst to whichever side ran during it.
Before each relay round and after each bulk load, every committed ledger transaction is sealed and the tables involved get ` + "`VACUUM (ANALYZE)`" + `, as autovacuum would after that much churn.
So no timing depends on a sealing backlog or on when autovacuum last ran.

The baselines do not guess what the application sends.
billbench records the SQL statements of one operation of the application with a pgx tracer, and its Stripe requests with an HTTP transport, then replays them with fresh ids.
A replayed statement whose command tag differs from the recorded one, such as ` + "`UPDATE 0`" + ` for ` + "`UPDATE 1`" + `, stops the run, so a baseline cannot do less work than the application.
The recorded statements are listed at the end of this page.

- Ledger posting: one posting is one unit of work (` + "`Store.InTx`" + `) that appends a hold and the capture that resolves it through ` + "`Ledger().Append`" + `.
  These are two ledger transactions of three entries each: customer_authorizations, the writer's agent payable and platform_fee_revenue.
  Each writer has its own agent, and the pool has one connection per writer.
  The baseline replays the same statements in the same database transaction.
- Hot account: the same postings, against postings where customer_authorizations and platform_fee_revenue are replaced by accounts of each writer, so no two writers share an account.
- Create paid task: ` + "`POST /v1/tasks`" + ` against ` + "`billingd serve`" + `, one customer with a saved card per client, each answer checked to be 201 with the task matched and the payment authorized.
  The baseline replays the token check, every statement of the request and the emulator's PaymentIntent create-and-confirm request, with a pool of the service's default size.
  Its outbox rows go to a table of their own, so the service's relay does not run them.
- Completion to transfer: the relay's rate is measured by completing tasks through the API faster than the relay drains them, from the first completion to the last transfer recorded in the ledger, with two messages (capture, transfer) per completion.
  The baseline is a watermill-sql subscriber with the relay's settings (one message per query transaction, delete on acknowledgement, 200 ms polling) on a table of its own.
  Its handler replays the recorded statements and emulator requests of the capture and transfer steps.
  The latency run then completes tasks at half the measured rate and takes, per task, the time from the API's answer to the transfer's ` + "`recorded_at`" + `, both read from the same machine clock.
- Auditor queries: a second database holds only generated, balanced transactions of two entries (an agent payable and platform_cash, one second apart), inserted in bulk with the ledger's triggers on.
  Each query is checked once, then timed as the median of repeated requests to a service running on that database.
- Export: the CSV statement of platform_cash is streamed from a freshly started service, and the growth is VmHWM after the export minus VmRSS before it.
- Service memory: VmHWM of ` + "`billingd serve`" + ` (the emulator runs as its own process) read from ` + "`/proc/<pid>/status`" + ` after the 32-client runs.

`
