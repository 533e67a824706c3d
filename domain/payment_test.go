package domain_test

import (
	"errors"
	"testing"
	"time"

	"github.com/taskpod/billing/domain"
)

// documentedPaymentStatuses and documentedPaymentMoves restate the payment
// state table of docs/payments.md independently of the domain package.
var documentedPaymentStatuses = []domain.PaymentStatus{
	"authorizing", "requires_customer_action", "authorized", "reauthorizing", "captured", "transferred", "released", "failed",
}

var documentedPaymentMoves = map[[2]domain.PaymentStatus]bool{
	{"authorizing", "authorized"}:               true,
	{"authorizing", "requires_customer_action"}: true,
	{"authorizing", "failed"}:                   true,
	{"authorizing", "released"}:                 true,
	{"requires_customer_action", "authorized"}:  true,
	{"requires_customer_action", "released"}:    true,
	{"requires_customer_action", "failed"}:      true,
	{"authorized", "captured"}:                  true,
	{"authorized", "released"}:                  true,
	{"authorized", "reauthorizing"}:             true,
	{"reauthorizing", "authorized"}:             true,
	{"reauthorizing", "released"}:               true,
	{"captured", "transferred"}:                 true,
}

func storedPayment(status domain.PaymentStatus) domain.Payment {
	return domain.UnmarshalPaymentFromDatabase(domain.PaymentRecord{
		ID: "pay_1", TaskID: "task_1", CustomerID: "user_42", AgentID: "kbYsAVcJPYeQ",
		StripeCustomerID: "cus_1", DestinationAccountID: "acct_1HabitAI",
		Amount: domain.MustMoney(300, "usd"), CaptureAmount: domain.MustMoney(300, "usd"),
		FeeRate: platformRate, Status: status, CreatedAt: taskT0, UpdatedAt: taskT0,
	})
}

func TestPaymentStatusesMatchDocs(t *testing.T) {
	got := domain.PaymentStatuses()
	if len(got) != len(documentedPaymentStatuses) {
		t.Fatalf("PaymentStatuses() = %v, docs list %v", got, documentedPaymentStatuses)
	}
	for i := range got {
		if got[i] != documentedPaymentStatuses[i] {
			t.Errorf("PaymentStatuses()[%d] = %q, docs list %q", i, got[i], documentedPaymentStatuses[i])
		}
	}
}

func TestCanPaymentMoveCrossProduct(t *testing.T) {
	for _, from := range documentedPaymentStatuses {
		for _, to := range documentedPaymentStatuses {
			want := documentedPaymentMoves[[2]domain.PaymentStatus{from, to}]
			if got := domain.CanPaymentMove(from, to); got != want {
				t.Errorf("CanPaymentMove(%s, %s) = %v, docs say %v", from, to, got, want)
			}
		}
	}
}

// paymentMethods maps each target status to a call of the method that moves
// a payment there. authorizing has none: only NewPayment starts there.
var paymentMethods = map[domain.PaymentStatus]func(*domain.Payment, time.Time) error{
	"authorized": func(p *domain.Payment, now time.Time) error {
		return p.MarkAuthorized("pi_1", "ch_1", now.Add(7*24*time.Hour), now)
	},
	"requires_customer_action": func(p *domain.Payment, now time.Time) error {
		return p.RequireCustomerAction("pi_1", "pi_1_secret_x", "card_declined", now)
	},
	"captured": func(p *domain.Payment, now time.Time) error {
		return p.MarkCaptured(300, "ch_1", "txn_1", 39, now)
	},
	"transferred": func(p *domain.Payment, now time.Time) error {
		return p.MarkTransferred("tr_1", now)
	},
	"released": func(p *domain.Payment, now time.Time) error {
		return p.MarkReleased("hold released", now)
	},
	"failed": func(p *domain.Payment, now time.Time) error {
		return p.MarkFailed("invalid request", now)
	},
	"reauthorizing": func(p *domain.Payment, now time.Time) error {
		return p.StartReauthorization("authorization expired", now)
	},
}

func TestPaymentMethodsCrossProduct(t *testing.T) {
	later := taskT0.Add(time.Minute)
	for _, from := range documentedPaymentStatuses {
		for to, method := range paymentMethods {
			p := storedPayment(from)
			before := p.Record()
			err := method(&p, later)
			allowed := documentedPaymentMoves[[2]domain.PaymentStatus{from, to}]

			if allowed {
				if err != nil {
					t.Errorf("%s → %s: %v, want success", from, to, err)
					continue
				}
				if p.Status() != to || p.Record().UpdatedAt != later {
					t.Errorf("%s → %s: status %s, want %s", from, to, p.Status(), to)
				}
				continue
			}

			if !errors.Is(err, domain.ErrInvalidTransition) {
				t.Errorf("%s → %s: err = %v, want ErrInvalidTransition", from, to, err)
				continue
			}
			var te *domain.TransitionError
			if !errors.As(err, &te) || te.From != string(from) || te.To != string(to) {
				t.Errorf("%s → %s: err = %#v, want a TransitionError naming both states", from, to, err)
			}
			if p.Record() != before {
				t.Errorf("%s → %s rejected but the payment changed:\n got %+v\nwant %+v", from, to, p.Record(), before)
			}
		}
	}
}

func TestPaymentFinalStatesStayFinal(t *testing.T) {
	for _, final := range []domain.PaymentStatus{"transferred", "released", "failed"} {
		for _, to := range documentedPaymentStatuses {
			if domain.CanPaymentMove(final, to) {
				t.Errorf("final status %s may move to %s", final, to)
			}
		}
	}
}

func TestNewPaymentStartsAuthorizing(t *testing.T) {
	agent := paidAgent(t)
	task := storedTask(domain.TaskPendingPayment)

	p, err := domain.NewPayment("pay_1", task, agent, "cus_1", "pm_1", platformRate, taskT0)
	if err != nil {
		t.Fatal(err)
	}
	r := p.Record()
	if r.Status != domain.PaymentAuthorizing || !r.AutoCharged || r.Amount != agent.Price || r.CaptureAmount != agent.Price {
		t.Errorf("new payment = %+v, want authorizing, auto-charged, amount and capture amount 100 usd", r)
	}
	if r.DestinationAccountID != "acct_1HabitAI" || r.TaskID != "task_1" || r.CustomerID != "user_42" {
		t.Errorf("new payment links = %+v", r)
	}

	p, err = domain.NewPayment("pay_2", task, agent, "cus_1", "", platformRate, taskT0)
	if err != nil || p.Record().AutoCharged {
		t.Errorf("payment without a card: %v, autoCharged %v; want not auto-charged", err, p.Record().AutoCharged)
	}

	if _, err := domain.NewPayment("pay_3", task, agent, "", "pm_1", platformRate, taskT0); err == nil {
		t.Error("a payment without a Stripe customer was accepted")
	}
	free, _ := domain.NewAgent("free", "Free", domain.MustMoney(0, "usd"), "", taskT0)
	if _, err := domain.NewPayment("pay_4", task, free, "cus_1", "pm_1", platformRate, taskT0); err == nil {
		t.Error("a payment for a free agent was accepted")
	}
}

func TestMarkCapturedSplitsFee(t *testing.T) {
	cases := []struct {
		captured, fee, agent int64
	}{{300, 8, 292}, {100, 3, 97}, {50, 1, 49}}
	for _, c := range cases {
		p := storedPayment(domain.PaymentAuthorized)
		if err := p.MarkCaptured(c.captured, "ch_1", "txn_1", 12, taskT0); err != nil {
			t.Fatal(err)
		}
		r := p.Record()
		if r.CapturedAmount != c.captured || r.PlatformFee != c.fee || r.AgentShare != c.agent {
			t.Errorf("capture %d: captured %d fee %d agent %d, want %d/%d/%d",
				c.captured, r.CapturedAmount, r.PlatformFee, r.AgentShare, c.captured, c.fee, c.agent)
		}
		if r.StripeFee != 12 || r.StripeChargeID != "ch_1" || r.StripeBalanceTxID != "txn_1" {
			t.Errorf("capture %d: stripe refs %+v", c.captured, r)
		}
	}

	p := storedPayment(domain.PaymentAuthorized)
	if err := p.MarkCaptured(-1, "ch_1", "txn_1", 0, taskT0); err == nil || p.Status() != domain.PaymentAuthorized {
		t.Errorf("negative capture: err %v status %s, want an error and no change", err, p.Status())
	}
}

func TestSetCaptureAmount(t *testing.T) {
	cases := []struct {
		amount    int64
		errorCode string
	}{
		{300, ""}, {50, ""}, {120, ""},
		{301, "amount_above_hold"}, {49, "amount_too_small"}, {0, "amount_too_small"}, {-5, "amount_too_small"},
	}
	for _, c := range cases {
		p := storedPayment(domain.PaymentAuthorized)
		err := p.SetCaptureAmount(c.amount)
		if c.errorCode == "" {
			if err != nil || p.Record().CaptureAmount != domain.MustMoney(c.amount, "usd") {
				t.Errorf("SetCaptureAmount(%d) = %v, capture amount %v", c.amount, err, p.Record().CaptureAmount)
			}
			continue
		}
		var ve *domain.ValidationError
		if !errors.As(err, &ve) || ve.Code != c.errorCode || ve.Field != "finalAmountCents" {
			t.Errorf("SetCaptureAmount(%d) = %v, want %s on finalAmountCents", c.amount, err, c.errorCode)
		}
		if p.Record().CaptureAmount != domain.MustMoney(300, "usd") {
			t.Errorf("SetCaptureAmount(%d) rejected but changed the capture amount to %v", c.amount, p.Record().CaptureAmount)
		}
	}
}

func TestMarkTransferFailedOnlyWhenCaptured(t *testing.T) {
	for _, from := range documentedPaymentStatuses {
		p := storedPayment(from)
		err := p.MarkTransferFailed("destination invalid", taskT0)
		if from == domain.PaymentCaptured {
			if err != nil || p.Status() != domain.PaymentCaptured || p.Record().TransferFailedReason != "destination invalid" {
				t.Errorf("captured: %v, record %+v; want status captured with the reason", err, p.Record())
			}
			continue
		}
		if !errors.Is(err, domain.ErrInvalidTransition) {
			t.Errorf("MarkTransferFailed from %s: err = %v, want ErrInvalidTransition", from, err)
		}
	}

	p := storedPayment(domain.PaymentCaptured)
	_ = p.MarkTransferFailed("first try failed", taskT0)
	if err := p.MarkTransferred("tr_1", taskT0); err != nil || p.Record().TransferFailedReason != "" {
		t.Errorf("transfer after a failure: %v, reason %q; want it cleared", err, p.Record().TransferFailedReason)
	}
}

func TestAuthorizationClearsDeclineCode(t *testing.T) {
	p := storedPayment(domain.PaymentAuthorizing)
	if err := p.RequireCustomerAction("pi_1", "pi_1_secret", "insufficient_funds", taskT0); err != nil {
		t.Fatal(err)
	}
	if err := p.MarkAuthorized("pi_1", "ch_1", taskT0.Add(time.Hour), taskT0); err != nil {
		t.Fatal(err)
	}
	if r := p.Record(); r.DeclineCode != "" || r.StripePaymentIntentID != "pi_1" || r.StripeChargeID != "ch_1" {
		t.Errorf("after authorization: %+v, want no decline code and the Stripe ids", r)
	}
}

func TestParseStep(t *testing.T) {
	for _, s := range []string{"authorize", "capture", "transfer", "release"} {
		if got, err := domain.ParseStep(s); err != nil || string(got) != s {
			t.Errorf("ParseStep(%q) = %q, %v", s, got, err)
		}
	}
	for _, s := range []string{"", "Capture", "no_such_step"} {
		if _, err := domain.ParseStep(s); err == nil {
			t.Errorf("ParseStep(%q) succeeded", s)
		}
	}
}
