package emulator

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/jackc/pgx/v5"
)

// disputeFee is the fee Stripe withdraws when a dispute opens, in minor
// units: 15.00 for a US account.
const disputeFee = 1500

// evidenceWindow is how long the merchant has to respond, in seconds.
const evidenceWindow = 21 * 24 * 60 * 60

// inControlTx runs fn in one transaction with a call, so that control routes
// change objects and emit events the same way API handlers do.
func (e *Emulator) inControlTx(ctx context.Context, r *http.Request, fn func(c *call) error) error {
	tx, err := e.pool.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // a no-op after Commit
	now, err := e.clockNow(ctx, tx)
	if err != nil {
		return err
	}
	c := &call{ctx: ctx, e: e, tx: tx, now: now, p: &params{root: map[string]any{}}, r: r}
	if err := fn(c); err != nil {
		return err
	}
	if err := c.flushEvents(); err != nil {
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return err
	}
	e.hooks.wake()
	return nil
}

// writeControlResult writes obj, or err as a control API error: a Stripe
// error keeps its status, anything else is a 500.
func (e *Emulator) writeControlResult(w http.ResponseWriter, obj any, err error) {
	var ae *apiError
	switch {
	case errors.As(err, &ae):
		status := ae.status
		if status == 0 {
			status = http.StatusBadRequest
		}
		controlError(w, status, ae.Message)
	case err != nil:
		e.log.Error("control request failed", "error", err)
		controlError(w, http.StatusInternalServerError, err.Error())
	default:
		writeJSON(w, http.StatusOK, obj, nil)
	}
}

// createDispute serves POST /_emulator/disputes {"charge":"ch_...","amount":N}.
// The charge must be captured. amount defaults to the captured amount.
func (e *Emulator) createDispute(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Charge string `json:"charge"`
		Amount int64  `json:"amount"`
		Reason string `json:"reason"`
	}
	if err := decodeControlBody(w, r, &body); err != nil {
		controlError(w, http.StatusBadRequest, err.Error())
		return
	}
	dp := &dispute{}
	err := e.inControlTx(r.Context(), r, func(c *call) error {
		ch := &charge{}
		if err := c.mustLoad(body.Charge, "charge", "charge", ch, true); err != nil {
			return err
		}
		if !ch.Captured || ch.Status != "succeeded" {
			return invalidParam("charge", fmt.Sprintf("Charge %s is not captured, so it cannot be disputed.", ch.ID))
		}
		if ch.Disputed {
			return invalidParam("charge", fmt.Sprintf("Charge %s is already disputed.", ch.ID))
		}
		amount := body.Amount
		if amount == 0 {
			amount = ch.AmountCaptured
		}
		if amount < 1 || amount > ch.AmountCaptured {
			return invalidParam("amount", fmt.Sprintf("amount must be between 1 and the captured amount %d of charge %s, got %d.", ch.AmountCaptured, ch.ID, amount))
		}
		reason := body.Reason
		if reason == "" {
			reason = "general"
		}

		*dp = dispute{
			ID:                 newID("dp"),
			Object:             "dispute",
			Amount:             amount,
			Charge:             ch.ID,
			Created:            c.now,
			Currency:           ch.Currency,
			Evidence:           map[string]any{},
			EvidenceDetails:    disputeEvidenceDetails{DueBy: ptr(c.now + evidenceWindow)},
			IsChargeRefundable: false,
			Metadata:           map[string]string{},
			PaymentIntent:      ch.PaymentIntent,
			Reason:             reason,
			Status:             "needs_response",
		}
		withdrawal := balanceTransaction{
			ID:          newID("txn"),
			Object:      "balance_transaction",
			Amount:      -amount,
			AvailableOn: c.now,
			Created:     c.now,
			Currency:    ch.Currency,
			Description: ptr("Chargeback withdrawal for " + ch.ID),
			Fee:         disputeFee,
			FeeDetails: []feeDetail{{
				Amount: disputeFee, Currency: ch.Currency, Description: "Dispute fee", Type: "stripe_fee",
			}},
			Net:               -amount - disputeFee,
			ReportingCategory: "dispute",
			Source:            dp.ID,
			Status:            "available",
			Type:              "adjustment",
		}
		if err := c.save("balance_transaction", withdrawal.ID, withdrawal.Created, withdrawal); err != nil {
			return err
		}
		dp.BalanceTransactions = []balanceTransaction{withdrawal}
		if err := c.save("dispute", dp.ID, dp.Created, dp); err != nil {
			return err
		}
		ch.Disputed = true
		if err := c.save("charge", ch.ID, ch.Created, ch); err != nil {
			return err
		}
		c.emit("charge.dispute.created", dp)
		return nil
	})
	if err == nil {
		e.log.Info("dispute created", "dispute", dp.ID, "charge", dp.Charge, "amount", dp.Amount)
	}
	e.writeControlResult(w, dp, err)
}

// closeDispute serves POST /_emulator/disputes/{id}/close {"status":"won"|"lost"}.
// A won dispute returns the disputed amount; the dispute fee stays withdrawn.
func (e *Emulator) closeDispute(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Status string `json:"status"`
	}
	if err := decodeControlBody(w, r, &body); err != nil {
		controlError(w, http.StatusBadRequest, err.Error())
		return
	}
	if body.Status != "won" && body.Status != "lost" {
		controlError(w, http.StatusBadRequest, fmt.Sprintf("status must be \"won\" or \"lost\", got %q", body.Status))
		return
	}
	dp := &dispute{}
	err := e.inControlTx(r.Context(), r, func(c *call) error {
		if err := c.mustLoad(r.PathValue("id"), "dispute", "id", dp, true); err != nil {
			return err
		}
		if dp.Status == "won" || dp.Status == "lost" {
			return invalidParam("status", fmt.Sprintf("Dispute %s is already closed with status %s.", dp.ID, dp.Status))
		}
		dp.Status = body.Status
		if body.Status == "won" {
			reinstatement := balanceTransaction{
				ID:                newID("txn"),
				Object:            "balance_transaction",
				Amount:            dp.Amount,
				AvailableOn:       c.now,
				Created:           c.now,
				Currency:          dp.Currency,
				Description:       ptr("Chargeback reversal for " + dp.Charge),
				FeeDetails:        []feeDetail{},
				Net:               dp.Amount,
				ReportingCategory: "dispute_reversal",
				Source:            dp.ID,
				Status:            "available",
				Type:              "adjustment",
			}
			if err := c.save("balance_transaction", reinstatement.ID, reinstatement.Created, reinstatement); err != nil {
				return err
			}
			dp.BalanceTransactions = append(dp.BalanceTransactions, reinstatement)
		}
		if err := c.save("dispute", dp.ID, dp.Created, dp); err != nil {
			return err
		}
		c.emit("charge.dispute.closed", dp)
		return nil
	})
	if err == nil {
		e.log.Info("dispute closed", "dispute", dp.ID, "status", dp.Status)
	}
	e.writeControlResult(w, dp, err)
}

// setInsufficientFunds serves
// POST /_emulator/connected-accounts/{acct}/insufficient-funds {"enabled":true}.
// While enabled, transfer reversals from that account fail.
func (e *Emulator) setInsufficientFunds(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Enabled bool `json:"enabled"`
	}
	if err := decodeControlBody(w, r, &body); err != nil {
		controlError(w, http.StatusBadRequest, err.Error())
		return
	}
	account := r.PathValue("acct")
	if !strings.HasPrefix(account, "acct_") {
		controlError(w, http.StatusBadRequest, fmt.Sprintf("account id must start with acct_, got %q", account))
		return
	}
	_, err := e.pool.Exec(r.Context(), `
		INSERT INTO stripe_emulator.connected_accounts (id, insufficient_funds) VALUES ($1, $2)
		ON CONFLICT (id) DO UPDATE SET insufficient_funds = excluded.insufficient_funds`, account, body.Enabled)
	if err != nil {
		e.writeControlResult(w, nil, fmt.Errorf("set insufficient funds of %s: %w", account, err))
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"account": account, "insufficientFunds": body.Enabled}, nil)
}

// connectedAccountShort reports whether the control API marked account as
// short of funds.
func (c *call) connectedAccountShort(account string) (bool, error) {
	var short bool
	err := c.tx.QueryRow(c.ctx, `SELECT insufficient_funds FROM stripe_emulator.connected_accounts WHERE id = $1`, account).Scan(&short)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read connected account %s: %w", account, err)
	}
	return short, nil
}
