package domain

import "time"

// Customer is a TaskPod user who pays for tasks, mirrored by one Stripe customer.
type Customer struct {
	// UserID is the TaskPod user id, the subject of the customer's token.
	UserID string
	// StripeCustomerID is the cus_ id, empty until the Stripe customer exists.
	StripeCustomerID string
	// DefaultPaymentMethodID is the pm_ id used for auto-pay, or empty.
	DefaultPaymentMethodID string
	CreatedAt              time.Time
}

// PaymentMethod is a saved card as Stripe reports it. Only display data is
// cached; the card number never reaches this service.
type PaymentMethod struct {
	ID         string
	CustomerID string
	Brand      string
	Last4      string
	ExpMonth   int
	ExpYear    int
	CreatedAt  time.Time
}
