package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/fx"
	"go.uber.org/fx/fxevent"

	apihttp "github.com/taskpod/billing/adapters/http"
	"github.com/taskpod/billing/adapters/logging"
	"github.com/taskpod/billing/adapters/metrics"
	"github.com/taskpod/billing/adapters/outbox"
	"github.com/taskpod/billing/adapters/postgres"
	"github.com/taskpod/billing/adapters/stripe"
	"github.com/taskpod/billing/adapters/system"
	"github.com/taskpod/billing/application"
	"github.com/taskpod/billing/migrations"
	"github.com/taskpod/billing/ports"
)

func newLogger(cfg Config) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.LogLevel))
	log := logging.New(os.Stdout, level)
	slog.SetDefault(log)
	return log
}

// serve runs the API, the relay and, in emulated mode, the Stripe emulator
// until SIGTERM or SIGINT, then stops them in order within SHUTDOWN_TIMEOUT.
func serve() error {
	cfg, err := LoadConfig()
	if err != nil {
		return err
	}
	log := newLogger(cfg)
	health := &healthState{}

	app := fx.New(
		fx.Supply(cfg, health),
		fx.Supply(log),
		fx.WithLogger(func() fxevent.Logger {
			// Every provide and invoke is wiring detail, not an operator's event.
			l := &fxevent.SlogLogger{Logger: log.With("component", "fx")}
			l.UseLogLevel(slog.LevelDebug)
			return l
		}),
		fx.Provide(
			newRegistry,
			newMetrics,
			newPool,
			newGateway,
			newStore,
			func(pool *pgxpool.Pool) ports.LedgerReader { return postgres.NewLedgerReader(pool) },
			func() ports.Clock { return system.Clock{} },
			func() ports.IDGenerator { return system.IDs{} },
			newSteps,
			application.NewBilling,
			newTasks,
			newAgents,
			newRelay,
			newAPI,
		),
		emulatorModule,
		ledgerModule,
		webhookModule,
		adminModule,
		contractModule,
		opsModule,
		fx.Invoke(startRelay, startAPI),
	)
	if err := app.Err(); err != nil {
		return err
	}

	startCtx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := app.Start(startCtx); err != nil {
		return err
	}
	health.ready.Store(true)
	log.Info("billingd started", "listen_addr", cfg.ListenAddr, "stripe_emulated", cfg.Emulated())

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	s := <-sig
	log.Info("shutting down", "signal", s.String(), "timeout", cfg.ShutdownTimeout.String())

	// Readiness fails first so load balancers stop sending new requests;
	// the API keeps serving while they notice.
	health.ready.Store(false)
	stopCtx, stopCancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer stopCancel()
	drain(stopCtx, s, cfg.ShutdownTimeout, log)
	if err := app.Stop(stopCtx); err != nil {
		return fmt.Errorf("stop: %w", err)
	}
	log.Info("billingd stopped")
	return nil
}

// healthState is what /readyz reports besides the database.
type healthState struct {
	ready atomic.Bool
}

func newRegistry() (*prometheus.Registry, prometheus.Registerer) {
	reg := prometheus.NewRegistry()
	return reg, reg
}

func newMetrics(reg prometheus.Registerer) (*metrics.Metrics, error) {
	return metrics.New(reg)
}

func newPool(lc fx.Lifecycle, cfg Config, reg prometheus.Registerer, log *slog.Logger) (*pgxpool.Pool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pool, version, err := openDatabase(ctx, cfg)
	if err != nil {
		return nil, err
	}
	log.Info("database ready", "migration", version)
	if err := metrics.RegisterDatabase(reg, pool, log); err != nil {
		pool.Close()
		return nil, err
	}
	lc.Append(fx.StopHook(pool.Close))
	return pool, nil
}

func newGateway(cfg Config, reg prometheus.Registerer, log *slog.Logger, _ emulatorReady) (ports.PaymentGateway, error) {
	key := cfg.StripeSecretKey
	if cfg.Emulated() {
		key = emulatorSecretKey
	}
	gw, err := stripe.New(stripe.Config{SecretKey: key, APIBase: cfg.StripeAPIBase, Logger: log,
		HTTPClient: &http.Client{Timeout: cfg.StripeTimeout}})
	if err != nil {
		return nil, fmt.Errorf("STRIPE_SECRET_KEY/STRIPE_API_BASE: %w", err)
	}
	return stripe.NewMetered(gw, reg, stripe.WithLogger(log))
}

func newStore(pool *pgxpool.Pool) ports.Store {
	return postgres.NewStore(pool, outbox.NewTxOutbox)
}

func newSteps(store ports.Store, gw ports.PaymentGateway, clock ports.Clock, ids ports.IDGenerator, m *metrics.Metrics, cfg Config, log *slog.Logger) *application.Steps {
	// The lease outlives the gateway's request timeout (STRIPE_TIMEOUT), so
	// it only expires after the request that took it has ended.
	return application.NewSteps(store, gw, clock, ids, m, application.StepsConfig{LeaseTTL: 2 * cfg.StripeTimeout}, log)
}

func newTasks(store ports.Store, billing *application.Billing, steps *application.Steps, clock ports.Clock, ids ports.IDGenerator, cfg Config, log *slog.Logger) *application.Tasks {
	return application.NewTasks(store, billing, steps, clock, ids, application.TasksConfig{FeeRate: cfg.PlatformFee, Currencies: cfg.Currencies}, log)
}

func newAgents(store ports.Store, clock ports.Clock, ids ports.IDGenerator, cfg Config, log *slog.Logger) *application.Agents {
	return application.NewAgents(store, clock, ids, cfg.Currencies, log)
}

func newRelay(pool *pgxpool.Pool, steps *application.Steps, cfg Config, m *metrics.Metrics, log *slog.Logger) (*outbox.Relay, error) {
	return outbox.NewRelay(pool, steps, outbox.RelayConfig{
		MaxAttempts: cfg.OutboxMaxAttempts, BaseBackoff: cfg.OutboxBaseBackoff, MaxBackoff: cfg.OutboxMaxBackoff,
	}, m, log)
}

// startRelay runs the relay for the life of the application. On stop the
// router lets the message in hand finish; a message cut off is not
// acknowledged and runs again, which the step executor makes safe.
func startRelay(lc fx.Lifecycle, relay *outbox.Relay, log *slog.Logger) {
	done := make(chan struct{})
	lc.Append(fx.Hook{
		OnStart: func(context.Context) error {
			go func() {
				defer close(done)
				if err := relay.Run(context.Background()); err != nil {
					log.Error("outbox relay stopped", "error", err)
				}
			}()
			select {
			case <-relay.RunningChan():
				return nil
			case <-done:
				return errors.New("outbox relay failed to start")
			case <-time.After(30 * time.Second):
				return errors.New("outbox relay did not start within 30s")
			}
		},
		OnStop: func(ctx context.Context) error {
			if err := relay.Close(); err != nil {
				return err
			}
			select {
			case <-done:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		},
	})
}

type apiParams struct {
	fx.In
	Cfg      Config
	Pool     *pgxpool.Pool
	Billing  *application.Billing
	Tasks    *application.Tasks
	Agents   *application.Agents
	Ledger   ports.LedgerReader
	Metrics  *metrics.Metrics
	Registry *prometheus.Registry
	Relay    *outbox.Relay
	Health   *healthState
	Log      *slog.Logger

	Audit    apihttp.AuditDeps
	Webhooks apihttp.WebhookDeps
	Admin    apihttp.AdminDeps
	Contract apihttp.ContractDeps
}

func newAPI(p apiParams) *http.Server {
	ready := readyHandler(p.Pool, p.Relay, p.Health)
	api := apihttp.NewServer(apihttp.Deps{
		Billing: p.Billing, Tasks: p.Tasks, Agents: p.Agents, Ledger: p.Ledger,
		Auth: tokenAuth{postgres.NewTokens(p.Pool)}, Observer: p.Metrics, Log: p.Log,
		Audit: p.Audit, Webhooks: p.Webhooks, Admin: p.Admin, Contract: p.Contract,
		Extra: map[string]http.Handler{
			"GET /livez":   http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") }),
			"GET /readyz":  ready,
			"GET /metrics": promhttp.HandlerFor(p.Registry, promhttp.HandlerOpts{}),
		},
	})
	return &http.Server{Addr: p.Cfg.ListenAddr, Handler: api, ReadHeaderTimeout: 10 * time.Second}
}

// startAPI listens at start and, at stop, lets in-flight requests finish.
func startAPI(lc fx.Lifecycle, srv *http.Server, log *slog.Logger) {
	lc.Append(fx.Hook{
		OnStart: func(context.Context) error {
			ln, err := net.Listen("tcp", srv.Addr)
			if err != nil {
				return fmt.Errorf("LISTEN_ADDR %s: %w", srv.Addr, err)
			}
			go func() {
				if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
					log.Error("API server stopped", "error", err)
				}
			}()
			return nil
		},
		OnStop: srv.Shutdown,
	})
}

func readyHandler(pool *pgxpool.Pool, relay *outbox.Relay, health *healthState) http.Handler {
	latest := postgres.LatestVersion(migrations.FS)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		problem := ""
		switch version, err := postgres.CurrentVersion(ctx, pool); {
		case !health.ready.Load():
			problem = "not started or shutting down"
		case err != nil:
			problem = "database unreachable"
		case version < latest:
			// A newer schema is fine: migrations only add, and an older
			// binary may run beside a newer one during a rollout.
			problem = fmt.Sprintf("database at migration %d, this binary needs %d", version, latest)
		case !relay.Running():
			problem = "outbox relay not running"
		}
		if problem != "" {
			http.Error(w, problem, http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
}

// tokenAuth adapts the token store to the API's Authenticator.
type tokenAuth struct {
	tokens *postgres.Tokens
}

func (a tokenAuth) Authenticate(ctx context.Context, token string) (apihttp.Principal, error) {
	p, err := a.tokens.Authenticate(ctx, token)
	if errors.Is(err, postgres.ErrTokenInvalid) {
		return apihttp.Principal{}, apihttp.ErrInvalidToken
	}
	if err != nil {
		return apihttp.Principal{}, err
	}
	return apihttp.Principal{TokenID: p.TokenID, Role: application.Role(p.Role), Subject: p.Subject}, nil
}
