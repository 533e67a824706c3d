package http

import (
	"time"

	"github.com/taskpod/billing/application"
	"github.com/taskpod/billing/domain"
	"github.com/taskpod/billing/ports"
)

// list is the shape of every paginated list.
type list[T any] struct {
	Data    []T  `json:"data"`
	HasMore bool `json:"hasMore"`
}

type cardView struct {
	ID        string `json:"id"`
	Brand     string `json:"brand"`
	Last4     string `json:"last4"`
	ExpMonth  int    `json:"expMonth"`
	ExpYear   int    `json:"expYear"`
	IsDefault bool   `json:"isDefault"`
}

type paymentMethodsView struct {
	PaymentMethods         []cardView `json:"paymentMethods"`
	DefaultPaymentMethodID *string    `json:"defaultPaymentMethodId"`
}

func cardOf(pm domain.PaymentMethod, defaultID string) cardView {
	return cardView{ID: pm.ID, Brand: pm.Brand, Last4: pm.Last4, ExpMonth: pm.ExpMonth, ExpYear: pm.ExpYear, IsDefault: pm.ID == defaultID}
}

func paymentMethodsOf(pms application.PaymentMethods) paymentMethodsView {
	v := paymentMethodsView{PaymentMethods: []cardView{}}
	for _, pm := range pms.Methods {
		v.PaymentMethods = append(v.PaymentMethods, cardOf(pm, pms.DefaultID))
	}
	if pms.DefaultID != "" {
		id := pms.DefaultID
		v.DefaultPaymentMethodID = &id
	}
	return v
}

type agentRef struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

// paymentView is a task's payment. *Cents fields are minor units of
// Currency; zero-decimal currencies such as jpy are whole units.
type paymentView struct {
	ID                  string     `json:"id"`
	TaskID              string     `json:"taskId"`
	AmountCents         int64      `json:"amountCents"`
	Currency            string     `json:"currency"`
	Status              string     `json:"status"`
	AutoCharged         bool       `json:"autoCharged"`
	ClientSecret        string     `json:"clientSecret,omitempty"`
	DeclineCode         string     `json:"declineCode,omitempty"`
	CapturedAmountCents int64      `json:"capturedAmountCents"`
	PlatformFeeCents    int64      `json:"platformFeeCents"`
	AgentAmountCents    int64      `json:"agentAmountCents"`
	FailureReason       string     `json:"failureReason,omitempty"`
	TransferFailed      string     `json:"transferFailedReason,omitempty"`
	PaymentIntentID     string     `json:"stripePaymentIntentId,omitempty"`
	TransferID          string     `json:"stripeTransferId,omitempty"`
	CaptureBefore       *time.Time `json:"captureBefore,omitempty"`
	CreatedAt           time.Time  `json:"createdAt"`
	UpdatedAt           time.Time  `json:"updatedAt"`
}

// paymentOf builds the payment view. The client secret lets its holder
// confirm the payment, so only the paying customer receives it.
func paymentOf(p domain.PaymentRecord, viewer application.Role) paymentView {
	v := paymentView{
		ID: p.ID, TaskID: p.TaskID, AmountCents: p.Amount.Amount(), Currency: string(p.Amount.Currency()),
		Status: string(p.Status), AutoCharged: autoCharged(p),
		DeclineCode: p.DeclineCode, CapturedAmountCents: p.CapturedAmount, PlatformFeeCents: p.PlatformFee,
		AgentAmountCents: p.AgentShare, FailureReason: p.FailureReason, TransferFailed: p.TransferFailedReason,
		PaymentIntentID: p.StripePaymentIntentID, TransferID: p.StripeTransferID,
		CreatedAt: p.CreatedAt, UpdatedAt: p.UpdatedAt,
	}
	if viewer == application.RoleCustomer && p.Status == domain.PaymentRequiresCustomerAction {
		v.ClientSecret = p.ClientSecret
	}
	if !p.CaptureBefore.IsZero() {
		t := p.CaptureBefore
		v.CaptureBefore = &t
	}
	return v
}

// autoCharged reports whether the hold was placed, or is being placed, with
// the saved default card; false once the customer has to confirm instead.
func autoCharged(p domain.PaymentRecord) bool {
	return p.AutoCharged && p.DeclineCode == "" && p.Status != domain.PaymentRequiresCustomerAction
}

type taskView struct {
	ID            string       `json:"id"`
	Title         string       `json:"title"`
	Description   string       `json:"description"`
	Status        string       `json:"status"`
	AssignedAgent agentRef     `json:"assignedAgent"`
	MaxPriceCents int64        `json:"maxPriceCents"`
	Currency      string       `json:"currency"`
	Payment       *paymentView `json:"payment"`
	CreatedAt     time.Time    `json:"createdAt"`
	UpdatedAt     time.Time    `json:"updatedAt"`
}

func taskOf(v application.TaskView, viewer application.Role) taskView {
	t := v.Task
	out := taskView{
		ID: t.ID, Title: t.Title, Description: t.Description, Status: string(t.Status),
		AssignedAgent: agentRef{ID: t.AgentID, Name: t.AgentName},
		MaxPriceCents: t.MaxPrice.Amount(), Currency: string(t.MaxPrice.Currency()),
		CreatedAt: t.CreatedAt, UpdatedAt: t.UpdatedAt,
	}
	if v.Payment != nil {
		p := paymentOf(*v.Payment, viewer)
		out.Payment = &p
	}
	return out
}

// agentView is an agent; the Connect account is shown to admins only.
type agentView struct {
	ID              string     `json:"id"`
	Name            string     `json:"name"`
	PriceCents      int64      `json:"priceCents"`
	Currency        string     `json:"currency"`
	Active          *bool      `json:"active,omitempty"`
	StripeAccountID string     `json:"stripeAccountId,omitempty"`
	CreatedAt       *time.Time `json:"createdAt,omitempty"`
}

func agentOf(a domain.Agent, viewer application.Role) agentView {
	v := agentView{ID: a.ID, Name: a.Name, PriceCents: a.Price.Amount(), Currency: string(a.Price.Currency())}
	if viewer == application.RoleAdmin {
		active, created := a.Active, a.CreatedAt
		v.Active = &active
		v.StripeAccountID = a.ConnectAccountID
		v.CreatedAt = &created
	}
	return v
}

type stripeRefsView struct {
	PaymentIntentID      string `json:"paymentIntentId,omitempty"`
	ChargeID             string `json:"chargeId,omitempty"`
	BalanceTransactionID string `json:"balanceTransactionId,omitempty"`
	TransferID           string `json:"transferId,omitempty"`
	RefundID             string `json:"refundId,omitempty"`
}

// entryView is one ledger entry; AmountCents is signed (debits positive).
type entryView struct {
	ID            string         `json:"id"`
	TransactionID string         `json:"transactionId"`
	Kind          string         `json:"kind"`
	ResolvesID    string         `json:"resolvesTransactionId,omitempty"`
	ReversesID    string         `json:"reversesTransactionId,omitempty"`
	Account       string         `json:"account"`
	Currency      string         `json:"currency"`
	AmountCents   int64          `json:"amountCents"`
	Direction     string         `json:"direction"`
	Pending       bool           `json:"pending"`
	Actor         string         `json:"actor"`
	RequestID     string         `json:"requestId,omitempty"`
	Reason        string         `json:"reason,omitempty"`
	TaskID        string         `json:"taskId,omitempty"`
	PaymentID     string         `json:"paymentId,omitempty"`
	Stripe        stripeRefsView `json:"stripe"`
	EffectiveAt   time.Time      `json:"effectiveAt"`
	RecordedAt    time.Time      `json:"recordedAt"`
}

func entryOf(e ports.LedgerEntryView) entryView {
	dir := "debit"
	if e.Amount < 0 {
		dir = "credit"
	}
	return entryView{
		ID: entryCursor(e.ID), TransactionID: e.TransactionID, Kind: string(e.Kind), ResolvesID: e.ResolvesID,
		ReversesID: e.ReversesID, Account: string(e.Account), Currency: string(e.Currency), AmountCents: e.Amount,
		Direction: dir, Pending: e.Pending, Actor: e.Actor, RequestID: e.RequestID, Reason: e.Reason,
		TaskID: e.TaskID, PaymentID: e.PaymentID,
		Stripe: stripeRefsView{PaymentIntentID: e.Stripe.PaymentIntentID, ChargeID: e.Stripe.ChargeID,
			BalanceTransactionID: e.Stripe.BalanceTransactionID, TransferID: e.Stripe.TransferID, RefundID: e.Stripe.RefundID},
		EffectiveAt: e.EffectiveAt, RecordedAt: e.RecordedAt,
	}
}
