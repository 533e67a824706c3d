// Package stripe implements ports.PaymentGateway on stripe-go v76.
//
// stripe-go types stay inside this package: every response is converted to
// the ports and domain types, and every failure to a *ports.GatewayError.
// stripe-go's own network retries are off because the service's outbox relay
// retries failed calls with the same idempotency key.
package stripe

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"time"

	stripego "github.com/stripe/stripe-go/v76"
	"github.com/stripe/stripe-go/v76/client"

	"github.com/taskpod/billing/ports"
)

// DefaultTimeout bounds one HTTP request to Stripe when Config.HTTPClient is nil.
const DefaultTimeout = 30 * time.Second

// Config sets how the gateway reaches Stripe.
type Config struct {
	// SecretKey is the Stripe secret key (sk_live_..., sk_test_...). Required.
	SecretKey string
	// APIBase is the base URL of the Stripe API, for example
	// http://127.0.0.1:12113 for a local emulator. Empty means Stripe's
	// production URL, https://api.stripe.com.
	APIBase string
	// HTTPClient sends the requests. Nil means a client with DefaultTimeout.
	// The gateway wraps a copy of its transport and leaves the original as is.
	HTTPClient *http.Client
	// Logger receives the gateway's own warnings. Nil means slog.Default().
	Logger *slog.Logger
}

// Gateway is the Stripe implementation of ports.PaymentGateway. It is safe
// for concurrent use.
type Gateway struct {
	api *client.API
	log *slog.Logger
}

var _ ports.PaymentGateway = (*Gateway)(nil)

// New checks cfg and builds a gateway whose stripe-go backend makes exactly
// one HTTP request per API call, with no retries of its own.
func New(cfg Config) (*Gateway, error) {
	if cfg.SecretKey == "" {
		return nil, errors.New("stripe: Config.SecretKey is empty; set the Stripe secret key")
	}

	var apiBase *string // nil keeps stripe-go's production hosts
	if cfg.APIBase != "" {
		u, err := url.Parse(cfg.APIBase)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("stripe: Config.APIBase %q is not an http or https URL with a host", cfg.APIBase)
		}
		apiBase = stripego.String(cfg.APIBase)
	}

	httpClient := cfg.HTTPClient
	if httpClient == nil {
		httpClient = &http.Client{Timeout: DefaultTimeout}
	}
	// The copy shares the caller's settings but sends through a transport
	// that records what came back, so errors can be classified without
	// parsing stripe-go's messages.
	recorded := *httpClient
	recorded.Transport = &recordingTransport{next: httpClient.Transport}

	logger := cfg.Logger
	if logger == nil {
		logger = slog.Default()
	}

	backendConfig := &stripego.BackendConfig{
		URL:               apiBase,
		HTTPClient:        &recorded,
		MaxNetworkRetries: stripego.Int64(0),
		// stripe-go logs whole response bodies at debug level, and those
		// carry client secrets. Its messages are silenced here because every
		// failure reaches the caller as a returned error instead.
		LeveledLogger: &stripego.LeveledLogger{Level: stripego.LevelNull},
	}
	// The gateway only calls the API backend. The Connect and Uploads
	// backends get the same base URL so that a test configuration never
	// points any of them at Stripe's real hosts.
	backends := &stripego.Backends{
		API:     stripego.GetBackendWithConfig(stripego.APIBackend, cloneBackendConfig(backendConfig)),
		Connect: stripego.GetBackendWithConfig(stripego.ConnectBackend, cloneBackendConfig(backendConfig)),
		Uploads: stripego.GetBackendWithConfig(stripego.UploadsBackend, cloneBackendConfig(backendConfig)),
	}

	return &Gateway{api: client.New(cfg.SecretKey, backends), log: logger}, nil
}

// cloneBackendConfig copies a backend configuration because
// GetBackendWithConfig fills in defaults on the struct it is given.
func cloneBackendConfig(c *stripego.BackendConfig) *stripego.BackendConfig {
	clone := *c
	return &clone
}
