package http

import (
	"crypto/sha256"
	"math"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Defaults of the per-token rate limit: far above what an interactive client
// or the test suites send, low enough to stop a runaway retry loop.
const (
	DefaultRateLimitPerSecond = 50
	DefaultRateLimitBurst     = 100
)

// sweepInterval is how often idle buckets are dropped.
const sweepInterval = time.Minute

// RateLimiter gives each bearer token its own token bucket. It keeps only
// SHA-256 hashes of tokens, and state is per process: behind N replicas a
// token may send up to N times the limit.
type RateLimiter struct {
	limit rate.Limit
	burst int
	// idleAfter is the time a bucket takes to refill completely; a bucket
	// idle that long is full, so dropping it loses nothing.
	idleAfter time.Duration

	mu        sync.Mutex
	buckets   map[[sha256.Size]byte]*tokenBucket
	lastSweep time.Time
}

type tokenBucket struct {
	limiter  *rate.Limiter
	lastSeen time.Time
}

// NewRateLimiter allows each token perSecond requests per second on
// average and bursts of up to burst requests. perSecond must be positive
// and burst at least 1.
func NewRateLimiter(perSecond float64, burst int) *RateLimiter {
	refill := time.Duration(float64(burst) / perSecond * float64(time.Second))
	return &RateLimiter{
		limit:     rate.Limit(perSecond),
		burst:     burst,
		idleAfter: max(refill, time.Second),
		buckets:   map[[sha256.Size]byte]*tokenBucket{},
	}
}

// Allow takes one request from the token's bucket at now. When the bucket
// is empty it takes nothing and returns false with the wait until a
// request would be allowed.
func (l *RateLimiter) Allow(token string, now time.Time) (bool, time.Duration) {
	key := sha256.Sum256([]byte(token))

	l.mu.Lock()
	if now.Sub(l.lastSweep) >= sweepInterval {
		l.sweep(now)
	}
	b, ok := l.buckets[key]
	if !ok {
		b = &tokenBucket{limiter: rate.NewLimiter(l.limit, l.burst)}
		l.buckets[key] = b
	}
	b.lastSeen = now
	l.mu.Unlock()

	res := b.limiter.ReserveN(now, 1)
	if !res.OK() {
		return false, time.Second
	}
	if wait := res.DelayFrom(now); wait > 0 {
		res.CancelAt(now)
		return false, wait
	}
	return true, 0
}

// sweep drops buckets idle long enough to be full again. The caller holds mu.
func (l *RateLimiter) sweep(now time.Time) {
	for key, b := range l.buckets {
		if now.Sub(b.lastSeen) >= l.idleAfter {
			delete(l.buckets, key)
		}
	}
	l.lastSweep = now
}

// retryAfterSeconds rounds a wait up to whole seconds, at least 1, the
// unit of the Retry-After header.
func retryAfterSeconds(wait time.Duration) int {
	return max(1, int(math.Ceil(wait.Seconds())))
}
