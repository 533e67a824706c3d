package stripe

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	stripego "github.com/stripe/stripe-go/v76"
	"github.com/stripe/stripe-go/v76/webhook"

	"github.com/taskpod/billing/domain"
	"github.com/taskpod/billing/ports"
)

// APIVersion is the Stripe API version of stripe-go v76. Webhook endpoints
// must send events at this version.
const APIVersion = stripego.APIVersion

// WebhookParser verifies and parses Stripe webhook requests. It accepts a
// signature made with any of its secrets, so the previous secret keeps
// working while a rotation is rolled out.
type WebhookParser struct {
	secrets   []string
	tolerance time.Duration
}

var _ ports.EventParser = (*WebhookParser)(nil)

// NewWebhookParser returns a parser that accepts signatures made with any
// non-empty secret of secrets, with stripe-go's tolerance of 300 seconds
// between the signature's timestamp and now.
func NewWebhookParser(secrets ...string) *WebhookParser {
	p := &WebhookParser{tolerance: webhook.DefaultTolerance}
	for _, s := range secrets {
		if s != "" {
			p.secrets = append(p.secrets, s)
		}
	}
	return p
}

// Verify checks the Stripe-Signature header as stripe-go's
// webhook.ConstructEvent does, trying each secret in turn, then rejects an
// event whose API version differs from stripe-go's, because stripe-go would
// decode its objects wrongly. Errors wrap the ports.ErrWebhook... reasons.
func (p *WebhookParser) Verify(body []byte, signatureHeader string) (ports.StripeEvent, error) {
	if len(p.secrets) == 0 {
		return ports.StripeEvent{}, ports.ErrWebhookSecretsMissing
	}
	if err := p.checkSignature(body, signatureHeader); err != nil {
		return ports.StripeEvent{}, err
	}
	ev, err := p.Parse(body)
	if err != nil {
		return ports.StripeEvent{}, err
	}
	if ev.APIVersion != APIVersion {
		return ports.StripeEvent{}, fmt.Errorf("%w: event %s has %q, stripe-go v76 expects %q; set the endpoint's API version to %s",
			ports.ErrWebhookAPIVersion, ev.ID, ev.APIVersion, APIVersion, APIVersion)
	}
	return ev, nil
}

// checkSignature tries each secret. stripe-go checks the timestamp before
// the signature, so a stale request is reported as stale whatever its
// signature.
func (p *WebhookParser) checkSignature(body []byte, header string) error {
	for _, secret := range p.secrets {
		err := webhook.ValidatePayloadWithTolerance(body, header, secret, p.tolerance)
		switch {
		case err == nil:
			return nil
		case errors.Is(err, webhook.ErrNoValidSignature):
			continue
		case errors.Is(err, webhook.ErrNotSigned):
			return ports.ErrWebhookNotSigned
		case errors.Is(err, webhook.ErrInvalidHeader):
			return ports.ErrWebhookBadHeader
		case errors.Is(err, webhook.ErrTooOld):
			return fmt.Errorf("%w: the timestamp is more than %s old", ports.ErrWebhookStale, p.tolerance)
		default:
			return fmt.Errorf("%w: %v", ports.ErrWebhookBadHeader, err)
		}
	}
	return fmt.Errorf("%w (%d secrets tried)", ports.ErrWebhookBadSignature, len(p.secrets))
}

// eventObject is the part of data.object that the service reads, for any
// object type. Fields that are ids may come expanded as objects.
type eventObject struct {
	ID                  string            `json:"id"`
	Object              string            `json:"object"`
	Customer            json.RawMessage   `json:"customer"`
	PaymentIntent       json.RawMessage   `json:"payment_intent"`
	Charge              json.RawMessage   `json:"charge"`
	CancellationReason  string            `json:"cancellation_reason"`
	Metadata            map[string]string `json:"metadata"`
	Amount              int64             `json:"amount"`
	Currency            string            `json:"currency"`
	Reason              string            `json:"reason"`
	Status              string            `json:"status"`
	BalanceTransactions []struct {
		Fee int64 `json:"fee"`
	} `json:"balance_transactions"`
}

// Parse reads an event body without checking a signature; use it only for
// bodies verified on receipt.
func (p *WebhookParser) Parse(body []byte) (ports.StripeEvent, error) {
	var e stripego.Event
	if err := json.Unmarshal(body, &e); err != nil {
		return ports.StripeEvent{}, fmt.Errorf("%w: %v", ports.ErrWebhookMalformed, err)
	}
	if e.ID == "" || e.Type == "" || e.Data == nil {
		return ports.StripeEvent{}, fmt.Errorf("%w: id, type or data is missing", ports.ErrWebhookMalformed)
	}
	var obj eventObject
	if err := json.Unmarshal(e.Data.Raw, &obj); err != nil {
		return ports.StripeEvent{}, fmt.Errorf("%w: data.object of event %s: %v", ports.ErrWebhookMalformed, e.ID, err)
	}

	out := ports.StripeEvent{
		ID: e.ID, Type: string(e.Type), APIVersion: e.APIVersion, Created: time.Unix(e.Created, 0).UTC(),
		ObjectID: obj.ID, ObjectType: obj.Object, Body: bytes.Clone(body),
		PaymentIntentID: idOf(obj.PaymentIntent), ChargeID: idOf(obj.Charge), CustomerID: idOf(obj.Customer),
		CancellationReason: obj.CancellationReason, PaymentID: obj.Metadata[metadataPaymentID],
	}
	switch obj.Object {
	case "payment_intent":
		out.PaymentIntentID = obj.ID
	case "charge":
		out.ChargeID = obj.ID
	case "dispute":
		out.Dispute = &ports.Dispute{
			ID: obj.ID, ChargeID: out.ChargeID, PaymentIntentID: out.PaymentIntentID, Amount: obj.Amount,
			Currency: domain.Currency(strings.ToLower(obj.Currency)), Reason: obj.Reason, Status: obj.Status,
		}
		for _, bt := range obj.BalanceTransactions {
			out.Dispute.Fee += bt.Fee
		}
	}
	return out, nil
}

// idOf reads an id field that Stripe sends as a string, or as an object
// with an id when it is expanded. A null or absent field gives "".
func idOf(raw json.RawMessage) string {
	if len(raw) == 0 || string(raw) == "null" {
		return ""
	}
	var id string
	if json.Unmarshal(raw, &id) == nil {
		return id
	}
	var obj struct {
		ID string `json:"id"`
	}
	if json.Unmarshal(raw, &obj) == nil {
		return obj.ID
	}
	return ""
}
