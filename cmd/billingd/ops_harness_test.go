package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/taskpod/billing/adapters/postgres/pgtest"
)

// The ops tests run the real billingd binary, built from this package, with
// its own database, its own loopback ports and a Stripe emulator started as
// `billingd stripe-emulator`, as an operator would run them.

// opsEmulatorKey is the key the tests use with the emulator, which accepts
// any key starting with sk_test_.
const opsEmulatorKey = "sk_test_ops_harness"

// opsEnv is one isolated deployment: a database, an emulator and a server.
type opsEnv struct {
	t      *testing.T
	bin    string
	env    []string
	apiURL string
	emuURL string
	client *http.Client
}

// newOpsEnv builds billingd, creates a database and picks free ports.
// extraEnv entries (NAME=value) override the defaults.
func newOpsEnv(t *testing.T, extraEnv ...string) *opsEnv {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "billingd")
	build := exec.Command("go", "build", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build billingd: %v\n%s", err, out)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dbName, err := pgtest.CreateDatabase(ctx, "ops")
	if err != nil {
		t.Fatalf("create test database: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := pgtest.DropDatabase(ctx, dbName); err != nil {
			t.Logf("drop test database: %v", err)
		}
	})

	apiAddr, emuAddr := opsFreeAddr(t), opsFreeAddr(t)
	env := []string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + os.Getenv("HOME"),
		"DATABASE_URL=" + pgtest.DatabaseURL(dbName),
		"LISTEN_ADDR=" + apiAddr,
		"STRIPE_EMULATOR_ADDR=" + emuAddr,
		"LOG_LEVEL=info",
		// Keeps the drain after SIGTERM at one second.
		"SHUTDOWN_TIMEOUT=6s",
	}
	env = append(env, extraEnv...)
	return &opsEnv{
		t: t, bin: bin, env: env,
		apiURL: "http://" + apiAddr, emuURL: "http://" + emuAddr,
		client: &http.Client{Timeout: 30 * time.Second},
	}
}

// opsFreeAddr returns a loopback address with a port that was free a
// moment ago.
func opsFreeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("find a free port: %v", err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// opsProc is a running billingd process with its combined output.
type opsProc struct {
	name string
	cmd  *exec.Cmd
	out  *opsBuffer
	done chan struct{}
	err  error
}

// opsBuffer is a bytes.Buffer safe for the process's two output streams.
type opsBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *opsBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *opsBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// start runs billingd with args and stops it when the test ends. The output
// is printed only when the test fails.
func (e *opsEnv) start(name string, args ...string) *opsProc {
	e.t.Helper()
	p := &opsProc{name: name, cmd: exec.Command(e.bin, args...), out: &opsBuffer{}, done: make(chan struct{})}
	p.cmd.Env = e.env
	p.cmd.Stdout = p.out
	p.cmd.Stderr = p.out
	if err := p.cmd.Start(); err != nil {
		e.t.Fatalf("start billingd %s: %v", name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	e.t.Cleanup(func() {
		p.stop(10 * time.Second)
		if e.t.Failed() {
			e.t.Logf("output of billingd %s:\n%s", name, p.out.String())
		}
	})
	return p
}

// stop sends SIGTERM and, if the process outlives timeout, SIGKILL.
func (p *opsProc) stop(timeout time.Duration) {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(timeout):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// exited waits up to timeout for the process to end and returns its exit
// code, or -1 when it is still running.
func (p *opsProc) exited(timeout time.Duration) int {
	select {
	case <-p.done:
		return p.cmd.ProcessState.ExitCode()
	case <-time.After(timeout):
		return -1
	}
}

// startEmulator runs `billingd stripe-emulator` and waits until it accepts
// connections.
func (e *opsEnv) startEmulator() *opsProc {
	e.t.Helper()
	p := e.start("stripe-emulator", "stripe-emulator")
	e.waitFor("the Stripe emulator to listen", 30*time.Second, func() bool {
		resp, err := e.client.Get(e.emuURL + "/_emulator/clock")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return p
}

// startServer runs `billingd serve` and waits until /readyz returns 200.
func (e *opsEnv) startServer() *opsProc {
	e.t.Helper()
	p := e.start("serve", "serve")
	e.waitFor("billingd to be ready", 60*time.Second, func() bool {
		select {
		case <-p.done:
			e.t.Fatalf("billingd serve exited during start: %v\n%s", p.err, p.out.String())
		default:
		}
		resp, err := e.client.Get(e.apiURL + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return p
}

// waitFor polls cond every 50 ms until it holds or timeout passes.
func (e *opsEnv) waitFor(what string, timeout time.Duration, cond func() bool) {
	e.t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			e.t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// mintToken runs `billingd token create` and returns the printed token.
func (e *opsEnv) mintToken(role, subject string) string {
	e.t.Helper()
	cmd := exec.Command(e.bin, "token", "create", "--role", role, "--subject", subject)
	cmd.Env = e.env
	out, err := cmd.Output()
	if err != nil {
		e.t.Fatalf("billingd token create --role %s: %v", role, err)
	}
	return strings.TrimSpace(string(out))
}

// apiResult is one API response.
type apiResult struct {
	Status int
	Body   map[string]any
	Raw    string
}

// call sends a JSON request to the API and decodes a JSON object response.
func (e *opsEnv) call(method, path, token string, body any) apiResult {
	e.t.Helper()
	res, err := e.tryCall(method, path, token, body)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	return res
}

// tryCall is call for goroutines: it returns transport errors instead of
// failing the test.
func (e *opsEnv) tryCall(method, path, token string, body any) (apiResult, error) {
	var reader io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return apiResult{}, err
		}
		reader = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, e.apiURL+path, reader)
	if err != nil {
		return apiResult{}, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := e.client.Do(req)
	if err != nil {
		return apiResult{}, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return apiResult{Status: resp.StatusCode}, fmt.Errorf("read response body: %w", err)
	}
	res := apiResult{Status: resp.StatusCode, Raw: string(raw)}
	if len(raw) > 0 && raw[0] == '{' {
		if err := json.Unmarshal(raw, &res.Body); err != nil {
			return res, fmt.Errorf("decode response %q: %w", raw, err)
		}
	}
	return res, nil
}

// expect fails the test unless the response has status want.
func (r apiResult) expect(t *testing.T, want int, what string) apiResult {
	t.Helper()
	if r.Status != want {
		t.Fatalf("%s: status %d, want %d: %s", what, r.Status, want, r.Raw)
	}
	return r
}

// str returns the string at a dotted path of the body, or "".
func (r apiResult) str(path string) string {
	var v any = r.Body
	for _, key := range strings.Split(path, ".") {
		m, ok := v.(map[string]any)
		if !ok {
			return ""
		}
		v = m[key]
	}
	s, _ := v.(string)
	return s
}

// emulator sends a JSON request to the emulator's control API.
func (e *opsEnv) emulator(method, path string, body any) {
	e.t.Helper()
	var reader io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		reader = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, e.emuURL+path, reader)
	req.Header.Set("Content-Type", "application/json")
	resp, err := e.client.Do(req)
	if err != nil {
		e.t.Fatalf("emulator %s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 300 {
		e.t.Fatalf("emulator %s %s: status %d: %s", method, path, resp.StatusCode, raw)
	}
}

// opsRequestCount is the emulator's count of requests to matching paths.
type opsRequestCount struct {
	Requests  int `json:"requests"`
	Mutations int `json:"mutations"`
	Replays   int `json:"replays"`
}

// emulatorCount returns how many requests the emulator got for method and
// path, where "*" in path matches one segment.
func (e *opsEnv) emulatorCount(method, path string) opsRequestCount {
	e.t.Helper()
	q := url.Values{"method": {method}, "path": {path}}
	resp, err := e.client.Get(e.emuURL + "/_emulator/requests/count?" + q.Encode())
	if err != nil {
		e.t.Fatalf("count emulator requests: %v", err)
	}
	defer resp.Body.Close()
	var out opsRequestCount
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		e.t.Fatalf("decode emulator request count: %v", err)
	}
	return out
}

// stripeConfirm confirms an intent at the emulator, as Stripe.js would in
// the customer's browser.
func (e *opsEnv) stripeConfirm(path, paymentMethod string) {
	e.t.Helper()
	form := url.Values{"payment_method": {paymentMethod}}
	req, _ := http.NewRequest(http.MethodPost, e.emuURL+path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Authorization", "Bearer "+opsEmulatorKey)
	resp, err := e.client.Do(req)
	if err != nil {
		e.t.Fatalf("confirm %s at the emulator: %v", path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		e.t.Fatalf("confirm %s at the emulator: status %d: %s", path, resp.StatusCode, raw)
	}
}

// saveCard runs the SetupIntent flow for a customer and returns the
// SetupIntent's client secret.
func (e *opsEnv) saveCard(customer, paymentMethod string) string {
	e.t.Helper()
	setup := e.call(http.MethodPost, "/v1/billing/setup", customer, map[string]any{}).expect(e.t, http.StatusOK, "create SetupIntent")
	e.stripeConfirm("/v1/setup_intents/"+setup.str("setupIntentId")+"/confirm", paymentMethod)
	e.call(http.MethodPost, "/v1/billing/confirm-setup", customer, map[string]any{"setupIntentId": setup.str("setupIntentId")}).
		expect(e.t, http.StatusOK, "confirm setup")
	return setup.str("clientSecret")
}

// createAgent registers a paid agent priced in usd.
func (e *opsEnv) createAgent(admin, id string, priceCents int64) {
	e.t.Helper()
	e.call(http.MethodPost, "/v1/agents", admin, map[string]any{
		"id": id, "name": "Agent " + id, "priceCents": priceCents, "currency": "usd", "stripeAccountId": "acct_1" + id,
	}).expect(e.t, http.StatusCreated, "create agent "+id)
}

// createTask creates a task for agentID and returns the response.
func (e *opsEnv) createTask(customer, agentID string, maxPriceCents int64) apiResult {
	e.t.Helper()
	return e.call(http.MethodPost, "/v1/tasks", customer, map[string]any{
		"title": "Analyze this meal", "agentId": agentID, "maxPriceCents": maxPriceCents,
	}).expect(e.t, http.StatusCreated, "create task")
}

// waitPayment polls the task until its payment reaches status.
func (e *opsEnv) waitPayment(token, taskID, status string) apiResult {
	e.t.Helper()
	var last apiResult
	e.waitFor("task "+taskID+" payment "+status, 30*time.Second, func() bool {
		last = e.call(http.MethodGet, "/v1/tasks/"+taskID, token, nil)
		return last.str("payment.status") == status
	})
	return last
}

// opsScrape is one parsed /metrics response: sample values by series key
// (name{label="value",...}, labels sorted) and the family names present.
type opsScrape struct {
	values   map[string]float64
	families map[string]bool
}

// scrape reads /metrics.
func (e *opsEnv) scrape() opsScrape {
	e.t.Helper()
	resp, err := e.client.Get(e.apiURL + "/metrics")
	if err != nil {
		e.t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		e.t.Fatalf("parse /metrics: %v", err)
	}
	s := opsScrape{values: map[string]float64{}, families: map[string]bool{}}
	for name, f := range families {
		s.families[name] = true
		for _, m := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			switch {
			case m.Counter != nil:
				s.values[opsSeries(name, labels)] = m.GetCounter().GetValue()
			case m.Gauge != nil:
				s.values[opsSeries(name, labels)] = m.GetGauge().GetValue()
			case m.Histogram != nil:
				s.values[opsSeries(name+"_count", labels)] = float64(m.GetHistogram().GetSampleCount())
				s.values[opsSeries(name+"_sum", labels)] = m.GetHistogram().GetSampleSum()
			case m.Untyped != nil:
				s.values[opsSeries(name, labels)] = m.GetUntyped().GetValue()
			}
		}
	}
	return s
}

// opsSeries formats a series key with labels sorted by name.
func opsSeries(name string, labels map[string]string) string {
	keys := make([]string, 0, len(labels))
	for k := range labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s=%q", k, labels[k]))
	}
	return name + "{" + strings.Join(parts, ",") + "}"
}

// value returns a series' value, failing the test when the series is absent.
func (s opsScrape) value(t *testing.T, name string, labels ...string) float64 {
	t.Helper()
	m := map[string]string{}
	for i := 0; i+1 < len(labels); i += 2 {
		m[labels[i]] = labels[i+1]
	}
	key := opsSeries(name, m)
	v, ok := s.values[key]
	if !ok {
		t.Fatalf("series %s missing from /metrics", key)
	}
	return v
}

// sum adds the values of every series of a family.
func (s opsScrape) sum(name string) float64 {
	total := 0.0
	for key, v := range s.values {
		if strings.HasPrefix(key, name+"{") {
			total += v
		}
	}
	return total
}

// sumWhere adds the values of the series of a family whose labels contain
// match, such as `type="unverified"`.
func (s opsScrape) sumWhere(name, match string) float64 {
	total := 0.0
	for key, v := range s.values {
		if strings.HasPrefix(key, name+"{") && strings.Contains(key, match) {
			total += v
		}
	}
	return total
}
