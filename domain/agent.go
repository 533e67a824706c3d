package domain

import (
	"regexp"
	"strings"
	"time"
)

var connectAccountPattern = regexp.MustCompile(`^acct_[A-Za-z0-9]{1,64}$`)

// Agent is an AI agent that customers pay per task through its Stripe
// Connect account.
type Agent struct {
	ID               string
	Name             string
	Price            Money
	ConnectAccountID string
	Active           bool
	CreatedAt        time.Time
}

// NewAgent validates a new agent. A price of zero makes it a free agent,
// whose tasks carry no payment; a paid agent needs a Connect account.
func NewAgent(id, name string, price Money, connectAccountID string, now time.Time) (Agent, error) {
	name = strings.TrimSpace(name)
	if name == "" || len(name) > 200 {
		return Agent{}, Invalid("name", "invalid_name", "name must be 1 to 200 characters")
	}
	a := Agent{ID: id, Name: name, Price: price, ConnectAccountID: connectAccountID, Active: true, CreatedAt: now}
	if err := a.validatePayout(); err != nil {
		return Agent{}, err
	}
	return a, nil
}

// IsPaid reports whether tasks for this agent are charged.
func (a Agent) IsPaid() bool { return !a.Price.IsZero() }

// Reprice changes the price; tasks already created keep their amounts.
func (a *Agent) Reprice(price Money) error {
	old := a.Price
	a.Price = price
	if err := a.validatePayout(); err != nil {
		a.Price = old
		return err
	}
	return nil
}

// ChangeConnectAccount points future transfers at another Connect account.
func (a *Agent) ChangeConnectAccount(accountID string) error {
	old := a.ConnectAccountID
	a.ConnectAccountID = accountID
	if err := a.validatePayout(); err != nil {
		a.ConnectAccountID = old
		return err
	}
	return nil
}

func (a Agent) validatePayout() error {
	if a.ConnectAccountID != "" && !connectAccountPattern.MatchString(a.ConnectAccountID) {
		return Invalid("stripeAccountId", "invalid_account", "stripeAccountId must look like acct_123, got %q", a.ConnectAccountID)
	}
	if !a.IsPaid() {
		return nil
	}
	if a.ConnectAccountID == "" {
		return Invalid("stripeAccountId", "missing_account", "a paid agent needs a Stripe Connect account id (acct_...)")
	}
	if a.Price.Amount() < a.Price.Currency().MinimumCharge() {
		return Invalid("priceCents", "amount_too_small",
			"priceCents %d is below Stripe's minimum charge of %d for %s; use 0 for a free agent",
			a.Price.Amount(), a.Price.Currency().MinimumCharge(), a.Price.Currency())
	}
	return nil
}
