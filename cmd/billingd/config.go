package main

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/taskpod/billing/domain"
)

// Config is the service's configuration, read from environment variables.
type Config struct {
	ListenAddr          string
	DatabaseURL         string
	StripeSecretKey     string
	StripeAPIBase       string
	StripeEmulatorAddr  string
	StripeWebhookSecret string
	PlatformFee         domain.BasisPoints
	Currencies          []domain.Currency
	LogLevel            string
	ShutdownTimeout     time.Duration
	OutboxMaxAttempts   int
	OutboxBaseBackoff   time.Duration
	OutboxMaxBackoff    time.Duration
	StripeTimeout       time.Duration
}

// Emulated reports whether Stripe is the built-in emulator.
func (c Config) Emulated() bool { return c.StripeSecretKey == "" }

// emulatorSecretKey is the key the service uses with the emulator, which
// accepts any key starting with sk_test_.
const emulatorSecretKey = "sk_test_emulator"

// defaultWebhookSecret signs the emulator's webhooks when none is configured.
const defaultWebhookSecret = "whsec_taskpod_emulator_test_secret"

// envSpec documents one variable for the help text and the README.
type envSpec struct {
	Name, Default, Help string
}

var envSpecs = []envSpec{
	{"LISTEN_ADDR", "127.0.0.1:8080", "host:port the API listens on"},
	{"DATABASE_URL", "postgres://postgres@127.0.0.1:5432/taskpod_billing?sslmode=disable", "PostgreSQL URL; the database is created if missing"},
	{"STRIPE_SECRET_KEY", "", "Stripe secret key; empty runs against the built-in Stripe emulator"},
	{"STRIPE_API_BASE", "", "Stripe API base URL; defaults to the emulator's address when emulated, else Stripe's"},
	{"STRIPE_EMULATOR_ADDR", "127.0.0.1:12113", "host:port of the Stripe emulator"},
	{"STRIPE_WEBHOOK_SECRET", "", "webhook signing secret; emulated mode defaults to " + defaultWebhookSecret},
	{"STRIPE_WEBHOOK_SECRET_PREVIOUS", "", "the signing secret before a rotation, accepted too until Stripe stops using it; empty accepts only STRIPE_WEBHOOK_SECRET"},
	{"HOLD_RENEW_BEFORE", "24h", "how long before Stripe's capture deadline an open task's hold is renewed or failed"},
	{"HOLD_EXPIRY_POLICY", "reauthorize", "reauthorize (new hold on the default card, old one released) or fail (fail the task, release the hold)"},
	{"PENDING_PAYMENT_TIMEOUT", "24h", "how long a customer has to confirm a task's PaymentIntent before the task is cancelled"},
	{"DISPUTE_CLAWBACK", "true", "true reverses the agent's part of a dispute from its transfer like a refund; false leaves the loss with the platform"},
	{"EMULATOR_WEBHOOK_URL", "", "where the built-in emulator sends webhooks; empty sends them to this service's /v1/stripe/webhooks"},
	{"PLATFORM_FEE_BPS", "250", "platform fee in basis points (250 = 2.5 %)"},
	{"SUPPORTED_CURRENCIES", "usd", "comma-separated ISO 4217 codes agents may price in"},
	{"LOG_LEVEL", "info", "debug, info, warn or error"},
	{"SHUTDOWN_TIMEOUT", "30s", "time allowed for a graceful stop"},
	{"OUTBOX_MAX_ATTEMPTS", "12", "relay attempts before a message is quarantined"},
	{"OUTBOX_BASE_BACKOFF", "1s", "relay wait after a step's first failure; it doubles per failure up to OUTBOX_MAX_BACKOFF"},
	{"OUTBOX_MAX_BACKOFF", "5m", "longest relay wait between two attempts of a step"},
	{"STRIPE_TIMEOUT", "30s", "time allowed for one Stripe request; a money step's lease lasts twice as long"},
	{"IDEMPOTENCY_KEY_TTL", "720h", "how long Idempotency-Key responses are kept, at least 1h; accepts a duration such as 720h or days such as 30d"},
	{"RATE_LIMIT_PER_SECOND", "50", "average API requests per second allowed per bearer token; 0 turns the limit off"},
	{"RATE_LIMIT_BURST", "100", "API requests a bearer token may send at once above the average rate"},
}

func env(name string) string {
	if v, ok := os.LookupEnv(name); ok {
		return strings.TrimSpace(v)
	}
	for _, s := range envSpecs {
		if s.Name == name {
			return s.Default
		}
	}
	return ""
}

// LoadConfig reads and validates the environment. Every error names the
// variable and what would be valid.
func LoadConfig() (Config, error) {
	c := Config{
		ListenAddr:          env("LISTEN_ADDR"),
		DatabaseURL:         env("DATABASE_URL"),
		StripeSecretKey:     env("STRIPE_SECRET_KEY"),
		StripeAPIBase:       env("STRIPE_API_BASE"),
		StripeEmulatorAddr:  env("STRIPE_EMULATOR_ADDR"),
		StripeWebhookSecret: env("STRIPE_WEBHOOK_SECRET"),
		LogLevel:            strings.ToLower(env("LOG_LEVEL")),
	}
	if _, _, err := net.SplitHostPort(c.ListenAddr); err != nil {
		return c, fmt.Errorf("LISTEN_ADDR %q is not host:port: %v", c.ListenAddr, err)
	}
	if _, _, err := net.SplitHostPort(c.StripeEmulatorAddr); err != nil {
		return c, fmt.Errorf("STRIPE_EMULATOR_ADDR %q is not host:port: %v", c.StripeEmulatorAddr, err)
	}
	if u, err := url.Parse(c.DatabaseURL); err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		return c, fmt.Errorf("DATABASE_URL must be a postgres:// URL")
	}
	if c.StripeSecretKey != "" && !strings.HasPrefix(c.StripeSecretKey, "sk_") && !strings.HasPrefix(c.StripeSecretKey, "rk_") {
		return c, fmt.Errorf("STRIPE_SECRET_KEY must start with sk_ or rk_")
	}
	if c.StripeAPIBase != "" {
		if u, err := url.Parse(c.StripeAPIBase); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return c, fmt.Errorf("STRIPE_API_BASE %q must be an http(s) URL", c.StripeAPIBase)
		}
	}
	if c.Emulated() {
		if c.StripeAPIBase == "" {
			c.StripeAPIBase = "http://" + c.StripeEmulatorAddr
		}
		if c.StripeWebhookSecret == "" {
			c.StripeWebhookSecret = defaultWebhookSecret
		}
	}

	fee, err := strconv.ParseInt(env("PLATFORM_FEE_BPS"), 10, 64)
	if err == nil {
		c.PlatformFee, err = domain.ParseBasisPoints(fee)
	}
	if err != nil {
		return c, fmt.Errorf("PLATFORM_FEE_BPS must be an integer from 0 to 10000 basis points")
	}

	for _, code := range strings.Split(env("SUPPORTED_CURRENCIES"), ",") {
		if strings.TrimSpace(code) == "" {
			continue
		}
		cur, err := domain.ParseCurrency(code)
		if err != nil {
			return c, fmt.Errorf("SUPPORTED_CURRENCIES: %q is not a currency this service can charge", code)
		}
		c.Currencies = append(c.Currencies, cur)
	}
	if len(c.Currencies) == 0 {
		return c, fmt.Errorf("SUPPORTED_CURRENCIES must list at least one currency, for example usd")
	}

	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		return c, fmt.Errorf("LOG_LEVEL must be debug, info, warn or error, got %q", c.LogLevel)
	}
	if c.ShutdownTimeout, err = time.ParseDuration(env("SHUTDOWN_TIMEOUT")); err != nil || c.ShutdownTimeout <= 0 {
		return c, fmt.Errorf("SHUTDOWN_TIMEOUT must be a positive duration such as 30s")
	}
	if c.OutboxMaxAttempts, err = strconv.Atoi(env("OUTBOX_MAX_ATTEMPTS")); err != nil || c.OutboxMaxAttempts < 1 {
		return c, fmt.Errorf("OUTBOX_MAX_ATTEMPTS must be a positive integer")
	}
	if c.OutboxBaseBackoff, err = time.ParseDuration(env("OUTBOX_BASE_BACKOFF")); err != nil || c.OutboxBaseBackoff <= 0 {
		return c, fmt.Errorf("OUTBOX_BASE_BACKOFF must be a positive duration such as 1s")
	}
	if c.OutboxMaxBackoff, err = time.ParseDuration(env("OUTBOX_MAX_BACKOFF")); err != nil || c.OutboxMaxBackoff < c.OutboxBaseBackoff {
		return c, fmt.Errorf("OUTBOX_MAX_BACKOFF must be a duration such as 5m, at least OUTBOX_BASE_BACKOFF (%s)", c.OutboxBaseBackoff)
	}
	if c.StripeTimeout, err = time.ParseDuration(env("STRIPE_TIMEOUT")); err != nil || c.StripeTimeout <= 0 {
		return c, fmt.Errorf("STRIPE_TIMEOUT must be a positive duration such as 30s")
	}
	return c, nil
}
