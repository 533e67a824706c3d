package emulator

import "fmt"

var refundReasons = map[string]bool{"duplicate": true, "fraudulent": true, "requested_by_customer": true}

// createRefund serves POST /v1/refunds for a captured charge, named by charge
// or by payment_intent.
func (e *Emulator) createRefund(c *call) (any, error) {
	if err := c.p.checkKnown("charge", "payment_intent", "amount", "reason", "metadata", "instructions_email"); err != nil {
		return nil, err
	}
	chargeID, err := c.p.str("charge")
	if err != nil {
		return nil, err
	}
	piID, err := c.p.str("payment_intent")
	if err != nil {
		return nil, err
	}
	if chargeID == "" && piID == "" {
		return nil, invalidParam("charge", "Missing required param: charge or payment_intent.")
	}
	if chargeID != "" && piID != "" {
		return nil, invalidParam("payment_intent", "You may only specify one of these parameters: charge, payment_intent.")
	}
	reason, err := c.p.optStr("reason")
	if err != nil {
		return nil, err
	}
	if reason != nil && !refundReasons[*reason] {
		return nil, invalidParam("reason", fmt.Sprintf("Invalid reason: must be one of duplicate, fraudulent or requested_by_customer, got %q.", *reason))
	}
	metadata, err := c.p.applyMetadata(map[string]string{})
	if err != nil {
		return nil, err
	}

	param := "charge"
	if piID != "" {
		param = "payment_intent"
		pi := &paymentIntent{}
		if err := c.mustLoad(piID, "payment_intent", "payment_intent", pi, false); err != nil {
			return nil, err
		}
		if pi.Status != "succeeded" || pi.LatestCharge == nil {
			return nil, invalidRequest("", "payment_intent", fmt.Sprintf(
				"This PaymentIntent (%s) does not have a successful charge to refund: its status is %s. Cancel a PaymentIntent that is not captured yet.", piID, pi.Status))
		}
		chargeID = *pi.LatestCharge
	}
	ch := &charge{}
	if err := c.mustLoad(chargeID, "charge", param, ch, true); err != nil {
		return nil, err
	}
	if !ch.Captured || ch.Status != "succeeded" {
		return nil, invalidRequest("", param, fmt.Sprintf("Charge %s has not been captured, so it cannot be refunded. Cancel its PaymentIntent instead.", ch.ID))
	}
	if ch.Disputed {
		return nil, invalidRequest("charge_disputed", param, fmt.Sprintf("Charge %s has been charged back; a disputed charge cannot be refunded.", ch.ID))
	}
	// amount_refunded also contains the released rest of a partial capture,
	// so what is left to refund is amount - amount_refunded.
	remaining := ch.Amount - ch.AmountRefunded
	if remaining <= 0 {
		return nil, invalidRequest("charge_already_refunded", param, fmt.Sprintf("Charge %s has already been refunded.", ch.ID))
	}
	amount, sent, err := c.p.int("amount")
	if err != nil {
		return nil, err
	}
	if !sent {
		amount = remaining
	}
	if amount < 1 {
		return nil, invalidParam("amount", fmt.Sprintf("Invalid amount: must be a positive integer, got %d.", amount))
	}
	if amount > remaining {
		return nil, invalidRequest("amount_too_large", "amount", fmt.Sprintf(
			"Refund amount (%d) is greater than the unrefunded amount on charge %s (%d).", amount, ch.ID, remaining))
	}

	re := &refund{
		ID:            newID("re"),
		Object:        "refund",
		Amount:        amount,
		Charge:        &ch.ID,
		Created:       c.now,
		Currency:      ch.Currency,
		Metadata:      metadata,
		PaymentIntent: ch.PaymentIntent,
		Reason:        reason,
		Status:        "succeeded",
	}
	txn := &balanceTransaction{
		ID:                newID("txn"),
		Object:            "balance_transaction",
		Amount:            -amount,
		AvailableOn:       c.now,
		Created:           c.now,
		Currency:          ch.Currency,
		FeeDetails:        []feeDetail{},
		Net:               -amount,
		ReportingCategory: "refund",
		Source:            re.ID,
		Status:            "available",
		Type:              "refund",
	}
	if err := c.save("balance_transaction", txn.ID, txn.Created, txn); err != nil {
		return nil, err
	}
	re.BalanceTransaction = &txn.ID
	if err := c.save("refund", re.ID, re.Created, re); err != nil {
		return nil, err
	}

	ch.AmountRefunded += amount
	ch.Refunded = ch.AmountRefunded == ch.Amount
	if err := c.save("charge", ch.ID, ch.Created, ch); err != nil {
		return nil, err
	}
	c.emit("charge.refunded", ch)
	return re, nil
}

func (e *Emulator) getRefund(c *call) (any, error) {
	re := &refund{}
	return re, c.mustLoad(c.pathID(), "refund", "refund", re, false)
}

// listRefunds serves GET /v1/refunds?charge=...&payment_intent=...
func (e *Emulator) listRefunds(c *call) (any, error) {
	if err := c.p.checkKnown("charge", "payment_intent", "limit", "starting_after", "ending_before", "created"); err != nil {
		return nil, err
	}
	var filters []listFilter
	for _, name := range []string{"charge", "payment_intent"} {
		v, err := c.p.str(name)
		if err != nil {
			return nil, err
		}
		if v != "" {
			filters = append(filters, listFilter{name, v})
		}
	}
	return c.list("refund", "/v1/refunds", filters...)
}

// createTransferReversal serves POST /v1/transfers/{id}/reversals. It fails
// with insufficient_funds while the control API marks the destination
// account as short of funds.
func (e *Emulator) createTransferReversal(c *call) (any, error) {
	if err := c.p.checkKnown("amount", "metadata", "description"); err != nil {
		return nil, err
	}
	tr := &transfer{}
	if err := c.mustLoad(c.pathID(), "transfer", "id", tr, true); err != nil {
		return nil, err
	}
	remaining := tr.Amount - tr.AmountReversed
	if remaining <= 0 {
		return nil, invalidRequest("", "amount", fmt.Sprintf("Transfer %s has already been fully reversed.", tr.ID))
	}
	amount, sent, err := c.p.int("amount")
	if err != nil {
		return nil, err
	}
	if !sent {
		amount = remaining
	}
	if amount < 1 || amount > remaining {
		return nil, invalidParam("amount", fmt.Sprintf("Invalid amount: must be between 1 and the unreversed amount %d of transfer %s, got %d.", remaining, tr.ID, amount))
	}
	metadata, err := c.p.applyMetadata(map[string]string{})
	if err != nil {
		return nil, err
	}

	short, err := c.connectedAccountShort(tr.Destination)
	if err != nil {
		return nil, err
	}
	if short {
		return nil, invalidRequest("insufficient_funds", "amount", fmt.Sprintf(
			"Insufficient funds in connected account %s to reverse %d of transfer %s.", tr.Destination, amount, tr.ID))
	}

	rev := &transferReversal{
		ID:                       newID("trr"),
		Object:                   "transfer_reversal",
		Amount:                   amount,
		Created:                  c.now,
		Currency:                 tr.Currency,
		DestinationPaymentRefund: ptr(newID("pyr")),
		Metadata:                 metadata,
		Transfer:                 tr.ID,
	}
	txn := &balanceTransaction{
		ID:                newID("txn"),
		Object:            "balance_transaction",
		Amount:            amount,
		AvailableOn:       c.now,
		Created:           c.now,
		Currency:          tr.Currency,
		FeeDetails:        []feeDetail{},
		Net:               amount,
		ReportingCategory: "transfer_reversal",
		Source:            rev.ID,
		Status:            "available",
		Type:              "transfer_refund",
	}
	if err := c.save("balance_transaction", txn.ID, txn.Created, txn); err != nil {
		return nil, err
	}
	rev.BalanceTransaction = &txn.ID
	if err := c.save("transfer_reversal", rev.ID, rev.Created, rev); err != nil {
		return nil, err
	}

	tr.AmountReversed += amount
	tr.Reversed = tr.AmountReversed == tr.Amount
	tr.Reversals.Data = append([]any{marshalObject(rev)}, tr.Reversals.Data...)
	tr.Reversals.TotalCount++
	if err := c.save("transfer", tr.ID, tr.Created, tr); err != nil {
		return nil, err
	}
	c.emit("transfer.reversed", tr)
	return rev, nil
}

// listTransferReversals serves GET /v1/transfers/{id}/reversals.
func (e *Emulator) listTransferReversals(c *call) (any, error) {
	if err := c.p.checkKnown("limit", "starting_after", "ending_before"); err != nil {
		return nil, err
	}
	if err := c.mustLoad(c.pathID(), "transfer", "id", &transfer{}, false); err != nil {
		return nil, err
	}
	return c.list("transfer_reversal", "/v1/transfers/"+c.pathID()+"/reversals", listFilter{"transfer", c.pathID()})
}

func (e *Emulator) getTransferReversal(c *call) (any, error) {
	rev := &transferReversal{}
	if err := c.mustLoad(c.r.PathValue("reversal"), "transfer_reversal", "id", rev, false); err != nil {
		return nil, err
	}
	if rev.Transfer != c.pathID() {
		return nil, notFound("transfer_reversal", rev.ID, "id")
	}
	return rev, nil
}
