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

// refundRepository implements ports.RefundRepository on refunds and
// transfer_reversals. Empty Stripe ids are stored as NULL, because those
// columns are unique.
type refundRepository struct {
	tx pgx.Tx
}

var _ ports.RefundRepository = refundRepository{}

const refundColumns = `id, payment_id, task_id, amount, currency, reason, status, fee_returned, agent_part, external,
	coalesce(stripe_refund_id, ''), balance_transaction_id, failure_reason, actor, request_id, created_at, updated_at`

func scanRefund(row pgx.Row) (domain.Refund, error) {
	var r domain.RefundRecord
	var amount int64
	var currency, reason, status string
	err := row.Scan(&r.ID, &r.PaymentID, &r.TaskID, &amount, &currency, &reason, &status, &r.FeeReturned, &r.AgentPart,
		&r.External, &r.StripeRefundID, &r.BalanceTransactionID, &r.FailureReason, &r.Actor, &r.RequestID,
		&r.CreatedAt, &r.UpdatedAt)
	if err != nil {
		return domain.Refund{}, err
	}
	if r.Amount, err = domain.NewMoney(amount, domain.Currency(currency)); err != nil {
		return domain.Refund{}, fmt.Errorf("refund %s has an invalid stored amount: %w", r.ID, err)
	}
	r.Reason = domain.RefundReason(reason)
	r.Status = domain.RefundStatus(status)
	return domain.UnmarshalRefundFromDatabase(r), nil
}

func (r refundRepository) Insert(ctx context.Context, rf domain.Refund) error {
	rec := rf.Record()
	_, err := r.tx.Exec(ctx, `
		INSERT INTO refunds (id, payment_id, task_id, amount, currency, reason, status, fee_returned, agent_part,
		       external, stripe_refund_id, balance_transaction_id, failure_reason, actor, request_id, created_at, updated_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, nullif($11, ''), $12, $13, $14, $15, $16, $17)`,
		rec.ID, rec.PaymentID, rec.TaskID, rec.Amount.Amount(), string(rec.Amount.Currency()), string(rec.Reason),
		string(rec.Status), rec.FeeReturned, rec.AgentPart, rec.External, rec.StripeRefundID,
		rec.BalanceTransactionID, rec.FailureReason, rec.Actor, rec.RequestID, rec.CreatedAt, rec.UpdatedAt)
	return mapError(err, "insert refund "+rec.ID)
}

// Update stores the fields that change after a refund is requested.
func (r refundRepository) Update(ctx context.Context, rf domain.Refund) error {
	rec := rf.Record()
	tag, err := r.tx.Exec(ctx, `
		UPDATE refunds SET status = $2, fee_returned = $3, agent_part = $4, stripe_refund_id = nullif($5, ''),
		       balance_transaction_id = $6, failure_reason = $7, updated_at = $8
		 WHERE id = $1`,
		rec.ID, string(rec.Status), rec.FeeReturned, rec.AgentPart, rec.StripeRefundID, rec.BalanceTransactionID,
		rec.FailureReason, rec.UpdatedAt)
	if err != nil {
		return mapError(err, "update refund "+rec.ID)
	}
	if tag.RowsAffected() == 0 {
		return notFound("refund", rec.ID)
	}
	return nil
}

func (r refundRepository) NextPending(ctx context.Context, paymentID string) (domain.Refund, bool, error) {
	return optional(scanRefund(r.tx.QueryRow(ctx, `SELECT `+refundColumns+` FROM refunds
		WHERE payment_id = $1 AND status = 'pending' ORDER BY created_at, id LIMIT 1 FOR UPDATE`, paymentID)))
}

func (r refundRepository) GetForUpdate(ctx context.Context, id string) (domain.Refund, error) {
	rf, err := scanRefund(r.tx.QueryRow(ctx, `SELECT `+refundColumns+` FROM refunds WHERE id = $1 FOR UPDATE`, id))
	return rf, mapError(err, "get refund "+id)
}

func (r refundRepository) ByStripeRefund(ctx context.Context, stripeRefundID string) (domain.Refund, bool, error) {
	return optional(scanRefund(r.tx.QueryRow(ctx, `SELECT `+refundColumns+` FROM refunds
		WHERE stripe_refund_id = $1 FOR UPDATE`, stripeRefundID)))
}

func (r refundRepository) List(ctx context.Context, paymentID string) ([]domain.Refund, error) {
	rows, err := r.tx.Query(ctx, `SELECT `+refundColumns+` FROM refunds WHERE payment_id = $1 ORDER BY created_at, id`, paymentID)
	if err != nil {
		return nil, mapError(err, "list refunds of payment "+paymentID)
	}
	refunds, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (domain.Refund, error) { return scanRefund(row) })
	return refunds, mapError(err, "list refunds of payment "+paymentID)
}

// Totals counts succeeded refunds and disputes that are not won as
// returned, and pending refunds as pending.
func (r refundRepository) Totals(ctx context.Context, paymentID string) (domain.ReturnedTotals, error) {
	var t domain.ReturnedTotals
	err := r.tx.QueryRow(ctx, `
		SELECT coalesce(sum(amount) FILTER (WHERE kind = 'returned'), 0),
		       coalesce(sum(fee_returned) FILTER (WHERE kind = 'returned'), 0),
		       coalesce(sum(amount) FILTER (WHERE kind = 'pending'), 0)
		  FROM (SELECT CASE status WHEN 'succeeded' THEN 'returned' WHEN 'pending' THEN 'pending' END AS kind,
		               amount, fee_returned
		          FROM refunds WHERE payment_id = $1
		        UNION ALL
		        SELECT 'returned', amount, fee_returned FROM disputes WHERE payment_id = $1 AND status <> 'won') AS returns`,
		paymentID).Scan(&t.Returned, &t.FeeReturned, &t.Pending)
	return t, mapError(err, "sum refunds of payment "+paymentID)
}

const reversalColumns = `id, payment_id, task_id, agent_id, source_id, amount, currency, status, stripe_transfer_id,
	coalesce(stripe_reversal_id, ''), balance_transaction_id, failure_reason, created_at, updated_at`

func scanReversal(row pgx.Row) (domain.TransferReversal, error) {
	var r domain.ReversalRecord
	var amount int64
	var currency, status string
	err := row.Scan(&r.ID, &r.PaymentID, &r.TaskID, &r.AgentID, &r.SourceID, &amount, &currency, &status,
		&r.StripeTransferID, &r.StripeReversalID, &r.BalanceTransactionID, &r.FailureReason, &r.CreatedAt, &r.UpdatedAt)
	if err != nil {
		return domain.TransferReversal{}, err
	}
	if r.Amount, err = domain.NewMoney(amount, domain.Currency(currency)); err != nil {
		return domain.TransferReversal{}, fmt.Errorf("transfer reversal %s has an invalid stored amount: %w", r.ID, err)
	}
	r.Status = domain.ReversalStatus(status)
	return domain.UnmarshalReversalFromDatabase(r), nil
}

func (r refundRepository) InsertReversal(ctx context.Context, tr domain.TransferReversal) error {
	rec := tr.Record()
	_, err := r.tx.Exec(ctx, `
		INSERT INTO transfer_reversals (id, payment_id, task_id, agent_id, source_id, amount, currency, status,
		       stripe_transfer_id, stripe_reversal_id, balance_transaction_id, failure_reason, created_at, updated_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, nullif($10, ''), $11, $12, $13, $14)`,
		rec.ID, rec.PaymentID, rec.TaskID, rec.AgentID, rec.SourceID, rec.Amount.Amount(), string(rec.Amount.Currency()),
		string(rec.Status), rec.StripeTransferID, rec.StripeReversalID, rec.BalanceTransactionID, rec.FailureReason,
		rec.CreatedAt, rec.UpdatedAt)
	return mapError(err, "insert transfer reversal "+rec.ID)
}

func (r refundRepository) UpdateReversal(ctx context.Context, tr domain.TransferReversal) error {
	rec := tr.Record()
	tag, err := r.tx.Exec(ctx, `
		UPDATE transfer_reversals SET status = $2, stripe_reversal_id = nullif($3, ''), balance_transaction_id = $4,
		       failure_reason = $5, updated_at = $6
		 WHERE id = $1`,
		rec.ID, string(rec.Status), rec.StripeReversalID, rec.BalanceTransactionID, rec.FailureReason, rec.UpdatedAt)
	if err != nil {
		return mapError(err, "update transfer reversal "+rec.ID)
	}
	if tag.RowsAffected() == 0 {
		return notFound("transfer reversal", rec.ID)
	}
	return nil
}

func (r refundRepository) NextPendingReversal(ctx context.Context, paymentID string) (domain.TransferReversal, bool, error) {
	return optional(scanReversal(r.tx.QueryRow(ctx, `SELECT `+reversalColumns+` FROM transfer_reversals
		WHERE payment_id = $1 AND status = 'pending' ORDER BY created_at, id LIMIT 1 FOR UPDATE`, paymentID)))
}

func (r refundRepository) GetReversalForUpdate(ctx context.Context, id string) (domain.TransferReversal, error) {
	tr, err := scanReversal(r.tx.QueryRow(ctx, `SELECT `+reversalColumns+` FROM transfer_reversals WHERE id = $1 FOR UPDATE`, id))
	return tr, mapError(err, "get transfer reversal "+id)
}

func (r refundRepository) ReversalBySource(ctx context.Context, sourceID string) (domain.TransferReversal, bool, error) {
	return optional(scanReversal(r.tx.QueryRow(ctx, `SELECT `+reversalColumns+` FROM transfer_reversals
		WHERE source_id = $1 FOR UPDATE`, sourceID)))
}

func (r refundRepository) ReversalByStripeID(ctx context.Context, stripeReversalID string) (domain.TransferReversal, bool, error) {
	return optional(scanReversal(r.tx.QueryRow(ctx, `SELECT `+reversalColumns+` FROM transfer_reversals
		WHERE stripe_reversal_id = $1 FOR UPDATE`, stripeReversalID)))
}

func (r refundRepository) ListReversals(ctx context.Context, paymentID string) ([]domain.TransferReversal, error) {
	rows, err := r.tx.Query(ctx, `SELECT `+reversalColumns+` FROM transfer_reversals WHERE payment_id = $1 ORDER BY created_at, id`, paymentID)
	if err != nil {
		return nil, mapError(err, "list transfer reversals of payment "+paymentID)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (domain.TransferReversal, error) { return scanReversal(row) })
	return out, mapError(err, "list transfer reversals of payment "+paymentID)
}

// disputeRepository implements ports.DisputeRepository.
type disputeRepository struct {
	tx pgx.Tx
}

var _ ports.DisputeRepository = disputeRepository{}

const disputeColumns = `id, payment_id, task_id, charge_id, amount, currency, stripe_fee, reason, status,
	fee_returned, agent_part, agent_side, created_at, closed_at, updated_at`

func scanDispute(row pgx.Row) (domain.Dispute, error) {
	var d domain.DisputeRecord
	var amount int64
	var currency, status, side string
	var closed *time.Time
	err := row.Scan(&d.ID, &d.PaymentID, &d.TaskID, &d.ChargeID, &amount, &currency, &d.StripeFee, &d.Reason, &status,
		&d.FeeReturned, &d.AgentPart, &side, &d.CreatedAt, &closed, &d.UpdatedAt)
	if err != nil {
		return domain.Dispute{}, err
	}
	if d.Amount, err = domain.NewMoney(amount, domain.Currency(currency)); err != nil {
		return domain.Dispute{}, fmt.Errorf("dispute %s has an invalid stored amount: %w", d.ID, err)
	}
	d.Status = domain.DisputeStatus(status)
	d.AgentSide = domain.DisputeAgentSide(side)
	d.ClosedAt = timeOrZero(closed)
	return domain.UnmarshalDisputeFromDatabase(d), nil
}

func (r disputeRepository) GetForUpdate(ctx context.Context, id string) (domain.Dispute, bool, error) {
	return optional(scanDispute(r.tx.QueryRow(ctx, `SELECT `+disputeColumns+` FROM disputes WHERE id = $1 FOR UPDATE`, id)))
}

func (r disputeRepository) Insert(ctx context.Context, d domain.Dispute) error {
	rec := d.Record()
	_, err := r.tx.Exec(ctx, `
		INSERT INTO disputes (id, payment_id, task_id, charge_id, amount, currency, stripe_fee, reason, status,
		       fee_returned, agent_part, agent_side, created_at, closed_at, updated_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)`,
		rec.ID, rec.PaymentID, rec.TaskID, rec.ChargeID, rec.Amount.Amount(), string(rec.Amount.Currency()), rec.StripeFee,
		rec.Reason, string(rec.Status), rec.FeeReturned, rec.AgentPart, string(rec.AgentSide), rec.CreatedAt,
		nullTime(rec.ClosedAt), rec.UpdatedAt)
	return mapError(err, "insert dispute "+rec.ID)
}

func (r disputeRepository) Update(ctx context.Context, d domain.Dispute) error {
	rec := d.Record()
	tag, err := r.tx.Exec(ctx, `UPDATE disputes SET status = $2, closed_at = $3, updated_at = $4 WHERE id = $1`,
		rec.ID, string(rec.Status), nullTime(rec.ClosedAt), rec.UpdatedAt)
	if err != nil {
		return mapError(err, "update dispute "+rec.ID)
	}
	if tag.RowsAffected() == 0 {
		return notFound("dispute", rec.ID)
	}
	return nil
}

func (r disputeRepository) HasOpen(ctx context.Context, paymentID string) (bool, error) {
	var open bool
	err := r.tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM disputes WHERE payment_id = $1 AND status = 'open')`, paymentID).Scan(&open)
	return open, mapError(err, "read disputes of payment "+paymentID)
}

func (r disputeRepository) List(ctx context.Context, paymentID string) ([]domain.Dispute, error) {
	rows, err := r.tx.Query(ctx, `SELECT `+disputeColumns+` FROM disputes WHERE payment_id = $1 ORDER BY created_at, id`, paymentID)
	if err != nil {
		return nil, mapError(err, "list disputes of payment "+paymentID)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (domain.Dispute, error) { return scanDispute(row) })
	return out, mapError(err, "list disputes of payment "+paymentID)
}

// optional turns pgx.ErrNoRows into found == false.
func optional[T any](v T, err error) (T, bool, error) {
	var zero T
	if errors.Is(err, pgx.ErrNoRows) {
		return zero, false, nil
	}
	if err != nil {
		return zero, false, mapError(err, "read row")
	}
	return v, true, nil
}
