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
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/fx"

	"github.com/taskpod/billing/adapters/postgres"
	"github.com/taskpod/billing/adapters/stripe/emulator"
)

// emulatorReady is provided once the in-process emulator, if any, listens,
// so the gateway is never built before Stripe can answer.
type emulatorReady struct{}

var emulatorModule = fx.Module("stripe-emulator",
	fx.Provide(startEmbeddedEmulator),
)

// startEmbeddedEmulator starts the emulator inside serve when no secret key
// is set and nothing answers at STRIPE_EMULATOR_ADDR yet; an emulator
// already running there (billingd stripe-emulator) is used as it is.
func startEmbeddedEmulator(lc fx.Lifecycle, cfg Config, pool *pgxpool.Pool, log *slog.Logger) (emulatorReady, error) {
	if !cfg.Emulated() {
		log.Info("using Stripe", "api_base", cfg.StripeAPIBase)
		return emulatorReady{}, nil
	}
	if answers(cfg.StripeEmulatorAddr) {
		log.Warn("Stripe is EMULATED: using the emulator already running", "addr", cfg.StripeEmulatorAddr)
		return emulatorReady{}, nil
	}

	// The emulator signs its events for this service's webhook route;
	// EMULATOR_WEBHOOK_URL sends them elsewhere.
	srv, emu, err := newEmulatorServer(cfg, pool, log, "http://"+cfg.ListenAddr+"/v1/stripe/webhooks")
	if err != nil {
		return emulatorReady{}, err
	}
	ln, err := net.Listen("tcp", cfg.StripeEmulatorAddr)
	if err != nil {
		return emulatorReady{}, fmt.Errorf("STRIPE_EMULATOR_ADDR %s: %w", cfg.StripeEmulatorAddr, err)
	}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("Stripe emulator stopped", "error", err)
		}
	}()
	emu.Start(context.Background())
	lc.Append(fx.StopHook(func(ctx context.Context) error {
		err := srv.Shutdown(ctx)
		emu.Close()
		return err
	}))
	log.Warn("Stripe is EMULATED: no real money moves; set STRIPE_SECRET_KEY to use Stripe", "emulator_addr", cfg.StripeEmulatorAddr)
	return emulatorReady{}, nil
}

// newEmulatorServer builds the emulator and its HTTP server. The caller
// starts the emulator's webhook sender with Start and stops it with Close.
func newEmulatorServer(cfg Config, pool *pgxpool.Pool, log *slog.Logger, webhookURL string) (*http.Server, *emulator.Emulator, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if v := os.Getenv("EMULATOR_WEBHOOK_URL"); v != "" {
		webhookURL = v
	}
	emu, err := emulator.New(ctx, pool, emulator.Config{
		Logger: log, WebhookURL: webhookURL, WebhookSecret: cfg.StripeWebhookSecret,
	})
	if err != nil {
		return nil, nil, fmt.Errorf("start Stripe emulator: %w", err)
	}
	return &http.Server{Addr: cfg.StripeEmulatorAddr, Handler: emu.Handler(), ReadHeaderTimeout: 10 * time.Second}, emu, nil
}

// answers reports whether something accepts TCP connections at addr.
func answers(addr string) bool {
	conn, err := net.DialTimeout("tcp", addr, 300*time.Millisecond)
	if err != nil {
		return false
	}
	conn.Close()
	return true
}

// runEmulator serves only the Stripe emulator, keeping its state in
// DATABASE_URL's database, until SIGTERM or SIGINT.
func runEmulator() error {
	cfg, err := LoadConfig()
	if err != nil {
		return err
	}
	log := newLogger(cfg)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := postgres.EnsureDatabase(ctx, cfg.DatabaseURL); err != nil {
		return fmt.Errorf("DATABASE_URL: %w", err)
	}
	pool, err := pgxpool.New(ctx, cfg.DatabaseURL)
	if err != nil {
		return fmt.Errorf("DATABASE_URL: %w", err)
	}
	defer pool.Close()

	srv, emu, err := newEmulatorServer(cfg, pool, log, os.Getenv("EMULATOR_WEBHOOK_URL"))
	if err != nil {
		return err
	}
	emu.Start(context.Background())
	defer emu.Close()
	ln, err := net.Listen("tcp", cfg.StripeEmulatorAddr)
	if err != nil {
		return fmt.Errorf("STRIPE_EMULATOR_ADDR %s: %w", cfg.StripeEmulatorAddr, err)
	}
	log.Warn("Stripe emulator listening; no real money moves", "addr", cfg.StripeEmulatorAddr)
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("Stripe emulator stopped", "error", err)
		}
	}()

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	stopCtx, stopCancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer stopCancel()
	return srv.Shutdown(stopCtx)
}
