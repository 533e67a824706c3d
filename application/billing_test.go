package application_test

import (
	"context"
	"errors"
	"github.com/taskpod/billing/ports"
	"testing"

	"github.com/taskpod/billing/application"
	"github.com/taskpod/billing/domain"
)

func TestSetupReusesStripeCustomer(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()

	first, err := e.billing.Setup(ctx, "user_new")
	if err != nil {
		t.Fatal(err)
	}
	second, err := e.billing.Setup(ctx, "user_new")
	if err != nil {
		t.Fatal(err)
	}

	if n := e.gateway.count("CreateCustomer"); n != 1 {
		t.Errorf("CreateCustomer called %d times, want 1", n)
	}
	if first.CustomerID == "" || first.CustomerID != second.CustomerID {
		t.Errorf("customer ids %q and %q, want one Stripe customer", first.CustomerID, second.CustomerID)
	}
	if got := e.store.customer("user_new").StripeCustomerID; got != first.CustomerID {
		t.Errorf("stored Stripe customer %q, want %q", got, first.CustomerID)
	}
	if first.SetupIntentID == "" || first.SetupIntentID == second.SetupIntentID || first.ClientSecret == "" {
		t.Errorf("setup intents %+v and %+v, want two different ones with secrets", first, second)
	}
	keys := e.gateway.keys("CreateSetupIntent")
	if len(keys) != 2 || keys[0] == keys[1] {
		t.Errorf("setup intent keys = %v, want two different keys for two requests", keys)
	}
}

func TestSetupRetryReusesKey(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.gateway.program("CreateSetupIntent", gatewayFault{err: networkError(), afterEffect: true})

	if _, err := e.billing.Setup(ctx, "user_new"); err == nil {
		t.Fatal("Setup succeeded although Stripe's answer was lost")
	}
	res, err := e.billing.Setup(ctx, "user_new")
	if err != nil {
		t.Fatalf("retry: %v", err)
	}

	keys := e.gateway.keys("CreateSetupIntent")
	if len(keys) != 2 || keys[0] != keys[1] {
		t.Fatalf("setup intent keys = %v, want the retry to reuse the first key", keys)
	}
	e.gateway.mu.Lock()
	intents := len(e.gateway.setupIntents)
	e.gateway.mu.Unlock()
	if intents != 1 {
		t.Errorf("Stripe holds %d setup intents, want 1", intents)
	}
	if res.SetupIntentID == "" {
		t.Error("retry returned no setup intent")
	}

	// A finished request frees the key: the next one gets a new key.
	if _, err := e.billing.Setup(ctx, "user_new"); err != nil {
		t.Fatal(err)
	}
	if keys := e.gateway.keys("CreateSetupIntent"); len(keys) != 3 || keys[2] == keys[0] {
		t.Errorf("keys = %v, want a new key after the operation finished", keys)
	}
}

func TestCreateCustomerRetryReusesKey(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.gateway.program("CreateCustomer", gatewayFault{err: networkError(), afterEffect: true})

	if _, err := e.billing.Setup(ctx, "user_new"); err == nil {
		t.Fatal("Setup succeeded although the customer answer was lost")
	}
	if got := e.store.customer("user_new").StripeCustomerID; got != "" {
		t.Fatalf("stored Stripe customer %q before any answer arrived", got)
	}
	if _, err := e.billing.Setup(ctx, "user_new"); err != nil {
		t.Fatalf("retry: %v", err)
	}

	keys := e.gateway.keys("CreateCustomer")
	if len(keys) != 2 || keys[0] != keys[1] {
		t.Errorf("customer keys = %v, want the retry to reuse the key", keys)
	}
	e.gateway.mu.Lock()
	customers := len(e.gateway.customers)
	e.gateway.mu.Unlock()
	if customers != 1 {
		t.Errorf("Stripe holds %d customers, want 1", customers)
	}
}

// setupCard runs the card flow for userID: Setup, the browser's confirm,
// and ConfirmSetup. It returns the saved payment method.
func (e *testEnv) setupCard(userID, last4 string) domain.PaymentMethod {
	e.t.Helper()
	ctx := context.Background()
	res, err := e.billing.Setup(ctx, userID)
	if err != nil {
		e.t.Fatalf("Setup: %v", err)
	}
	e.gateway.confirmSetup(res.SetupIntentID, "visa", last4)
	pm, err := e.billing.ConfirmSetup(ctx, userID, res.SetupIntentID)
	if err != nil {
		e.t.Fatalf("ConfirmSetup: %v", err)
	}
	return pm
}

func TestConfirmSetupSavesDefault(t *testing.T) {
	e := newEnv(t)
	pm := e.setupCard("user_new", "4242")
	if pm.Brand != "visa" || pm.Last4 != "4242" || pm.ExpMonth != 12 || pm.ExpYear != 2030 || pm.CustomerID != "user_new" {
		t.Errorf("saved card = %+v", pm)
	}
	list, err := e.billing.ListPaymentMethods(context.Background(), "user_new")
	if err != nil {
		t.Fatal(err)
	}
	if list.DefaultID != pm.ID || len(list.Methods) != 1 || list.Methods[0].ID != pm.ID {
		t.Errorf("list = %+v, want the card as the only and default card", list)
	}

	// The next paid task is charged to it automatically.
	v := e.createTask("user_new", paidAgentID, 100)
	if v.Payment.Status != domain.PaymentAuthorized || v.Payment.PaymentMethodID != pm.ID {
		t.Errorf("payment %s with %q, want authorized with %s", v.Payment.Status, v.Payment.PaymentMethodID, pm.ID)
	}
}

func TestConfirmSetupRejectsUnconfirmed(t *testing.T) {
	e := newEnv(t)
	res, err := e.billing.Setup(context.Background(), "user_new")
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.billing.ConfirmSetup(context.Background(), "user_new", res.SetupIntentID)
	if !errors.Is(err, application.ErrSetupNotSucceeded) {
		t.Errorf("confirm an unconfirmed setup intent: %v, want ErrSetupNotSucceeded", err)
	}
	if got := e.store.customer("user_new").DefaultPaymentMethodID; got != "" {
		t.Errorf("default card = %q, want none", got)
	}
}

func TestConfirmSetupRejectsOtherCustomer(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	res, err := e.billing.Setup(ctx, "user_a")
	if err != nil {
		t.Fatal(err)
	}
	e.gateway.confirmSetup(res.SetupIntentID, "visa", "4242")
	if _, err := e.billing.Setup(ctx, "user_b"); err != nil {
		t.Fatal(err)
	}

	if _, err := e.billing.ConfirmSetup(ctx, "user_b", res.SetupIntentID); !errors.Is(err, domain.ErrNotFound) {
		t.Errorf("confirm another customer's setup intent: %v, want ErrNotFound", err)
	}
	if got := e.store.customer("user_b").DefaultPaymentMethodID; got != "" {
		t.Errorf("user_b default = %q, want none", got)
	}
	if _, err := e.billing.ConfirmSetup(ctx, "user_b", "seti_missing"); !errors.Is(err, domain.ErrNotFound) {
		t.Errorf("confirm a missing setup intent: %v, want ErrNotFound", err)
	}
	if _, err := e.billing.ConfirmSetup(ctx, "user_nobody", res.SetupIntentID); !errors.Is(err, domain.ErrNotFound) {
		t.Errorf("confirm without a billing profile: %v, want ErrNotFound", err)
	}
}

func TestRemoveDefaultCardClearsDefault(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	first := e.setupCard("user_new", "4242")
	second := e.setupCard("user_new", "5555")

	if _, err := e.billing.SetDefault(ctx, "user_new", first.ID); err != nil {
		t.Fatal(err)
	}
	if err := e.billing.RemovePaymentMethod(ctx, "user_new", second.ID); err != nil {
		t.Fatal(err)
	}
	if got := e.store.customer("user_new").DefaultPaymentMethodID; got != first.ID {
		t.Errorf("default after removing another card = %q, want %q", got, first.ID)
	}

	if err := e.billing.RemovePaymentMethod(ctx, "user_new", first.ID); err != nil {
		t.Fatal(err)
	}
	list, err := e.billing.ListPaymentMethods(ctx, "user_new")
	if err != nil {
		t.Fatal(err)
	}
	if list.DefaultID != "" || len(list.Methods) != 0 {
		t.Errorf("list = %+v, want no cards and no default", list)
	}
	e.gateway.mu.Lock()
	detached := append([]string(nil), e.gateway.detached...)
	e.gateway.mu.Unlock()
	if len(detached) != 2 || detached[0] != second.ID || detached[1] != first.ID {
		t.Errorf("detached = %v, want both cards at Stripe", detached)
	}

	// Without a default card, the next task needs the customer's confirmation.
	v := e.createTask("user_new", paidAgentID, 100)
	if v.Payment.Status != domain.PaymentRequiresCustomerAction || v.Payment.AutoCharged {
		t.Errorf("payment %s autoCharged %v, want requires_customer_action", v.Payment.Status, v.Payment.AutoCharged)
	}
}

func TestOtherCustomersCardIsNotFound(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	card := e.setupCard("user_a", "4242")
	if _, err := e.billing.Setup(ctx, "user_b"); err != nil {
		t.Fatal(err)
	}

	if err := e.billing.RemovePaymentMethod(ctx, "user_b", card.ID); !errors.Is(err, domain.ErrNotFound) {
		t.Errorf("remove another customer's card: %v, want ErrNotFound", err)
	}
	if n := e.gateway.count("DetachPaymentMethod"); n != 0 {
		t.Errorf("DetachPaymentMethod called %d times for a card not owned", n)
	}
	if _, err := e.billing.SetDefault(ctx, "user_b", card.ID); !errors.Is(err, domain.ErrNotFound) {
		t.Errorf("default to another customer's card: %v, want ErrNotFound", err)
	}
	if _, err := e.billing.SetDefault(ctx, "user_nobody", card.ID); !errors.Is(err, domain.ErrNotFound) {
		t.Errorf("default without a billing profile: %v, want ErrNotFound", err)
	}
	if got := e.store.customer("user_a").DefaultPaymentMethodID; got != card.ID {
		t.Errorf("owner's default = %q, want unchanged %q", got, card.ID)
	}
}

func TestListCardsOfNewCustomer(t *testing.T) {
	e := newEnv(t)
	list, err := e.billing.ListPaymentMethods(context.Background(), "user_unknown")
	if err != nil || len(list.Methods) != 0 || list.DefaultID != "" {
		t.Errorf("list = %+v, %v; want empty", list, err)
	}
}

func TestDetachRetryReusesKey(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	card := e.setupCard("user_new", "4242")
	e.gateway.program("DetachPaymentMethod", gatewayFault{err: networkError()})

	if err := e.billing.RemovePaymentMethod(ctx, "user_new", card.ID); err == nil {
		t.Fatal("remove succeeded although Stripe was unreachable")
	}
	if got := e.store.customer("user_new").DefaultPaymentMethodID; got != card.ID {
		t.Errorf("default after a failed remove = %q, want it kept", got)
	}
	if err := e.billing.RemovePaymentMethod(ctx, "user_new", card.ID); err != nil {
		t.Fatalf("retry: %v", err)
	}
	if keys := e.gateway.keys("DetachPaymentMethod"); len(keys) != 2 || keys[0] != keys[1] {
		t.Errorf("detach keys = %v, want the same key twice", keys)
	}
}

// Stripe replays a stored 5xx for the same key for 24 hours, so a retry
// after an api_error must use a new key or it can never succeed.
func TestCreateCustomerAPIErrorRotatesKey(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.gateway.program("CreateCustomer", gatewayFault{err: &ports.GatewayError{Kind: ports.GatewayAPIError, HTTPStatus: 500, Message: "stored failure"}})

	if _, err := e.billing.Setup(ctx, "user_new"); err == nil {
		t.Fatal("Setup succeeded although Stripe answered 500")
	}
	if _, err := e.billing.Setup(ctx, "user_new"); err != nil {
		t.Fatalf("retry: %v", err)
	}

	keys := e.gateway.keys("CreateCustomer")
	if len(keys) != 2 {
		t.Fatalf("customer keys = %v, want two calls", keys)
	}
	if keys[0] == keys[1] {
		t.Errorf("retry reused key %s after a 500, which Stripe would replay", keys[0])
	}
}
