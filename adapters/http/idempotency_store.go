package http

import (
	"context"
	"time"
)

// IdempotencyStore keeps Idempotency-Key claims and stored responses.
type IdempotencyStore interface {
	// Claim takes the key for one request or reports why it cannot.
	Claim(ctx context.Context, c IdempotencyClaim) (IdempotencyRecord, error)
	// Complete stores the response and ends the claim.
	Complete(ctx context.Context, id IdempotencyKeyID, claimToken string, resp StoredResponse) error
	// Release ends the claim without a response: forget deletes the key,
	// otherwise the key keeps its body hash and reserved id.
	Release(ctx context.Context, id IdempotencyKeyID, claimToken string, forget bool) error
}

// IdempotencyKeyID identifies a key: the caller's role and subject, the
// method and path, and the client's key.
type IdempotencyKeyID struct {
	Scope, Method, Path, Key string
}

// IdempotencyClaim is a request to run one API request under a key.
type IdempotencyClaim struct {
	IdempotencyKeyID
	// RequestHash is the SHA-256 of the canonical request body.
	RequestHash []byte
	// ResourceID is the id proposed for the object the request creates.
	ResourceID string
	// ClaimToken is a random value that Complete and Release repeat.
	ClaimToken string
	// Lease is how long the claim holds before a retry may take it over.
	Lease time.Duration
	// TTL is how long the key is kept.
	TTL time.Duration
}

// ClaimOutcome is the action the caller of Claim must take.
type ClaimOutcome int

// Outcomes of IdempotencyStore.Claim.
const (
	// ClaimAcquired means the key is new: run the request.
	ClaimAcquired ClaimOutcome = iota + 1
	// ClaimResumed means an earlier request under the key stopped without
	// a stored response. Run the request again, but expect that it may
	// already have had its effect.
	ClaimResumed
	// ClaimCompleted means the response is stored: replay it.
	ClaimCompleted
	// ClaimInProgress means another request holds the key.
	ClaimInProgress
	// ClaimBodyMismatch means the key was used with another body.
	ClaimBodyMismatch
)

// StoredResponse is a response kept for replay.
type StoredResponse struct {
	Status  int
	Headers map[string]string
	Body    []byte
}

// IdempotencyRecord is the result of a claim.
type IdempotencyRecord struct {
	Outcome ClaimOutcome
	// ResourceID is the id reserved for the created object, if any.
	ResourceID string
	// Response is set when Outcome is ClaimCompleted.
	Response StoredResponse
}
