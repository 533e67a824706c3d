package postgres

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/taskpod/billing/domain"
)

// ErrTokenInvalid marks a bearer token that is malformed, unknown, revoked
// or expired. Callers should reject all four alike, for example with 401.
var ErrTokenInvalid = errors.New("invalid API token")

// tokenPrefix starts every bearer token, so leaked tokens are easy to scan for.
const tokenPrefix = "tpk_"

// tokenBytes is the number of random bytes in a token (256 bits).
const tokenBytes = 32

// lastUsedInterval limits writes of last_used_at to one per token per minute.
const lastUsedInterval = time.Minute

// tokenRoles are the roles the api_tokens table accepts.
var tokenRoles = []string{"customer", "agent", "auditor", "admin"}

// Tokens stores API bearer tokens as SHA-256 hashes in api_tokens.
type Tokens struct {
	pool *pgxpool.Pool
}

// NewTokens returns a token store on pool.
func NewTokens(pool *pgxpool.Pool) *Tokens {
	return &Tokens{pool: pool}
}

// Principal is the identity an authenticated token carries.
type Principal struct {
	TokenID string
	Role    string
	Subject string
}

// TokenInfo describes a stored token, without the token or its hash.
type TokenInfo struct {
	ID         string
	Role       string
	Subject    string
	CreatedAt  time.Time
	LastUsedAt *time.Time
	ExpiresAt  *time.Time
	RevokedAt  *time.Time
}

// Create issues a token for subject with role, which must be customer,
// agent, auditor or admin. A nil expiresAt means the token never expires.
// The returned token is shown once: only its SHA-256 hash is stored.
func (s *Tokens) Create(ctx context.Context, role, subject string, expiresAt *time.Time) (id string, token string, err error) {
	if !validRole(role) {
		return "", "", domain.Invalid("role", "invalid_role", "role %q is invalid; use one of %s", role, strings.Join(tokenRoles, ", "))
	}
	if strings.TrimSpace(subject) == "" {
		return "", "", domain.Invalid("subject", "missing_subject", "subject is missing; pass the user or agent id the token acts for")
	}
	if expiresAt != nil && !expiresAt.After(time.Now()) {
		return "", "", domain.Invalid("expiresAt", "expiry_in_past", "expiresAt %s is not in the future", expiresAt.Format(time.RFC3339))
	}

	secret := make([]byte, tokenBytes)
	_, _ = rand.Read(secret) // never fails since Go 1.24; it crashes the program instead
	token = tokenPrefix + base64.RawURLEncoding.EncodeToString(secret)
	id = newID("tok_")
	hash := sha256.Sum256([]byte(token))

	_, err = s.pool.Exec(ctx, `
		INSERT INTO api_tokens (id, token_hash, role, subject, expires_at) VALUES ($1, $2, $3, $4, $5)`,
		id, hash[:], role, subject, expiresAt)
	if err != nil {
		return "", "", mapError(err, "create "+role+" token for "+subject)
	}
	return id, token, nil
}

func validRole(role string) bool {
	for _, r := range tokenRoles {
		if r == role {
			return true
		}
	}
	return false
}

// Authenticate returns the principal of a valid token. A malformed, unknown,
// revoked or expired token returns an error wrapping ErrTokenInvalid, and
// the message names the reason for logs. It records last_used_at at most once a
// minute per token, so busy clients cause few writes.
func (s *Tokens) Authenticate(ctx context.Context, token string) (Principal, error) {
	if !strings.HasPrefix(token, tokenPrefix) {
		return Principal{}, fmt.Errorf("%w: the token does not start with %s", ErrTokenInvalid, tokenPrefix)
	}
	hash := sha256.Sum256([]byte(token))

	var p Principal
	var revoked, expired, lastUseStale bool
	err := s.pool.QueryRow(ctx, `
		SELECT id, role, subject, revoked_at IS NOT NULL, expires_at IS NOT NULL AND expires_at <= now(),
		       last_used_at IS NULL OR last_used_at <= now() - $2::interval
		  FROM api_tokens WHERE token_hash = $1`,
		hash[:], lastUsedInterval).Scan(&p.TokenID, &p.Role, &p.Subject, &revoked, &expired, &lastUseStale)
	if errors.Is(err, pgx.ErrNoRows) {
		return Principal{}, fmt.Errorf("%w: the token is unknown", ErrTokenInvalid)
	}
	if err != nil {
		return Principal{}, fmt.Errorf("authenticate token: %w", err)
	}
	if revoked {
		return Principal{}, fmt.Errorf("%w: token %s is revoked", ErrTokenInvalid, p.TokenID)
	}
	if expired {
		return Principal{}, fmt.Errorf("%w: token %s is expired", ErrTokenInvalid, p.TokenID)
	}

	if lastUseStale {
		// The condition is repeated so that concurrent requests write once.
		_, err := s.pool.Exec(ctx, `
			UPDATE api_tokens SET last_used_at = now()
			 WHERE id = $1 AND (last_used_at IS NULL OR last_used_at <= now() - $2::interval)`,
			p.TokenID, lastUsedInterval)
		if err != nil {
			return Principal{}, fmt.Errorf("authenticate token %s: record last use: %w", p.TokenID, err)
		}
	}
	return p, nil
}

// Revoke marks a token revoked. Revoking a revoked token keeps the first
// revocation time and succeeds.
func (s *Tokens) Revoke(ctx context.Context, id string) error {
	tag, err := s.pool.Exec(ctx, `UPDATE api_tokens SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1`, id)
	if err != nil {
		return mapError(err, "revoke token "+id)
	}
	if tag.RowsAffected() == 0 {
		return notFound("token", id)
	}
	return nil
}

// List returns every token, revoked and expired ones included, oldest first.
func (s *Tokens) List(ctx context.Context) ([]TokenInfo, error) {
	rows, err := s.pool.Query(ctx, `
		SELECT id, role, subject, created_at, last_used_at, expires_at, revoked_at
		  FROM api_tokens ORDER BY created_at, id`)
	if err != nil {
		return nil, mapError(err, "list tokens")
	}
	infos, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (TokenInfo, error) {
		var i TokenInfo
		err := row.Scan(&i.ID, &i.Role, &i.Subject, &i.CreatedAt, &i.LastUsedAt, &i.ExpiresAt, &i.RevokedAt)
		return i, err
	})
	return infos, mapError(err, "list tokens")
}
