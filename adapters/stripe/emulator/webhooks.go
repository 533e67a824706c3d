package emulator

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

const (
	// webhookMaxAttempts bounds the deliveries of one event. After the last
	// failure the event is marked gave_up and never sent again.
	webhookMaxAttempts = 8
	// webhookLease is how long a claimed event stays invisible to other
	// workers while its delivery runs.
	webhookLease = 30 * time.Second
	// webhookPollInterval is how often the worker looks for due events that
	// no wake-up announced, such as retries or events of other processes.
	webhookPollInterval = 250 * time.Millisecond
	webhookTimeout      = 10 * time.Second
	webhookBatchSize    = 100
)

// webhookRetryDelay is the wait before delivery attempt attempts+1:
// 1 s, 2 s, 4 s and so on, at most 30 s.
func webhookRetryDelay(attempts int) time.Duration {
	d := time.Second << min(attempts-1, 5)
	return min(d, 30*time.Second)
}

// pendingEvent is a state change that a handler recorded and that becomes a
// Stripe event when the request's transaction commits.
type pendingEvent struct {
	eventType string
	object    any
}

// emit records an event of eventType with a snapshot of obj as data.object.
// Nothing is recorded unless Config.WebhookURL is set.
func (c *call) emit(eventType string, obj any) {
	if c.e.cfg.WebhookURL == "" {
		return
	}
	c.events = append(c.events, pendingEvent{eventType: eventType, object: marshalObject(obj)})
}

// event is the Stripe event object sent to the webhook endpoint.
type event struct {
	ID              string       `json:"id"`
	Object          string       `json:"object"`
	Account         *string      `json:"account,omitempty"`
	APIVersion      string       `json:"api_version"`
	Created         int64        `json:"created"`
	Data            eventData    `json:"data"`
	Livemode        bool         `json:"livemode"`
	PendingWebhooks int64        `json:"pending_webhooks"`
	Request         eventRequest `json:"request"`
	Type            string       `json:"type"`
}

type eventData struct {
	Object any `json:"object"`
}

type eventRequest struct {
	ID             *string `json:"id"`
	IdempotencyKey *string `json:"idempotency_key"`
}

// flushEvents stores the request's events in its transaction, so an event
// exists exactly when its state change committed.
func (c *call) flushEvents() error {
	events := c.events
	c.events = nil
	if len(events) == 0 {
		return nil
	}
	var request eventRequest
	if c.r != nil && c.r.Header != nil {
		request.ID = ptr("req_" + randomToken(14))
		if key := idempotencyKeyOf(c.r); key != "" {
			request.IdempotencyKey = &key
		}
	}
	for _, pe := range events {
		ev := event{
			ID:              newID("evt"),
			Object:          "event",
			APIVersion:      APIVersion,
			Created:         c.now,
			Data:            eventData{Object: pe.object},
			PendingWebhooks: 1,
			Request:         request,
			Type:            pe.eventType,
		}
		body, err := json.Marshal(ev)
		if err != nil {
			return fmt.Errorf("encode event %s: %w", ev.Type, err)
		}
		_, err = c.tx.Exec(c.ctx, `
			INSERT INTO stripe_emulator.events (id, type, created, body) VALUES ($1, $2, $3, $4)`,
			ev.ID, ev.Type, ev.Created, body)
		if err != nil {
			return fmt.Errorf("store event %s: %w", ev.Type, err)
		}
	}
	return nil
}

// webhookMode sets how the worker misdelivers events for tests.
type webhookMode struct {
	// Duplicate sends every event twice.
	Duplicate bool `json:"duplicate"`
	// DelayMs waits this many milliseconds before each delivery.
	DelayMs int64 `json:"delayMs"`
	// Reverse sends each batch of due events newest first.
	Reverse bool `json:"reverse"`
}

// webhookState is the delivery worker's state shared with the control API.
type webhookState struct {
	mu      sync.Mutex
	mode    webhookMode
	paused  bool
	wakeCh  chan struct{}
	cancel  context.CancelFunc
	done    chan struct{}
	started bool
}

func newWebhookState() *webhookState {
	return &webhookState{wakeCh: make(chan struct{}, 1)}
}

// wake signals the worker that new events may be due.
func (h *webhookState) wake() {
	select {
	case h.wakeCh <- struct{}{}:
	default:
	}
}

func (h *webhookState) resetMode() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.mode = webhookMode{}
	h.paused = false
}

func (h *webhookState) snapshot() (webhookMode, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.mode, h.paused
}

// Start launches the webhook delivery worker when Config.WebhookURL is set;
// otherwise it does nothing. The worker stops when ctx ends or Close is
// called. Start is safe to call once; later calls do nothing.
func (e *Emulator) Start(ctx context.Context) {
	if e.cfg.WebhookURL == "" {
		return
	}
	h := e.hooks
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.started {
		return
	}
	h.started = true
	ctx, h.cancel = context.WithCancel(ctx)
	h.done = make(chan struct{})
	e.log.Info("webhook delivery started", "url", e.cfg.WebhookURL)
	go e.deliverLoop(ctx, h.done)
}

// Close stops the webhook worker and waits for it. Undelivered events stay
// stored, and an emulator started later on the same database sends them.
func (e *Emulator) Close() {
	e.closeOnce.Do(func() {
		h := e.hooks
		h.mu.Lock()
		cancel, done := h.cancel, h.done
		h.mu.Unlock()
		if cancel == nil {
			return
		}
		cancel()
		<-done
		e.log.Info("webhook delivery stopped")
	})
}

func (e *Emulator) deliverLoop(ctx context.Context, done chan struct{}) {
	defer close(done)
	ticker := time.NewTicker(webhookPollInterval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-e.hooks.wakeCh:
		case <-ticker.C:
		}
		for {
			if _, paused := e.hooks.snapshot(); paused {
				break
			}
			delivered, failed, err := e.deliverBatch(ctx, false)
			if err != nil {
				if ctx.Err() == nil {
					e.log.Error("webhook delivery batch failed", "error", err)
				}
				break
			}
			if delivered+failed == 0 {
				break
			}
		}
	}
}

// claimedEvent is an event this worker leased for one delivery attempt.
type claimedEvent struct {
	id       string
	seq      int64
	typ      string
	body     []byte
	attempts int
}

// deliverBatch leases up to webhookBatchSize due events and sends them. With
// all set it also takes events that wait for a retry. It returns how many
// deliveries succeeded and failed.
func (e *Emulator) deliverBatch(ctx context.Context, all bool) (delivered, failed int, err error) {
	rows, err := e.pool.Query(ctx, `
		UPDATE stripe_emulator.events SET next_attempt_at = now() + $2 * interval '1 millisecond', attempts = attempts + 1
		WHERE id IN (
			SELECT id FROM stripe_emulator.events
			WHERE NOT delivered AND NOT gave_up AND ($1 OR next_attempt_at <= now())
			ORDER BY seq LIMIT $3 FOR UPDATE SKIP LOCKED)
		RETURNING id, seq, type, body, attempts`, all, webhookLease.Milliseconds(), webhookBatchSize)
	if err != nil {
		return 0, 0, fmt.Errorf("claim events: %w", err)
	}
	claimed, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (claimedEvent, error) {
		var ev claimedEvent
		err := row.Scan(&ev.id, &ev.seq, &ev.typ, &ev.body, &ev.attempts)
		return ev, err
	})
	if err != nil {
		return 0, 0, fmt.Errorf("claim events: %w", err)
	}

	mode, _ := e.hooks.snapshot()
	sort.Slice(claimed, func(i, j int) bool {
		if mode.Reverse {
			return claimed[i].seq > claimed[j].seq
		}
		return claimed[i].seq < claimed[j].seq
	})
	for _, ev := range claimed {
		if mode.DelayMs > 0 {
			select {
			case <-time.After(time.Duration(mode.DelayMs) * time.Millisecond):
			case <-ctx.Done():
				return delivered, failed, ctx.Err()
			}
		}
		sendErr := e.sendEvent(ctx, ev.body)
		if sendErr == nil && mode.Duplicate {
			if dupErr := e.sendEvent(ctx, ev.body); dupErr != nil {
				e.log.Warn("duplicate webhook delivery failed", "event", ev.id, "type", ev.typ, "error", dupErr)
			}
		}
		if err := e.recordDelivery(ctx, ev, sendErr); err != nil {
			return delivered, failed, err
		}
		if sendErr != nil {
			failed++
		} else {
			delivered++
		}
	}
	return delivered, failed, nil
}

func (e *Emulator) recordDelivery(ctx context.Context, ev claimedEvent, sendErr error) error {
	ctx = context.WithoutCancel(ctx)
	if sendErr == nil {
		_, err := e.pool.Exec(ctx, `UPDATE stripe_emulator.events SET delivered = true, last_error = NULL WHERE id = $1`, ev.id)
		return err
	}
	if ev.attempts >= webhookMaxAttempts {
		e.log.Error("webhook delivery gave up", "event", ev.id, "type", ev.typ, "attempts", ev.attempts, "error", sendErr)
		_, err := e.pool.Exec(ctx, `UPDATE stripe_emulator.events SET gave_up = true, last_error = $2 WHERE id = $1`, ev.id, sendErr.Error())
		return err
	}
	delay := webhookRetryDelay(ev.attempts)
	e.log.Warn("webhook delivery failed, will retry", "event", ev.id, "type", ev.typ, "attempt", ev.attempts, "retry_in", delay, "error", sendErr)
	_, err := e.pool.Exec(ctx, `
		UPDATE stripe_emulator.events SET next_attempt_at = now() + $2 * interval '1 millisecond', last_error = $3
		WHERE id = $1`, ev.id, delay.Milliseconds(), sendErr.Error())
	return err
}

// signPayload returns the Stripe-Signature header value for body signed at
// unix time t: "t=<t>,v1=<hex HMAC-SHA256 of "<t>.<body>" keyed by secret>".
func signPayload(secret string, t int64, body []byte) string {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(strconv.FormatInt(t, 10)))
	mac.Write([]byte("."))
	mac.Write(body)
	return "t=" + strconv.FormatInt(t, 10) + ",v1=" + hex.EncodeToString(mac.Sum(nil))
}

var webhookClient = &http.Client{Timeout: webhookTimeout}

// sendEvent POSTs one signed event. The signature time is the base clock
// without the control API's offset, because receivers check it against
// their own clock.
func (e *Emulator) sendEvent(ctx context.Context, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.cfg.WebhookURL, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	req.Header.Set("User-Agent", "Stripe/1.0 (+https://stripe.com/docs/webhooks)")
	req.Header.Set("Stripe-Signature", signPayload(e.cfg.WebhookSecret, e.cfg.Now().Unix(), body))
	res, err := webhookClient.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	io.Copy(io.Discard, io.LimitReader(res.Body, 1<<16)) //nolint:errcheck // drained only to reuse the connection
	if res.StatusCode < 200 || res.StatusCode > 299 {
		return fmt.Errorf("webhook endpoint returned status %d", res.StatusCode)
	}
	return nil
}

func (e *Emulator) setWebhookMode(w http.ResponseWriter, r *http.Request) {
	var mode webhookMode
	if err := decodeControlBody(w, r, &mode); err != nil {
		controlError(w, http.StatusBadRequest, err.Error())
		return
	}
	if mode.DelayMs < 0 {
		controlError(w, http.StatusBadRequest, fmt.Sprintf("delayMs must not be negative, got %d", mode.DelayMs))
		return
	}
	e.hooks.mu.Lock()
	e.hooks.mode = mode
	e.hooks.mu.Unlock()
	writeJSON(w, http.StatusOK, mode, nil)
}

func (e *Emulator) pauseWebhooks(w http.ResponseWriter, r *http.Request) {
	e.setPaused(true)
	writeJSON(w, http.StatusOK, map[string]bool{"paused": true}, nil)
}

func (e *Emulator) resumeWebhooks(w http.ResponseWriter, r *http.Request) {
	e.setPaused(false)
	e.hooks.wake()
	writeJSON(w, http.StatusOK, map[string]bool{"paused": false}, nil)
}

func (e *Emulator) setPaused(paused bool) {
	e.hooks.mu.Lock()
	defer e.hooks.mu.Unlock()
	e.hooks.paused = paused
}

// flushWebhooks sends every undelivered event now, in this request, even
// while paused and before retry delays end. It needs Config.WebhookURL but
// not Start.
func (e *Emulator) flushWebhooks(w http.ResponseWriter, r *http.Request) {
	if e.cfg.WebhookURL == "" {
		controlError(w, http.StatusConflict, "webhooks are off: set Config.WebhookURL to record and send events")
		return
	}
	var delivered, failed int
	for {
		d, f, err := e.deliverBatch(r.Context(), true)
		delivered += d
		failed += f
		if err != nil {
			e.writeControlResult(w, nil, err)
			return
		}
		if d+f == 0 || f > 0 {
			// A failed event is due again only after its retry delay, so
			// stop rather than resend it at once.
			break
		}
	}
	writeJSON(w, http.StatusOK, map[string]int{"delivered": delivered, "failed": failed}, nil)
}

// storedEvent is one row of GET /_emulator/events.
type storedEvent struct {
	ID        string          `json:"id"`
	Type      string          `json:"type"`
	Delivered bool            `json:"delivered"`
	GaveUp    bool            `json:"gaveUp"`
	Attempts  int             `json:"attempts"`
	LastError *string         `json:"lastError"`
	Event     json.RawMessage `json:"event"`
}

// listEvents serves GET /_emulator/events?type=..., oldest first.
func (e *Emulator) listEvents(w http.ResponseWriter, r *http.Request) {
	typ := r.URL.Query().Get("type")
	rows, err := e.pool.Query(r.Context(), `
		SELECT id, type, delivered, gave_up, attempts, last_error, body FROM stripe_emulator.events
		WHERE $1 = '' OR type = $1 ORDER BY seq`, typ)
	if err != nil {
		e.writeControlResult(w, nil, fmt.Errorf("list events: %w", err))
		return
	}
	events, err := pgx.CollectRows(rows, pgx.RowToStructByPos[storedEvent])
	if err != nil {
		e.writeControlResult(w, nil, fmt.Errorf("list events: %w", err))
		return
	}
	if events == nil {
		events = []storedEvent{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"data": events}, nil)
}
