package postgres

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// ErrIdempotencyClaimLost is returned by Complete and Release when the claim
// token no longer holds the key: its lease ran out and another request took
// the key over, or the key was purged.
var ErrIdempotencyClaimLost = errors.New("idempotency key claim lost")

// maxClaimAttempts bounds Claim's retries when the row it found vanishes
// (purged or forgotten) before it could be locked.
const maxClaimAttempts = 3

// IdempotencyKeys stores the API's Idempotency-Key records in the table
// idempotency_keys. Times come from the database clock, so several API
// processes agree on leases and expiry.
type IdempotencyKeys struct {
	pool *pgxpool.Pool
}

// NewIdempotencyKeys returns the idempotency key store on pool.
func NewIdempotencyKeys(pool *pgxpool.Pool) *IdempotencyKeys {
	return &IdempotencyKeys{pool: pool}
}

// IdempotencyKeyID identifies one key: the caller's scope (role and
// subject), the HTTP method and path, and the client's key.
type IdempotencyKeyID struct {
	Scope  string
	Method string
	Path   string
	Key    string
}

// IdempotencyClaim is a request to run one API request under a key.
type IdempotencyClaim struct {
	IdempotencyKeyID
	// RequestHash is the SHA-256 of the canonical request body.
	RequestHash []byte
	// ResourceID is the id proposed for the object the request creates;
	// an existing row keeps the id it reserved first.
	ResourceID string
	// ClaimToken is a random value that Complete and Release must repeat.
	ClaimToken string
	// Lease is how long the claim holds before another request may take
	// the key over.
	Lease time.Duration
	// TTL is how long the key is kept after it was first claimed.
	TTL time.Duration
}

// ClaimOutcome is the action the caller of Claim must take.
type ClaimOutcome int

// Outcomes of Claim.
const (
	// ClaimAcquired: the key is new (or expired); run the request.
	ClaimAcquired ClaimOutcome = iota + 1
	// ClaimResumed: an earlier request under this key stopped without a
	// stored response (crash, error or lease expiry). Run the request again,
	// but expect that it may already have had its effect.
	ClaimResumed
	// ClaimCompleted: the response is stored; replay it.
	ClaimCompleted
	// ClaimInProgress: another request holds the key right now.
	ClaimInProgress
	// ClaimBodyMismatch: the key was used with another request body.
	ClaimBodyMismatch
)

// StoredResponse is a response kept for replay.
type StoredResponse struct {
	Status  int
	Headers map[string]string
	Body    []byte
}

// IdempotencyRecord is the result of Claim.
type IdempotencyRecord struct {
	Outcome ClaimOutcome
	// ResourceID is the id reserved for the created object, if any.
	ResourceID string
	// Response is set when Outcome is ClaimCompleted.
	Response StoredResponse
}

// Claim takes the key for one request, or reports why it cannot: the
// response is already stored, another request holds the key, or the key was
// used with another body. A key past its TTL counts as new.
func (s *IdempotencyKeys) Claim(ctx context.Context, c IdempotencyClaim) (IdempotencyRecord, error) {
	for attempt := 1; ; attempt++ {
		rec, err := s.claimOnce(ctx, c)
		if errors.Is(err, pgx.ErrNoRows) && attempt < maxClaimAttempts {
			// The conflicting row was deleted between the INSERT and the
			// SELECT; the next attempt inserts it.
			continue
		}
		if err != nil {
			return IdempotencyRecord{}, mapError(err, "claim idempotency key "+c.Key)
		}
		return rec, nil
	}
}

func (s *IdempotencyKeys) claimOnce(ctx context.Context, c IdempotencyClaim) (IdempotencyRecord, error) {
	var rec IdempotencyRecord
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `
			INSERT INTO idempotency_keys (scope, method, path, idempotency_key, request_hash, resource_id,
			                              claim_token, locked_until, expires_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7, now() + $8::interval, now() + $9::interval)
			ON CONFLICT (scope, method, path, idempotency_key) DO NOTHING`,
			c.Scope, c.Method, c.Path, c.Key, c.RequestHash, c.ResourceID, c.ClaimToken, c.Lease, c.TTL)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 1 {
			rec = IdempotencyRecord{Outcome: ClaimAcquired, ResourceID: c.ResourceID}
			return nil
		}
		rec, err = claimExisting(ctx, tx, c)
		return err
	})
	return rec, err
}

// claimExisting decides on a key that already has a row, locking the row so
// two retries cannot both take it over.
func claimExisting(ctx context.Context, tx pgx.Tx, c IdempotencyClaim) (IdempotencyRecord, error) {
	var (
		hash                     []byte
		resourceID               string
		completed, held, expired bool
		status                   *int
		headers                  map[string]string
		body                     []byte
	)
	err := tx.QueryRow(ctx, `
		SELECT request_hash, resource_id, completed_at IS NOT NULL,
		       claim_token IS NOT NULL AND locked_until > now(), expires_at <= now(),
		       response_status, response_headers, response_body
		  FROM idempotency_keys
		 WHERE scope = $1 AND method = $2 AND path = $3 AND idempotency_key = $4
		   FOR UPDATE`,
		c.Scope, c.Method, c.Path, c.Key).Scan(&hash, &resourceID, &completed, &held, &expired, &status, &headers, &body)
	if err != nil {
		return IdempotencyRecord{}, err
	}

	switch {
	case expired:
		_, err := tx.Exec(ctx, `
			UPDATE idempotency_keys
			   SET request_hash = $5, resource_id = $6, claim_token = $7, locked_until = now() + $8::interval,
			       response_status = NULL, response_headers = '{}', response_body = NULL,
			       created_at = now(), completed_at = NULL, expires_at = now() + $9::interval
			 WHERE scope = $1 AND method = $2 AND path = $3 AND idempotency_key = $4`,
			c.Scope, c.Method, c.Path, c.Key, c.RequestHash, c.ResourceID, c.ClaimToken, c.Lease, c.TTL)
		return IdempotencyRecord{Outcome: ClaimAcquired, ResourceID: c.ResourceID}, err
	case !bytes.Equal(hash, c.RequestHash):
		return IdempotencyRecord{Outcome: ClaimBodyMismatch}, nil
	case completed:
		resp := StoredResponse{Status: *status, Headers: headers, Body: body}
		return IdempotencyRecord{Outcome: ClaimCompleted, ResourceID: resourceID, Response: resp}, nil
	case held:
		return IdempotencyRecord{Outcome: ClaimInProgress, ResourceID: resourceID}, nil
	}

	_, err = tx.Exec(ctx, `
		UPDATE idempotency_keys SET claim_token = $5, locked_until = now() + $6::interval
		 WHERE scope = $1 AND method = $2 AND path = $3 AND idempotency_key = $4`,
		c.Scope, c.Method, c.Path, c.Key, c.ClaimToken, c.Lease)
	return IdempotencyRecord{Outcome: ClaimResumed, ResourceID: resourceID}, err
}

// Complete stores the response of the request holding the claim and ends
// the claim. It returns ErrIdempotencyClaimLost when claimToken no longer
// holds the key.
func (s *IdempotencyKeys) Complete(ctx context.Context, id IdempotencyKeyID, claimToken string, resp StoredResponse) error {
	headers := resp.Headers
	if headers == nil {
		headers = map[string]string{}
	}
	tag, err := s.pool.Exec(ctx, `
		UPDATE idempotency_keys
		   SET response_status = $6, response_headers = $7, response_body = $8, completed_at = now(),
		       claim_token = NULL, locked_until = NULL
		 WHERE scope = $1 AND method = $2 AND path = $3 AND idempotency_key = $4 AND claim_token = $5`,
		id.Scope, id.Method, id.Path, id.Key, claimToken, resp.Status, headers, resp.Body)
	if err != nil {
		return mapError(err, "complete idempotency key "+id.Key)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("complete idempotency key %s: %w", id.Key, ErrIdempotencyClaimLost)
	}
	return nil
}

// Release ends a claim without a stored response. With forget the row is
// deleted, so the key may be used again with any body. Without forget the
// row keeps the body hash and the reserved id, and the next request with
// the same body resumes it at once.
func (s *IdempotencyKeys) Release(ctx context.Context, id IdempotencyKeyID, claimToken string, forget bool) error {
	query := `UPDATE idempotency_keys SET claim_token = NULL, locked_until = NULL
	           WHERE scope = $1 AND method = $2 AND path = $3 AND idempotency_key = $4 AND claim_token = $5`
	if forget {
		query = `DELETE FROM idempotency_keys
		          WHERE scope = $1 AND method = $2 AND path = $3 AND idempotency_key = $4 AND claim_token = $5`
	}
	tag, err := s.pool.Exec(ctx, query, id.Scope, id.Method, id.Path, id.Key, claimToken)
	if err != nil {
		return mapError(err, "release idempotency key "+id.Key)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("release idempotency key %s: %w", id.Key, ErrIdempotencyClaimLost)
	}
	return nil
}

// PurgeExpired deletes up to batch keys whose TTL has passed and returns how
// many it deleted. Small batches keep each statement's locks short; callers
// repeat until fewer than batch rows are deleted.
func (s *IdempotencyKeys) PurgeExpired(ctx context.Context, batch int) (int64, error) {
	tag, err := s.pool.Exec(ctx, `
		DELETE FROM idempotency_keys
		 WHERE ctid = ANY (ARRAY(SELECT ctid FROM idempotency_keys WHERE expires_at <= now()
		                          ORDER BY expires_at LIMIT $1))`, batch)
	if err != nil {
		return 0, mapError(err, "purge expired idempotency keys")
	}
	return tag.RowsAffected(), nil
}
