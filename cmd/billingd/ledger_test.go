package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/taskpod/billing/adapters/postgres"
	"github.com/taskpod/billing/adapters/postgres/pgtest"
	"github.com/taskpod/billing/domain"
	"github.com/taskpod/billing/ports"
)

// ledgerBinary builds billingd into the test's temporary directory; the Go
// build cache makes builds after the first quick.
func ledgerBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "billingd")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// ledgerDatabase creates a migrated database dropped at the end of the test.
func ledgerDatabase(t *testing.T) (*pgxpool.Pool, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	name, err := pgtest.CreateDatabase(ctx, "l")
	if err != nil {
		t.Fatal(err)
	}
	url := pgtest.DatabaseURL(name)
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		pool.Close()
		dropCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := pgtest.DropDatabase(dropCtx, name); err != nil {
			t.Errorf("drop database %s: %v", name, err)
		}
	})
	return pool, url
}

// postPayment appends a hold, capture, settlement and transfer of 100 usd
// cents and returns their ids in order.
func postPayment(t *testing.T, pool *pgxpool.Pool) []string {
	t.Helper()
	r := domain.PaymentRecord{
		ID: "pay_ledger_" + t.Name(), TaskID: "task_ledger", AgentID: "agentLedger",
		Amount: domain.MustMoney(100, "usd"), FeeRate: 250, CapturedAmount: 100, PlatformFee: 3, AgentShare: 97, StripeFee: 33,
	}
	meta := domain.LedgerMeta{Actor: "system:test", PaymentID: r.ID, TaskID: r.TaskID, EffectiveAt: time.Now().UTC()}
	hold, err := domain.HoldPosting("ltx_hold_"+t.Name(), r, meta)
	if err != nil {
		t.Fatal(err)
	}
	capture, _ := domain.CapturePosting("ltx_capture_"+t.Name(), hold.ID, r, meta)
	settlement, _ := domain.SettlementPosting("ltx_settlement_"+t.Name(), r, meta)
	transfer, _ := domain.TransferPosting("ltx_transfer_"+t.Name(), r, meta)
	store := postgres.NewStore(pool, nil)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var ids []string
	for _, tx := range []domain.LedgerTransaction{hold, capture, settlement, transfer} {
		err := store.InTx(ctx, func(ctx context.Context, utx ports.Tx) error { return utx.Ledger().Append(ctx, tx) })
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, tx.ID)
	}
	return ids
}

// runVerify runs billingd ledger verify and returns its exit code and output.
func runVerify(t *testing.T, bin, databaseURL string) (int, string, string) {
	t.Helper()
	cmd := exec.Command(bin, "ledger", "verify")
	cmd.Env = append(os.Environ(), "DATABASE_URL="+databaseURL)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatalf("run billingd ledger verify: %v", err)
	}
	return cmd.ProcessState.ExitCode(), stdout.String(), stderr.String()
}

func TestLedgerVerifyCommandExitStatus(t *testing.T) {
	bin := ledgerBinary(t)
	pool, url := ledgerDatabase(t)

	code, out, errOut := runVerify(t, bin, url)
	if code != 0 || !strings.Contains(out, "no seals yet") {
		t.Fatalf("verify of an empty ledger exited %d: %s%s", code, out, errOut)
	}

	ids := postPayment(t, pool)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := postgres.NewChain(pool).SealPending(ctx); err != nil {
		t.Fatal(err)
	}
	code, out, errOut = runVerify(t, bin, url)
	if code != 0 || !strings.Contains(out, "intact: 4 seals verified") {
		t.Fatalf("verify of a sealed ledger exited %d: %s%s", code, out, errOut)
	}

	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_, err = tx.Exec(ctx, `SET LOCAL session_replication_role = replica`)
	if err == nil {
		_, err = tx.Exec(ctx, `UPDATE ledger_transactions SET actor = 'someone else' WHERE id = $1`, ids[1])
	}
	if err == nil {
		err = tx.Commit(ctx)
	}
	if err != nil {
		t.Fatal(err)
	}

	code, out, errOut = runVerify(t, bin, url)
	if code != 1 {
		t.Errorf("verify of a tampered ledger exited %d, want 1", code)
	}
	if want := "BROKEN at sequence 2, transaction " + ids[1]; !strings.Contains(out, want) {
		t.Errorf("output %q does not contain %q", out, want)
	}
	if !strings.Contains(errOut, "ledger chain verification failed") {
		t.Errorf("stderr %q does not report the failure", errOut)
	}
}

func ledgerFreeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// syncBuffer collects a child's output while the test reads it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestServeSealsAndExportsLag starts billingd serve, writes ledger
// transactions behind its back, and checks that the sealer running in serve
// seals them, that the lag metrics are exported, and that SIGTERM stops the
// sealer cleanly.
func TestServeSealsAndExportsLag(t *testing.T) {
	bin := ledgerBinary(t)
	pool, url := ledgerDatabase(t)
	listen := ledgerFreeAddr(t)
	env := append(os.Environ(), "DATABASE_URL="+url, "LISTEN_ADDR="+listen,
		"STRIPE_EMULATOR_ADDR="+ledgerFreeAddr(t), "STRIPE_SECRET_KEY=", "RATE_LIMIT_PER_SECOND=0")

	serve := exec.Command(bin, "serve")
	serve.Env = env
	output := &syncBuffer{}
	serve.Stdout, serve.Stderr = output, output
	if err := serve.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- serve.Wait() }()
	t.Cleanup(func() {
		if serve.ProcessState == nil {
			_ = serve.Process.Kill()
		}
	})

	api := "http://" + listen
	ledgerWaitFor(t, "billingd is ready", func() error {
		resp, err := http.Get(api + "/readyz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("readyz %d", resp.StatusCode)
		}
		return nil
	})
	tokenCmd := exec.Command(bin, "token", "create", "--role", "auditor", "--subject", "ledger_test")
	tokenCmd.Env = env
	token, err := tokenCmd.Output()
	if err != nil {
		t.Fatal(err)
	}

	ids := postPayment(t, pool)
	ledgerWaitFor(t, "the sealer in serve seals the payment", func() error {
		req, _ := http.NewRequest("GET", api+"/v1/ledger/head", nil)
		req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(token)))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		var head struct {
			Sequence      int64  `json:"sequence"`
			TransactionID string `json:"transactionId"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&head); err != nil {
			return err
		}
		if head.Sequence != 4 || head.TransactionID != ids[3] {
			return fmt.Errorf("head is %+v", head)
		}
		return nil
	})
	ledgerWaitFor(t, "the lag metrics report nothing unsealed", func() error {
		resp, err := http.Get(api + "/metrics")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		for _, line := range []string{"taskpod_billing_ledger_sealer_lag_transactions 0", "taskpod_billing_ledger_sealer_lag_seconds 0"} {
			if !strings.Contains(string(body), line+"\n") {
				return fmt.Errorf("metrics lack %q", line)
			}
		}
		return nil
	})

	if err := serve.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("billingd exited with %v after SIGTERM\n%s", err, output)
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("billingd did not stop within 60s of SIGTERM\n%s", output)
	}
	if !strings.Contains(output.String(), "ledger sealer stopped") {
		t.Errorf("the log does not show the sealer stopping:\n%s", output)
	}
}

// ledgerWaitFor polls cond every 100 ms for up to a minute.
func ledgerWaitFor(t *testing.T, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting until %s: %v", what, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
