package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/taskpod/billing/adapters/postgres"
	"github.com/taskpod/billing/adapters/postgres/pgtest"
	"github.com/taskpod/billing/migrations"
)

// env is the setup every scenario runs against: a fresh, migrated database,
// a billingd binary built for this run and the Stripe emulator running as
// its own process on a free loopback port.
type env struct {
	dir         string
	dbName      string
	databaseURL string
	pool        *pgxpool.Pool
	binary      string
	emulator    *process
	emulatorURL string
	migration   int
	keep        bool
	// extraDBs are further databases of the run, dropped with the first.
	extraDBs []string
}

// setupEnv creates the database, migrates it, builds billingd and starts
// the emulator. The caller must call close.
func setupEnv(ctx context.Context, keep bool) (*env, error) {
	dir, err := os.MkdirTemp("", "billbench-")
	if err != nil {
		return nil, err
	}
	e := &env{dir: dir, keep: keep}

	e.dbName, err = pgtest.CreateDatabase(ctx, "bench")
	if err != nil {
		return nil, fmt.Errorf("create benchmark database: %w", err)
	}
	e.databaseURL = pgtest.DatabaseURL(e.dbName)
	if e.pool, err = pgxpool.New(ctx, e.databaseURL); err != nil {
		return e, fmt.Errorf("connect to %s: %w", e.dbName, err)
	}
	if e.migration, err = postgres.Migrate(ctx, e.pool, migrations.FS); err != nil {
		return e, fmt.Errorf("migrate %s: %w", e.dbName, err)
	}

	e.binary = filepath.Join(dir, "billingd")
	build := exec.CommandContext(ctx, "go", "build", "-o", e.binary, "./cmd/billingd")
	build.Dir, err = moduleRoot()
	if err != nil {
		return e, err
	}
	if out, err := build.CombinedOutput(); err != nil {
		return e, fmt.Errorf("go build ./cmd/billingd: %w\n%s", err, out)
	}

	addr, err := freeAddr()
	if err != nil {
		return e, err
	}
	e.emulatorURL = "http://" + addr
	e.emulator, err = e.start(ctx, "emulator", []string{"stripe-emulator"},
		map[string]string{"DATABASE_URL": e.databaseURL, "STRIPE_EMULATOR_ADDR": addr}, e.emulatorURL+"/_emulator/clock")
	if err != nil {
		return e, err
	}
	return e, nil
}

// close stops the processes and drops the database unless keep is set.
func (e *env) close() {
	if e.emulator != nil {
		e.emulator.stop()
	}
	if e.pool != nil {
		e.pool.Close()
	}
	if e.keep {
		fmt.Fprintf(os.Stderr, "billbench: kept databases %s %s and %s\n", e.dbName, strings.Join(e.extraDBs, " "), e.dir)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, name := range append([]string{e.dbName}, e.extraDBs...) {
		if name == "" {
			continue
		}
		if err := pgtest.DropDatabase(ctx, name); err != nil {
			fmt.Fprintf(os.Stderr, "billbench: %v\n", err)
		}
	}
	os.RemoveAll(e.dir)
}

// createDatabase creates and migrates a further database for the run.
func (e *env) createDatabase(ctx context.Context) (string, *pgxpool.Pool, error) {
	name, err := pgtest.CreateDatabase(ctx, "bench")
	if err != nil {
		return "", nil, err
	}
	e.extraDBs = append(e.extraDBs, name)
	url := pgtest.DatabaseURL(name)
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		return "", nil, err
	}
	if _, err := postgres.Migrate(ctx, pool, migrations.FS); err != nil {
		pool.Close()
		return "", nil, fmt.Errorf("migrate %s: %w", name, err)
	}
	return url, pool, nil
}

// service starts `billingd serve` against databaseURL and the emulator
// process, with the service's default settings otherwise. The per-token
// rate limit is off, because one benchmark client sends far more than the
// limit allows an interactive client and a 429 would fail the run.
func (e *env) service(ctx context.Context, databaseURL string) (*process, string, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, "", err
	}
	base := "http://" + addr
	p, err := e.start(ctx, "service", []string{"serve"}, map[string]string{
		"DATABASE_URL":          databaseURL,
		"LISTEN_ADDR":           addr,
		"RATE_LIMIT_PER_SECOND": "0",
		"STRIPE_EMULATOR_ADDR":  strings.TrimPrefix(e.emulatorURL, "http://"),
	}, base+"/readyz")
	return p, base, err
}

// process is a child process of the benchmark.
type process struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan error
}

func (e *env) start(ctx context.Context, name string, args []string, vars map[string]string, readyURL string) (*process, error) {
	logPath := filepath.Join(e.dir, name+".log")
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(e.binary, args...)
	cmd.Env = childEnv(vars)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &process{name: name, cmd: cmd, log: logPath, done: make(chan error, 1)}
	go func() {
		p.done <- cmd.Wait()
		logFile.Close()
	}()

	deadline := time.Now().Add(2 * time.Minute)
	client := &http.Client{Timeout: time.Second}
	for {
		select {
		case err := <-p.done:
			p.done <- err
			return nil, fmt.Errorf("%s exited before it was ready: %v; log: %s", name, err, tail(logPath))
		default:
		}
		if resp, err := client.Get(readyURL); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p, nil
			}
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			p.stop()
			return nil, fmt.Errorf("%s not ready at %s within 2m; log: %s", name, readyURL, tail(logPath))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// childEnv is the environment of a child process: the benchmark's own,
// without any Stripe key, so Stripe is always the emulator, plus vars.
func childEnv(vars map[string]string) []string {
	var out []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		switch name {
		case "STRIPE_SECRET_KEY", "STRIPE_API_BASE", "DATABASE_URL", "LISTEN_ADDR", "STRIPE_EMULATOR_ADDR":
			continue
		}
		out = append(out, kv)
	}
	for k, v := range vars {
		out = append(out, k+"="+v)
	}
	return out
}

// stop sends SIGTERM and waits up to 30 s before killing the process.
func (p *process) stop() {
	if p == nil || p.cmd.Process == nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.done:
		p.done <- err
	case <-time.After(30 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

func (p *process) pid() int { return p.cmd.Process.Pid }

// memory returns VmRSS and VmHWM of a process in bytes, from /proc.
func memory(pid int) (rss, hwm int64, err error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	scanner := bufio.NewScanner(f)
	for scanner.Scan() {
		name, value, ok := strings.Cut(scanner.Text(), ":")
		if !ok || (name != "VmRSS" && name != "VmHWM") {
			continue
		}
		fields := strings.Fields(value)
		if len(fields) != 2 || fields[1] != "kB" {
			return 0, 0, fmt.Errorf("unexpected %s line in /proc/%d/status: %q", name, pid, value)
		}
		kb, err := strconv.ParseInt(fields[0], 10, 64)
		if err != nil {
			return 0, 0, err
		}
		if name == "VmRSS" {
			rss = kb * 1024
		} else {
			hwm = kb * 1024
		}
	}
	if rss == 0 || hwm == 0 {
		return 0, 0, errors.New("VmRSS or VmHWM missing from /proc/" + strconv.Itoa(pid) + "/status")
	}
	return rss, hwm, scanner.Err()
}

// memorySampler records the peak VmRSS of a process while it runs.
type memorySampler struct {
	stopCh chan struct{}
	done   chan struct{}
	peak   int64
	err    error
}

func sampleMemory(pid int, every time.Duration) *memorySampler {
	s := &memorySampler{stopCh: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		ticker := time.NewTicker(every)
		defer ticker.Stop()
		for {
			rss, _, err := memory(pid)
			if err != nil {
				s.err = err
				return
			}
			s.peak = max(s.peak, rss)
			select {
			case <-s.stopCh:
				return
			case <-ticker.C:
			}
		}
	}()
	return s
}

// stop ends sampling and returns the peak VmRSS seen.
func (s *memorySampler) stop() (int64, error) {
	close(s.stopCh)
	<-s.done
	return s.peak, s.err
}

func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("find a free loopback port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("run billbench inside the billing module, for example with make bench")
	}
	return filepath.Dir(mod), nil
}

// tail returns the last lines of a log file, for error messages.
func tail(path string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	if len(lines) > 10 {
		lines = lines[len(lines)-10:]
	}
	return strings.Join(lines, "\n")
}
