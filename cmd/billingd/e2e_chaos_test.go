package main

import (
	"bufio"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// chaosSeed returns CHAOS_SEED when set, so a failing run can be repeated,
// and else a new seed that the test logs.
func chaosSeed(t *testing.T) uint64 {
	t.Helper()
	if v := os.Getenv("CHAOS_SEED"); v != "" {
		seed, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("CHAOS_SEED %q is not an unsigned integer", v)
		}
		return seed
	}
	seed := uint64(time.Now().UnixNano())
	t.Logf("emulator fault seed %d; rerun with CHAOS_SEED=%d", seed, seed)
	return seed
}

// runTasks creates one task per entry of plan with a pool of workers, waits
// for each hold and ends the task with the planned outcome. Tasks planned
// as cancelTask are cancelled right after creation, possibly while the hold
// is still being placed. create and finish pick the instance for each task.
func runTasks(t *testing.T, plan []outcome, workers int, owners []customer, agents []agent,
	create, finish func(i int) *server) []*paidTask {
	t.Helper()
	tasks := make([]*paidTask, len(plan))
	errs := make(chan error, len(plan))
	next := make(chan int)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := runTask(i, plan[i], owners[i%len(owners)], agents[i%len(agents)], create(i), finish(i), tasks); err != nil {
					errs <- err
				}
			}
		}()
	}
	for i := range plan {
		next <- i
	}
	close(next)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		t.FailNow()
	}
	return tasks
}

func runTask(i int, how outcome, owner customer, a agent, createOn, endOn *server, tasks []*paidTask) error {
	task, err := createTask(createOn, owner, a)
	if err != nil {
		return fmt.Errorf("task %d: %w", i, err)
	}
	tasks[i] = task
	if how != cancelTask {
		if err := awaitMatched(endOn, task); err != nil {
			return err
		}
	}
	status, err := end(endOn, task, how)
	if err != nil || status != http.StatusOK {
		return fmt.Errorf("%s task %s: status %d: %v", how, task.id, status, err)
	}
	return nil
}

// mixedPlan completes most tasks, fails every tenth after its hold and
// cancels every tenth right after creation.
func mixedPlan(n int) []outcome {
	plan := make([]outcome, n)
	for i := range plan {
		switch i % 10 {
		case 4:
			plan[i] = cancelTask
		case 9:
			plan[i] = failTask
		default:
			plan[i] = completeTask
		}
	}
	return plan
}

// testChaos runs tasks while the emulator fails 30 % of captures with a
// 500 and drops the response of 10 % of the remaining captures and of 10 %
// of holds, releases and transfers after applying them. The ledger must
// still equal Stripe's records to the cent.
//
// Short mode runs 40 tasks; TEST_LONG=1 runs 300.
func testChaos(t *testing.T, bin string) {
	c := newCluster(t, bin)
	s := c.startServe()
	agents := []agent{
		c.registerAgent(s, "agent_chaos_a", "acct_chaosA", 100),
		c.registerAgent(s, "agent_chaos_b", "acct_chaosB", 300),
		c.registerAgent(s, "agent_chaos_c", "acct_chaosC", 1050),
	}
	var owners []customer
	for i := range 4 {
		owners = append(owners, c.newCustomer(s, fmt.Sprintf("user_chaos_%d", i)))
	}

	seed := chaosSeed(t)
	c.addFault(fault{Method: http.MethodPost, Path: "/v1/payment_intents/*/capture", Rate: 0.3, DropResponseRate: 0.1, Seed: &seed})
	for _, path := range []string{"/v1/payment_intents", "/v1/payment_intents/*/cancel", "/v1/transfers"} {
		c.addFault(fault{Method: http.MethodPost, Path: path, DropResponseRate: 0.1})
	}

	plan := mixedPlan(pick(40, 300))
	same := func(int) *server { return s }
	tasks := runTasks(t, plan, 4, owners, agents, same, same)
	c.waitSettled(tasks)
	totals := c.verifyMoney(s, tasks)

	c.clearFaults()
	injected := c.faultsSeen()
	t.Logf("%v; captures: %d requests for %d successes; holds: %d requests; transfers: %d requests; "+
		"earlier attempts found at Stripe: %d", totals, injected.captureRequests, injected.captureMutations,
		injected.intentRequests, injected.transferRequests, c.logLines("earlier attempt found at stripe"))
	if injected.captureRequests <= injected.captureMutations {
		t.Errorf("no capture failed (%d requests, %d captures): the faults did not apply", injected.captureRequests, injected.captureMutations)
	}
}

// faultCounts are the emulator's request counters of the chaos paths.
type faultCounts struct {
	captureRequests, captureMutations, intentRequests, transferRequests int64
}

func (c *cluster) faultsSeen() faultCounts {
	c.t.Helper()
	read := func(path string) (int64, int64) {
		var out struct{ Requests, Mutations int64 }
		if _, err := c.emulatorJSON(http.MethodGet, "/_emulator/requests/count?method=POST&path="+path, nil, &out); err != nil {
			c.t.Fatal(err)
		}
		return out.Requests, out.Mutations
	}
	var f faultCounts
	f.captureRequests, f.captureMutations = read("/v1/payment_intents/*/capture")
	f.intentRequests, _ = read("/v1/payment_intents")
	f.transferRequests, _ = read("/v1/transfers")
	return f
}

// testTwoInstances runs two serve processes on one database and one
// emulator. Tasks are created on one instance and ended on the other, both
// relays consume the same outbox, and 5 % of capture and transfer responses
// are dropped. No Stripe object may be mutated twice.
//
// Short mode runs 40 tasks; TEST_LONG=1 runs 300.
func testTwoInstances(t *testing.T, bin string) {
	c := newCluster(t, bin)
	instances := []*server{c.startServe(), c.startServe()}
	agents := []agent{
		c.registerAgent(instances[0], "agent_twin_a", "acct_twinA", 500),
		c.registerAgent(instances[1], "agent_twin_b", "acct_twinB", 250),
	}
	var owners []customer
	for i := range 4 {
		owners = append(owners, c.newCustomer(instances[i%2], fmt.Sprintf("user_twin_%d", i)))
	}
	seed := chaosSeed(t)
	c.addFault(fault{Method: http.MethodPost, Path: "/v1/payment_intents/*/capture", DropResponseRate: 0.05, Seed: &seed})
	c.addFault(fault{Method: http.MethodPost, Path: "/v1/transfers", DropResponseRate: 0.05})

	plan := mixedPlan(pick(40, 300))
	tasks := runTasks(t, plan, 6, owners, agents,
		func(i int) *server { return instances[i%2] },
		func(i int) *server { return instances[(i+1)%2] })
	c.waitSettled(tasks)
	totals := c.verifyMoney(instances[0], tasks)

	// verifyMoney counts captures per PaymentIntent; transfers have one
	// creation path, so count them per transfer group too.
	stripe := c.stripeRecords()
	groups := map[string]int{}
	for _, trs := range stripe.transfers {
		for _, tr := range trs {
			groups[tr.TransferGroup]++
		}
	}
	for group, n := range groups {
		if n > 1 {
			t.Errorf("transfer group %s has %d transfers", group, n)
		}
	}

	// Both relays take messages, because each skips the rows the other
	// has locked; the test is only meaningful if both did.
	var handled []string
	for _, s := range instances {
		n := relaySuccesses(t, s)
		handled = append(handled, fmt.Sprintf("%s %d", s.name, n))
		if n == 0 {
			t.Errorf("%s relayed no message, so the relays never ran side by side", s.name)
		}
	}
	t.Logf("%v; relayed steps: %s; earlier attempts found at Stripe: %d",
		totals, strings.Join(handled, ", "), c.logLines("earlier attempt found at stripe"))
}

// relaySuccesses sums the relay's successful messages from /metrics.
func relaySuccesses(t *testing.T, s *server) int {
	t.Helper()
	res, err := http.Get(s.base + "/metrics")
	if err != nil {
		t.Fatalf("scrape %s: %v", s.name, err)
	}
	defer res.Body.Close()
	total := 0
	scanner := bufio.NewScanner(res.Body)
	for scanner.Scan() {
		line := scanner.Text()
		if !strings.HasPrefix(line, "taskpod_billing_outbox_relay_attempts_total{") || !strings.Contains(line, `outcome="success"`) {
			continue
		}
		fields := strings.Fields(line)
		v, err := strconv.ParseFloat(fields[len(fields)-1], 64)
		if err != nil {
			t.Fatalf("metric line %q: %v", line, err)
		}
		total += int(v)
	}
	if err := scanner.Err(); err != nil {
		t.Fatal(err)
	}
	return total
}
