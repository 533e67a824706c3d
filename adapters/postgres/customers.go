package postgres

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/taskpod/billing/domain"
	"github.com/taskpod/billing/ports"
)

// customerRepository implements ports.CustomerRepository. Empty Stripe ids
// are stored as NULL, because stripe_customer_id is unique.
type customerRepository struct {
	tx pgx.Tx
}

var _ ports.CustomerRepository = customerRepository{}

const customerColumns = `user_id, coalesce(stripe_customer_id, ''), coalesce(default_payment_method_id, ''), created_at`

func scanCustomer(row pgx.Row) (domain.Customer, error) {
	var c domain.Customer
	err := row.Scan(&c.UserID, &c.StripeCustomerID, &c.DefaultPaymentMethodID, &c.CreatedAt)
	return c, err
}

func (r customerRepository) Get(ctx context.Context, userID string) (domain.Customer, error) {
	c, err := scanCustomer(r.tx.QueryRow(ctx, `SELECT `+customerColumns+` FROM customers WHERE user_id = $1`, userID))
	return c, mapError(err, "get customer "+userID)
}

func (r customerRepository) GetForUpdate(ctx context.Context, userID string) (domain.Customer, error) {
	c, err := scanCustomer(r.tx.QueryRow(ctx, `SELECT `+customerColumns+` FROM customers WHERE user_id = $1 FOR UPDATE`, userID))
	return c, mapError(err, "get customer "+userID+" for update")
}

// Ensure inserts c unless a customer with its user id exists, then returns
// the stored row. Under READ COMMITTED the INSERT waits for a concurrent
// insert of the same user, and the SELECT, with a fresh snapshot, reads it.
// A zero CreatedAt is stored as the database's current time.
func (r customerRepository) Ensure(ctx context.Context, c domain.Customer) (domain.Customer, error) {
	_, err := r.tx.Exec(ctx, `
		INSERT INTO customers (user_id, stripe_customer_id, default_payment_method_id, created_at)
		VALUES ($1, nullif($2, ''), nullif($3, ''), coalesce($4, now()))
		ON CONFLICT (user_id) DO NOTHING`,
		c.UserID, c.StripeCustomerID, c.DefaultPaymentMethodID, nullTime(c.CreatedAt))
	if err != nil {
		return domain.Customer{}, mapError(err, "insert customer "+c.UserID)
	}
	return r.Get(ctx, c.UserID)
}

// Update stores the Stripe customer id and the default payment method.
func (r customerRepository) Update(ctx context.Context, c domain.Customer) error {
	tag, err := r.tx.Exec(ctx, `
		UPDATE customers
		   SET stripe_customer_id = nullif($2, ''), default_payment_method_id = nullif($3, ''), updated_at = now()
		 WHERE user_id = $1`,
		c.UserID, c.StripeCustomerID, c.DefaultPaymentMethodID)
	if err != nil {
		return mapError(err, "update customer "+c.UserID)
	}
	if tag.RowsAffected() == 0 {
		return notFound("customer", c.UserID)
	}
	return nil
}

// UpsertPaymentMethod inserts or refreshes a cached card. A card id already
// stored for another customer is a domain.ErrConflict, never a reassignment.
func (r customerRepository) UpsertPaymentMethod(ctx context.Context, pm domain.PaymentMethod) error {
	tag, err := r.tx.Exec(ctx, `
		INSERT INTO payment_methods (id, customer_user_id, brand, last4, exp_month, exp_year, created_at)
		VALUES ($1, $2, $3, $4, $5, $6, coalesce($7, now()))
		ON CONFLICT (id) DO UPDATE
		   SET brand = EXCLUDED.brand, last4 = EXCLUDED.last4,
		       exp_month = EXCLUDED.exp_month, exp_year = EXCLUDED.exp_year
		 WHERE payment_methods.customer_user_id = EXCLUDED.customer_user_id`,
		pm.ID, pm.CustomerID, pm.Brand, pm.Last4, pm.ExpMonth, pm.ExpYear, nullTime(pm.CreatedAt))
	if err != nil {
		return mapError(err, "upsert payment method "+pm.ID)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("upsert payment method %s for customer %s: the card is stored for another customer: %w",
			pm.ID, pm.CustomerID, domain.ErrConflict)
	}
	return nil
}

// DeletePaymentMethod removes a cached card. It leaves the customer's
// default_payment_method_id alone, so the caller clears it when needed.
func (r customerRepository) DeletePaymentMethod(ctx context.Context, customerUserID, paymentMethodID string) error {
	tag, err := r.tx.Exec(ctx, `DELETE FROM payment_methods WHERE customer_user_id = $1 AND id = $2`,
		customerUserID, paymentMethodID)
	if err != nil {
		return mapError(err, "delete payment method "+paymentMethodID)
	}
	if tag.RowsAffected() == 0 {
		return notFound("payment method", paymentMethodID+" of customer "+customerUserID)
	}
	return nil
}

const paymentMethodColumns = `id, customer_user_id, brand, last4, exp_month, exp_year, created_at`

func scanPaymentMethod(row pgx.Row) (domain.PaymentMethod, error) {
	var pm domain.PaymentMethod
	err := row.Scan(&pm.ID, &pm.CustomerID, &pm.Brand, &pm.Last4, &pm.ExpMonth, &pm.ExpYear, &pm.CreatedAt)
	return pm, err
}

// ListPaymentMethods returns a customer's cards, oldest first.
func (r customerRepository) ListPaymentMethods(ctx context.Context, customerUserID string) ([]domain.PaymentMethod, error) {
	rows, err := r.tx.Query(ctx, `SELECT `+paymentMethodColumns+` FROM payment_methods
		WHERE customer_user_id = $1 ORDER BY created_at, id`, customerUserID)
	if err != nil {
		return nil, mapError(err, "list payment methods of customer "+customerUserID)
	}
	methods, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (domain.PaymentMethod, error) {
		return scanPaymentMethod(row)
	})
	return methods, mapError(err, "list payment methods of customer "+customerUserID)
}

func (r customerRepository) GetPaymentMethod(ctx context.Context, customerUserID, paymentMethodID string) (domain.PaymentMethod, error) {
	pm, err := scanPaymentMethod(r.tx.QueryRow(ctx, `SELECT `+paymentMethodColumns+` FROM payment_methods
		WHERE customer_user_id = $1 AND id = $2`, customerUserID, paymentMethodID))
	return pm, mapError(err, "get payment method "+paymentMethodID+" of customer "+customerUserID)
}
