package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/taskpod/billing/domain"
	"github.com/taskpod/billing/ports"
)

// paymentRepository implements ports.PaymentRepository. An empty
// PaymentIntent id is stored as NULL because the column is unique, and a
// zero CaptureBefore as NULL.
type paymentRepository struct {
	tx pgx.Tx
}

var _ ports.PaymentRepository = paymentRepository{}

const paymentColumns = `id, task_id, customer_id, agent_id, stripe_customer_id, destination_account_id,
	amount, currency, capture_amount, fee_rate_bps, status, auto_charged,
	payment_method_id, coalesce(stripe_payment_intent_id, ''), client_secret, decline_code, failure_reason,
	capture_before, captured_amount, platform_fee, agent_share, stripe_fee,
	stripe_charge_id, stripe_balance_tx_id, stripe_transfer_id, transfer_failed_reason,
	created_at, updated_at`

func scanPayment(row pgx.Row) (domain.Payment, error) {
	var r domain.PaymentRecord
	var amount, captureAmount int64
	var currency, status string
	var captureBefore *time.Time
	err := row.Scan(&r.ID, &r.TaskID, &r.CustomerID, &r.AgentID, &r.StripeCustomerID, &r.DestinationAccountID,
		&amount, &currency, &captureAmount, &r.FeeRate, &status, &r.AutoCharged,
		&r.PaymentMethodID, &r.StripePaymentIntentID, &r.ClientSecret, &r.DeclineCode, &r.FailureReason,
		&captureBefore, &r.CapturedAmount, &r.PlatformFee, &r.AgentShare, &r.StripeFee,
		&r.StripeChargeID, &r.StripeBalanceTxID, &r.StripeTransferID, &r.TransferFailedReason,
		&r.CreatedAt, &r.UpdatedAt)
	if err != nil {
		return domain.Payment{}, err
	}
	if r.Amount, err = domain.NewMoney(amount, domain.Currency(currency)); err != nil {
		return domain.Payment{}, fmt.Errorf("payment %s has an invalid stored amount: %w", r.ID, err)
	}
	if r.CaptureAmount, err = domain.NewMoney(captureAmount, domain.Currency(currency)); err != nil {
		return domain.Payment{}, fmt.Errorf("payment %s has an invalid stored capture amount: %w", r.ID, err)
	}
	r.Status = domain.PaymentStatus(status)
	r.CaptureBefore = timeOrZero(captureBefore)
	return domain.UnmarshalPaymentFromDatabase(r), nil
}

func (r paymentRepository) Get(ctx context.Context, id string) (domain.Payment, error) {
	p, err := scanPayment(r.tx.QueryRow(ctx, `SELECT `+paymentColumns+` FROM payments WHERE id = $1`, id))
	return p, mapError(err, "get payment "+id)
}

func (r paymentRepository) GetForUpdate(ctx context.Context, id string) (domain.Payment, error) {
	p, err := scanPayment(r.tx.QueryRow(ctx, `SELECT `+paymentColumns+` FROM payments WHERE id = $1 FOR UPDATE`, id))
	return p, mapError(err, "get payment "+id+" for update")
}

func (r paymentRepository) GetByPaymentIntent(ctx context.Context, paymentIntentID string) (domain.Payment, error) {
	if paymentIntentID == "" {
		return domain.Payment{}, fmt.Errorf("get payment by PaymentIntent: the PaymentIntent id is empty: %w", domain.ErrNotFound)
	}
	p, err := scanPayment(r.tx.QueryRow(ctx, `SELECT `+paymentColumns+` FROM payments WHERE stripe_payment_intent_id = $1`,
		paymentIntentID))
	return p, mapError(err, "get payment of PaymentIntent "+paymentIntentID)
}

// checkCurrencies rejects a record whose capture amount is in another
// currency than the hold, because the table stores one currency for both.
func checkCurrencies(rec domain.PaymentRecord) error {
	if rec.CaptureAmount.Currency() != rec.Amount.Currency() {
		return fmt.Errorf("payment %s: capture amount currency %s differs from the held currency %s: %w",
			rec.ID, rec.CaptureAmount.Currency(), rec.Amount.Currency(), domain.ErrCurrencyMismatch)
	}
	return nil
}

func (r paymentRepository) Insert(ctx context.Context, p domain.Payment) error {
	rec := p.Record()
	if err := checkCurrencies(rec); err != nil {
		return err
	}
	_, err := r.tx.Exec(ctx, `
		INSERT INTO payments (id, task_id, customer_id, agent_id, stripe_customer_id, destination_account_id,
		       amount, currency, capture_amount, fee_rate_bps, status, auto_charged,
		       payment_method_id, stripe_payment_intent_id, client_secret, decline_code, failure_reason,
		       capture_before, captured_amount, platform_fee, agent_share, stripe_fee,
		       stripe_charge_id, stripe_balance_tx_id, stripe_transfer_id, transfer_failed_reason,
		       created_at, updated_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, nullif($14, ''), $15, $16, $17,
		        $18, $19, $20, $21, $22, $23, $24, $25, $26, $27, $28)`,
		rec.ID, rec.TaskID, rec.CustomerID, rec.AgentID, rec.StripeCustomerID, rec.DestinationAccountID,
		rec.Amount.Amount(), string(rec.Amount.Currency()), rec.CaptureAmount.Amount(), int64(rec.FeeRate),
		string(rec.Status), rec.AutoCharged,
		rec.PaymentMethodID, rec.StripePaymentIntentID, rec.ClientSecret, rec.DeclineCode, rec.FailureReason,
		nullTime(rec.CaptureBefore), rec.CapturedAmount, rec.PlatformFee, rec.AgentShare, rec.StripeFee,
		rec.StripeChargeID, rec.StripeBalanceTxID, rec.StripeTransferID, rec.TransferFailedReason,
		rec.CreatedAt, rec.UpdatedAt)
	return mapError(err, "insert payment "+rec.ID)
}

// Update stores every field of p except the id, the task, the parties, the
// currency and CreatedAt, which are fixed when the payment is created.
func (r paymentRepository) Update(ctx context.Context, p domain.Payment) error {
	rec := p.Record()
	if err := checkCurrencies(rec); err != nil {
		return err
	}
	tag, err := r.tx.Exec(ctx, `
		UPDATE payments
		   SET stripe_customer_id = $2, destination_account_id = $3, amount = $4, capture_amount = $5,
		       fee_rate_bps = $6, status = $7, auto_charged = $8, payment_method_id = $9,
		       stripe_payment_intent_id = nullif($10, ''), client_secret = $11, decline_code = $12,
		       failure_reason = $13, capture_before = $14, captured_amount = $15, platform_fee = $16,
		       agent_share = $17, stripe_fee = $18, stripe_charge_id = $19, stripe_balance_tx_id = $20,
		       stripe_transfer_id = $21, transfer_failed_reason = $22, updated_at = $23
		 WHERE id = $1 AND currency = $24`,
		rec.ID, rec.StripeCustomerID, rec.DestinationAccountID, rec.Amount.Amount(), rec.CaptureAmount.Amount(),
		int64(rec.FeeRate), string(rec.Status), rec.AutoCharged, rec.PaymentMethodID,
		rec.StripePaymentIntentID, rec.ClientSecret, rec.DeclineCode,
		rec.FailureReason, nullTime(rec.CaptureBefore), rec.CapturedAmount, rec.PlatformFee,
		rec.AgentShare, rec.StripeFee, rec.StripeChargeID, rec.StripeBalanceTxID,
		rec.StripeTransferID, rec.TransferFailedReason, rec.UpdatedAt,
		string(rec.Amount.Currency()))
	if err != nil {
		return mapError(err, "update payment "+rec.ID)
	}
	if tag.RowsAffected() == 0 {
		return r.explainMissedUpdate(ctx, rec)
	}
	return nil
}

// explainMissedUpdate returns domain.ErrNotFound for a missing payment and
// domain.ErrCurrencyMismatch for an update that changes the currency.
func (r paymentRepository) explainMissedUpdate(ctx context.Context, rec domain.PaymentRecord) error {
	var stored string
	err := r.tx.QueryRow(ctx, `SELECT currency FROM payments WHERE id = $1`, rec.ID).Scan(&stored)
	if err != nil {
		return mapError(err, "update payment "+rec.ID)
	}
	return fmt.Errorf("update payment %s: the currency is fixed at %s, got %s: %w",
		rec.ID, stored, rec.Amount.Currency(), domain.ErrCurrencyMismatch)
}

// Step returns the stored state of one step, or attempt 1 with nothing
// claimed when the step has no row yet.
func (r paymentRepository) Step(ctx context.Context, paymentID string, step domain.Step) (ports.StepState, error) {
	s := ports.StepState{PaymentID: paymentID, Step: step}
	var leaseUntil *time.Time
	err := r.tx.QueryRow(ctx, `
		SELECT attempt, claimed, lease_until, done, last_error
		  FROM payment_steps WHERE payment_id = $1 AND step = $2`,
		paymentID, string(step)).Scan(&s.Attempt, &s.Claimed, &leaseUntil, &s.Done, &s.LastError)
	if errors.Is(err, pgx.ErrNoRows) {
		s.Attempt = 1
		return s, nil
	}
	if err != nil {
		return ports.StepState{}, mapError(err, fmt.Sprintf("get step %s of payment %s", step, paymentID))
	}
	s.LeaseUntil = timeOrZero(leaseUntil)
	return s, nil
}

// SaveStep inserts or replaces the state of one step.
func (r paymentRepository) SaveStep(ctx context.Context, s ports.StepState) error {
	if _, err := domain.ParseStep(string(s.Step)); err != nil {
		return fmt.Errorf("save step of payment %s: %w", s.PaymentID, err)
	}
	if s.Attempt < 1 {
		return fmt.Errorf("save step %s of payment %s: attempt must be 1 or more, got %d", s.Step, s.PaymentID, s.Attempt)
	}
	_, err := r.tx.Exec(ctx, `
		INSERT INTO payment_steps (payment_id, step, attempt, claimed, lease_until, done, last_error, updated_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, now())
		ON CONFLICT (payment_id, step) DO UPDATE
		   SET attempt = EXCLUDED.attempt, claimed = EXCLUDED.claimed, lease_until = EXCLUDED.lease_until,
		       done = EXCLUDED.done, last_error = EXCLUDED.last_error, updated_at = now()`,
		s.PaymentID, string(s.Step), s.Attempt, s.Claimed, nullTime(s.LeaseUntil), s.Done, s.LastError)
	return mapError(err, fmt.Sprintf("save step %s of payment %s", s.Step, s.PaymentID))
}
