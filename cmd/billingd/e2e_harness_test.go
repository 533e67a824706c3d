package main

// Harness of the end-to-end tests. It builds billingd and runs the Stripe
// emulator and one or more `billingd serve` processes on their own loopback
// ports and databases. The tests drive them through the public API like a
// client and compare the service's ledger with what the emulator recorded.
//
// Each long test has a short mode, the default for CI, and a long mode for
// TEST_LONG=1 (make test TEST_LONG=1) with more tasks and more crashes.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/taskpod/billing/adapters/postgres/pgtest"
)

// longMode reports whether TEST_LONG=1 selects the long runs.
func longMode() bool { return os.Getenv("TEST_LONG") == "1" }

// pick returns short in the default mode and long under TEST_LONG=1.
func pick(short, long int) int {
	if longMode() {
		return long
	}
	return short
}

// hungAfter bounds every wait of these tests. It only stops a hung test;
// no assertion depends on how fast anything is.
const hungAfter = 3 * time.Minute

// waitFor polls cond until it returns nil and fails the test with cond's
// last error once hungAfter has passed.
func waitFor(t *testing.T, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(hungAfter)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting until %s: %v", what, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// buildBillingd compiles this package into a temporary directory and
// returns the binary's path.
func buildBillingd(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "billingd")
	goTool := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(goTool); err != nil {
		goTool = "go"
	}
	cmd := exec.Command(goTool, "build", "-o", bin, ".")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build billingd: %v\n%s", err, out)
	}
	return bin
}

// freeAddr returns a loopback host:port that was free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// newDatabase creates an empty database that is dropped when the test ends.
func newDatabase(t *testing.T, prefix string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	name, err := pgtest.CreateDatabase(ctx, prefix)
	if err != nil {
		t.Fatalf("create database: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := pgtest.DropDatabase(ctx, name); err != nil {
			t.Errorf("drop database %s: %v", name, err)
		}
	})
	return pgtest.DatabaseURL(name)
}

// process is one running billingd command whose output goes to a log file.
type process struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	exited  chan struct{}
}

func startProcess(t *testing.T, name, bin string, env []string, args ...string) *process {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), name+".log")
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	// Only what the test sets: an inherited STRIPE_SECRET_KEY or
	// DATABASE_URL must never reach the service under test.
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}, env...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		logFile.Close()
		t.Fatalf("start %s: %v", name, err)
	}
	p := &process{name: name, cmd: cmd, logPath: logPath, exited: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		logFile.Close()
		close(p.exited)
	}()
	t.Cleanup(func() {
		p.stop()
		if t.Failed() {
			t.Logf("last lines of %s:\n%s", name, tail(logPath, 40))
		}
		keepLog(t, logPath)
	})
	return p
}

// kill ends the process with SIGKILL, as a crash would, and waits for it.
func (p *process) kill() {
	if p.running() {
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
	}
	<-p.exited
}

// stop sends SIGTERM and kills the process if it has not exited after 15 s.
func (p *process) stop() {
	if !p.running() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(15 * time.Second):
		p.kill()
	}
}

func (p *process) running() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// keepLog copies a process log into E2E_LOG_DIR when that is set, because
// t.TempDir and the logs in it are gone after the test.
func keepLog(t *testing.T, path string) {
	dir := os.Getenv("E2E_LOG_DIR")
	if dir == "" {
		return
	}
	b, err := os.ReadFile(path)
	if err == nil {
		name := strings.ReplaceAll(t.Name(), "/", "_") + "-" + filepath.Base(path)
		err = os.WriteFile(filepath.Join(dir, name), b, 0o600)
	}
	if err != nil {
		t.Logf("keep log %s: %v", path, err)
	}
}

func tail(path string, lines int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	all := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	return strings.Join(all, "\n")
}

// cluster is one test's world: a Stripe emulator process, the service's
// database, and the serve processes started on it.
type cluster struct {
	t       *testing.T
	bin     string
	dbURL   string
	emuAddr string
	emu     *process
	db      *pgxpool.Pool
	// env is added to every serve process, after the defaults.
	env     []string
	serves  int
	logs    []string
	admin   string
	auditor string
}

// TestE2E builds billingd once and runs each end-to-end scenario with its
// own emulator process and databases, one scenario at a time. Run one with
// go test -run 'TestE2E/Chaos' ./cmd/billingd.
func TestE2E(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs billingd processes")
	}
	bin := buildBillingd(t)
	t.Run("CrashRecovery", func(t *testing.T) { testCrashRecovery(t, bin) })
	t.Run("Chaos", func(t *testing.T) { testChaos(t, bin) })
	t.Run("TwoInstances", func(t *testing.T) { testTwoInstances(t, bin) })
	t.Run("PoisonMessageRequeue", func(t *testing.T) { testPoisonMessageRequeue(t, bin) })
	t.Run("RetryTransfer", func(t *testing.T) { testRetryTransfer(t, bin) })
}

// newCluster starts the emulator for one scenario run with bin. env
// overrides serve settings such as OUTBOX_MAX_ATTEMPTS for the scenario.
func newCluster(t *testing.T, bin string, env ...string) *cluster {
	t.Helper()
	c := &cluster{t: t, bin: bin, dbURL: newDatabase(t, "e2e"), emuAddr: freeAddr(t), env: env}
	emuDB := newDatabase(t, "e2e_emu")
	c.emu = startProcess(t, "stripe-emulator", c.bin, []string{
		"DATABASE_URL=" + emuDB, "STRIPE_EMULATOR_ADDR=" + c.emuAddr, "LOG_LEVEL=warn",
	}, "stripe-emulator")
	waitFor(t, "the emulator answers", func() error {
		if !c.emu.running() {
			t.Fatalf("the emulator exited:\n%s", tail(c.emu.logPath, 20))
		}
		_, err := c.emulatorJSON(http.MethodGet, "/_emulator/faults", nil, nil)
		return err
	})
	return c
}

// server is one running `billingd serve` and its API's base URL.
type server struct {
	*process
	base string
}

// startServe runs `billingd serve` on a new port and waits until it is
// ready. extra overrides the cluster's settings for this process only.
func (c *cluster) startServe(extra ...string) *server {
	c.t.Helper()
	c.serves++
	addr := freeAddr(c.t)
	// A killed process leaves its step leases for twice STRIPE_TIMEOUT
	// (4 s). The default 12 relay attempts at these waits last at least
	// about 6.8 s, so a step that is only busy is not quarantined.
	env := append([]string{
		"DATABASE_URL=" + c.dbURL, "LISTEN_ADDR=" + addr, "STRIPE_EMULATOR_ADDR=" + c.emuAddr,
		"LOG_LEVEL=info", "OUTBOX_BASE_BACKOFF=100ms", "OUTBOX_MAX_BACKOFF=1s", "STRIPE_TIMEOUT=2s",
		"SHUTDOWN_TIMEOUT=10s",
	}, c.env...)
	env = append(env, extra...)

	p := startProcess(c.t, fmt.Sprintf("serve-%d", c.serves), c.bin, env, "serve")
	c.logs = append(c.logs, p.logPath)
	s := &server{process: p, base: "http://" + addr}
	waitFor(c.t, s.name+" is ready", func() error {
		if !p.running() {
			c.t.Fatalf("%s exited during start:\n%s", s.name, tail(p.logPath, 30))
		}
		res, err := http.Get(s.base + "/readyz")
		if err != nil {
			return err
		}
		res.Body.Close()
		if res.StatusCode != http.StatusOK {
			return fmt.Errorf("readyz: %d", res.StatusCode)
		}
		return nil
	})
	if c.db == nil {
		c.connect()
	}
	return s
}

// connect opens the test's own view of the service database, once serve
// has created and migrated it, and mints the admin and auditor tokens.
func (c *cluster) connect() {
	pool, err := pgxpool.New(context.Background(), c.dbURL)
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(pool.Close)
	c.db = pool
	c.admin = c.token("admin", "ops")
	c.auditor = c.token("auditor", "audit")
}

// token mints an API token with `billingd token create`.
func (c *cluster) token(role, subject string) string {
	c.t.Helper()
	cmd := exec.Command(c.bin, "token", "create", "--role", role, "--subject", subject)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "DATABASE_URL=" + c.dbURL, "LOG_LEVEL=warn"}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		c.t.Fatalf("billingd token create --role %s: %v\n%s", role, err, stderr.String())
	}
	return strings.TrimSpace(string(out))
}

// apiError is a response the test did not expect.
type apiError struct {
	status int
	body   string
}

func (e *apiError) Error() string { return fmt.Sprintf("HTTP %d: %s", e.status, e.body) }

// call sends one JSON request and decodes a 2xx response into out. Like a
// well-behaved client it waits out a 429 for the Retry-After seconds and
// sends the request again, because the rate limit rejects before any work.
func call(method, u, token string, body, out any) (int, error) {
	var payload []byte
	if body != nil {
		var err error
		if payload, err = json.Marshal(body); err != nil {
			return 0, err
		}
	}
	deadline := time.Now().Add(hungAfter)
	for {
		status, retryAfter, err := send(method, u, token, payload, out)
		if status != http.StatusTooManyRequests || time.Now().After(deadline) {
			return status, err
		}
		time.Sleep(retryAfter)
	}
}

// send makes one attempt of call and returns the wait that the Retry-After
// header of a 429 sets.
func send(method, u, token string, payload []byte, out any) (int, time.Duration, error) {
	var reader io.Reader
	if payload != nil {
		reader = bytes.NewReader(payload)
	}
	req, err := http.NewRequest(method, u, reader)
	if err != nil {
		return 0, 0, err
	}
	if payload != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	client := &http.Client{Timeout: 30 * time.Second}
	res, err := client.Do(req)
	if err != nil {
		return 0, 0, err
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	if err != nil {
		return res.StatusCode, 0, err
	}
	retryAfter := time.Second
	if secs, err := strconv.Atoi(res.Header.Get("Retry-After")); err == nil && secs > 0 {
		retryAfter = time.Duration(secs) * time.Second
	}
	if res.StatusCode/100 != 2 {
		return res.StatusCode, retryAfter, &apiError{status: res.StatusCode, body: string(raw)}
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			return res.StatusCode, 0, fmt.Errorf("decode %s %s: %w: %s", method, u, err, raw)
		}
	}
	return res.StatusCode, 0, nil
}

// mustCall is call that fails the test on any error.
func (c *cluster) mustCall(method, u, token string, body, out any) int {
	c.t.Helper()
	status, err := call(method, u, token, body, out)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, u, err)
	}
	return status
}

// emulatorJSON calls the emulator: its control API under /_emulator/ or,
// with form set, its Stripe API with a test key.
func (c *cluster) emulatorJSON(method, path string, body any, out any) (int, error) {
	return call(method, "http://"+c.emuAddr+path, "", body, out)
}

func (c *cluster) emulatorForm(path string, form url.Values) error {
	req, err := http.NewRequest(http.MethodPost, "http://"+c.emuAddr+path, strings.NewReader(form.Encode()))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer sk_test_e2e")
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		raw, _ := io.ReadAll(res.Body)
		return &apiError{status: res.StatusCode, body: string(raw)}
	}
	return nil
}

// fault is one rule of the emulator's POST /_emulator/faults.
type fault struct {
	Method           string  `json:"method,omitempty"`
	Path             string  `json:"path"`
	Status           int     `json:"status,omitempty"`
	Rate             float64 `json:"rate,omitempty"`
	DropResponseRate float64 `json:"dropResponseRate,omitempty"`
	LatencyMs        int64   `json:"latencyMs,omitempty"`
	Count            *int64  `json:"count,omitempty"`
	Seed             *uint64 `json:"seed,omitempty"`
}

func (c *cluster) addFault(f fault) {
	c.t.Helper()
	if _, err := c.emulatorJSON(http.MethodPost, "/_emulator/faults", f, nil); err != nil {
		c.t.Fatalf("add fault %+v: %v", f, err)
	}
}

func (c *cluster) clearFaults() {
	c.t.Helper()
	if _, err := c.emulatorJSON(http.MethodDelete, "/_emulator/faults", nil, nil); err != nil {
		c.t.Fatalf("clear faults: %v", err)
	}
}

// count runs a counting query on the service database.
func (c *cluster) count(query string, args ...any) int {
	c.t.Helper()
	var n int
	if err := c.db.QueryRow(context.Background(), query, args...).Scan(&n); err != nil {
		c.t.Fatalf("%s: %v", query, err)
	}
	return n
}

// paymentStatus reads a payment's status and transfer failure from the
// service database.
func (c *cluster) paymentStatus(paymentID string) (status, transferFailed string) {
	c.t.Helper()
	err := c.db.QueryRow(context.Background(), `SELECT status, transfer_failed_reason FROM payments WHERE id = $1`, paymentID).
		Scan(&status, &transferFailed)
	if err != nil {
		c.t.Fatalf("read payment %s: %v", paymentID, err)
	}
	return status, transferFailed
}

// stripeMutations returns how many POSTs to path changed state at the
// emulator; '*' in path matches one segment.
func (c *cluster) stripeMutations(path string) int64 {
	c.t.Helper()
	var out struct{ Requests, Mutations int64 }
	if _, err := c.emulatorJSON(http.MethodGet, "/_emulator/requests/count?method=POST&path="+url.QueryEscape(path), nil, &out); err != nil {
		c.t.Fatalf("count requests to %s: %v", path, err)
	}
	return out.Mutations
}

// logLines counts the lines of every serve log that contain text.
func (c *cluster) logLines(text string) int {
	c.t.Helper()
	n := 0
	for _, path := range c.logs {
		b, err := os.ReadFile(path)
		if err != nil {
			c.t.Fatal(err)
		}
		n += strings.Count(string(b), text)
	}
	return n
}

// errNotYet is returned by wait conditions that are still false.
var errNotYet = errors.New("not yet")
