package emulator

import (
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"strings"
	"time"
)

// cardBehavior is the outcome a test card produces when attached or charged.
type cardBehavior int

const (
	cardSucceeds cardBehavior = iota
	// cardFailsCharges attaches, but every charge is declined
	// (card_declined, generic_decline).
	cardFailsCharges
	// cardNeedsAuthentication sets up as if the customer passed
	// authentication, but off-session charges fail with
	// authentication_required.
	cardNeedsAuthentication
	// cardDeclined cannot be attached or charged (card_declined,
	// generic_decline).
	cardDeclined
)

type testCard struct {
	brand    string
	last4    string
	behavior cardBehavior
}

// testCards are Stripe's documented test PaymentMethod tokens. Each use of a
// token creates a new pm_ object with the card's details.
var testCards = map[string]testCard{
	"pm_card_visa":                   {brand: "visa", last4: "4242", behavior: cardSucceeds},
	"pm_card_mastercard":             {brand: "mastercard", last4: "4444", behavior: cardSucceeds},
	"pm_card_chargeCustomerFail":     {brand: "visa", last4: "0341", behavior: cardFailsCharges},
	"pm_card_authenticationRequired": {brand: "visa", last4: "3184", behavior: cardNeedsAuthentication},
	"pm_card_chargeDeclined":         {brand: "visa", last4: "0002", behavior: cardDeclined},
}

// behaviorOf returns how a stored card behaves. As at Stripe, the card number
// decides, and the emulator stores only its brand and last4.
func behaviorOf(pm *paymentMethod) cardBehavior {
	if pm.Card == nil {
		return cardSucceeds
	}
	for _, tc := range testCards {
		if tc.brand == pm.Card.Brand && tc.last4 == pm.Card.Last4 {
			return tc.behavior
		}
	}
	return cardSucceeds
}

func declinedError(message string) *apiError {
	return &apiError{
		status:      http.StatusPaymentRequired,
		Type:        errorTypeCard,
		Code:        "card_declined",
		DeclineCode: "generic_decline",
		Message:     message,
		keepEffects: true,
	}
}

// newCardPaymentMethod creates an unattached pm_ object for a test card.
func (c *call) newCardPaymentMethod(tc testCard) (*paymentMethod, error) {
	fingerprint := sha256.Sum256([]byte(tc.brand + tc.last4))
	year := int64(time.Unix(c.now, 0).UTC().Year()) + 3
	pm := &paymentMethod{
		ID:     newID("pm"),
		Object: "payment_method",
		Card: &paymentMethodCard{
			Brand:             tc.brand,
			Checks:            cardChecks{CVCCheck: ptr("pass")},
			Country:           "US",
			DisplayBrand:      tc.brand,
			ExpMonth:          12,
			ExpYear:           year,
			Fingerprint:       hex.EncodeToString(fingerprint[:])[:16],
			Funding:           "credit",
			Last4:             tc.last4,
			Networks:          map[string]any{"available": []string{tc.brand}, "preferred": nil},
			ThreeDSecureUsage: map[string]any{"supported": true},
		},
		Created:  c.now,
		Metadata: map[string]string{},
		Type:     "card",
	}
	return pm, c.save("payment_method", pm.ID, pm.Created, pm)
}

// resolvePaymentMethod turns a test token into a new PaymentMethod or loads
// and locks an existing pm_ id.
func (c *call) resolvePaymentMethod(idOrToken, param string) (*paymentMethod, error) {
	if tc, ok := testCards[idOrToken]; ok {
		return c.newCardPaymentMethod(tc)
	}
	if strings.HasPrefix(idOrToken, "pm_card_") {
		return nil, invalidRequest("resource_missing", param, "No such PaymentMethod: '"+idOrToken+"'. The Stripe emulator knows these test tokens: pm_card_visa, pm_card_mastercard, pm_card_chargeCustomerFail, pm_card_authenticationRequired, pm_card_chargeDeclined.")
	}
	pm := &paymentMethod{}
	if err := c.mustLoad(idOrToken, "payment_method", param, pm, true); err != nil {
		return nil, err
	}
	return pm, nil
}

// attach attaches pm to customer cus. A card that always declines is
// rejected with a card error, as Stripe checks the card when attaching.
func (c *call) attach(pm *paymentMethod, cus string) error {
	if pm.Customer != nil {
		if *pm.Customer == cus {
			return nil
		}
		return invalidRequest("", "payment_method", "The payment method you provided has already been attached to a customer.")
	}
	if behaviorOf(pm) == cardDeclined {
		e := declinedError("Your card was declined.")
		e.PaymentMethod = marshalObject(pm)
		return e
	}
	pm.Customer = &cus
	return c.save("payment_method", pm.ID, pm.Created, pm)
}

func (e *Emulator) getPaymentMethod(c *call) (any, error) {
	pm := &paymentMethod{}
	return pm, c.mustLoad(c.pathID(), "payment_method", "payment_method", pm, false)
}

func (e *Emulator) attachPaymentMethod(c *call) (any, error) {
	if err := c.p.checkKnown("customer"); err != nil {
		return nil, err
	}
	cusID, err := c.p.str("customer")
	if err != nil {
		return nil, err
	}
	cus := &customer{}
	if err := c.mustLoad(cusID, "customer", "customer", cus, false); err != nil {
		return nil, err
	}
	pm, err := c.resolvePaymentMethod(c.pathID(), "payment_method")
	if err != nil {
		return nil, err
	}
	if err := c.attach(pm, cus.ID); err != nil {
		return nil, err
	}
	return pm, nil
}

func (e *Emulator) detachPaymentMethod(c *call) (any, error) {
	if err := c.p.checkKnown(); err != nil {
		return nil, err
	}
	// Lock the customer before the payment method, in the same order as a
	// customer update that attaches one, so the two cannot deadlock.
	pm := &paymentMethod{}
	if err := c.mustLoad(c.pathID(), "payment_method", "payment_method", pm, false); err != nil {
		return nil, err
	}
	cus := &customer{}
	found := false
	if pm.Customer != nil {
		var err error
		if found, err = c.load(*pm.Customer, "customer", cus, true); err != nil {
			return nil, err
		}
	}
	if err := c.mustLoad(c.pathID(), "payment_method", "payment_method", pm, true); err != nil {
		return nil, err
	}
	if pm.Customer == nil || !found || *pm.Customer != cus.ID {
		// Never attached, or detached or moved by a concurrent request.
		return nil, invalidRequest("", "payment_method", "The payment method you provided is not attached to a customer so detachment is impossible.")
	}
	if found && cus.InvoiceSettings.DefaultPaymentMethod != nil && *cus.InvoiceSettings.DefaultPaymentMethod == pm.ID {
		cus.InvoiceSettings.DefaultPaymentMethod = nil
		if err := c.save("customer", cus.ID, cus.Created, cus); err != nil {
			return nil, err
		}
	}
	pm.Customer = nil
	if err := c.save("payment_method", pm.ID, pm.Created, pm); err != nil {
		return nil, err
	}
	c.emit("payment_method.detached", pm)
	return pm, nil
}

// listPaymentMethods serves GET /v1/payment_methods?customer=cus_...&type=card.
func (e *Emulator) listPaymentMethods(c *call) (any, error) {
	if err := c.p.checkKnown("customer", "type", "limit", "starting_after", "ending_before"); err != nil {
		return nil, err
	}
	cusID, err := c.p.str("customer")
	if err != nil {
		return nil, err
	}
	if cusID != "" {
		if err := c.mustLoad(cusID, "customer", "customer", &customer{}, false); err != nil {
			return nil, err
		}
	}
	return c.listPaymentMethodsOf(cusID, "/v1/payment_methods")
}

// listCustomerPaymentMethods serves GET /v1/customers/{id}/payment_methods.
func (e *Emulator) listCustomerPaymentMethods(c *call) (any, error) {
	if err := c.p.checkKnown("type", "limit", "starting_after", "ending_before"); err != nil {
		return nil, err
	}
	if err := c.mustLoad(c.pathID(), "customer", "customer", &customer{}, false); err != nil {
		return nil, err
	}
	return c.listPaymentMethodsOf(c.pathID(), "/v1/customers/"+c.pathID()+"/payment_methods")
}

func (c *call) listPaymentMethodsOf(cusID, url string) (any, error) {
	typ, err := c.p.str("type")
	if err != nil {
		return nil, err
	}
	var filters []listFilter
	if cusID != "" {
		filters = append(filters, listFilter{"customer", cusID})
	}
	if typ != "" {
		filters = append(filters, listFilter{"type", typ})
	}
	return c.list("payment_method", url, filters...)
}

var customerParams = []string{"email", "name", "description", "phone", "metadata", "payment_method", "invoice_settings"}

func (e *Emulator) createCustomer(c *call) (any, error) {
	if err := c.p.checkKnown(customerParams...); err != nil {
		return nil, err
	}
	cus := &customer{
		ID:               newID("cus"),
		Object:           "customer",
		Created:          c.now,
		InvoicePrefix:    strings.ToUpper(randomToken(8)),
		Metadata:         map[string]string{},
		PreferredLocales: []string{},
		TaxExempt:        "none",
	}
	if err := c.applyCustomerParams(cus); err != nil {
		return nil, err
	}
	return cus, c.save("customer", cus.ID, cus.Created, cus)
}

func (e *Emulator) getCustomer(c *call) (any, error) {
	cus := &customer{}
	return cus, c.mustLoad(c.pathID(), "customer", "customer", cus, false)
}

func (e *Emulator) updateCustomer(c *call) (any, error) {
	if err := c.p.checkKnown(customerParams...); err != nil {
		return nil, err
	}
	cus := &customer{}
	if err := c.mustLoad(c.pathID(), "customer", "customer", cus, true); err != nil {
		return nil, err
	}
	if err := c.applyCustomerParams(cus); err != nil {
		return nil, err
	}
	return cus, c.save("customer", cus.ID, cus.Created, cus)
}

// applyCustomerParams sets the fields sent in a create or update request.
// The customer must already have its id.
func (c *call) applyCustomerParams(cus *customer) error {
	for name, field := range map[string]**string{
		"email": &cus.Email, "name": &cus.Name, "description": &cus.Description, "phone": &cus.Phone,
	} {
		if !c.p.has(name) {
			continue
		}
		v, err := c.p.optStr(name)
		if err != nil {
			return err
		}
		*field = v
	}
	metadata, err := c.p.applyMetadata(cus.Metadata)
	if err != nil {
		return err
	}
	cus.Metadata = metadata

	if pmID, err := c.p.str("payment_method"); err != nil {
		return err
	} else if pmID != "" {
		pm, err := c.resolvePaymentMethod(pmID, "payment_method")
		if err != nil {
			return err
		}
		if err := c.attach(pm, cus.ID); err != nil {
			return err
		}
	}

	if c.p.has("invoice_settings", "default_payment_method") {
		pmID, err := c.p.str("invoice_settings", "default_payment_method")
		if err != nil {
			return err
		}
		if pmID == "" {
			cus.InvoiceSettings.DefaultPaymentMethod = nil
			return nil
		}
		pm := &paymentMethod{}
		if err := c.mustLoad(pmID, "payment_method", "invoice_settings[default_payment_method]", pm, false); err != nil {
			return err
		}
		if pm.Customer == nil || *pm.Customer != cus.ID {
			return invalidRequest("", "invoice_settings[default_payment_method]",
				"The customer does not have a payment method with the ID "+pmID+". The payment method must be attached to the customer.")
		}
		cus.InvoiceSettings.DefaultPaymentMethod = &pm.ID
	}
	return nil
}
