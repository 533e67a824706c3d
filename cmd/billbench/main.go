// Command billbench measures TaskPod Billing against the ceiling of its own
// database: each scenario runs the application and a baseline that sends
// the same SQL statements, and the same Stripe emulator requests, with pgx
// and net/http directly. Speed is reported as the ratio of the two, measured
// in the same run on the same machine; memory limits are absolute.
//
// It creates and migrates its own database, builds billingd, runs the Stripe
// emulator and the service as separate processes on free loopback ports,
// and writes docs/benchmarks.md. With -short it runs small sizes for a few
// seconds per scenario, checks that every scenario still works, asserts
// nothing about timings and writes no file unless -out is given.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// config sets the sizes of a run.
type config struct {
	short bool
	// duration is the length of one timed round of a closed-loop load.
	duration time.Duration
	// rounds is how many interleaved rounds each side of a ratio runs.
	rounds int
	// relayTasks is how many completions each relay saturation round drains.
	relayTasks int
	// latencyTasks is how many paced completions the latency run sends.
	latencyTasks int
	// smallLedger and largeLedger are the entry counts of the auditor runs.
	smallLedger, largeLedger int
	// statementEntries is the entry count of the exported account.
	statementEntries int
	// queryRepeats is how many times each auditor query is timed.
	queryRepeats int
	// profileAll profiles the in-process reruns of the ledger, task and
	// relay scenarios even when they meet their targets.
	profileAll bool
}

func shortConfig() config {
	return config{
		short: true, duration: time.Second, rounds: 1, relayTasks: 10, latencyTasks: 6,
		smallLedger: 1_000, largeLedger: 2_000, statementEntries: 2_000, queryRepeats: 3,
	}
}

func longConfig() config {
	return config{
		duration: 3 * time.Second, rounds: 3, relayTasks: 200, latencyTasks: 150,
		smallLedger: 10_000, largeLedger: 1_000_000, statementEntries: 1_000_000, queryRepeats: 15,
	}
}

func main() {
	short := flag.Bool("short", false, "run small sizes for a few seconds per scenario and assert nothing about timings")
	out := flag.String("out", "", "write the Markdown report to this file (default docs/benchmarks.md, or none with -short)")
	keep := flag.Bool("keep", false, "keep the benchmark database and temporary files for inspection")
	only := flag.String("only", "", "comma-separated scenarios to run: ledger, tasks, relay, audit, export (default all)")
	profileAll := flag.Bool("profile", false, "profile the in-process reruns of the ledger, task and relay scenarios even when they meet their targets")
	flag.Parse()

	cfg := longConfig()
	if *short {
		cfg = shortConfig()
	}
	cfg.profileAll = *profileAll
	if *out == "" && !*short {
		*out = "docs/benchmarks.md"
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	code := 0
	if err := run(ctx, cfg, *out, *keep, *only); err != nil {
		fmt.Fprintln(os.Stderr, "billbench:", err)
		code = 1
	}
	stop()
	os.Exit(code)
}

func run(ctx context.Context, cfg config, outPath string, keep bool, only string) error {
	started := time.Now()
	e, err := setupEnv(ctx, keep)
	if e != nil {
		defer e.close()
	}
	if err != nil {
		return err
	}

	b := &bench{cfg: cfg, env: e}
	// Runs before e.close, also when a scenario fails or the run is
	// interrupted, so no billingd serve outlives the run.
	defer b.stopAll()
	b.machine = describeMachine(ctx, e.pool)
	logf("database %s at migration %d; emulator pid %d at %s", e.dbName, e.migration, e.emulator.pid(), e.emulatorURL)

	scenarios := []struct {
		name string
		run  func(context.Context) error
	}{
		{"ledger", b.ledgerScenario},
		{"tasks", b.tasksScenario},
		{"relay", b.relayScenario},
		{"audit", b.auditScenario},
		{"export", b.exportScenario},
	}
	selected := map[string]bool{}
	for _, name := range strings.Split(only, ",") {
		if name = strings.TrimSpace(name); name != "" {
			selected[name] = true
		}
	}

	var failed []string
	for _, s := range scenarios {
		if len(selected) > 0 && !selected[s.name] {
			continue
		}
		logf("scenario %s", s.name)
		t := time.Now()
		if err := s.run(ctx); err != nil {
			logf("scenario %s failed: %v", s.name, err)
			failed = append(failed, s.name)
			b.failure(s.name, err)
		}
		logf("scenario %s took %s", s.name, time.Since(t).Round(time.Second))
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	b.stopService()
	if b.audit != nil && b.audit.svc != nil {
		b.audit.svc.proc.stop()
		b.audit.svc = nil
	}
	if !cfg.short || cfg.profileAll {
		b.runProfiles(ctx)
	}
	b.elapsed = time.Since(started)

	fmt.Print(b.table())
	if outPath != "" {
		if err := writeReport(outPath, b.markdown()); err != nil {
			return err
		}
		logf("wrote %s", outPath)
	}
	if len(failed) > 0 {
		return fmt.Errorf("scenarios failed: %s", strings.Join(failed, ", "))
	}
	return nil
}

// stopAll stops the services the run started and closes the audit pool.
func (b *bench) stopAll() {
	b.stopService()
	if b.audit == nil {
		return
	}
	if b.audit.svc != nil {
		b.audit.svc.proc.stop()
		b.audit.svc = nil
	}
	b.audit.pool.Close()
	b.audit = nil
}

// bench carries the environment and the results of one run.
type bench struct {
	cfg     config
	env     *env
	machine machine
	elapsed time.Duration

	rows     []resultRow
	sections []section
	notes    []string
	profiles []pendingProfile

	// svc is the running billingd serve process shared by the HTTP scenarios.
	svc  *service
	fix  *fixtures
	tmpl *taskTemplates
	// appTasks and baseTasks are authorized tasks left by the task
	// scenario, for the relay scenario to complete.
	appTasks, baseTasks taskPool
	audit               *auditDB
}

// newPool opens a pool on the benchmark database with maxConns connections
// (0 keeps pgxpool's default, the service's setting). A traced pool records
// the statements of contexts that carry a recorder.
func (b *bench) newPool(ctx context.Context, maxConns int, traced bool) (*pgxpool.Pool, error) {
	return newPoolOn(ctx, b.env.databaseURL, maxConns, traced)
}

func newPoolOn(ctx context.Context, databaseURL string, maxConns int, traced bool) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(databaseURL)
	if err != nil {
		return nil, err
	}
	if maxConns > 0 {
		cfg.MaxConns = int32(maxConns)
	}
	if traced {
		cfg.ConnConfig.Tracer = sqlTracer{}
	}
	return pgxpool.NewWithConfig(ctx, cfg)
}

// Markers around the generated part of the report. Text outside them, such
// as a hand-written analysis of the results, is kept when a run rewrites
// the file.
const (
	generatedBegin = "<!-- generated by billbench: begin -->"
	generatedEnd   = "<!-- generated by billbench: end -->"
)

// writeReport replaces the generated part of the file at path, or writes
// a new file when it has no markers.
func writeReport(path, generated string) error {
	block := generatedBegin + "\n" + generated + generatedEnd + "\n"
	old, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		return err
	}
	text := string(old)
	begin, end := strings.Index(text, generatedBegin), strings.Index(text, generatedEnd)
	if begin < 0 || end < begin {
		return os.WriteFile(path, []byte(block), 0o644)
	}
	text = text[:begin] + block + strings.TrimPrefix(text[end+len(generatedEnd):], "\n")
	return os.WriteFile(path, []byte(text), 0o644)
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s billbench: %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}
