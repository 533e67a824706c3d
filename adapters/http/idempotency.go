package http

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/taskpod/billing/application"
	"github.com/taskpod/billing/domain"
)

// Header names of the idempotency contract.
const (
	idempotencyKeyHeader = "Idempotency-Key"
	replayedHeader       = "Idempotent-Replayed"
)

// Defaults of ContractDeps.
const (
	// DefaultIdempotencyTTL keeps keys long enough for clients that retry
	// for days after an outage.
	DefaultIdempotencyTTL = 30 * 24 * time.Hour
	// DefaultIdempotencyLease outlasts the slowest request: POST /v1/tasks
	// makes at most two Stripe calls of up to 30 s each.
	DefaultIdempotencyLease = 2 * time.Minute
)

// maxIdempotencyKeyLength is the longest key accepted, as at Stripe.
const maxIdempotencyKeyLength = 255

// storedHeaders are the response headers replayed with a stored response;
// the others (Request-Id, Date) belong to each delivery.
var storedHeaders = []string{"Content-Type", "Location"}

// creatingRoute is a route that creates an object whose id is reserved
// under the key, so a retry after a crash finds the object instead of
// creating a second one.
type creatingRoute struct {
	idPrefix string
	// render writes the object's current state in the route's response
	// shape, or returns false when the object does not exist.
	render func(s *Server, w http.ResponseWriter, r *http.Request, id string) (bool, error)
}

var creatingRoutes = map[string]creatingRoute{
	"POST /v1/tasks": {idPrefix: "task", render: (*Server).renderCreatedTask},
}

type reservedIDKey struct{}

// reservedID returns the id the idempotency layer reserved for the object
// this request creates, or "" when there is none.
func reservedID(ctx context.Context) string {
	id, _ := ctx.Value(reservedIDKey{}).(string)
	return id
}

// idempotent handles a POST, PUT, PATCH or DELETE with an Idempotency-Key:
// it claims the key, buffers the response, stores a success before sending
// it, and replays the stored response to retries. A request that failed
// with a 409 or a 5xx, or whose process crashed, may run again on retry.
// It runs after authentication, because keys are scoped to the caller.
func (s *Server) idempotent(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		values := r.Header.Values(idempotencyKeyHeader)
		if s.d.Contract.Idempotency == nil || len(values) == 0 || !changesState(r.Method) {
			next.ServeHTTP(w, r)
			return
		}
		key, err := parseIdempotencyKey(values)
		if err != nil {
			writeError(w, r, err)
			return
		}
		body, complete, err := readBodyForHash(r)
		if err != nil {
			writeError(w, r, err)
			return
		}
		if !complete {
			// The handler rejects the oversized body; nothing is claimed.
			next.ServeHTTP(w, r)
			return
		}

		claim := s.newClaim(r, key, body)
		rec, err := s.d.Contract.Idempotency.Claim(r.Context(), claim)
		if err != nil {
			writeError(w, r, fmt.Errorf("claim idempotency key: %w", err))
			return
		}
		s.serveClaim(w, r, next, claim, rec)
	})
}

func (s *Server) serveClaim(w http.ResponseWriter, r *http.Request, next http.Handler, claim IdempotencyClaim, rec IdempotencyRecord) {
	switch rec.Outcome {
	case ClaimInProgress:
		writeError(w, r, &apiError{Status: http.StatusConflict, RetryAfter: 1, Type: typeInvalidRequest, Code: "idempotency_key_in_use",
			Message: "a request with this Idempotency-Key is still running; retry after it finishes"})
	case ClaimBodyMismatch:
		writeError(w, r, &apiError{Status: http.StatusUnprocessableEntity, Type: typeInvalidRequest, Code: "idempotency_key_reused",
			Param: idempotencyKeyHeader, Message: "this Idempotency-Key was used with another request body; use a new key for a new request"})
	case ClaimCompleted:
		s.replay(w, r, rec)
	case ClaimAcquired, ClaimResumed:
		s.runClaimed(w, r, next, claim, rec)
	default:
		writeError(w, r, fmt.Errorf("idempotency store returned unknown outcome %d", rec.Outcome))
	}
}

// replay sends a stored response. A creating route whose stored status is
// 202 (Stripe had not confirmed the hold yet) sends the object's current
// state instead, so retries see the final outcome once the relay has it.
func (s *Server) replay(w http.ResponseWriter, r *http.Request, rec IdempotencyRecord) {
	logReplay(r, rec.Response.Status)
	route, creates := creatingRoutes[r.Pattern]
	if creates && rec.Response.Status == http.StatusAccepted && rec.ResourceID != "" {
		buf := newResponseBuffer(w.Header())
		found, err := route.render(s, buf, r, rec.ResourceID)
		if err != nil {
			writeError(w, r, err)
			return
		}
		if found {
			buf.sendTo(w, true)
			return
		}
	}

	for name, value := range rec.Response.Headers {
		w.Header().Set(name, value)
	}
	w.Header().Set(replayedHeader, "true")
	w.WriteHeader(rec.Response.Status)
	if _, err := w.Write(rec.Response.Body); err != nil {
		slog.Default().WarnContext(r.Context(), "write replayed response failed", "error", err)
	}
}

// runClaimed runs the request under a claimed key, stores or releases the
// key by the outcome, and only then sends the response, so a retry sent
// right after the response arrives finds the key completed.
func (s *Server) runClaimed(w http.ResponseWriter, r *http.Request, next http.Handler, claim IdempotencyClaim, rec IdempotencyRecord) {
	ctx := r.Context()
	if rec.ResourceID != "" {
		r = r.WithContext(context.WithValue(ctx, reservedIDKey{}, rec.ResourceID))
	}
	buf := newResponseBuffer(w.Header())
	settled := false
	defer func() {
		if !settled {
			// The handler panicked; a retry may run the request again.
			s.releaseKey(ctx, claim, false)
		}
	}()

	replayed := false
	if route, creates := creatingRoutes[r.Pattern]; creates && rec.Outcome == ClaimResumed {
		// An earlier attempt may have created the object before it stopped.
		found, err := route.render(s, buf, r, rec.ResourceID)
		if err != nil {
			settled = true
			s.releaseKey(ctx, claim, false)
			writeError(w, r, err)
			return
		}
		replayed = found
		if found {
			logReplay(r, buf.statusCode())
		}
	}
	if !replayed {
		next.ServeHTTP(buf, r)
	}

	settled = true
	s.settleKey(ctx, claim, buf)
	buf.sendTo(w, replayed)
}

// settleKey stores a success. After a client error other than a conflict
// it deletes the key, because nothing changed and the client may correct
// the body. After a conflict or a server error it keeps the key bound to
// the body, because the request may have had an effect.
func (s *Server) settleKey(ctx context.Context, claim IdempotencyClaim, buf *responseBuffer) {
	status := buf.statusCode()
	switch {
	case status < 400:
		resp := StoredResponse{Status: status, Headers: map[string]string{}, Body: buf.body.Bytes()}
		for _, name := range storedHeaders {
			if v := buf.header.Get(name); v != "" {
				resp.Headers[name] = v
			}
		}
		// The client may have gone; the effect happened, so store it anyway.
		err := s.d.Contract.Idempotency.Complete(context.WithoutCancel(ctx), claim.IdempotencyKeyID, claim.ClaimToken, resp)
		if err != nil {
			slog.Default().ErrorContext(ctx, "store idempotent response failed; a retry runs the request again",
				"idempotency_key", claim.Key, "status", status, "error", err)
		}
	case status == http.StatusConflict || status >= 500:
		s.releaseKey(ctx, claim, false)
	default:
		s.releaseKey(ctx, claim, true)
	}
}

func (s *Server) releaseKey(ctx context.Context, claim IdempotencyClaim, forget bool) {
	err := s.d.Contract.Idempotency.Release(context.WithoutCancel(ctx), claim.IdempotencyKeyID, claim.ClaimToken, forget)
	if err != nil {
		slog.Default().WarnContext(ctx, "release idempotency key failed; it frees itself when its lease ends",
			"idempotency_key", claim.Key, "error", err)
	}
}

func logReplay(r *http.Request, status int) {
	slog.Default().InfoContext(r.Context(), "idempotent request replayed",
		"idempotency_key", r.Header.Get(idempotencyKeyHeader), "status", status)
}

// newClaim builds the claim of a request: the key is scoped to the caller's
// role and subject, so other tokens of the same customer share it.
func (s *Server) newClaim(r *http.Request, key string, body []byte) IdempotencyClaim {
	actor := application.ActorFrom(r.Context())
	c := IdempotencyClaim{
		IdempotencyKeyID: IdempotencyKeyID{Scope: string(actor.Role) + ":" + actor.Subject, Method: r.Method, Path: r.URL.Path, Key: key},
		RequestHash:      canonicalBodyHash(body),
		ClaimToken:       randomHex(16),
		Lease:            orDuration(s.d.Contract.IdempotencyLease, DefaultIdempotencyLease),
		TTL:              orDuration(s.d.Contract.IdempotencyTTL, DefaultIdempotencyTTL),
	}
	if route, creates := creatingRoutes[r.Pattern]; creates {
		c.ResourceID = s.newResourceID(route.idPrefix)
	}
	return c
}

func (s *Server) newResourceID(prefix string) string {
	if s.d.Contract.IDs != nil {
		return s.d.Contract.IDs.NewID(prefix)
	}
	return prefix + "_" + randomHex(10)
}

// renderCreatedTask writes a created task in the response shape of POST /v1/tasks.
func (s *Server) renderCreatedTask(w http.ResponseWriter, r *http.Request, id string) (bool, error) {
	actor := actorOf(r)
	v, err := s.d.Tasks.Get(r.Context(), actor, id)
	if errors.Is(err, domain.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	writeJSON(w, createdTaskStatus(v), taskOf(v, actor.Role))
	return true, nil
}

// createdTaskStatus is 202 while the hold is still being placed (Stripe did
// not reply in time and the relay finishes it), else 201.
func createdTaskStatus(v application.TaskView) int {
	if v.Payment != nil && v.Payment.Status == domain.PaymentAuthorizing {
		return http.StatusAccepted
	}
	return http.StatusCreated
}

func changesState(method string) bool {
	switch method {
	case http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete:
		return true
	}
	return false
}

// parseIdempotencyKey accepts one key of 1 to 255 printable ASCII characters.
func parseIdempotencyKey(values []string) (string, error) {
	key := values[0]
	for _, v := range values[1:] {
		if v != key {
			return "", badRequest("invalid_idempotency_key", idempotencyKeyHeader, "send one Idempotency-Key header, not several")
		}
	}
	if key == "" || len(key) > maxIdempotencyKeyLength {
		return "", badRequest("invalid_idempotency_key", idempotencyKeyHeader,
			fmt.Sprintf("Idempotency-Key must be 1 to %d characters, got %d", maxIdempotencyKeyLength, len(key)))
	}
	for i := 0; i < len(key); i++ {
		if key[i] < 0x20 || key[i] > 0x7e {
			return "", badRequest("invalid_idempotency_key", idempotencyKeyHeader,
				"Idempotency-Key must be printable ASCII, such as a UUID")
		}
	}
	return key, nil
}

// readBodyForHash reads the body so it can be hashed and leaves it readable
// for the handler. complete is false when the body exceeds maxBodyBytes.
func readBodyForHash(r *http.Request) (body []byte, complete bool, err error) {
	body, err = io.ReadAll(io.LimitReader(r.Body, maxBodyBytes+1))
	if err != nil {
		return nil, false, badRequest("invalid_body", "", "could not read request body")
	}
	if len(body) > maxBodyBytes {
		r.Body = readCloser{io.MultiReader(bytes.NewReader(body), r.Body), r.Body}
		return body, false, nil
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	return body, true, nil
}

type readCloser struct {
	io.Reader
	io.Closer
}

// canonicalBodyHash hashes the body's JSON with object keys sorted and
// insignificant whitespace removed, so a client that re-serializes the
// same request gets the same hash. Numbers keep their text. A body that is
// not one JSON value is hashed as sent.
func canonicalBodyHash(body []byte) []byte {
	canonical := body
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err == nil {
		if _, err := dec.Token(); err == io.EOF {
			if out, err := json.Marshal(v); err == nil {
				canonical = out
			}
		}
	}
	sum := sha256.Sum256(canonical)
	return sum[:]
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never returns an error since Go 1.24
	return hex.EncodeToString(b)
}

func orDuration(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

// responseBuffer holds a handler's response until the key is settled.
type responseBuffer struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func newResponseBuffer(base http.Header) *responseBuffer {
	return &responseBuffer{header: base.Clone()}
}

func (b *responseBuffer) Header() http.Header { return b.header }

func (b *responseBuffer) WriteHeader(code int) {
	if b.status == 0 {
		b.status = code
	}
}

func (b *responseBuffer) Write(p []byte) (int, error) {
	if b.status == 0 {
		b.status = http.StatusOK
	}
	return b.body.Write(p)
}

func (b *responseBuffer) statusCode() int {
	if b.status == 0 {
		return http.StatusOK
	}
	return b.status
}

func (b *responseBuffer) sendTo(w http.ResponseWriter, replayed bool) {
	for name, values := range b.header {
		w.Header()[name] = values
	}
	if replayed {
		w.Header().Set(replayedHeader, "true")
	}
	w.WriteHeader(b.statusCode())
	if _, err := w.Write(b.body.Bytes()); err != nil {
		slog.Default().Warn("write response failed", "error", err)
	}
}
