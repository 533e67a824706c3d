package emulator

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/jackc/pgx/v5"
)

// idempotencyTTL is how long a stored response is replayed, in seconds of the
// emulator's clock. Stripe keeps keys for at least 24 hours.
const idempotencyTTL = 24 * 60 * 60

func idempotencyKeyOf(r *http.Request) string {
	return strings.TrimSpace(r.Header.Get("Idempotency-Key"))
}

// hashParams fingerprints a request's parameters; url.Values.Encode sorts by
// key, so the order of the form fields does not matter.
func hashParams(values url.Values) string {
	sum := sha256.Sum256([]byte(values.Encode()))
	return hex.EncodeToString(sum[:])
}

// idempotencyRequest is a POST that carries an Idempotency-Key header.
type idempotencyRequest struct {
	apiKey     string
	key        string
	method     string
	path       string
	paramsHash string
}

// begin claims the key for this transaction. It returns nil when the request
// should run, or the response to send instead: a replay of the stored response, a
// 409 while another request holds the key, or a 400 when the key was used
// with other parameters or another endpoint.
//
// The claim is a transaction-scoped advisory lock on the key, so a crash
// mid-request leaves no stale claim behind.
func (q *idempotencyRequest) begin(ctx context.Context, tx pgx.Tx, now int64) (*response, error) {
	var locked bool
	err := tx.QueryRow(ctx, `SELECT pg_try_advisory_xact_lock(hashtextextended($1, 0))`, q.apiKey+"\n"+q.key).Scan(&locked)
	if err != nil {
		return nil, fmt.Errorf("lock idempotency key: %w", err)
	}
	if !locked {
		res := errorResponse(&apiError{
			status:  http.StatusConflict,
			Type:    errorTypeIdempotency,
			Code:    "idempotency_key_in_use",
			Message: "There is currently another in-progress request using this Idempotent Key (that probably means you submitted twice, and the other request is still going through): " + q.key + ". Please try again later.",
		})
		return &res, nil
	}

	var method, path, hash string
	var status int
	var body []byte
	var createdAt int64
	err = tx.QueryRow(ctx, `
		SELECT method, path, params_hash, status, body, created_at
		FROM stripe_emulator.idempotency_keys WHERE api_key = $1 AND key = $2`, q.apiKey, q.key).
		Scan(&method, &path, &hash, &status, &body, &createdAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read idempotency key: %w", err)
	}
	if createdAt+idempotencyTTL <= now {
		if _, err := tx.Exec(ctx, `DELETE FROM stripe_emulator.idempotency_keys WHERE api_key = $1 AND key = $2`, q.apiKey, q.key); err != nil {
			return nil, fmt.Errorf("delete expired idempotency key: %w", err)
		}
		return nil, nil
	}
	if method != q.method || path != q.path {
		res := errorResponse(&apiError{
			status:  http.StatusBadRequest,
			Type:    errorTypeIdempotency,
			Message: fmt.Sprintf("Keys for idempotent requests can only be used for the same endpoint they were first used for ('%s %s' vs '%s %s'). Try using a key other than '%s' if you meant to execute a different request.", method, path, q.method, q.path, q.key),
		})
		return &res, nil
	}
	if hash != q.paramsHash {
		res := errorResponse(&apiError{
			status:  http.StatusBadRequest,
			Type:    errorTypeIdempotency,
			Message: "Keys for idempotent requests can only be used with the same parameters they were first used with. Try using a key other than '" + q.key + "' if you meant to execute a different request.",
		})
		return &res, nil
	}
	return &response{status: status, body: body, replayed: true}, nil
}

// store saves a response for replay under the key.
func (q *idempotencyRequest) store(ctx context.Context, tx pgx.Tx, now int64, res response) error {
	_, err := tx.Exec(ctx, `
		INSERT INTO stripe_emulator.idempotency_keys (api_key, key, method, path, params_hash, status, body, created_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
		ON CONFLICT (api_key, key) DO NOTHING`,
		q.apiKey, q.key, q.method, q.path, q.paramsHash, res.status, res.body, now)
	if err != nil {
		return fmt.Errorf("store idempotent response: %w", err)
	}
	return nil
}
