package main

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// opsRequest is one request of the load, with when it ran and how it ended.
type opsRequest struct {
	what       string
	start, end time.Time
	status     int
	err        error
}

// TestShutdownUnderLoad sends SIGTERM while requests are in flight and the
// relay holds a capture, then restarts the service and checks that every
// request got its response and every completed task was paid out once.
func TestShutdownUnderLoad(t *testing.T) {
	const workers = 6
	// SHUTDOWN_TIMEOUT=12s gives a drain delay of 2 s. A hold takes 3 s, so
	// the requests in flight at SIGTERM outlast the drain and the server's
	// shutdown has to wait for them.
	e := newOpsEnv(t, "SHUTDOWN_TIMEOUT=12s")
	e.startEmulator()
	server := e.startServer()

	admin := e.mintToken("admin", "ops")
	agent := e.mintToken("agent", "agtLoad")
	e.createAgent(admin, "agtLoad", 100)
	customers := make([]string, workers)
	for i := range customers {
		customers[i] = e.mintToken("customer", fmt.Sprintf("user_load_%d", i))
		e.saveCard(customers[i], "pm_card_visa")
	}
	e.emulator(http.MethodPost, "/_emulator/faults", map[string]any{"method": "POST", "path": "/v1/payment_intents", "latencyMs": 3000})
	e.emulator(http.MethodPost, "/_emulator/faults", map[string]any{"method": "POST", "path": "/v1/payment_intents/*/capture", "latencyMs": 700})

	var (
		mu        sync.Mutex
		requests  []opsRequest
		completed = map[string]string{} // task id -> customer token
		created   = map[string]string{}
		stopping  atomic.Bool
		cycles    atomic.Int32
		wg        sync.WaitGroup
	)
	record := func(r opsRequest) {
		mu.Lock()
		defer mu.Unlock()
		requests = append(requests, r)
	}
	send := func(what, method, path, token string, body any) (apiResult, bool) {
		r := opsRequest{what: what, start: time.Now()}
		res, err := e.tryCall(method, path, token, body)
		r.end, r.status, r.err = time.Now(), res.Status, err
		record(r)
		return res, err == nil
	}
	for _, customer := range customers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// The loop is bounded: SIGTERM comes after the first cycle.
			for i := 0; i < 5 && !stopping.Load(); i++ {
				res, ok := send("create task", http.MethodPost, "/v1/tasks", customer,
					map[string]any{"title": "load", "agentId": "agtLoad", "maxPriceCents": 100})
				if !ok || res.Status != http.StatusCreated {
					return
				}
				id := res.str("id")
				mu.Lock()
				created[id] = customer
				mu.Unlock()
				if stopping.Load() {
					return
				}
				res, ok = send("complete task", http.MethodPost, "/v1/tasks/"+id+"/complete", agent, map[string]any{})
				if !ok || res.Status != http.StatusOK {
					return
				}
				mu.Lock()
				completed[id] = customer
				mu.Unlock()
				cycles.Add(1)
			}
		}()
	}

	// Every worker has finished one cycle and is placing its next hold.
	e.waitFor("one cycle per worker", 30*time.Second, func() bool { return cycles.Load() >= workers })
	time.Sleep(500 * time.Millisecond)
	stopping.Store(true)
	sigterm := time.Now()
	if err := server.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("send SIGTERM: %v", err)
	}

	// While draining, readiness fails but the API still serves, and its
	// responses carry Connection: close.
	probe := &http.Client{Timeout: 5 * time.Second}
	e.waitFor("readiness to fail", 2*time.Second, func() bool {
		resp, err := probe.Get(e.apiURL + "/readyz")
		if err != nil {
			t.Fatalf("GET /readyz during the drain: %v", err)
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusServiceUnavailable
	})
	resp, err := probe.Get(e.apiURL + "/livez")
	if err != nil {
		t.Fatalf("GET /livez during the drain: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("GET /livez during the drain: status %d, want 200", resp.StatusCode)
	}
	if !resp.Close {
		t.Errorf("GET /livez during the drain: response keeps the connection open, want Connection: close")
	}

	wg.Wait()
	if code := server.exited(15 * time.Second); code != 0 {
		t.Fatalf("billingd exit code after SIGTERM = %d, want 0 within SHUTDOWN_TIMEOUT", code)
	}
	log := server.out.String()
	for _, want := range []string{`"msg":"draining connections before stopping"`, `"msg":"billingd stopped"`} {
		if !strings.Contains(log, want) {
			t.Errorf("shutdown log lacks %s", want)
		}
	}

	inFlight := 0
	for _, r := range requests {
		if r.err != nil {
			t.Errorf("%s (started %s before SIGTERM) failed: %v", r.what, sigterm.Sub(r.start), r.err)
			continue
		}
		if r.status >= 300 {
			t.Errorf("%s: status %d", r.what, r.status)
		}
		if r.start.Before(sigterm) && r.end.After(sigterm) {
			inFlight++
		}
	}
	if inFlight == 0 {
		t.Fatalf("no request was in flight at SIGTERM; the test proved nothing")
	}
	t.Logf("%d requests, %d in flight at SIGTERM, %d tasks completed", len(requests), inFlight, len(completed))

	// After a restart without the slow Stripe, the relay drains the outbox.
	e.emulator(http.MethodDelete, "/_emulator/faults", nil)
	e.startServer()
	var s opsScrape
	e.waitFor("the outbox to drain after the restart", 30*time.Second, func() bool {
		s = e.scrape()
		return s.values["taskpod_billing_outbox_pending_messages{}"] == 0
	})
	if q := s.value(t, "taskpod_billing_outbox_quarantined_messages"); q != 0 {
		t.Errorf("quarantined messages = %v, want 0", q)
	}
	if imbalance := s.value(t, "taskpod_billing_ledger_imbalance_minor_units", "currency", "usd"); imbalance != 0 {
		t.Errorf("ledger imbalance = %v, want 0", imbalance)
	}
	for id, customer := range created {
		want := "authorized"
		if _, ok := completed[id]; ok {
			want = "transferred"
		}
		if got := e.call(http.MethodGet, "/v1/tasks/"+id, customer, nil).str("payment.status"); got != want {
			t.Errorf("task %s payment status = %q, want %q", id, got, want)
		}
	}

	// Each completed task was captured and transferred exactly once.
	for _, path := range []string{"/v1/payment_intents/*/capture", "/v1/transfers"} {
		counts := e.emulatorCount(http.MethodPost, path)
		if counts.Mutations != len(completed) {
			t.Errorf("Stripe applied POST %s %d times, want %d", path, counts.Mutations, len(completed))
		}
	}
}
