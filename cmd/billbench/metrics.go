package main

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Service metrics read around the relay rounds, from the service's own
// Prometheus endpoint, to tell where the relay's time goes.
var relayMetricNames = []string{
	"taskpod_billing_stripe_request_duration_seconds_sum",
	"taskpod_billing_stripe_request_duration_seconds_count",
	"taskpod_billing_db_pool_acquires_total",
	"taskpod_billing_db_pool_acquire_waits_total",
	"taskpod_billing_db_pool_acquire_wait_seconds_total",
}

// serviceMetrics maps a metric name to its value summed over its labels.
type serviceMetrics map[string]float64

// metrics reads GET /metrics and keeps the relay metrics.
func (s *service) metrics(ctx context.Context) (serviceMetrics, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.base+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /metrics returned %d", resp.StatusCode)
	}
	return parseMetrics(bufio.NewScanner(resp.Body))
}

// parseMetrics sums the samples of relayMetricNames in the Prometheus text
// format.
func parseMetrics(scanner *bufio.Scanner) (serviceMetrics, error) {
	m := serviceMetrics{}
	for scanner.Scan() {
		line := scanner.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		name, rest, ok := strings.Cut(line, " ")
		if i := strings.IndexByte(line, '{'); i >= 0 && i < len(name) {
			name = line[:i]
			_, rest, ok = strings.Cut(line[strings.LastIndexByte(line, '}')+1:], " ")
		}
		if !ok {
			continue
		}
		for _, expected := range relayMetricNames {
			if name != expected {
				continue
			}
			fields := strings.Fields(rest)
			if len(fields) == 0 {
				continue
			}
			v, err := strconv.ParseFloat(fields[0], 64)
			if err != nil {
				return nil, fmt.Errorf("metric %s: invalid value %q: %w", name, fields[0], err)
			}
			m[name] += v
		}
	}
	return m, scanner.Err()
}

func (m serviceMetrics) minus(o serviceMetrics) serviceMetrics {
	out := serviceMetrics{}
	for k, v := range m {
		out[k] = v - o[k]
	}
	return out
}

func (m serviceMetrics) add(o serviceMetrics) {
	for k, v := range o {
		m[k] += v
	}
}

// describe summarises the relay metrics for the report.
func (m serviceMetrics) describe() string {
	calls := m["taskpod_billing_stripe_request_duration_seconds_count"]
	mean := time.Duration(0)
	if calls > 0 {
		mean = time.Duration(m["taskpod_billing_stripe_request_duration_seconds_sum"] / calls * float64(time.Second))
	}
	return fmt.Sprintf("service during the relay rounds: Stripe calls %s mean over %.0f, "+
		"%.0f of %.0f pool acquisitions waited for a connection, %.2f s of waiting in all",
		formatDuration(mean), calls, m["taskpod_billing_db_pool_acquire_waits_total"],
		m["taskpod_billing_db_pool_acquires_total"], m["taskpod_billing_db_pool_acquire_wait_seconds_total"])
}

func meanDuration(nanos, count int64) time.Duration {
	if count == 0 {
		return 0
	}
	return time.Duration(nanos / count)
}
