package postgres

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/taskpod/billing/domain"
)

func TestTokenCreateAndAuthenticate(t *testing.T) {
	ctx := testContext(t)
	pool := migratedPool(t)
	tokens := NewTokens(pool)
	subject := uniqueID("user_")

	id, token, err := tokens.Create(ctx, "customer", subject, nil)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	if !strings.HasPrefix(id, "tok_") {
		t.Errorf("token id %q does not start with tok_", id)
	}
	secret, found := strings.CutPrefix(token, "tpk_")
	if !found {
		t.Fatalf("token %q does not start with tpk_", token)
	}
	if raw, err := base64.RawURLEncoding.DecodeString(secret); err != nil || len(raw) != 32 {
		t.Errorf("token body decodes to %d bytes (err %v), want 32 random bytes in base64url", len(raw), err)
	}

	principal, err := tokens.Authenticate(ctx, token)
	if err != nil {
		t.Fatalf("Authenticate: %v", err)
	}
	want := Principal{TokenID: id, Role: "customer", Subject: subject}
	if principal != want {
		t.Errorf("Authenticate = %+v, want %+v", principal, want)
	}

	var hash []byte
	var lastUsed *time.Time
	if err := pool.QueryRow(ctx, `SELECT token_hash, last_used_at FROM api_tokens WHERE id = $1`, id).Scan(&hash, &lastUsed); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte(token))
	if string(hash) != string(sum[:]) {
		t.Error("token_hash is not the SHA-256 of the token")
	}
	if lastUsed == nil {
		t.Error("Authenticate did not record last_used_at")
	}

	var leaks int
	err = pool.QueryRow(ctx, `
		SELECT count(*) FROM api_tokens t
		 WHERE strpos(row_to_json(t)::text, $1) > 0`,
		secret).Scan(&leaks)
	if err != nil {
		t.Fatal(err)
	}
	if leaks != 0 {
		t.Error("the raw token appears in api_tokens")
	}
}

func TestTokenLastUsedOncePerMinute(t *testing.T) {
	ctx := testContext(t)
	pool := migratedPool(t)
	tokens := NewTokens(pool)
	id, token, err := tokens.Create(ctx, "agent", uniqueID("agt_"), nil)
	if err != nil {
		t.Fatal(err)
	}

	readLastUsed := func() time.Time {
		var at time.Time
		if err := pool.QueryRow(ctx, `SELECT last_used_at FROM api_tokens WHERE id = $1`, id).Scan(&at); err != nil {
			t.Fatal(err)
		}
		return at
	}
	if _, err := tokens.Authenticate(ctx, token); err != nil {
		t.Fatal(err)
	}
	first := readLastUsed()
	if _, err := tokens.Authenticate(ctx, token); err != nil {
		t.Fatal(err)
	}
	if second := readLastUsed(); !second.Equal(first) {
		t.Errorf("last_used_at moved from %s to %s within a minute", first, second)
	}

	if _, err := pool.Exec(ctx, `UPDATE api_tokens SET last_used_at = now() - interval '2 minutes' WHERE id = $1`, id); err != nil {
		t.Fatal(err)
	}
	stale := readLastUsed()
	if _, err := tokens.Authenticate(ctx, token); err != nil {
		t.Fatal(err)
	}
	if refreshed := readLastUsed(); !refreshed.After(stale) {
		t.Errorf("last_used_at stayed at %s after more than a minute", refreshed)
	}
}

func TestTokenRejectsInvalid(t *testing.T) {
	ctx := testContext(t)
	pool := migratedPool(t)
	tokens := NewTokens(pool)

	revokedID, revoked, err := tokens.Create(ctx, "admin", "admin_1", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := tokens.Revoke(ctx, revokedID); err != nil {
		t.Fatalf("Revoke: %v", err)
	}
	if err := tokens.Revoke(ctx, revokedID); err != nil {
		t.Errorf("second Revoke: %v", err)
	}

	soon := time.Now().Add(time.Hour)
	expiredID, expired, err := tokens.Create(ctx, "auditor", "auditor_1", &soon)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tokens.Authenticate(ctx, expired); err != nil {
		t.Fatalf("a token expiring in an hour was rejected: %v", err)
	}
	if _, err := pool.Exec(ctx, `UPDATE api_tokens SET expires_at = now() - interval '1 second' WHERE id = $1`, expiredID); err != nil {
		t.Fatal(err)
	}

	unknownSecret := make([]byte, 32)
	_, _ = rand.Read(unknownSecret)
	unknown := "tpk_" + base64.RawURLEncoding.EncodeToString(unknownSecret)

	cases := map[string]string{
		"revoked":   revoked,
		"expired":   expired,
		"unknown":   unknown,
		"malformed": "Bearer something",
		"empty":     "",
	}
	for name, token := range cases {
		if _, err := tokens.Authenticate(ctx, token); !errors.Is(err, ErrTokenInvalid) {
			t.Errorf("%s token: Authenticate returned %v, want ErrTokenInvalid", name, err)
		}
	}
}

func TestTokenCreateValidatesInput(t *testing.T) {
	ctx := testContext(t)
	tokens := NewTokens(migratedPool(t))
	past := time.Now().Add(-time.Minute)

	cases := []struct {
		name, role, subject string
		expiresAt           *time.Time
		field               string
	}{
		{"unknown role", "owner", "user_1", nil, "role"},
		{"empty subject", "customer", " ", nil, "subject"},
		{"expiry in the past", "customer", "user_1", &past, "expiresAt"},
	}
	for _, c := range cases {
		_, _, err := tokens.Create(ctx, c.role, c.subject, c.expiresAt)
		var invalid *domain.ValidationError
		if !errors.As(err, &invalid) || invalid.Field != c.field {
			t.Errorf("%s: Create returned %v, want a validation error on %s", c.name, err, c.field)
		}
	}
}

func TestTokenRevokeAndList(t *testing.T) {
	ctx := testContext(t)
	tokens := NewTokens(migratedPool(t))
	expiry := time.Now().Add(24 * time.Hour).UTC().Truncate(time.Microsecond)
	subject := uniqueID("user_")
	id, _, err := tokens.Create(ctx, "customer", subject, &expiry)
	if err != nil {
		t.Fatal(err)
	}
	if err := tokens.Revoke(ctx, id); err != nil {
		t.Fatal(err)
	}
	if err := tokens.Revoke(ctx, uniqueID("tok_")); !errors.Is(err, domain.ErrNotFound) {
		t.Errorf("Revoke of a missing token returned %v, want ErrNotFound", err)
	}

	infos, err := tokens.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var info *TokenInfo
	for i := range infos {
		if infos[i].ID == id {
			info = &infos[i]
		}
	}
	if info == nil {
		t.Fatalf("List does not include token %s", id)
	}
	if info.Role != "customer" || info.Subject != subject || info.CreatedAt.IsZero() {
		t.Errorf("List entry = %+v, want role customer, subject %s and a creation time", info, subject)
	}
	if info.RevokedAt == nil {
		t.Error("List entry has no revocation time")
	}
	if info.ExpiresAt == nil || !info.ExpiresAt.Equal(expiry) {
		t.Errorf("List entry expires at %v, want %s", info.ExpiresAt, expiry)
	}
	if info.LastUsedAt != nil {
		t.Errorf("List entry was last used at %s, want never", info.LastUsedAt)
	}
}
