package emulator

import (
	"fmt"
	"net/http"
	"strings"
)

// invalidDestination is the one connected account id that the emulator
// rejects, so tests can make a transfer fail.
const invalidDestination = "acct_invalid"

func (e *Emulator) createTransfer(c *call) (any, error) {
	if err := c.p.checkKnown("amount", "currency", "destination", "source_transaction", "transfer_group", "metadata", "description", "source_type"); err != nil {
		return nil, err
	}
	amount, sent, err := c.p.int("amount")
	if err != nil {
		return nil, err
	}
	if !sent {
		return nil, missingParam("amount")
	}
	if amount < 1 {
		return nil, invalidParam("amount", fmt.Sprintf("Invalid amount: must be a positive integer, got %d.", amount))
	}
	currency, err := c.p.str("currency")
	if err != nil {
		return nil, err
	}
	if currency == "" {
		return nil, missingParam("currency")
	}
	currency = strings.ToLower(currency)
	if _, known := minimumAmounts[currency]; !known {
		return nil, invalidParam("currency", "Invalid currency: "+currency+".")
	}
	destination, err := c.p.str("destination")
	if err != nil {
		return nil, err
	}
	if destination == "" {
		return nil, missingParam("destination")
	}
	if !strings.HasPrefix(destination, "acct_") || destination == invalidDestination {
		// An unknown destination is an invalid parameter (400), unlike an
		// unknown id in the path (404).
		err := notFound("destination", destination, "destination")
		err.status = http.StatusBadRequest
		return nil, err
	}

	tr := &transfer{
		ID:                 newID("tr"),
		Object:             "transfer",
		Amount:             amount,
		Created:            c.now,
		Currency:           currency,
		Destination:        destination,
		DestinationPayment: newID("py"),
		SourceType:         "card",
	}
	tr.Reversals = embeddedList{Object: "list", Data: []any{}, URL: "/v1/transfers/" + tr.ID + "/reversals"}
	if tr.Metadata, err = c.p.applyMetadata(map[string]string{}); err != nil {
		return nil, err
	}
	if tr.Description, err = c.p.optStr("description"); err != nil {
		return nil, err
	}
	if tr.TransferGroup, err = c.p.optStr("transfer_group"); err != nil {
		return nil, err
	}

	sourceID, err := c.p.str("source_transaction")
	if err != nil {
		return nil, err
	}
	if sourceID != "" {
		if err := c.checkTransferSource(sourceID, amount, currency); err != nil {
			return nil, err
		}
		tr.SourceTransaction = &sourceID
	}

	txn := &balanceTransaction{
		ID:                newID("txn"),
		Object:            "balance_transaction",
		Amount:            -amount,
		AvailableOn:       c.now,
		Created:           c.now,
		Currency:          currency,
		Description:       tr.Description,
		FeeDetails:        []feeDetail{},
		Net:               -amount,
		ReportingCategory: "transfer",
		Source:            tr.ID,
		Status:            "available",
		Type:              "transfer",
	}
	if err := c.save("balance_transaction", txn.ID, txn.Created, txn); err != nil {
		return nil, err
	}
	tr.BalanceTransaction = &txn.ID
	return tr, c.save("transfer", tr.ID, tr.Created, tr)
}

// checkTransferSource locks the source charge and checks that it is captured,
// in the transfer's currency, and that this transfer plus earlier transfers
// from it stay within its captured amount. Reversals do not give the amount
// back.
func (c *call) checkTransferSource(sourceID string, amount int64, currency string) error {
	ch := &charge{}
	if err := c.mustLoad(sourceID, "charge", "source_transaction", ch, true); err != nil {
		return err
	}
	if !ch.Captured || ch.Status != "succeeded" {
		return invalidParam("source_transaction", fmt.Sprintf("The source_transaction %s is not a captured charge; capture its PaymentIntent first.", sourceID))
	}
	if ch.Currency != currency {
		return invalidParam("currency", fmt.Sprintf("The currency of a transfer must match its source_transaction's currency %s, got %s.", ch.Currency, currency))
	}
	var transferred int64
	err := c.tx.QueryRow(c.ctx, `
		SELECT coalesce(sum((data->>'amount')::bigint), 0) FROM stripe_emulator.objects
		WHERE type = 'transfer' AND data->>'source_transaction' = $1`, sourceID).Scan(&transferred)
	if err != nil {
		return fmt.Errorf("sum transfers of %s: %w", sourceID, err)
	}
	if transferred+amount > ch.AmountCaptured {
		return invalidRequest("", "amount", fmt.Sprintf(
			"Insufficient funds in source_transaction %s: it captured %d, transfers already take %d, so %d more cannot be transferred.",
			sourceID, ch.AmountCaptured, transferred, amount))
	}
	return nil
}

func (e *Emulator) getTransfer(c *call) (any, error) {
	tr := &transfer{}
	return tr, c.mustLoad(c.pathID(), "transfer", "id", tr, false)
}

// listTransfers serves GET /v1/transfers?transfer_group=...&destination=...
func (e *Emulator) listTransfers(c *call) (any, error) {
	if err := c.p.checkKnown("transfer_group", "destination", "limit", "starting_after", "ending_before", "created"); err != nil {
		return nil, err
	}
	var filters []listFilter
	for _, name := range []string{"transfer_group", "destination"} {
		v, err := c.p.str(name)
		if err != nil {
			return nil, err
		}
		if v != "" {
			filters = append(filters, listFilter{name, v})
		}
	}
	return c.list("transfer", "/v1/transfers", filters...)
}
