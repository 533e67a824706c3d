package postgres

import (
	"context"
	"crypto/sha256"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

func newClaim(scope, key, body string) IdempotencyClaim {
	hash := sha256.Sum256([]byte(body))
	return IdempotencyClaim{
		IdempotencyKeyID: IdempotencyKeyID{Scope: scope, Method: "POST", Path: "/v1/tasks", Key: key},
		RequestHash:      hash[:],
		ResourceID:       uniqueID("task_"),
		ClaimToken:       uniqueID("claim_"),
		Lease:            time.Minute,
		TTL:              24 * time.Hour,
	}
}

func TestIdempotencyClaimCompleteReplay(t *testing.T) {
	ctx := testContext(t)
	keys := NewIdempotencyKeys(migratedPool(t))
	first := newClaim(uniqueID("customer:user_"), uniqueID("key_"), `{"a":1}`)

	rec, err := keys.Claim(ctx, first)
	if err != nil {
		t.Fatalf("Claim: %v", err)
	}
	if rec.Outcome != ClaimAcquired || rec.ResourceID != first.ResourceID {
		t.Fatalf("first Claim = %+v, want acquired with resource %s", rec, first.ResourceID)
	}

	retry := first
	retry.ClaimToken = uniqueID("claim_")
	retry.ResourceID = uniqueID("task_")
	if rec, err = keys.Claim(ctx, retry); err != nil || rec.Outcome != ClaimInProgress {
		t.Fatalf("Claim while held = %+v, %v; want in progress", rec, err)
	}

	other := retry
	other.RequestHash = sha256.New().Sum(nil)
	if rec, err = keys.Claim(ctx, other); err != nil || rec.Outcome != ClaimBodyMismatch {
		t.Fatalf("Claim with another body = %+v, %v; want body mismatch", rec, err)
	}

	resp := StoredResponse{Status: 201, Headers: map[string]string{"Content-Type": "application/json"}, Body: []byte(`{"id":"task_1"}` + "\n")}
	if err := keys.Complete(ctx, first.IdempotencyKeyID, first.ClaimToken, resp); err != nil {
		t.Fatalf("Complete: %v", err)
	}
	rec, err = keys.Claim(ctx, retry)
	if err != nil {
		t.Fatalf("Claim after Complete: %v", err)
	}
	if rec.Outcome != ClaimCompleted {
		t.Fatalf("Claim after Complete outcome = %v, want completed", rec.Outcome)
	}
	if rec.Response.Status != 201 || string(rec.Response.Body) != string(resp.Body) || rec.Response.Headers["Content-Type"] != "application/json" {
		t.Errorf("stored response = %+v, want %+v", rec.Response, resp)
	}
	if rec.ResourceID != first.ResourceID {
		t.Errorf("resource id = %s, want the first claim's %s", rec.ResourceID, first.ResourceID)
	}
}

func TestIdempotencyScopeSeparatesCallers(t *testing.T) {
	ctx := testContext(t)
	keys := NewIdempotencyKeys(migratedPool(t))
	key := uniqueID("key_")

	a := newClaim(uniqueID("customer:user_"), key, `{}`)
	b := newClaim(uniqueID("customer:user_"), key, `{}`)
	for _, c := range []IdempotencyClaim{a, b} {
		rec, err := keys.Claim(ctx, c)
		if err != nil || rec.Outcome != ClaimAcquired {
			t.Fatalf("Claim for scope %s = %+v, %v; want acquired", c.Scope, rec, err)
		}
	}

	otherPath := newClaim(a.Scope, key, `{}`)
	otherPath.Path = "/v1/tasks/task_1/cancel"
	if rec, err := keys.Claim(ctx, otherPath); err != nil || rec.Outcome != ClaimAcquired {
		t.Fatalf("Claim on another path = %+v, %v; want acquired", rec, err)
	}
}

func TestIdempotencyExpiredLeaseIsResumed(t *testing.T) {
	ctx := testContext(t)
	pool := migratedPool(t)
	keys := NewIdempotencyKeys(pool)
	crashed := newClaim(uniqueID("customer:user_"), uniqueID("key_"), `{"title":"x"}`)
	if _, err := keys.Claim(ctx, crashed); err != nil {
		t.Fatal(err)
	}
	// The process holding the claim died: its lease runs out.
	if _, err := pool.Exec(ctx, `UPDATE idempotency_keys SET locked_until = now() - interval '1 second'
		WHERE idempotency_key = $1`, crashed.Key); err != nil {
		t.Fatal(err)
	}

	retry := crashed
	retry.ClaimToken = uniqueID("claim_")
	retry.ResourceID = uniqueID("task_")
	rec, err := keys.Claim(ctx, retry)
	if err != nil {
		t.Fatalf("Claim: %v", err)
	}
	if rec.Outcome != ClaimResumed {
		t.Fatalf("outcome = %v, want resumed", rec.Outcome)
	}
	if rec.ResourceID != crashed.ResourceID {
		t.Errorf("resumed resource id = %s, want the crashed claim's %s", rec.ResourceID, crashed.ResourceID)
	}

	err = keys.Complete(ctx, crashed.IdempotencyKeyID, crashed.ClaimToken, StoredResponse{Status: 201})
	if !errors.Is(err, ErrIdempotencyClaimLost) {
		t.Errorf("Complete by the old claim = %v, want ErrIdempotencyClaimLost", err)
	}
	if err := keys.Complete(ctx, retry.IdempotencyKeyID, retry.ClaimToken, StoredResponse{Status: 201}); err != nil {
		t.Errorf("Complete by the new claim: %v", err)
	}
}

func TestIdempotencyRelease(t *testing.T) {
	ctx := testContext(t)
	keys := NewIdempotencyKeys(migratedPool(t))
	scope := uniqueID("customer:user_")

	kept := newClaim(scope, uniqueID("key_"), `{"a":1}`)
	if _, err := keys.Claim(ctx, kept); err != nil {
		t.Fatal(err)
	}
	if err := keys.Release(ctx, kept.IdempotencyKeyID, kept.ClaimToken, false); err != nil {
		t.Fatalf("Release: %v", err)
	}
	changed := newClaim(scope, kept.Key, `{"a":2}`)
	if rec, err := keys.Claim(ctx, changed); err != nil || rec.Outcome != ClaimBodyMismatch {
		t.Errorf("Claim with another body after a kept release = %+v, %v; want body mismatch", rec, err)
	}
	same := kept
	same.ClaimToken = uniqueID("claim_")
	if rec, err := keys.Claim(ctx, same); err != nil || rec.Outcome != ClaimResumed || rec.ResourceID != kept.ResourceID {
		t.Errorf("Claim with the same body after a kept release = %+v, %v; want resumed with %s", rec, err, kept.ResourceID)
	}

	forgotten := newClaim(scope, uniqueID("key_"), `{"a":1}`)
	if _, err := keys.Claim(ctx, forgotten); err != nil {
		t.Fatal(err)
	}
	if err := keys.Release(ctx, forgotten.IdempotencyKeyID, forgotten.ClaimToken, true); err != nil {
		t.Fatalf("Release forget: %v", err)
	}
	fixed := newClaim(scope, forgotten.Key, `{"a":2}`)
	if rec, err := keys.Claim(ctx, fixed); err != nil || rec.Outcome != ClaimAcquired {
		t.Errorf("Claim with a corrected body after forget = %+v, %v; want acquired", rec, err)
	}
}

func TestIdempotencyConcurrentClaimsOneWinner(t *testing.T) {
	ctx := testContext(t)
	keys := NewIdempotencyKeys(migratedPool(t))
	base := newClaim(uniqueID("customer:user_"), uniqueID("key_"), `{}`)

	const callers = 12
	outcomes := make([]ClaimOutcome, callers)
	errs := make([]error, callers)
	var wg sync.WaitGroup
	for i := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := base
			c.ClaimToken = uniqueID("claim_")
			rec, err := keys.Claim(ctx, c)
			outcomes[i], errs[i] = rec.Outcome, err
		}()
	}
	wg.Wait()

	acquired := 0
	for i := range callers {
		if errs[i] != nil {
			t.Fatalf("Claim %d: %v", i, errs[i])
		}
		switch outcomes[i] {
		case ClaimAcquired:
			acquired++
		case ClaimInProgress:
		default:
			t.Errorf("Claim %d outcome = %v, want acquired or in progress", i, outcomes[i])
		}
	}
	if acquired != 1 {
		t.Errorf("%d callers acquired the key, want exactly 1", acquired)
	}
}

func TestIdempotencyExpiryAndPurge(t *testing.T) {
	ctx := testContext(t)
	pool := migratedPool(t)
	keys := NewIdempotencyKeys(pool)
	old := newClaim(uniqueID("customer:user_"), uniqueID("key_"), `{"a":1}`)
	if _, err := keys.Claim(ctx, old); err != nil {
		t.Fatal(err)
	}
	if err := keys.Complete(ctx, old.IdempotencyKeyID, old.ClaimToken, StoredResponse{Status: 201}); err != nil {
		t.Fatal(err)
	}
	expire(ctx, t, pool, old.Key)

	// An expired key is new again, even with another body.
	reuse := newClaim(old.Scope, old.Key, `{"a":2}`)
	rec, err := keys.Claim(ctx, reuse)
	if err != nil || rec.Outcome != ClaimAcquired || rec.ResourceID != reuse.ResourceID {
		t.Fatalf("Claim of an expired key = %+v, %v; want acquired with the new resource id", rec, err)
	}

	expire(ctx, t, pool, old.Key)
	deleted := int64(0)
	for {
		n, err := keys.PurgeExpired(ctx, 2)
		if err != nil {
			t.Fatalf("PurgeExpired: %v", err)
		}
		deleted += n
		if n < 2 {
			break
		}
	}
	if deleted < 1 {
		t.Errorf("PurgeExpired deleted %d rows, want at least the expired key", deleted)
	}
	var left int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM idempotency_keys WHERE idempotency_key = $1`, old.Key).Scan(&left); err != nil {
		t.Fatal(err)
	}
	if left != 0 {
		t.Errorf("%d rows left for the expired key, want 0", left)
	}
}

func expire(ctx context.Context, t *testing.T, pool *pgxpool.Pool, key string) {
	t.Helper()
	if _, err := pool.Exec(ctx, `UPDATE idempotency_keys SET expires_at = now() - interval '1 second'
		WHERE idempotency_key = $1`, key); err != nil {
		t.Fatal(err)
	}
}
