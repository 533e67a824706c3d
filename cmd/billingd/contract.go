package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/fx"

	apihttp "github.com/taskpod/billing/adapters/http"
	"github.com/taskpod/billing/adapters/postgres"
	"github.com/taskpod/billing/ports"
)

// contractModule provides idempotency keys and rate limits for the API, and
// runs the job that purges expired idempotency keys.
var contractModule = fx.Module("contract",
	fx.Provide(
		loadContractConfig,
		fx.Private,
	),
	fx.Provide(
		func(pool *pgxpool.Pool) *postgres.IdempotencyKeys { return postgres.NewIdempotencyKeys(pool) },
		fx.Private,
	),
	fx.Provide(newContractDeps),
	fx.Invoke(startIdempotencyPurge),
)

// Purge schedule of expired idempotency keys.
const (
	purgeInterval  = time.Hour
	purgeBatchSize = 1000
	// minIdempotencyTTL keeps keys at least as long as a client's retries
	// of one request plausibly last.
	minIdempotencyTTL = time.Hour
)

// contractConfig is the contract layer's part of the environment.
type contractConfig struct {
	IdempotencyTTL     time.Duration
	RateLimitPerSecond float64
	RateLimitBurst     int
}

// loadContractConfig reads IDEMPOTENCY_KEY_TTL, RATE_LIMIT_PER_SECOND and
// RATE_LIMIT_BURST; each error names the variable and a valid value.
func loadContractConfig() (contractConfig, error) {
	var c contractConfig
	var err error
	if c.IdempotencyTTL, err = parseDays(env("IDEMPOTENCY_KEY_TTL")); err != nil || c.IdempotencyTTL < minIdempotencyTTL {
		return c, fmt.Errorf("IDEMPOTENCY_KEY_TTL must be a duration of at least 1h, such as 720h or 30d, got %q", env("IDEMPOTENCY_KEY_TTL"))
	}
	if c.RateLimitPerSecond, err = strconv.ParseFloat(env("RATE_LIMIT_PER_SECOND"), 64); err != nil || c.RateLimitPerSecond < 0 {
		return c, fmt.Errorf("RATE_LIMIT_PER_SECOND must be a number of requests per second, 0 or more, got %q", env("RATE_LIMIT_PER_SECOND"))
	}
	if c.RateLimitBurst, err = strconv.Atoi(env("RATE_LIMIT_BURST")); err != nil || c.RateLimitBurst < 1 {
		return c, fmt.Errorf("RATE_LIMIT_BURST must be a positive integer, got %q", env("RATE_LIMIT_BURST"))
	}
	return c, nil
}

// parseDays parses a Go duration, or a whole number of days written as Nd.
func parseDays(s string) (time.Duration, error) {
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(days)
		if err != nil || n < 0 {
			return 0, fmt.Errorf("invalid number of days %q", s)
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	return time.ParseDuration(s)
}

func newContractDeps(cc contractConfig, cfg Config, keys *postgres.IdempotencyKeys, ids ports.IDGenerator) apihttp.ContractDeps {
	deps := apihttp.ContractDeps{
		Idempotency:    idempotencyStore{keys},
		IdempotencyTTL: cc.IdempotencyTTL,
		// POST /v1/tasks may make two Stripe calls; the lease outlasts both
		// with room to spare, so only a crashed request loses its claim.
		IdempotencyLease: max(apihttp.DefaultIdempotencyLease, 4*cfg.StripeTimeout),
		IDs:              ids,
	}
	if cc.RateLimitPerSecond > 0 {
		deps.Limiter = apihttp.NewRateLimiter(cc.RateLimitPerSecond, cc.RateLimitBurst)
	}
	return deps
}

// startIdempotencyPurge deletes expired idempotency keys at start and then
// every hour, until the application stops.
func startIdempotencyPurge(lc fx.Lifecycle, keys *postgres.IdempotencyKeys, log *slog.Logger) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	lc.Append(fx.Hook{
		OnStart: func(context.Context) error {
			go func() {
				defer close(done)
				ticker := time.NewTicker(purgeInterval)
				defer ticker.Stop()
				for {
					purgeIdempotencyKeys(ctx, keys, log)
					select {
					case <-ctx.Done():
						return
					case <-ticker.C:
					}
				}
			}()
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

// purgeIdempotencyKeys deletes expired keys in batches until none is left.
func purgeIdempotencyKeys(ctx context.Context, keys *postgres.IdempotencyKeys, log *slog.Logger) {
	var total int64
	for ctx.Err() == nil {
		n, err := keys.PurgeExpired(ctx, purgeBatchSize)
		if err != nil {
			if ctx.Err() == nil {
				log.Warn("purge of expired idempotency keys failed; retrying at the next run",
					"next_run_in", purgeInterval.String(), "error", err)
			}
			break
		}
		total += n
		if n < purgeBatchSize {
			break
		}
	}
	if total > 0 {
		log.Info("expired idempotency keys purged", "count", total)
	}
}

// idempotencyStore adapts the PostgreSQL key store to the API's interface.
type idempotencyStore struct {
	keys *postgres.IdempotencyKeys
}

func (s idempotencyStore) Claim(ctx context.Context, c apihttp.IdempotencyClaim) (apihttp.IdempotencyRecord, error) {
	rec, err := s.keys.Claim(ctx, postgres.IdempotencyClaim{
		IdempotencyKeyID: postgres.IdempotencyKeyID(c.IdempotencyKeyID),
		RequestHash:      c.RequestHash, ResourceID: c.ResourceID, ClaimToken: c.ClaimToken, Lease: c.Lease, TTL: c.TTL,
	})
	if err != nil {
		return apihttp.IdempotencyRecord{}, err
	}
	outcome, ok := claimOutcomes[rec.Outcome]
	if !ok {
		return apihttp.IdempotencyRecord{}, fmt.Errorf("claim idempotency key %s: unknown outcome %d", c.Key, rec.Outcome)
	}
	return apihttp.IdempotencyRecord{Outcome: outcome, ResourceID: rec.ResourceID, Response: apihttp.StoredResponse(rec.Response)}, nil
}

var claimOutcomes = map[postgres.ClaimOutcome]apihttp.ClaimOutcome{
	postgres.ClaimAcquired:     apihttp.ClaimAcquired,
	postgres.ClaimResumed:      apihttp.ClaimResumed,
	postgres.ClaimCompleted:    apihttp.ClaimCompleted,
	postgres.ClaimInProgress:   apihttp.ClaimInProgress,
	postgres.ClaimBodyMismatch: apihttp.ClaimBodyMismatch,
}

func (s idempotencyStore) Complete(ctx context.Context, id apihttp.IdempotencyKeyID, claimToken string, resp apihttp.StoredResponse) error {
	return s.keys.Complete(ctx, postgres.IdempotencyKeyID(id), claimToken, postgres.StoredResponse(resp))
}

func (s idempotencyStore) Release(ctx context.Context, id apihttp.IdempotencyKeyID, claimToken string, forget bool) error {
	err := s.keys.Release(ctx, postgres.IdempotencyKeyID(id), claimToken, forget)
	if errors.Is(err, postgres.ErrIdempotencyClaimLost) {
		// Another request resumed the key after this claim's lease ended.
		return nil
	}
	return err
}
