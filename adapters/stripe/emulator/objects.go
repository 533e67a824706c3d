package emulator

// Go shapes of the Stripe objects the emulator stores, in API version
// 2023-10-16. Expandable fields hold the referenced object's id; the response
// writer replaces ids with objects for the paths named in expand[]. Pointer
// fields encode as null when unset, as Stripe sends them.

type customer struct {
	ID              string                  `json:"id"`
	Object          string                  `json:"object"`
	Address         any                     `json:"address"`
	Balance         int64                   `json:"balance"`
	Created         int64                   `json:"created"`
	Currency        *string                 `json:"currency"`
	DefaultSource   *string                 `json:"default_source"`
	Delinquent      bool                    `json:"delinquent"`
	Description     *string                 `json:"description"`
	Email           *string                 `json:"email"`
	InvoicePrefix   string                  `json:"invoice_prefix"`
	InvoiceSettings customerInvoiceSettings `json:"invoice_settings"`
	Livemode        bool                    `json:"livemode"`
	Metadata        map[string]string       `json:"metadata"`
	Name            *string                 `json:"name"`
	Phone           *string                 `json:"phone"`
	// PreferredLocales is always an empty list, never null.
	PreferredLocales []string `json:"preferred_locales"`
	TaxExempt        string   `json:"tax_exempt"`
}

type customerInvoiceSettings struct {
	CustomFields         any     `json:"custom_fields"`
	DefaultPaymentMethod *string `json:"default_payment_method"`
	Footer               *string `json:"footer"`
	RenderingOptions     any     `json:"rendering_options"`
}

type billingDetails struct {
	Address any     `json:"address"`
	Email   *string `json:"email"`
	Name    *string `json:"name"`
	Phone   *string `json:"phone"`
}

type cardChecks struct {
	AddressLine1Check      *string `json:"address_line1_check"`
	AddressPostalCodeCheck *string `json:"address_postal_code_check"`
	CVCCheck               *string `json:"cvc_check"`
}

type paymentMethodCard struct {
	Brand             string         `json:"brand"`
	Checks            cardChecks     `json:"checks"`
	Country           string         `json:"country"`
	DisplayBrand      string         `json:"display_brand"`
	ExpMonth          int64          `json:"exp_month"`
	ExpYear           int64          `json:"exp_year"`
	Fingerprint       string         `json:"fingerprint"`
	Funding           string         `json:"funding"`
	GeneratedFrom     any            `json:"generated_from"`
	Last4             string         `json:"last4"`
	Networks          map[string]any `json:"networks"`
	ThreeDSecureUsage map[string]any `json:"three_d_secure_usage"`
	Wallet            any            `json:"wallet"`
}

type paymentMethod struct {
	ID             string             `json:"id"`
	Object         string             `json:"object"`
	BillingDetails billingDetails     `json:"billing_details"`
	Card           *paymentMethodCard `json:"card"`
	Created        int64              `json:"created"`
	Customer       *string            `json:"customer"`
	Livemode       bool               `json:"livemode"`
	Metadata       map[string]string  `json:"metadata"`
	Type           string             `json:"type"`
}

type setupIntent struct {
	ID                      string            `json:"id"`
	Object                  string            `json:"object"`
	Application             any               `json:"application"`
	AutomaticPaymentMethods any               `json:"automatic_payment_methods"`
	CancellationReason      *string           `json:"cancellation_reason"`
	ClientSecret            string            `json:"client_secret"`
	Created                 int64             `json:"created"`
	Customer                *string           `json:"customer"`
	Description             *string           `json:"description"`
	FlowDirections          any               `json:"flow_directions"`
	LastSetupError          *apiError         `json:"last_setup_error"`
	LatestAttempt           *string           `json:"latest_attempt"`
	Livemode                bool              `json:"livemode"`
	Mandate                 *string           `json:"mandate"`
	Metadata                map[string]string `json:"metadata"`
	NextAction              any               `json:"next_action"`
	OnBehalfOf              *string           `json:"on_behalf_of"`
	PaymentMethod           *string           `json:"payment_method"`
	PaymentMethodOptions    map[string]any    `json:"payment_method_options"`
	PaymentMethodTypes      []string          `json:"payment_method_types"`
	SingleUseMandate        *string           `json:"single_use_mandate"`
	Status                  string            `json:"status"`
	Usage                   string            `json:"usage"`
}

type paymentIntent struct {
	ID                        string            `json:"id"`
	Object                    string            `json:"object"`
	Amount                    int64             `json:"amount"`
	AmountCapturable          int64             `json:"amount_capturable"`
	AmountDetails             map[string]any    `json:"amount_details"`
	AmountReceived            int64             `json:"amount_received"`
	Application               any               `json:"application"`
	ApplicationFeeAmount      *int64            `json:"application_fee_amount"`
	AutomaticPaymentMethods   any               `json:"automatic_payment_methods"`
	CanceledAt                *int64            `json:"canceled_at"`
	CancellationReason        *string           `json:"cancellation_reason"`
	CaptureMethod             string            `json:"capture_method"`
	ClientSecret              string            `json:"client_secret"`
	ConfirmationMethod        string            `json:"confirmation_method"`
	Created                   int64             `json:"created"`
	Currency                  string            `json:"currency"`
	Customer                  *string           `json:"customer"`
	Description               *string           `json:"description"`
	Invoice                   *string           `json:"invoice"`
	LastPaymentError          *apiError         `json:"last_payment_error"`
	LatestCharge              *string           `json:"latest_charge"`
	Livemode                  bool              `json:"livemode"`
	Metadata                  map[string]string `json:"metadata"`
	NextAction                any               `json:"next_action"`
	OnBehalfOf                *string           `json:"on_behalf_of"`
	PaymentMethod             *string           `json:"payment_method"`
	PaymentMethodOptions      map[string]any    `json:"payment_method_options"`
	PaymentMethodTypes        []string          `json:"payment_method_types"`
	Processing                any               `json:"processing"`
	ReceiptEmail              *string           `json:"receipt_email"`
	Review                    *string           `json:"review"`
	SetupFutureUsage          *string           `json:"setup_future_usage"`
	Shipping                  any               `json:"shipping"`
	Source                    *string           `json:"source"`
	StatementDescriptor       *string           `json:"statement_descriptor"`
	StatementDescriptorSuffix *string           `json:"statement_descriptor_suffix"`
	Status                    string            `json:"status"`
	TransferData              any               `json:"transfer_data"`
	TransferGroup             *string           `json:"transfer_group"`
}

type chargeCardDetails struct {
	AmountAuthorized         int64          `json:"amount_authorized"`
	Brand                    string         `json:"brand"`
	CaptureBefore            int64          `json:"capture_before,omitempty"`
	Checks                   cardChecks     `json:"checks"`
	Country                  string         `json:"country"`
	ExpMonth                 int64          `json:"exp_month"`
	ExpYear                  int64          `json:"exp_year"`
	ExtendedAuthorization    map[string]any `json:"extended_authorization"`
	Fingerprint              string         `json:"fingerprint"`
	Funding                  string         `json:"funding"`
	IncrementalAuthorization map[string]any `json:"incremental_authorization"`
	Installments             any            `json:"installments"`
	Last4                    string         `json:"last4"`
	Mandate                  *string        `json:"mandate"`
	Multicapture             map[string]any `json:"multicapture"`
	Network                  string         `json:"network"`
	NetworkToken             map[string]any `json:"network_token"`
	Overcapture              map[string]any `json:"overcapture"`
	ThreeDSecure             any            `json:"three_d_secure"`
	Wallet                   any            `json:"wallet"`
}

type chargePaymentMethodDetails struct {
	Card *chargeCardDetails `json:"card"`
	Type string             `json:"type"`
}

type chargeOutcome struct {
	NetworkStatus string  `json:"network_status"`
	Reason        *string `json:"reason"`
	RiskLevel     string  `json:"risk_level"`
	RiskScore     int64   `json:"risk_score"`
	SellerMessage string  `json:"seller_message"`
	Type          string  `json:"type"`
}

type charge struct {
	ID                            string                     `json:"id"`
	Object                        string                     `json:"object"`
	Amount                        int64                      `json:"amount"`
	AmountCaptured                int64                      `json:"amount_captured"`
	AmountRefunded                int64                      `json:"amount_refunded"`
	Application                   any                        `json:"application"`
	ApplicationFee                *string                    `json:"application_fee"`
	ApplicationFeeAmount          *int64                     `json:"application_fee_amount"`
	BalanceTransaction            *string                    `json:"balance_transaction"`
	BillingDetails                billingDetails             `json:"billing_details"`
	CalculatedStatementDescriptor string                     `json:"calculated_statement_descriptor"`
	Captured                      bool                       `json:"captured"`
	Created                       int64                      `json:"created"`
	Currency                      string                     `json:"currency"`
	Customer                      *string                    `json:"customer"`
	Description                   *string                    `json:"description"`
	Disputed                      bool                       `json:"disputed"`
	FailureBalanceTransaction     *string                    `json:"failure_balance_transaction"`
	FailureCode                   *string                    `json:"failure_code"`
	FailureMessage                *string                    `json:"failure_message"`
	FraudDetails                  map[string]any             `json:"fraud_details"`
	Invoice                       *string                    `json:"invoice"`
	Livemode                      bool                       `json:"livemode"`
	Metadata                      map[string]string          `json:"metadata"`
	OnBehalfOf                    *string                    `json:"on_behalf_of"`
	Outcome                       chargeOutcome              `json:"outcome"`
	Paid                          bool                       `json:"paid"`
	PaymentIntent                 *string                    `json:"payment_intent"`
	PaymentMethod                 *string                    `json:"payment_method"`
	PaymentMethodDetails          chargePaymentMethodDetails `json:"payment_method_details"`
	ReceiptEmail                  *string                    `json:"receipt_email"`
	ReceiptNumber                 *string                    `json:"receipt_number"`
	ReceiptURL                    string                     `json:"receipt_url"`
	Refunded                      bool                       `json:"refunded"`
	Review                        *string                    `json:"review"`
	Shipping                      any                        `json:"shipping"`
	Source                        any                        `json:"source"`
	SourceTransfer                *string                    `json:"source_transfer"`
	StatementDescriptor           *string                    `json:"statement_descriptor"`
	StatementDescriptorSuffix     *string                    `json:"statement_descriptor_suffix"`
	Status                        string                     `json:"status"`
	TransferData                  any                        `json:"transfer_data"`
	TransferGroup                 *string                    `json:"transfer_group"`
}

type feeDetail struct {
	Amount      int64   `json:"amount"`
	Application *string `json:"application"`
	Currency    string  `json:"currency"`
	Description string  `json:"description"`
	Type        string  `json:"type"`
}

type balanceTransaction struct {
	ID                string      `json:"id"`
	Object            string      `json:"object"`
	Amount            int64       `json:"amount"`
	AvailableOn       int64       `json:"available_on"`
	Created           int64       `json:"created"`
	Currency          string      `json:"currency"`
	Description       *string     `json:"description"`
	ExchangeRate      *float64    `json:"exchange_rate"`
	Fee               int64       `json:"fee"`
	FeeDetails        []feeDetail `json:"fee_details"`
	Net               int64       `json:"net"`
	ReportingCategory string      `json:"reporting_category"`
	Source            string      `json:"source"`
	Status            string      `json:"status"`
	Type              string      `json:"type"`
}

// embeddedList is the sublist Stripe nests in an object, such as a
// transfer's reversals.
type embeddedList struct {
	Object     string `json:"object"`
	Data       []any  `json:"data"`
	HasMore    bool   `json:"has_more"`
	TotalCount int64  `json:"total_count"`
	URL        string `json:"url"`
}

type transfer struct {
	ID                 string            `json:"id"`
	Object             string            `json:"object"`
	Amount             int64             `json:"amount"`
	AmountReversed     int64             `json:"amount_reversed"`
	BalanceTransaction *string           `json:"balance_transaction"`
	Created            int64             `json:"created"`
	Currency           string            `json:"currency"`
	Description        *string           `json:"description"`
	Destination        string            `json:"destination"`
	DestinationPayment string            `json:"destination_payment"`
	Livemode           bool              `json:"livemode"`
	Metadata           map[string]string `json:"metadata"`
	Reversals          embeddedList      `json:"reversals"`
	Reversed           bool              `json:"reversed"`
	SourceTransaction  *string           `json:"source_transaction"`
	SourceType         string            `json:"source_type"`
	TransferGroup      *string           `json:"transfer_group"`
}

type refund struct {
	ID                        string            `json:"id"`
	Object                    string            `json:"object"`
	Amount                    int64             `json:"amount"`
	BalanceTransaction        *string           `json:"balance_transaction"`
	Charge                    *string           `json:"charge"`
	Created                   int64             `json:"created"`
	Currency                  string            `json:"currency"`
	Description               *string           `json:"description,omitempty"`
	FailureBalanceTransaction *string           `json:"failure_balance_transaction,omitempty"`
	FailureReason             *string           `json:"failure_reason,omitempty"`
	Metadata                  map[string]string `json:"metadata"`
	PaymentIntent             *string           `json:"payment_intent"`
	Reason                    *string           `json:"reason"`
	ReceiptNumber             *string           `json:"receipt_number"`
	SourceTransferReversal    *string           `json:"source_transfer_reversal"`
	Status                    string            `json:"status"`
	TransferReversal          *string           `json:"transfer_reversal"`
}

type transferReversal struct {
	ID                       string            `json:"id"`
	Object                   string            `json:"object"`
	Amount                   int64             `json:"amount"`
	BalanceTransaction       *string           `json:"balance_transaction"`
	Created                  int64             `json:"created"`
	Currency                 string            `json:"currency"`
	DestinationPaymentRefund *string           `json:"destination_payment_refund"`
	Metadata                 map[string]string `json:"metadata"`
	SourceRefund             *string           `json:"source_refund"`
	Transfer                 string            `json:"transfer"`
}

type disputeEvidenceDetails struct {
	DueBy           *int64 `json:"due_by"`
	HasEvidence     bool   `json:"has_evidence"`
	PastDue         bool   `json:"past_due"`
	SubmissionCount int64  `json:"submission_count"`
}

type dispute struct {
	ID                  string                 `json:"id"`
	Object              string                 `json:"object"`
	Amount              int64                  `json:"amount"`
	BalanceTransactions []balanceTransaction   `json:"balance_transactions"`
	Charge              string                 `json:"charge"`
	Created             int64                  `json:"created"`
	Currency            string                 `json:"currency"`
	Evidence            map[string]any         `json:"evidence"`
	EvidenceDetails     disputeEvidenceDetails `json:"evidence_details"`
	IsChargeRefundable  bool                   `json:"is_charge_refundable"`
	Livemode            bool                   `json:"livemode"`
	Metadata            map[string]string      `json:"metadata"`
	NetworkReasonCode   *string                `json:"network_reason_code"`
	PaymentIntent       *string                `json:"payment_intent"`
	Reason              string                 `json:"reason"`
	Status              string                 `json:"status"`
}
