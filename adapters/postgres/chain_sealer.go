package postgres

import (
	"context"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// DefaultSealInterval is how often the sealer looks for new transactions.
const DefaultSealInterval = 200 * time.Millisecond

// SealerObserver receives the sealer's lag after each pass.
type SealerObserver interface {
	// ObserveSealerLag reports the committed transactions waiting for a seal
	// and the age of the oldest of them (zero when none waits).
	ObserveSealerLag(unsealed int64, oldest time.Duration)
}

// Sealer seals committed ledger transactions in the background. Every
// instance of the service runs one. A pass that finds the sealer lock taken
// by another instance does nothing, so one sealer works at a time.
type Sealer struct {
	pool     *pgxpool.Pool
	interval time.Duration
	observer SealerObserver
	log      *slog.Logger
}

// NewSealer returns a sealer polling every interval (DefaultSealInterval
// when zero). A nil observer is allowed.
func NewSealer(pool *pgxpool.Pool, interval time.Duration, observer SealerObserver, log *slog.Logger) *Sealer {
	if interval <= 0 {
		interval = DefaultSealInterval
	}
	return &Sealer{pool: pool, interval: interval, observer: observer, log: log}
}

// Run seals until ctx ends and then returns nil. A failed pass is logged and
// retried at the next tick; repeated failures are logged at the 1st, 10th,
// 100th... occurrence so a database outage does not flood the log.
func (s *Sealer) Run(ctx context.Context) error {
	ticker := time.NewTicker(s.interval)
	defer ticker.Stop()
	failures := 0
	for {
		err := s.pass(ctx)
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil:
			failures++
			if isPowerOfTen(failures) {
				s.log.ErrorContext(ctx, "ledger sealing failed", "error", err, "consecutive_failures", failures)
			}
		case failures > 0:
			s.log.InfoContext(ctx, "ledger sealing recovered", "failed_passes", failures)
			failures = 0
		}

		select {
		case <-ctx.Done():
			return nil
		case <-ticker.C:
		}
	}
}

// pass seals what is queued, batch after batch, while it holds the lock,
// then reports the lag.
func (s *Sealer) pass(ctx context.Context) error {
	for {
		n, locked, err := sealBatch(ctx, s.pool, false)
		if err != nil {
			return err
		}
		if !locked || n < sealBatchSize || ctx.Err() != nil {
			break
		}
	}
	if s.observer == nil {
		return nil
	}
	unsealed, oldest, err := s.lag(ctx)
	if err != nil {
		return err
	}
	s.observer.ObserveSealerLag(unsealed, oldest)
	return nil
}

// lag counts queued transactions and the age of the oldest by its
// recorded_at, measured on the database clock.
func (s *Sealer) lag(ctx context.Context) (int64, time.Duration, error) {
	var count int64
	var seconds float64
	err := s.pool.QueryRow(ctx, `
		SELECT count(q.id), coalesce(extract(epoch FROM clock_timestamp() - min(t.recorded_at)), 0)::float8
		  FROM ledger_unsealed q
		  LEFT JOIN ledger_transactions t ON t.id = q.transaction_id`).Scan(&count, &seconds)
	if err != nil {
		return 0, 0, mapError(err, "read ledger sealer lag")
	}
	return count, time.Duration(seconds * float64(time.Second)), nil
}

func isPowerOfTen(n int) bool {
	for n >= 10 && n%10 == 0 {
		n /= 10
	}
	return n == 1
}
