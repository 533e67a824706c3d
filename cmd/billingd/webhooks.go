package main

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"go.uber.org/fx"

	apihttp "github.com/taskpod/billing/adapters/http"
	"github.com/taskpod/billing/adapters/metrics"
	"github.com/taskpod/billing/adapters/stripe"
	"github.com/taskpod/billing/application"
	"github.com/taskpod/billing/domain"
	"github.com/taskpod/billing/ports"
)

// webhookModule provides Stripe webhook handling and refunds, and runs the
// scheduler that retries stored events, renews expiring holds and cancels
// abandoned payments.
var webhookModule = fx.Module("webhooks",
	fx.Provide(
		fx.Private,
		loadWebhookSettings,
		newWebhookPorts,
		newWebhooks,
		newRefunds,
		newExpiry,
	),
	fx.Provide(newWebhookDeps),
	fx.Invoke(setHoldExpiryPolicy, startExpiry),
)

// webhookSettings are the variables of this module, read with env so that
// envSpecs documents their defaults.
type webhookSettings struct {
	PreviousSecret        string
	HoldRenewBefore       time.Duration
	HoldExpiryPolicy      domain.HoldExpiryPolicy
	PendingPaymentTimeout time.Duration
	DisputeClawback       bool
}

func loadWebhookSettings() (webhookSettings, error) {
	s := webhookSettings{PreviousSecret: env("STRIPE_WEBHOOK_SECRET_PREVIOUS")}
	var err error
	if s.HoldRenewBefore, err = time.ParseDuration(env("HOLD_RENEW_BEFORE")); err != nil || s.HoldRenewBefore <= 0 {
		return s, fmt.Errorf("HOLD_RENEW_BEFORE must be a positive duration such as 24h, got %q", env("HOLD_RENEW_BEFORE"))
	}
	if s.HoldExpiryPolicy, err = domain.ParseHoldExpiryPolicy(env("HOLD_EXPIRY_POLICY")); err != nil {
		return s, fmt.Errorf("HOLD_EXPIRY_POLICY: %w", err)
	}
	if s.PendingPaymentTimeout, err = time.ParseDuration(env("PENDING_PAYMENT_TIMEOUT")); err != nil || s.PendingPaymentTimeout <= 0 {
		return s, fmt.Errorf("PENDING_PAYMENT_TIMEOUT must be a positive duration such as 24h, got %q", env("PENDING_PAYMENT_TIMEOUT"))
	}
	if s.DisputeClawback, err = strconv.ParseBool(env("DISPUTE_CLAWBACK")); err != nil {
		return s, fmt.Errorf("DISPUTE_CLAWBACK must be true or false, got %q", env("DISPUTE_CLAWBACK"))
	}
	return s, nil
}

// webhookPorts are the extended ports of the store and the gateway.
type webhookPorts struct {
	store   ports.StripeStore
	locker  ports.Locker
	refunds ports.RefundGateway
}

func newWebhookPorts(store ports.Store, gateway ports.PaymentGateway) (webhookPorts, error) {
	var p webhookPorts
	var ok bool
	if p.store, ok = store.(ports.StripeStore); !ok {
		return p, fmt.Errorf("webhooks: the store %T does not implement ports.StripeStore", store)
	}
	if p.locker, ok = store.(ports.Locker); !ok {
		return p, fmt.Errorf("webhooks: the store %T does not implement ports.Locker", store)
	}
	if p.refunds, ok = gateway.(ports.RefundGateway); !ok {
		return p, fmt.Errorf("webhooks: the gateway %T does not implement ports.RefundGateway", gateway)
	}
	return p, nil
}

func newWebhooks(wp webhookPorts, gateway ports.PaymentGateway, steps *application.Steps, clock ports.Clock,
	ids ports.IDGenerator, m *metrics.Metrics, cfg Config, s webhookSettings, log *slog.Logger) *application.Webhooks {
	if cfg.StripeWebhookSecret == "" {
		log.Warn("STRIPE_WEBHOOK_SECRET is empty: every Stripe webhook is rejected until it is set")
	}
	parser := stripe.NewWebhookParser(cfg.StripeWebhookSecret, s.PreviousSecret)
	return application.NewWebhooks(wp.store, gateway, wp.refunds, parser, steps, clock, ids, m,
		application.WebhooksConfig{DisputeClawback: s.DisputeClawback}, log.With("component", "webhooks"))
}

func newRefunds(wp webhookPorts, steps *application.Steps, clock ports.Clock, ids ports.IDGenerator, log *slog.Logger) *application.Refunds {
	return application.NewRefunds(wp.store, steps, clock, ids, log)
}

func newExpiry(wp webhookPorts, webhooks *application.Webhooks, clock ports.Clock, s webhookSettings, log *slog.Logger) *application.Expiry {
	return application.NewExpiry(wp.store, wp.locker, webhooks, clock, application.ExpiryConfig{
		Policy: s.HoldExpiryPolicy, RenewBefore: s.HoldRenewBefore, PendingPaymentTimeout: s.PendingPaymentTimeout,
	}, log.With("component", "expiry"))
}

func newWebhookDeps(cfg Config, s webhookSettings, webhooks *application.Webhooks, refunds *application.Refunds) apihttp.WebhookDeps {
	return apihttp.WebhookDeps{
		Parser:   stripe.NewWebhookParser(cfg.StripeWebhookSecret, s.PreviousSecret),
		Webhooks: webhooks,
		Refunds:  refunds,
	}
}

// setHoldExpiryPolicy runs before the relay starts, so every capture that
// finds an expired hold follows the configured policy.
func setHoldExpiryPolicy(steps *application.Steps, s webhookSettings) {
	steps.SetHoldExpiryPolicy(s.HoldExpiryPolicy)
}

// startExpiry runs the scheduler for the life of the service.
func startExpiry(lc fx.Lifecycle, expiry *application.Expiry, log *slog.Logger) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	lc.Append(fx.Hook{
		OnStart: func(context.Context) error {
			go func() {
				defer close(done)
				expiry.Run(ctx)
			}()
			log.Info("expiry scheduler started")
			return nil
		},
		OnStop: func(stopCtx context.Context) error {
			cancel()
			select {
			case <-done:
				return nil
			case <-stopCtx.Done():
				return stopCtx.Err()
			}
		},
	})
}
