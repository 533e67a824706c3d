package emulator

// Holding periods of an uncaptured card authorization at Stripe: 7 days for
// an on-session payment and 4 days 18 hours for an off-session one.
const (
	captureWindowOnSession  = 7 * 24 * 60 * 60
	captureWindowOffSession = (4*24 + 18) * 60 * 60
	// balanceAvailableAfter is when captured funds become available, in
	// seconds after capture.
	balanceAvailableAfter = 2 * 24 * 60 * 60
)

// processingFee returns the fee for a captured amount in minor units:
// half-up(amount × FeePercentBps / 10000) + FeeFixed.
func (e *Emulator) processingFee(amount int64) int64 {
	return (amount*e.cfg.FeePercentBps+5000)/10000 + e.cfg.FeeFixed
}

// newCharge builds the charge of one confirmation attempt of pi with card pm.
// It is not saved.
func (c *call) newCharge(pi *paymentIntent, pm *paymentMethod) *charge {
	card := pm.Card
	if card == nil {
		card = &paymentMethodCard{}
	}
	ch := &charge{
		ID:                            newID("ch"),
		Object:                        "charge",
		Amount:                        pi.Amount,
		BillingDetails:                pm.BillingDetails,
		CalculatedStatementDescriptor: "TASKPOD EMULATOR",
		Created:                       c.now,
		Currency:                      pi.Currency,
		Customer:                      pi.Customer,
		Description:                   pi.Description,
		FraudDetails:                  map[string]any{},
		Metadata:                      copyMetadata(pi.Metadata),
		Outcome: chargeOutcome{
			NetworkStatus: "approved_by_network",
			RiskLevel:     "normal",
			RiskScore:     20,
			SellerMessage: "Payment complete.",
			Type:          "authorized",
		},
		Paid:          true,
		PaymentIntent: &pi.ID,
		PaymentMethod: &pm.ID,
		PaymentMethodDetails: chargePaymentMethodDetails{
			Type: "card",
			Card: &chargeCardDetails{
				AmountAuthorized:         pi.Amount,
				Brand:                    card.Brand,
				Checks:                   card.Checks,
				Country:                  card.Country,
				ExpMonth:                 card.ExpMonth,
				ExpYear:                  card.ExpYear,
				ExtendedAuthorization:    map[string]any{"status": "disabled"},
				Fingerprint:              card.Fingerprint,
				Funding:                  card.Funding,
				IncrementalAuthorization: map[string]any{"status": "unavailable"},
				Last4:                    card.Last4,
				Multicapture:             map[string]any{"status": "unavailable"},
				Network:                  card.Brand,
				NetworkToken:             map[string]any{"used": false},
				Overcapture:              map[string]any{"maximum_amount_capturable": pi.Amount, "status": "unavailable"},
			},
		},
		ReceiptEmail:  pi.ReceiptEmail,
		Status:        "succeeded",
		TransferGroup: pi.TransferGroup,
	}
	ch.ReceiptURL = "https://pay.stripe.com/receipts/emulator/" + ch.ID
	return ch
}

func copyMetadata(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// captureCharge captures amount of pi's uncaptured charge ch, books the
// balance transaction and moves pi to succeeded. The rest of an authorization
// captured in part is released and shows in the charge's amount_refunded.
func (c *call) captureCharge(pi *paymentIntent, ch *charge, amount int64) error {
	fee := c.e.processingFee(amount)
	txn := &balanceTransaction{
		ID:          newID("txn"),
		Object:      "balance_transaction",
		Amount:      amount,
		AvailableOn: c.now + balanceAvailableAfter,
		Created:     c.now,
		Currency:    ch.Currency,
		Description: pi.Description,
		Fee:         fee,
		FeeDetails: []feeDetail{{
			Amount: fee, Currency: ch.Currency, Description: "Stripe processing fees", Type: "stripe_fee",
		}},
		Net:               amount - fee,
		ReportingCategory: "charge",
		Source:            ch.ID,
		Status:            "pending",
		Type:              "charge",
	}
	if err := c.save("balance_transaction", txn.ID, txn.Created, txn); err != nil {
		return err
	}

	ch.Captured = true
	ch.AmountCaptured = amount
	ch.AmountRefunded += ch.Amount - amount
	ch.Refunded = ch.AmountRefunded == ch.Amount
	ch.BalanceTransaction = &txn.ID
	if err := c.save("charge", ch.ID, ch.Created, ch); err != nil {
		return err
	}

	pi.Status = "succeeded"
	pi.AmountReceived = amount
	pi.AmountCapturable = 0
	if err := c.save("payment_intent", pi.ID, pi.Created, pi); err != nil {
		return err
	}
	if err := c.setCaptureDeadline(pi.ID, nil); err != nil {
		return err
	}
	c.emit("payment_intent.succeeded", pi)
	return nil
}

func (e *Emulator) getCharge(c *call) (any, error) {
	ch := &charge{}
	return ch, c.mustLoad(c.pathID(), "charge", "charge", ch, false)
}

func (e *Emulator) getBalanceTransaction(c *call) (any, error) {
	txn := &balanceTransaction{}
	return txn, c.mustLoad(c.pathID(), "balance_transaction", "id", txn, false)
}
