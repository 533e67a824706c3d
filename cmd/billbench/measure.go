package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// operation is one unit of load. worker numbers the goroutine from 0.
type operation func(ctx context.Context, worker int) error

// loadResult is the outcome of one closed-loop run.
type loadResult struct {
	ops       int
	errors    int
	firstErr  error
	elapsed   time.Duration
	latencies []time.Duration
}

func (r loadResult) rate() float64 {
	if r.elapsed <= 0 {
		return 0
	}
	return float64(r.ops) / r.elapsed.Seconds()
}

// runLoad runs op in a closed loop on workers goroutines for d, after each
// worker has run warmup operations untimed. Every error counts, and the
// first one is kept for the report.
func runLoad(ctx context.Context, workers int, d time.Duration, warmup int, op operation) loadResult {
	var wg sync.WaitGroup
	var errCount atomic.Int64
	var firstErr error
	var errOnce sync.Once
	fail := func(err error) {
		errCount.Add(1)
		errOnce.Do(func() { firstErr = err })
	}

	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range warmup {
				if err := op(ctx, w); err != nil {
					fail(fmt.Errorf("warm-up: %w", err))
					return
				}
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return loadResult{errors: int(errCount.Load()), firstErr: firstErr}
	}

	latencies := make([][]time.Duration, workers)
	start := time.Now()
	deadline := start.Add(d)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) && ctx.Err() == nil {
				t := time.Now()
				if err := op(ctx, w); err != nil {
					fail(err)
					continue
				}
				latencies[w] = append(latencies[w], time.Since(t))
			}
		}()
	}
	wg.Wait()
	res := loadResult{elapsed: time.Since(start), errors: int(errCount.Load()), firstErr: firstErr}
	for _, l := range latencies {
		res.latencies = append(res.latencies, l...)
	}
	res.ops = len(res.latencies)
	return res
}

// percentile returns the p-th percentile (0..100) by the nearest-rank
// method, or 0 for no samples.
func percentile(samples []time.Duration, p float64) time.Duration {
	if len(samples) == 0 {
		return 0
	}
	sorted := slices.Clone(samples)
	slices.Sort(sorted)
	rank := int(float64(len(sorted))*p/100+0.999999) - 1
	rank = max(0, min(rank, len(sorted)-1))
	return sorted[rank]
}

func median(values []float64) float64 {
	if len(values) == 0 {
		return 0
	}
	sorted := slices.Clone(values)
	sort.Float64s(sorted)
	n := len(sorted)
	if n%2 == 1 {
		return sorted[n/2]
	}
	return (sorted[n/2-1] + sorted[n/2]) / 2
}

// variant is one side of a comparison, such as the application or its
// baseline at one concurrency.
type variant struct {
	name string
	run  func(ctx context.Context) (loadResult, error)
}

// comparison holds the runs of each variant, in the order they ran.
type comparison map[string][]loadResult

// compare runs the variants in turn, rounds times. Interleaving the rounds
// spreads the noise of a shared machine over both sides of a ratio instead
// of charging it to whichever ran during a burst.
func compare(ctx context.Context, rounds int, variants ...variant) (comparison, error) {
	out := comparison{}
	for range rounds {
		for _, v := range variants {
			res, err := v.run(ctx)
			if err != nil {
				return out, fmt.Errorf("%s: %w", v.name, err)
			}
			if res.errors > 0 {
				return out, fmt.Errorf("%s: %d operations failed, first: %w", v.name, res.errors, res.firstErr)
			}
			if res.ops == 0 {
				return out, errors.New(v.name + ": no operation completed")
			}
			out[v.name] = append(out[v.name], res)
		}
	}
	return out, nil
}

// rate is the median throughput of a variant over its rounds.
func (c comparison) rate(name string) float64 {
	var rates []float64
	for _, r := range c[name] {
		rates = append(rates, r.rate())
	}
	return median(rates)
}

// latencies pools the latencies of every round of a variant.
func (c comparison) latencies(name string) []time.Duration {
	var all []time.Duration
	for _, r := range c[name] {
		all = append(all, r.latencies...)
	}
	return all
}

// rates lists the per-round throughputs, for the report.
func (c comparison) rates(name string) []float64 {
	var rates []float64
	for _, r := range c[name] {
		rates = append(rates, r.rate())
	}
	return rates
}
