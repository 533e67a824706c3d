package http

import (
	"crypto/sha256"
	"net/http"
	"strconv"
	"testing"
	"time"
)

func TestRateLimiterBurstThenRefill(t *testing.T) {
	limiter := NewRateLimiter(2, 3)
	now := time.Date(2026, 1, 5, 10, 0, 0, 0, time.UTC)

	for i := range 3 {
		if ok, _ := limiter.Allow("tpk_a", now); !ok {
			t.Fatalf("request %d of the burst rejected, want the burst of 3 allowed", i+1)
		}
	}
	ok, wait := limiter.Allow("tpk_a", now)
	if ok {
		t.Fatal("fourth request at once allowed, want it rejected")
	}
	if wait != 500*time.Millisecond {
		t.Errorf("wait %v, want 500ms at 2 requests per second", wait)
	}
	if ok, _ := limiter.Allow("tpk_b", now); !ok {
		t.Error("another token was rejected; buckets must be per token")
	}

	// A rejected request takes nothing, so the wait does not grow.
	if _, again := limiter.Allow("tpk_a", now); again != wait {
		t.Errorf("wait after a second rejection %v, want %v", again, wait)
	}
	if ok, _ := limiter.Allow("tpk_a", now.Add(500*time.Millisecond)); !ok {
		t.Error("request after the wait rejected, want it allowed")
	}
}

func TestRateLimiterDropsIdleBuckets(t *testing.T) {
	limiter := NewRateLimiter(10, 10)
	now := time.Date(2026, 1, 5, 10, 0, 0, 0, time.UTC)
	limiter.Allow("tpk_idle", now)
	limiter.Allow("tpk_busy", now)

	limiter.Allow("tpk_busy", now.Add(sweepInterval-500*time.Millisecond))
	limiter.Allow("tpk_other", now.Add(sweepInterval))
	if _, kept := limiter.buckets[sha256Of("tpk_idle")]; kept {
		t.Error("idle bucket kept after the sweep, want it dropped")
	}
	if _, kept := limiter.buckets[sha256Of("tpk_busy")]; !kept {
		t.Error("busy bucket dropped by the sweep, want it kept")
	}
	if len(limiter.buckets) != 2 {
		t.Errorf("%d buckets after the sweep, want 2 (busy and other)", len(limiter.buckets))
	}
}

func TestRetryAfterSeconds(t *testing.T) {
	for wait, want := range map[time.Duration]int{
		time.Millisecond:        1,
		time.Second:             1,
		1500 * time.Millisecond: 2,
		0:                       1,
	} {
		if got := retryAfterSeconds(wait); got != want {
			t.Errorf("retryAfterSeconds(%v) = %d, want %d", wait, got, want)
		}
	}
}

func TestRateLimitThroughAPI(t *testing.T) {
	env := newContractEnv(t, func(d *Deps) { d.Contract.Limiter = NewRateLimiter(0.5, 2) })
	busy := env.token("customer", "user_busy")
	calm := env.token("customer", "user_calm")
	list := contractRequest{Method: "GET", Path: "/v1/tasks", Token: busy}

	env.expect(http.StatusOK, list)
	env.expect(http.StatusOK, list)
	resp := checkErrorCase(t, env, errorCase{req: list, status: 429, code: "rate_limited"})
	seconds, err := strconv.Atoi(resp.Header.Get("Retry-After"))
	if err != nil || seconds < 1 || seconds > 2 {
		t.Errorf("Retry-After %q, want 1 or 2 seconds at 0.5 requests per second", resp.Header.Get("Retry-After"))
	}
	if e := resp.errorBody(t); e.Type != "rate_limit_error" {
		t.Errorf("type %q, want rate_limit_error", e.Type)
	}

	env.expect(http.StatusOK, contractRequest{Method: "GET", Path: "/v1/tasks", Token: calm})
	env.expect(http.StatusOK, contractRequest{Method: "GET", Path: "/v1/openapi.yaml"})
}

func sha256Of(token string) [32]byte { return sha256.Sum256([]byte(token)) }
