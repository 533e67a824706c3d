package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/taskpod/billing/adapters/postgres/pgtest"
	"github.com/taskpod/billing/adapters/system"
)

func TestContractConfigDefaults(t *testing.T) {
	c, err := loadContractConfig()
	if err != nil {
		t.Fatalf("loadContractConfig: %v", err)
	}
	if c.IdempotencyTTL != 30*24*time.Hour {
		t.Errorf("IdempotencyTTL %v, want 720h", c.IdempotencyTTL)
	}
	if c.RateLimitPerSecond != 50 || c.RateLimitBurst != 100 {
		t.Errorf("rate limit %v/s burst %d, want 50/s burst 100", c.RateLimitPerSecond, c.RateLimitBurst)
	}
	deps := newContractDeps(c, Config{StripeTimeout: 30 * time.Second}, nil, system.IDs{})
	if deps.Limiter == nil || deps.Idempotency == nil {
		t.Error("default deps lack the limiter or the idempotency store")
	}
	if deps.IdempotencyLease != 2*time.Minute {
		t.Errorf("IdempotencyLease %v, want 2m for a 30s Stripe timeout", deps.IdempotencyLease)
	}
}

func TestContractConfigValues(t *testing.T) {
	cases := []struct {
		name, variable, value string
		wantErr               bool
		check                 func(contractConfig) bool
	}{
		{"ttl in days", "IDEMPOTENCY_KEY_TTL", "7d", false, func(c contractConfig) bool { return c.IdempotencyTTL == 7*24*time.Hour }},
		{"ttl as duration", "IDEMPOTENCY_KEY_TTL", "48h", false, func(c contractConfig) bool { return c.IdempotencyTTL == 48*time.Hour }},
		{"ttl too short", "IDEMPOTENCY_KEY_TTL", "30m", true, nil},
		{"ttl not a duration", "IDEMPOTENCY_KEY_TTL", "a month", true, nil},
		{"negative days", "IDEMPOTENCY_KEY_TTL", "-2d", true, nil},
		{"fractional rate", "RATE_LIMIT_PER_SECOND", "2.5", false, func(c contractConfig) bool { return c.RateLimitPerSecond == 2.5 }},
		{"rate off", "RATE_LIMIT_PER_SECOND", "0", false, func(c contractConfig) bool { return c.RateLimitPerSecond == 0 }},
		{"negative rate", "RATE_LIMIT_PER_SECOND", "-1", true, nil},
		{"rate not a number", "RATE_LIMIT_PER_SECOND", "fast", true, nil},
		{"zero burst", "RATE_LIMIT_BURST", "0", true, nil},
		{"burst not an integer", "RATE_LIMIT_BURST", "1.5", true, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Setenv(c.variable, c.value)
			got, err := loadContractConfig()
			if c.wantErr {
				if err == nil || !strings.Contains(err.Error(), c.variable) {
					t.Errorf("error %v, want one naming %s", err, c.variable)
				}
				return
			}
			if err != nil {
				t.Fatalf("loadContractConfig: %v", err)
			}
			if !c.check(got) {
				t.Errorf("%s=%s gave %+v", c.variable, c.value, got)
			}
		})
	}
}

func TestContractRateLimitOff(t *testing.T) {
	deps := newContractDeps(contractConfig{IdempotencyTTL: time.Hour, RateLimitBurst: 1}, Config{}, nil, system.IDs{})
	if deps.Limiter != nil {
		t.Error("RATE_LIMIT_PER_SECOND=0 still built a limiter")
	}
}

// The token commands never print a stored token except once, at creation.
func TestTokenCommandsListWithoutSecrets(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	name, err := pgtest.CreateDatabase(ctx, "ct")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		dropCtx, dropCancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer dropCancel()
		if err := pgtest.DropDatabase(dropCtx, name); err != nil {
			t.Errorf("drop database %s: %v", name, err)
		}
	})
	t.Setenv("DATABASE_URL", pgtest.DatabaseURL(name))

	var out bytes.Buffer
	if err := run([]string{"token", "create", "--role", "customer", "--subject", "user_cli", "--expires-in", "2h"}, &out, &out); err != nil {
		t.Fatalf("token create --expires-in: %v", err)
	}
	expiring := strings.TrimSpace(out.String())
	out.Reset()
	if err := run([]string{"token", "create", "--role", "admin", "--subject", "ops"}, &out, &out); err != nil {
		t.Fatalf("token create: %v", err)
	}
	forever := strings.TrimSpace(out.String())
	if !strings.HasPrefix(expiring, "tpk_") || !strings.HasPrefix(forever, "tpk_") {
		t.Fatalf("token create printed %q and %q, want tpk_ tokens", expiring, forever)
	}

	listed := tokenList(t)
	if len(listed) != 3 {
		t.Fatalf("token list printed %d lines, want a header and 2 tokens:\n%v", len(listed), listed)
	}
	header := strings.Join(listed[0], " ")
	if header != "ID ROLE SUBJECT CREATED LAST USED EXPIRES REVOKED" {
		t.Errorf("header %q, want the columns id, role, subject, created, last used, expires, revoked", header)
	}
	customer := listed[1]
	if customer[1] != "customer" || customer[2] != "user_cli" || customer[5] == "-" || customer[6] != "-" {
		t.Errorf("customer row %v, want role, subject, an expiry and no revocation", customer)
	}
	if admin := listed[2]; admin[5] != "-" {
		t.Errorf("admin row %v, want no expiry", admin)
	}

	out.Reset()
	if err := run([]string{"token", "revoke", customer[0]}, &out, &out); err != nil {
		t.Fatalf("token revoke: %v", err)
	}
	if revoked := tokenList(t)[1]; revoked[6] == "-" {
		t.Errorf("row after revoke %v, want a revocation time", revoked)
	}
}

// tokenList runs token list and splits its table into cells: the header
// has 8 (LAST USED is two words), each token row 7.
func tokenList(t *testing.T) [][]string {
	t.Helper()
	var out bytes.Buffer
	if err := run([]string{"token", "list"}, &out, &out); err != nil {
		t.Fatalf("token list: %v", err)
	}
	if strings.Contains(out.String(), "tpk_") {
		t.Fatalf("token list printed a token:\n%s", out.String())
	}
	var rows [][]string
	for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		rows = append(rows, strings.Fields(line))
	}
	return rows
}
