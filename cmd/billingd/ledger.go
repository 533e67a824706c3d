package main

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/fx"

	apihttp "github.com/taskpod/billing/adapters/http"
	"github.com/taskpod/billing/adapters/postgres"
	"github.com/taskpod/billing/application"
	"github.com/taskpod/billing/ports"
)

// ledgerModule provides the auditor's ledger services and runs the ledger
// sealer for the life of the service.
var ledgerModule = fx.Module("ledger",
	fx.Provide(
		fx.Private,
		func(pool *pgxpool.Pool) *postgres.LedgerReader { return postgres.NewLedgerReader(pool) },
		func(pool *pgxpool.Pool) *postgres.Chain { return postgres.NewChain(pool) },
		newSealerMetrics,
	),
	fx.Provide(newLedgerUseCases, newAuditDeps),
	fx.Invoke(startSealer),
)

func newLedgerUseCases(store ports.Store, books *postgres.LedgerReader, clock ports.Clock, ids ports.IDGenerator, log *slog.Logger) *application.Ledger {
	return application.NewLedger(store, books, clock, ids, log)
}

func newAuditDeps(ledger *application.Ledger, books *postgres.LedgerReader, chain *postgres.Chain) apihttp.AuditDeps {
	return apihttp.AuditDeps{Ledger: ledger, Books: books, Chain: chain}
}

// sealerMetrics exports the sealer's lag to Prometheus.
type sealerMetrics struct {
	transactions prometheus.Gauge
	seconds      prometheus.Gauge
}

func newSealerMetrics(reg prometheus.Registerer) (*sealerMetrics, error) {
	m := &sealerMetrics{
		transactions: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "taskpod_billing_ledger_sealer_lag_transactions",
			Help: "Committed ledger transactions not sealed into the hash chain yet.",
		}),
		seconds: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "taskpod_billing_ledger_sealer_lag_seconds",
			Help: "Age in seconds of the oldest committed ledger transaction not sealed yet; 0 when none waits.",
		}),
	}
	for _, c := range []prometheus.Collector{m.transactions, m.seconds} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register ledger sealer metrics: %w", err)
		}
	}
	return m, nil
}

// ObserveSealerLag implements postgres.SealerObserver.
func (m *sealerMetrics) ObserveSealerLag(unsealed int64, oldest time.Duration) {
	m.transactions.Set(float64(unsealed))
	m.seconds.Set(oldest.Seconds())
}

// startSealer runs the sealer from start to stop. Stop cancels its context
// and waits for the pass in progress, whose database transaction either
// commits or rolls back, so no half-written seal remains.
func startSealer(lc fx.Lifecycle, pool *pgxpool.Pool, m *sealerMetrics, log *slog.Logger) {
	sealer := postgres.NewSealer(pool, postgres.DefaultSealInterval, m, log)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	lc.Append(fx.Hook{
		OnStart: func(context.Context) error {
			go func() {
				defer close(done)
				_ = sealer.Run(ctx)
			}()
			log.Info("ledger sealer started", "interval", postgres.DefaultSealInterval.String())
			return nil
		},
		OnStop: func(stopCtx context.Context) error {
			cancel()
			select {
			case <-done:
				log.Info("ledger sealer stopped")
				return nil
			case <-stopCtx.Done():
				return fmt.Errorf("ledger sealer did not stop: %w", stopCtx.Err())
			}
		},
	})
}

// errChainBroken is returned by ledger verify when the chain does not
// match the stored rows, so billingd exits with status 1.
var errChainBroken = errors.New("ledger chain verification failed")

// ledgerCommand runs the ledger subcommands.
func ledgerCommand(args []string, stdout io.Writer) error {
	if len(args) != 1 || args[0] != "verify" {
		return errors.New("usage: billingd ledger verify")
	}
	cfg, err := LoadConfig()
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	pool, _, err := openDatabase(ctx, cfg)
	if err != nil {
		return err
	}
	defer pool.Close()

	report, err := postgres.NewChain(pool).Verify(ctx)
	if err != nil {
		return err
	}
	return printChainReport(stdout, report)
}

// printChainReport writes the verdict and returns an error wrapping
// errChainBroken, naming the first broken link, when the chain is not intact.
func printChainReport(w io.Writer, r ports.ChainReport) error {
	if r.Broken != nil {
		fmt.Fprintf(w, "ledger chain BROKEN at sequence %d, transaction %s: %s\n", r.Broken.Sequence, r.Broken.TransactionID, r.Broken.Problem)
		fmt.Fprintf(w, "%d seals before it verified\n", r.Checked)
		return fmt.Errorf("%w: first broken link at sequence %d, transaction %s", errChainBroken, r.Broken.Sequence, r.Broken.TransactionID)
	}
	if r.Head.Sequence == 0 {
		fmt.Fprintln(w, "ledger chain intact: no seals yet")
	} else {
		fmt.Fprintf(w, "ledger chain intact: %d seals verified, head %d %s (transaction %s)\n",
			r.Checked, r.Head.Sequence, hex.EncodeToString(r.Head.Hash), r.Head.TransactionID)
	}
	if r.Unsealed > 0 {
		fmt.Fprintf(w, "%d committed transactions wait for the sealer\n", r.Unsealed)
	}
	if r.Unqueued > 0 {
		fmt.Fprintf(w, "%d transactions are neither sealed nor queued for sealing: they were written with the ledger triggers disabled\n", r.Unqueued)
		return fmt.Errorf("%w: %d transactions bypassed the sealing queue", errChainBroken, r.Unqueued)
	}
	return nil
}
