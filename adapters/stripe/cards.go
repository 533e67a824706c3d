package stripe

import (
	"context"

	stripego "github.com/stripe/stripe-go/v76"

	"github.com/taskpod/billing/domain"
	"github.com/taskpod/billing/ports"
)

// CreateCustomer creates a Stripe customer tagged with the TaskPod user id
// and returns its cus_ id.
func (g *Gateway) CreateCustomer(ctx context.Context, in ports.CreateCustomerInput) (string, error) {
	if err := requireValue("user id", in.UserID); err != nil {
		return "", err
	}
	if err := requireIdempotencyKey("create_customer", in.IdempotencyKey); err != nil {
		return "", err
	}

	ctx, ex := withExchange(ctx)
	params := &stripego.CustomerParams{Metadata: map[string]string{metadataUserID: in.UserID}}
	params.Context = ctx
	params.IdempotencyKey = stripego.String(in.IdempotencyKey)

	c, err := g.api.Customers.New(params)
	if err != nil {
		return "", toGatewayError(err, ex)
	}
	return c.ID, nil
}

// CreateSetupIntent starts saving a card for off-session charges later.
func (g *Gateway) CreateSetupIntent(ctx context.Context, customerID, idempotencyKey string) (ports.SetupIntent, error) {
	if err := requireValue("customer id", customerID); err != nil {
		return ports.SetupIntent{}, err
	}
	if err := requireIdempotencyKey("create_setup_intent", idempotencyKey); err != nil {
		return ports.SetupIntent{}, err
	}

	ctx, ex := withExchange(ctx)
	params := &stripego.SetupIntentParams{
		Customer:           stripego.String(customerID),
		Usage:              stripego.String(string(stripego.SetupIntentUsageOffSession)),
		PaymentMethodTypes: stripego.StringSlice([]string{string(stripego.PaymentMethodTypeCard)}),
	}
	params.Context = ctx
	params.IdempotencyKey = stripego.String(idempotencyKey)

	si, err := g.api.SetupIntents.New(params)
	if err != nil {
		return ports.SetupIntent{}, toGatewayError(err, ex)
	}
	return convertSetupIntent(si), nil
}

// GetSetupIntent reads a SetupIntent.
func (g *Gateway) GetSetupIntent(ctx context.Context, id string) (ports.SetupIntent, error) {
	if err := requireValue("setup intent id", id); err != nil {
		return ports.SetupIntent{}, err
	}

	ctx, ex := withExchange(ctx)
	params := &stripego.SetupIntentParams{}
	params.Context = ctx

	si, err := g.api.SetupIntents.Get(id, params)
	if err != nil {
		return ports.SetupIntent{}, toGatewayError(err, ex)
	}
	return convertSetupIntent(si), nil
}

// GetPaymentMethod reads a saved card.
func (g *Gateway) GetPaymentMethod(ctx context.Context, id string) (domain.PaymentMethod, error) {
	if err := requireValue("payment method id", id); err != nil {
		return domain.PaymentMethod{}, err
	}

	ctx, ex := withExchange(ctx)
	params := &stripego.PaymentMethodParams{}
	params.Context = ctx

	pm, err := g.api.PaymentMethods.Get(id, params)
	if err != nil {
		return domain.PaymentMethod{}, toGatewayError(err, ex)
	}
	return convertPaymentMethod(pm), nil
}

// ListPaymentMethods returns all cards attached to the customer, following
// Stripe's pagination to the last page.
func (g *Gateway) ListPaymentMethods(ctx context.Context, customerID string) ([]domain.PaymentMethod, error) {
	if err := requireValue("customer id", customerID); err != nil {
		return nil, err
	}

	ctx, ex := withExchange(ctx)
	params := &stripego.PaymentMethodListParams{
		Customer: stripego.String(customerID),
		Type:     stripego.String(string(stripego.PaymentMethodTypeCard)),
	}
	params.Context = ctx
	params.Limit = stripego.Int64(listPageSize)

	var out []domain.PaymentMethod
	it := g.api.PaymentMethods.List(params)
	for it.Next() {
		out = append(out, convertPaymentMethod(it.PaymentMethod()))
	}
	if err := it.Err(); err != nil {
		return nil, toGatewayError(err, ex)
	}
	return out, nil
}

// DetachPaymentMethod removes a saved card from its customer.
func (g *Gateway) DetachPaymentMethod(ctx context.Context, id, idempotencyKey string) error {
	if err := requireValue("payment method id", id); err != nil {
		return err
	}
	if err := requireIdempotencyKey("detach_payment_method", idempotencyKey); err != nil {
		return err
	}

	ctx, ex := withExchange(ctx)
	params := &stripego.PaymentMethodDetachParams{}
	params.Context = ctx
	params.IdempotencyKey = stripego.String(idempotencyKey)

	if _, err := g.api.PaymentMethods.Detach(id, params); err != nil {
		return toGatewayError(err, ex)
	}
	return nil
}

// listPageSize is the page size of list calls, Stripe's maximum.
const listPageSize = 100

// requireIdempotencyKey rejects a mutating call without a key, because a
// retry of such a call could create a second object or move money twice.
func requireIdempotencyKey(operation, key string) error {
	if key == "" {
		return invalidInput("%s: idempotency key is empty; build one from the stored business ids", operation)
	}
	return nil
}

// requireValue rejects an empty id or input before a request is sent. An
// empty path id would otherwise address a different endpoint.
func requireValue(name, value string) error {
	if value == "" {
		return invalidInput("%s is empty", name)
	}
	return nil
}
