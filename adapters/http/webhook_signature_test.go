package http_test

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

// eventBody builds an event of a type the service does not act on, so
// that only its verification and recording are under test.
func eventBody(id, apiVersion string) []byte {
	return []byte(fmt.Sprintf(`{"id":%q,"object":"event","api_version":%q,"created":%d,"livemode":false,`+
		`"pending_webhooks":1,"request":{"id":null,"idempotency_key":null},"type":"customer.created",`+
		`"data":{"object":{"id":"cus_signaturetest","object":"customer","metadata":{}}}}`, id, apiVersion, time.Now().Unix()))
}

func TestWebhookRejectsUnverifiedEvents(t *testing.T) {
	e := newWebhookEnv(t, webhookEnvOptions{noRelay: true})
	now := time.Now()

	cases := []struct {
		name      string
		body      []byte
		signature func(body []byte) string
		send      func(body []byte) []byte
		code      string
		reason    string
	}{
		{
			name:      "tampered body",
			body:      eventBody("evt_tampered", "2023-10-16"),
			signature: func(b []byte) string { return sign(whSecret, now, b) },
			send: func(b []byte) []byte {
				return bytes.Replace(b, []byte("cus_signaturetest"), []byte("cus_signaturefake"), 1)
			},
			code:   "signature_mismatch",
			reason: "no signature matches",
		},
		{
			name:      "wrong secret",
			body:      eventBody("evt_wrongsecret", "2023-10-16"),
			signature: func(b []byte) string { return sign("whsec_someone_else", now, b) },
			code:      "signature_mismatch",
			reason:    "no signature matches",
		},
		{
			name:      "stale timestamp",
			body:      eventBody("evt_stale", "2023-10-16"),
			signature: func(b []byte) string { return sign(whSecret, now.Add(-10*time.Minute), b) },
			code:      "timestamp_outside_tolerance",
			reason:    "outside the tolerance",
		},
		{
			name:      "mismatched api version",
			body:      eventBody("evt_oldversion", "2020-08-27"),
			signature: func(b []byte) string { return sign(whSecret, now, b) },
			code:      "api_version_mismatch",
			reason:    `has "2020-08-27"`,
		},
		{
			name:      "missing signature",
			body:      eventBody("evt_unsigned", "2023-10-16"),
			signature: func([]byte) string { return "" },
			code:      "signature_header_invalid",
			reason:    "missing Stripe-Signature header",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			sent := tc.body
			if tc.send != nil {
				sent = tc.send(tc.body)
			}
			status, body := e.postEvent(t, sent, tc.signature(tc.body))
			if status != http.StatusBadRequest {
				t.Fatalf("status = %d, want 400; body %v", status, body)
			}
			apiErr, _ := body["error"].(map[string]any)
			if apiErr["code"] != "webhook_"+tc.code {
				t.Errorf("error code = %v, want webhook_%s", apiErr["code"], tc.code)
			}

			var logged map[string]any
			for _, rec := range e.logs.records("stripe webhook rejected") {
				if rec["code"] == tc.code {
					logged = rec
				}
			}
			if logged == nil {
				t.Fatalf("no log record with code %s", tc.code)
			}
			if reason, _ := logged["reason"].(string); !strings.Contains(reason, tc.reason) {
				t.Errorf("logged reason = %q, want it to contain %q", reason, tc.reason)
			}
			if n := e.counts.get("unverified/rejected_" + tc.code); n == 0 {
				t.Errorf("metric unverified/rejected_%s was not counted", tc.code)
			}
		})
	}

	var stored int
	if err := e.pool.QueryRow(context.Background(), `SELECT count(*) FROM stripe_events`).Scan(&stored); err != nil {
		t.Fatalf("count events: %v", err)
	}
	if stored != 0 {
		t.Errorf("stripe_events holds %d rows after only rejected requests, want 0", stored)
	}
}

func TestWebhookAcceptsPreviousSecret(t *testing.T) {
	e := newWebhookEnv(t, webhookEnvOptions{noRelay: true})
	body := eventBody("evt_rotation", "2023-10-16")

	status, out := e.postEvent(t, body, sign(whPreviousSecret, time.Now(), body))
	if status != http.StatusOK {
		t.Fatalf("status = %d, want 200; body %v", status, out)
	}
	if out["outcome"] != "no_effect" {
		t.Errorf("outcome = %v, want no_effect for an event type the service does not act on", out["outcome"])
	}

	// Stripe signs with both secrets during a rotation; one match suffices.
	both := sign(whSecret, time.Now(), body) + "," + strings.SplitN(sign("whsec_other", time.Now(), body), ",", 2)[1]
	status, out = e.postEvent(t, body, both)
	if status != http.StatusOK {
		t.Fatalf("status with two signatures = %d, want 200; body %v", status, out)
	}
	if out["outcome"] != "duplicate" {
		t.Errorf("second delivery outcome = %v, want duplicate", out["outcome"])
	}
	if got := e.scalar(t, `SELECT status FROM stripe_events WHERE id = 'evt_rotation'`); got != "processed" {
		t.Errorf("stored status = %q, want processed", got)
	}
}
