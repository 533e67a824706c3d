package stripe

import (
	"context"
	"log/slog"
	"time"

	stripego "github.com/stripe/stripe-go/v76"

	"github.com/taskpod/billing/domain"
	"github.com/taskpod/billing/ports"
)

// Metadata keys of refunds and transfer reversals that TaskPod creates.
const (
	metadataRefundID   = "refund_id"
	metadataReversalID = "reversal_id"
)

// Operation labels of the Stripe metrics for the refund calls.
const (
	opCreateRefund           = "create_refund"
	opListRefunds            = "list_refunds"
	opCreateTransferReversal = "create_transfer_reversal"
	opListTransferReversals  = "list_transfer_reversals"
)

var (
	_ ports.RefundGateway = (*Gateway)(nil)
	_ ports.RefundGateway = (*meteredGateway)(nil)
)

// CreateRefund refunds amount of a captured charge. The metadata names the
// TaskPod refund, so a retry after a lost answer can find it by listing.
func (g *Gateway) CreateRefund(ctx context.Context, in ports.RefundInput) (ports.StripeRefund, error) {
	if err := requireValue("refund id", in.RefundID); err != nil {
		return ports.StripeRefund{}, err
	}
	if err := requireValue("charge id", in.ChargeID); err != nil {
		return ports.StripeRefund{}, err
	}
	if in.Amount.Amount() <= 0 {
		return ports.StripeRefund{}, invalidInput("create refund: amount %d must be positive", in.Amount.Amount())
	}
	if err := requireIdempotencyKey("create_refund", in.IdempotencyKey); err != nil {
		return ports.StripeRefund{}, err
	}

	ctx, ex := withExchange(ctx)
	params := &stripego.RefundParams{
		Charge:   stripego.String(in.ChargeID),
		Amount:   stripego.Int64(in.Amount.Amount()),
		Reason:   stripego.String(string(in.Reason)),
		Metadata: map[string]string{metadataRefundID: in.RefundID, metadataPaymentID: in.PaymentID},
	}
	params.Context = ctx
	params.IdempotencyKey = stripego.String(in.IdempotencyKey)

	re, err := g.api.Refunds.New(params)
	if err != nil {
		return ports.StripeRefund{}, toGatewayError(err, ex)
	}
	return convertRefund(re), nil
}

// ListRefunds pages through every refund of a charge, newest first.
func (g *Gateway) ListRefunds(ctx context.Context, chargeID string) ([]ports.StripeRefund, error) {
	if err := requireValue("charge id", chargeID); err != nil {
		return nil, err
	}
	ctx, ex := withExchange(ctx)
	params := &stripego.RefundListParams{Charge: stripego.String(chargeID)}
	params.Context = ctx
	params.Limit = stripego.Int64(listPageSize)

	var out []ports.StripeRefund
	it := g.api.Refunds.List(params)
	for it.Next() {
		out = append(out, convertRefund(it.Refund()))
	}
	if err := it.Err(); err != nil {
		return nil, toGatewayError(err, ex)
	}
	return out, nil
}

// CreateTransferReversal takes amount back from a transfer's Connect
// account. Stripe refuses it when that account's balance cannot cover it.
func (g *Gateway) CreateTransferReversal(ctx context.Context, in ports.TransferReversalInput) (ports.StripeTransferReversal, error) {
	if err := requireValue("reversal id", in.ReversalID); err != nil {
		return ports.StripeTransferReversal{}, err
	}
	if err := requireValue("transfer id", in.TransferID); err != nil {
		return ports.StripeTransferReversal{}, err
	}
	if in.Amount.Amount() <= 0 {
		return ports.StripeTransferReversal{}, invalidInput("create transfer reversal: amount %d must be positive", in.Amount.Amount())
	}
	if err := requireIdempotencyKey("create_transfer_reversal", in.IdempotencyKey); err != nil {
		return ports.StripeTransferReversal{}, err
	}

	ctx, ex := withExchange(ctx)
	params := &stripego.TransferReversalParams{
		ID:       stripego.String(in.TransferID),
		Amount:   stripego.Int64(in.Amount.Amount()),
		Metadata: map[string]string{metadataReversalID: in.ReversalID, metadataPaymentID: in.PaymentID},
	}
	params.Context = ctx
	params.IdempotencyKey = stripego.String(in.IdempotencyKey)

	rev, err := g.api.TransferReversals.New(params)
	if err != nil {
		return ports.StripeTransferReversal{}, toGatewayError(err, ex)
	}
	return convertTransferReversal(rev), nil
}

// ListTransferReversals pages through every reversal of a transfer.
func (g *Gateway) ListTransferReversals(ctx context.Context, transferID string) ([]ports.StripeTransferReversal, error) {
	if err := requireValue("transfer id", transferID); err != nil {
		return nil, err
	}
	ctx, ex := withExchange(ctx)
	params := &stripego.TransferReversalListParams{ID: stripego.String(transferID)}
	params.Context = ctx
	params.Limit = stripego.Int64(listPageSize)

	var out []ports.StripeTransferReversal
	it := g.api.TransferReversals.List(params)
	for it.Next() {
		out = append(out, convertTransferReversal(it.TransferReversal()))
	}
	if err := it.Err(); err != nil {
		return nil, toGatewayError(err, ex)
	}
	return out, nil
}

func convertRefund(re *stripego.Refund) ports.StripeRefund {
	out := ports.StripeRefund{
		ID:       re.ID,
		Amount:   re.Amount,
		Currency: domain.Currency(re.Currency),
		Status:   string(re.Status),
		RefundID: re.Metadata[metadataRefundID],
	}
	if re.Charge != nil {
		out.ChargeID = re.Charge.ID
	}
	if re.BalanceTransaction != nil {
		out.BalanceTransactionID = re.BalanceTransaction.ID
	}
	return out
}

func convertTransferReversal(rev *stripego.TransferReversal) ports.StripeTransferReversal {
	out := ports.StripeTransferReversal{ID: rev.ID, Amount: rev.Amount, ReversalID: rev.Metadata[metadataReversalID]}
	if rev.Transfer != nil {
		out.TransferID = rev.Transfer.ID
	}
	if rev.BalanceTransaction != nil {
		out.BalanceTransactionID = rev.BalanceTransaction.ID
	}
	return out
}

// The metered gateway counts the refund calls like the others when the
// gateway it wraps can make them.

func (m *meteredGateway) refunds() (ports.RefundGateway, error) {
	r, ok := m.next.(ports.RefundGateway)
	if !ok {
		return nil, invalidInput("the wrapped gateway %T cannot refund", m.next)
	}
	return r, nil
}

func (m *meteredGateway) CreateRefund(ctx context.Context, in ports.RefundInput) (ports.StripeRefund, error) {
	start := time.Now()
	r, err := m.refunds()
	var out ports.StripeRefund
	if err == nil {
		out, err = r.CreateRefund(ctx, in)
	}
	m.observe(ctx, opCreateRefund, start, err, slog.String("refund_id", in.RefundID),
		slog.String("payment_id", in.PaymentID), slog.String("charge_id", in.ChargeID))
	return out, err
}

func (m *meteredGateway) ListRefunds(ctx context.Context, chargeID string) ([]ports.StripeRefund, error) {
	start := time.Now()
	r, err := m.refunds()
	var out []ports.StripeRefund
	if err == nil {
		out, err = r.ListRefunds(ctx, chargeID)
	}
	m.observe(ctx, opListRefunds, start, err, slog.String("charge_id", chargeID))
	return out, err
}

func (m *meteredGateway) CreateTransferReversal(ctx context.Context, in ports.TransferReversalInput) (ports.StripeTransferReversal, error) {
	start := time.Now()
	r, err := m.refunds()
	var out ports.StripeTransferReversal
	if err == nil {
		out, err = r.CreateTransferReversal(ctx, in)
	}
	m.observe(ctx, opCreateTransferReversal, start, err, slog.String("reversal_id", in.ReversalID),
		slog.String("payment_id", in.PaymentID), slog.String("transfer_id", in.TransferID))
	return out, err
}

func (m *meteredGateway) ListTransferReversals(ctx context.Context, transferID string) ([]ports.StripeTransferReversal, error) {
	start := time.Now()
	r, err := m.refunds()
	var out []ports.StripeTransferReversal
	if err == nil {
		out, err = r.ListTransferReversals(ctx, transferID)
	}
	m.observe(ctx, opListTransferReversals, start, err, slog.String("transfer_id", transferID))
	return out, err
}
