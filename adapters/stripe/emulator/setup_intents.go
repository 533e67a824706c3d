package emulator

import "fmt"

var setupIntentCreateParams = []string{
	"customer", "usage", "payment_method_types", "payment_method", "metadata", "description", "confirm",
	"automatic_payment_methods", "payment_method_options", "return_url", "on_behalf_of", "use_stripe_sdk",
	"flow_directions", "attach_to_self", "mandate_data", "single_use",
}

func (e *Emulator) createSetupIntent(c *call) (any, error) {
	if err := c.p.checkKnown(setupIntentCreateParams...); err != nil {
		return nil, err
	}
	si := &setupIntent{
		Object:               "setup_intent",
		Created:              c.now,
		Metadata:             map[string]string{},
		PaymentMethodOptions: map[string]any{"card": map[string]any{"mandate_options": nil, "network": nil, "request_three_d_secure": "automatic"}},
		Status:               "requires_payment_method",
		Usage:                "off_session",
	}
	si.ID = newID("seti")
	si.ClientSecret = si.ID + "_secret_" + randomToken(24)

	cusID, err := c.p.str("customer")
	if err != nil {
		return nil, err
	}
	if cusID != "" {
		if err := c.mustLoad(cusID, "customer", "customer", &customer{}, false); err != nil {
			return nil, err
		}
		si.Customer = &cusID
	}
	if usage, err := c.p.str("usage"); err != nil {
		return nil, err
	} else if usage != "" {
		if usage != "on_session" && usage != "off_session" {
			return nil, invalidParam("usage", fmt.Sprintf("Invalid usage: must be one of on_session or off_session, got %q.", usage))
		}
		si.Usage = usage
	}
	if si.PaymentMethodTypes, err = cardOnlyTypes(c.p); err != nil {
		return nil, err
	}
	if si.Description, err = c.p.optStr("description"); err != nil {
		return nil, err
	}
	if si.Metadata, err = c.p.applyMetadata(si.Metadata); err != nil {
		return nil, err
	}
	confirm, err := c.p.bool("confirm")
	if err != nil {
		return nil, err
	}
	pmArg, err := c.p.str("payment_method")
	if err != nil {
		return nil, err
	}
	if pmArg != "" && !confirm {
		pm, err := c.resolvePaymentMethod(pmArg, "payment_method")
		if err != nil {
			return nil, err
		}
		si.PaymentMethod = &pm.ID
		si.Status = "requires_confirmation"
	}
	if confirm {
		if err := c.confirmSetup(si, pmArg); err != nil {
			return nil, err
		}
		return si, nil
	}
	return si, c.save("setup_intent", si.ID, si.Created, si)
}

// cardOnlyTypes reads payment_method_types; the emulator supports only card.
func cardOnlyTypes(p *params) ([]string, error) {
	types, err := p.list("payment_method_types")
	if err != nil {
		return nil, err
	}
	if len(types) == 0 {
		return []string{"card"}, nil
	}
	for i, t := range types {
		if t != "card" {
			return nil, invalidParam(fmt.Sprintf("payment_method_types[%d]", i),
				fmt.Sprintf("The payment method type %q is invalid. The Stripe emulator supports only \"card\".", t))
		}
	}
	return types, nil
}

func (e *Emulator) getSetupIntent(c *call) (any, error) {
	if err := c.p.checkKnown("client_secret"); err != nil {
		return nil, err
	}
	si := &setupIntent{}
	if err := c.mustLoad(c.pathID(), "setup_intent", "intent", si, false); err != nil {
		return nil, err
	}
	return si, c.checkClientSecret("SetupIntent", si.ClientSecret)
}

func (e *Emulator) confirmSetupIntent(c *call) (any, error) {
	if err := c.p.checkKnown("payment_method", "return_url", "mandate_data", "payment_method_options", "use_stripe_sdk", "client_secret"); err != nil {
		return nil, err
	}
	si := &setupIntent{}
	if err := c.mustLoad(c.pathID(), "setup_intent", "intent", si, true); err != nil {
		return nil, err
	}
	if err := c.checkClientSecret("SetupIntent", si.ClientSecret); err != nil {
		return nil, err
	}
	pmArg, err := c.p.str("payment_method")
	if err != nil {
		return nil, err
	}
	if err := c.confirmSetup(si, pmArg); err != nil {
		return nil, err
	}
	return si, nil
}

// confirmSetup confirms si with the payment method pmArg (or the one already
// set), attaches the method to the SetupIntent's customer and saves si. A
// declined card moves si back to requires_payment_method with
// last_setup_error and returns a 402 card error carrying si.
func (c *call) confirmSetup(si *setupIntent, pmArg string) error {
	if si.Status != "requires_payment_method" && si.Status != "requires_confirmation" {
		return invalidRequest("setup_intent_unexpected_state", "",
			fmt.Sprintf("You cannot confirm this SetupIntent because it has a status of %s.", si.Status))
	}
	if pmArg == "" && si.PaymentMethod != nil {
		pmArg = *si.PaymentMethod
	}
	if pmArg == "" {
		return missingParam("payment_method")
	}
	pm, err := c.resolvePaymentMethod(pmArg, "payment_method")
	if err != nil {
		return err
	}

	if behaviorOf(pm) == cardDeclined {
		cardErr := declinedError("Your card was declined.")
		cardErr.PaymentMethod = marshalObject(pm)
		si.LastSetupError = &apiError{
			Type: cardErr.Type, Code: cardErr.Code, DeclineCode: cardErr.DeclineCode,
			Message: cardErr.Message, PaymentMethod: cardErr.PaymentMethod,
		}
		si.PaymentMethod = nil
		si.Status = "requires_payment_method"
		if err := c.save("setup_intent", si.ID, si.Created, si); err != nil {
			return err
		}
		cardErr.SetupIntent = marshalObject(si)
		return cardErr
	}

	if si.Customer != nil {
		if err := c.attach(pm, *si.Customer); err != nil {
			return err
		}
	}
	si.PaymentMethod = &pm.ID
	si.LastSetupError = nil
	si.Status = "succeeded"
	if err := c.save("setup_intent", si.ID, si.Created, si); err != nil {
		return err
	}
	c.emit("setup_intent.succeeded", si)
	return nil
}
