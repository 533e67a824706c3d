package application

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/taskpod/billing/domain"
	"github.com/taskpod/billing/ports"
)

// Operation kinds of direct Stripe calls that manage cards.
const (
	opCreateCustomer = "create_customer"
	opSetupIntent    = "create_setup_intent"
	opDetach         = "detach_payment_method"
)

// ErrSetupNotSucceeded is returned when a SetupIntent has no saved card yet.
var ErrSetupNotSucceeded = errors.New("setup intent has not succeeded")

// Billing saves, lists and removes customers' cards. These calls hold no
// money, so they go to Stripe directly, each with an idempotency key taken
// from a stored operation id.
type Billing struct {
	store   ports.Store
	gateway ports.PaymentGateway
	clock   ports.Clock
	log     *slog.Logger
}

// NewBilling builds the card use cases.
func NewBilling(store ports.Store, gateway ports.PaymentGateway, clock ports.Clock, log *slog.Logger) *Billing {
	return &Billing{store: store, gateway: gateway, clock: clock, log: log}
}

// SetupResult is the data a client needs to collect a card with Stripe.js.
type SetupResult struct {
	SetupIntentID string
	ClientSecret  string
	CustomerID    string
}

// PaymentMethods is a customer's saved cards and default card.
type PaymentMethods struct {
	Methods   []domain.PaymentMethod
	DefaultID string
}

// Setup creates a SetupIntent for the customer, creating the Stripe customer
// on first use.
func (b *Billing) Setup(ctx context.Context, userID string) (SetupResult, error) {
	customer, err := b.EnsureStripeCustomer(ctx, userID)
	if err != nil {
		return SetupResult{}, err
	}

	key, err := b.beginOperation(ctx, userID, opSetupIntent)
	if err != nil {
		return SetupResult{}, err
	}
	si, err := b.gateway.CreateSetupIntent(ctx, customer.StripeCustomerID, key)
	if err != nil {
		return SetupResult{}, b.failOperation(ctx, key, fmt.Errorf("create setup intent: %w", err))
	}
	if err := b.finishOperation(ctx, key); err != nil {
		return SetupResult{}, err
	}
	return SetupResult{SetupIntentID: si.ID, ClientSecret: si.ClientSecret, CustomerID: customer.StripeCustomerID}, nil
}

// EnsureStripeCustomer returns the customer, creating the row and the Stripe
// customer if either is missing. A retry after a crash reuses the stored
// operation id, so Stripe returns the customer it already made.
func (b *Billing) EnsureStripeCustomer(ctx context.Context, userID string) (domain.Customer, error) {
	var customer domain.Customer
	err := b.store.InTx(ctx, func(ctx context.Context, tx ports.Tx) error {
		var err error
		customer, err = tx.Customers().Ensure(ctx, domain.Customer{UserID: userID, CreatedAt: b.clock.Now()})
		return err
	})
	if err != nil {
		return domain.Customer{}, err
	}
	if customer.StripeCustomerID != "" {
		return customer, nil
	}

	key, err := b.beginOperation(ctx, userID, opCreateCustomer)
	if err != nil {
		return domain.Customer{}, err
	}
	stripeID, err := b.gateway.CreateCustomer(ctx, ports.CreateCustomerInput{UserID: userID, IdempotencyKey: key})
	if err != nil {
		return domain.Customer{}, b.failOperation(ctx, key, fmt.Errorf("create stripe customer: %w", err))
	}

	err = b.store.InTx(ctx, func(ctx context.Context, tx ports.Tx) error {
		c, err := tx.Customers().GetForUpdate(ctx, userID)
		if err != nil {
			return err
		}
		if c.StripeCustomerID == "" {
			c.StripeCustomerID = stripeID
			if err := tx.Customers().Update(ctx, c); err != nil {
				return err
			}
		}
		customer = c
		return tx.Operations().Finish(ctx, key)
	})
	if err != nil {
		return domain.Customer{}, err
	}
	b.log.InfoContext(ctx, "stripe customer created", "customer_id", userID, "stripe_customer_id", customer.StripeCustomerID)
	return customer, nil
}

// ConfirmSetup saves the card of a succeeded SetupIntent and makes it the
// customer's default.
func (b *Billing) ConfirmSetup(ctx context.Context, userID, setupIntentID string) (domain.PaymentMethod, error) {
	customer, err := b.customer(ctx, userID)
	if err != nil {
		return domain.PaymentMethod{}, err
	}
	si, err := b.gateway.GetSetupIntent(ctx, setupIntentID)
	if errors.Is(err, ports.ErrGatewayNotFound) || (err == nil && si.CustomerID != customer.StripeCustomerID) {
		return domain.PaymentMethod{}, fmt.Errorf("setup intent %s: %w", setupIntentID, domain.ErrNotFound)
	}
	if err != nil {
		return domain.PaymentMethod{}, fmt.Errorf("read setup intent: %w", err)
	}
	if si.Status != ports.SetupIntentSucceeded || si.PaymentMethodID == "" {
		return domain.PaymentMethod{}, fmt.Errorf("%w: %s is %s; confirm it with Stripe.js (or the emulator) first",
			ErrSetupNotSucceeded, si.ID, si.Status)
	}

	pm, err := b.gateway.GetPaymentMethod(ctx, si.PaymentMethodID)
	if err != nil {
		return domain.PaymentMethod{}, fmt.Errorf("read payment method: %w", err)
	}
	pm.CustomerID = userID
	pm.CreatedAt = b.clock.Now()

	err = b.store.InTx(ctx, func(ctx context.Context, tx ports.Tx) error {
		c, err := tx.Customers().GetForUpdate(ctx, userID)
		if err != nil {
			return err
		}
		if err := tx.Customers().UpsertPaymentMethod(ctx, pm); err != nil {
			return err
		}
		c.DefaultPaymentMethodID = pm.ID
		return tx.Customers().Update(ctx, c)
	})
	if err != nil {
		return domain.PaymentMethod{}, err
	}
	b.log.InfoContext(ctx, "card saved as default", "customer_id", userID, "payment_method_id", pm.ID)
	return pm, nil
}

// ListPaymentMethods returns the customer's saved cards.
func (b *Billing) ListPaymentMethods(ctx context.Context, userID string) (PaymentMethods, error) {
	var out PaymentMethods
	err := b.store.InTx(ctx, func(ctx context.Context, tx ports.Tx) error {
		c, err := tx.Customers().Get(ctx, userID)
		if errors.Is(err, domain.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		out.DefaultID = c.DefaultPaymentMethodID
		out.Methods, err = tx.Customers().ListPaymentMethods(ctx, userID)
		return err
	})
	return out, err
}

// SetDefault makes one of the customer's saved cards the default for auto-pay.
func (b *Billing) SetDefault(ctx context.Context, userID, paymentMethodID string) (PaymentMethods, error) {
	err := b.store.InTx(ctx, func(ctx context.Context, tx ports.Tx) error {
		c, err := tx.Customers().GetForUpdate(ctx, userID)
		if err != nil {
			return fmt.Errorf("payment method %s: %w", paymentMethodID, domain.ErrNotFound)
		}
		if _, err := tx.Customers().GetPaymentMethod(ctx, userID, paymentMethodID); err != nil {
			return err
		}
		c.DefaultPaymentMethodID = paymentMethodID
		return tx.Customers().Update(ctx, c)
	})
	if err != nil {
		return PaymentMethods{}, err
	}
	return b.ListPaymentMethods(ctx, userID)
}

// RemovePaymentMethod detaches a card at Stripe and deletes its stored copy. Removing the
// default leaves the customer with no default; holds already placed with the
// card stay valid at Stripe.
func (b *Billing) RemovePaymentMethod(ctx context.Context, userID, paymentMethodID string) error {
	err := b.store.InTx(ctx, func(ctx context.Context, tx ports.Tx) error {
		_, err := tx.Customers().GetPaymentMethod(ctx, userID, paymentMethodID)
		return err
	})
	if err != nil {
		return err
	}

	key, err := b.beginOperation(ctx, paymentMethodID, opDetach)
	if err != nil {
		return err
	}
	err = b.gateway.DetachPaymentMethod(ctx, paymentMethodID, key)
	if err != nil && !errors.Is(err, ports.ErrGatewayNotFound) {
		return b.failOperation(ctx, key, fmt.Errorf("detach payment method: %w", err))
	}

	err = b.store.InTx(ctx, func(ctx context.Context, tx ports.Tx) error {
		c, err := tx.Customers().GetForUpdate(ctx, userID)
		if err != nil {
			return err
		}
		if err := tx.Customers().DeletePaymentMethod(ctx, userID, paymentMethodID); err != nil {
			return err
		}
		if c.DefaultPaymentMethodID == paymentMethodID {
			c.DefaultPaymentMethodID = ""
			if err := tx.Customers().Update(ctx, c); err != nil {
				return err
			}
		}
		return tx.Operations().Finish(ctx, key)
	})
	if err != nil {
		return err
	}
	b.log.InfoContext(ctx, "card removed", "customer_id", userID, "payment_method_id", paymentMethodID)
	return nil
}

func (b *Billing) customer(ctx context.Context, userID string) (domain.Customer, error) {
	var c domain.Customer
	err := b.store.InTx(ctx, func(ctx context.Context, tx ports.Tx) error {
		var err error
		c, err = tx.Customers().Get(ctx, userID)
		return err
	})
	if errors.Is(err, domain.ErrNotFound) {
		return domain.Customer{}, fmt.Errorf("customer %s has no billing profile; call POST /v1/billing/setup first: %w", userID, domain.ErrNotFound)
	}
	return c, err
}

// beginOperation returns the idempotency key of the open operation of kind
// for subject. It stays the same until finishOperation, so a request retried
// after a failure replays Stripe's first response instead of acting twice.
func (b *Billing) beginOperation(ctx context.Context, subject, kind string) (string, error) {
	var id string
	err := b.store.InTx(ctx, func(ctx context.Context, tx ports.Tx) error {
		var err error
		id, err = tx.Operations().Begin(ctx, subject, kind)
		return err
	})
	return id, err
}

// failOperation decides whether a failed card call keeps its key. Stripe
// stores a 5xx response under its idempotency key and replays it for 24 hours,
// so after an api_error the operation is finished and the next request gets
// a new key; at worst that leaves an unused Stripe customer or SetupIntent,
// which hold no money. After a network failure the outcome is unknown, so
// the key is kept and a retry replays whatever Stripe did.
func (b *Billing) failOperation(ctx context.Context, id string, cause error) error {
	var ge *ports.GatewayError
	if !errors.As(cause, &ge) || ge.Kind != ports.GatewayAPIError {
		return cause
	}
	if err := b.finishOperation(ctx, id); err != nil {
		return errors.Join(cause, err)
	}
	return cause
}

func (b *Billing) finishOperation(ctx context.Context, id string) error {
	return b.store.InTx(ctx, func(ctx context.Context, tx ports.Tx) error {
		return tx.Operations().Finish(ctx, id)
	})
}
