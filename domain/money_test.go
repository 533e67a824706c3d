package domain_test

import (
	"errors"
	"math"
	"math/big"
	"math/rand/v2"
	"testing"

	"github.com/taskpod/billing/domain"
)

// platformRate is the production default fee, 2.5 %.
const platformRate domain.BasisPoints = 250

func TestPlatformFeeTable(t *testing.T) {
	cases := []struct {
		captured, fee, agent int64
	}{
		{100, 3, 97},
		{300, 8, 292},
		{50, 1, 49},
		{1000, 25, 975},
		{0, 0, 0},
		{1, 0, 1},
		{20, 1, 19}, // 0.5 rounds up
		{19, 0, 19}, // 0.475 rounds down
		{math.MaxInt64, 230584300921369395, math.MaxInt64 - 230584300921369395},
	}
	for _, c := range cases {
		fee, agent, err := domain.PlatformFee(domain.MustMoney(c.captured, "usd"), platformRate)
		if err != nil {
			t.Fatalf("PlatformFee(%d): %v", c.captured, err)
		}
		if fee.Amount() != c.fee {
			t.Errorf("PlatformFee(%d) fee = %d, want %d", c.captured, fee.Amount(), c.fee)
		}
		if agent.Amount() != c.agent {
			t.Errorf("PlatformFee(%d) agent share = %d, want %d", c.captured, agent.Amount(), c.agent)
		}
		if fee.Currency() != "usd" || agent.Currency() != "usd" {
			t.Errorf("PlatformFee(%d) currencies = %s/%s, want usd", c.captured, fee.Currency(), agent.Currency())
		}
	}
}

func TestPlatformFeeExtremeRates(t *testing.T) {
	amount := domain.MustMoney(math.MaxInt64, "usd")

	fee, agent, err := domain.PlatformFee(amount, 0)
	if err != nil {
		t.Fatal(err)
	}
	if fee.Amount() != 0 || agent.Amount() != math.MaxInt64 {
		t.Errorf("rate 0: fee %d agent %d, want 0 and the whole amount", fee.Amount(), agent.Amount())
	}

	fee, agent, err = domain.PlatformFee(amount, 10000)
	if err != nil {
		t.Fatal(err)
	}
	if fee.Amount() != math.MaxInt64 || agent.Amount() != 0 {
		t.Errorf("rate 10000: fee %d agent %d, want the whole amount and 0", fee.Amount(), agent.Amount())
	}
}

// halfUpReference computes half-up(a × n ÷ d) with math/big; ok is false
// when the result does not fit in int64.
func halfUpReference(a, n, d int64) (int64, bool) {
	product := new(big.Int).Mul(big.NewInt(a), big.NewInt(n))
	q, r := new(big.Int).QuoRem(product, big.NewInt(d), new(big.Int))
	if new(big.Int).Mul(r, big.NewInt(2)).Cmp(big.NewInt(d)) >= 0 {
		q.Add(q, big.NewInt(1))
	}
	if !q.IsInt64() {
		return 0, false
	}
	return q.Int64(), true
}

// randomAmount draws amounts of every magnitude, not only huge ones.
func randomAmount(rng *rand.Rand) int64 {
	switch rng.IntN(4) {
	case 0:
		return rng.Int64N(10_000)
	case 1:
		return rng.Int64N(1 << 40)
	case 2:
		return math.MaxInt64 - rng.Int64N(1_000_000)
	}
	return rng.Int64()
}

func TestPlatformFeeProperties(t *testing.T) {
	rng := rand.New(rand.NewPCG(20240601, 7))
	for i := 0; i < 100_000; i++ {
		amount := randomAmount(rng)
		rate := domain.BasisPoints(rng.Int64N(10001))

		fee, agent, err := domain.PlatformFee(domain.MustMoney(amount, "eur"), rate)
		if err != nil {
			t.Fatalf("PlatformFee(%d, %d): %v", amount, rate, err)
		}
		if fee.Amount()+agent.Amount() != amount {
			t.Fatalf("PlatformFee(%d, %d): fee %d + agent %d != amount", amount, rate, fee.Amount(), agent.Amount())
		}
		if fee.Amount() < 0 || fee.Amount() > amount {
			t.Fatalf("PlatformFee(%d, %d): fee %d outside 0..amount", amount, rate, fee.Amount())
		}
		want, ok := halfUpReference(amount, int64(rate), 10000)
		if !ok {
			t.Fatalf("reference overflowed for %d × %d", amount, rate)
		}
		if fee.Amount() != want {
			t.Fatalf("PlatformFee(%d, %d) fee = %d, big.Int reference = %d", amount, rate, fee.Amount(), want)
		}
	}
}

func TestMulRateHalfUpMatchesReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(99, 1))
	for i := 0; i < 100_000; i++ {
		a, n := randomAmount(rng), randomAmount(rng)
		d := randomAmount(rng) + 1
		if d <= 0 {
			d = math.MaxInt64
		}
		got, err := domain.MulRateHalfUp(a, n, d)
		want, ok := halfUpReference(a, n, d)
		if !ok {
			if !errors.Is(err, domain.ErrAmountOverflow) {
				t.Fatalf("MulRateHalfUp(%d, %d, %d) = %d, %v; want ErrAmountOverflow", a, n, d, got, err)
			}
			continue
		}
		if err != nil || got != want {
			t.Fatalf("MulRateHalfUp(%d, %d, %d) = %d, %v; want %d", a, n, d, got, err, want)
		}
	}
}

// The 128-bit quotient can be exactly 2^64-1 with a remainder that rounds
// it up. That result is far above MaxInt64, so it must be reported as
// overflow instead of wrapping to zero.
func TestMulRateHalfUpRoundsPastUint64(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 5))
	two64 := new(big.Int).Lsh(big.NewInt(1), 64)
	found := 0
	for i := 0; i < 10_000 && found < 50; i++ {
		a := math.MaxInt64 - rng.Int64N(1<<40)
		b := math.MaxInt64 - rng.Int64N(1<<40)
		product := new(big.Int).Mul(big.NewInt(a), big.NewInt(b))
		// d = ceil(a×b ÷ 2^64) puts the quotient just below 2^64.
		d := new(big.Int).Add(product, new(big.Int).Sub(two64, big.NewInt(1)))
		d.Div(d, two64)
		q, r := new(big.Int).QuoRem(product, d, new(big.Int))
		roundsUp := new(big.Int).Mul(r, big.NewInt(2)).Cmp(d) >= 0
		if q.Cmp(new(big.Int).Sub(two64, big.NewInt(1))) != 0 || !roundsUp {
			continue
		}
		found++
		got, err := domain.MulRateHalfUp(a, b, d.Int64())
		if !errors.Is(err, domain.ErrAmountOverflow) {
			t.Fatalf("MulRateHalfUp(%d, %d, %d) = %d, %v; want ErrAmountOverflow", a, b, d.Int64(), got, err)
		}
	}
	if found == 0 {
		t.Fatal("the search found no operands whose quotient is 2^64-1 and rounds up")
	}
}

func TestMulRateHalfUpRejectsNegativeOperands(t *testing.T) {
	for _, c := range [][3]int64{{-1, 1, 1}, {1, -1, 1}, {1, 1, 0}, {1, 1, -5}} {
		if _, err := domain.MulRateHalfUp(c[0], c[1], c[2]); err == nil {
			t.Errorf("MulRateHalfUp(%d, %d, %d) succeeded, want an error", c[0], c[1], c[2])
		}
	}
}

func TestMoneyAdd(t *testing.T) {
	sum, err := domain.MustMoney(150, "usd").Add(domain.MustMoney(250, "usd"))
	if err != nil {
		t.Fatal(err)
	}
	if sum.Amount() != 400 || sum.Currency() != "usd" {
		t.Errorf("150 + 250 usd = %d %s, want 400 usd", sum.Amount(), sum.Currency())
	}

	if _, err := domain.MustMoney(1, "usd").Add(domain.MustMoney(1, "eur")); !errors.Is(err, domain.ErrCurrencyMismatch) {
		t.Errorf("usd + eur: err = %v, want ErrCurrencyMismatch", err)
	}

	edge, err := domain.MustMoney(math.MaxInt64-1, "usd").Add(domain.MustMoney(1, "usd"))
	if err != nil || edge.Amount() != math.MaxInt64 {
		t.Errorf("(MaxInt64-1) + 1 = %d, %v; want MaxInt64", edge.Amount(), err)
	}
	if _, err := domain.MustMoney(math.MaxInt64, "usd").Add(domain.MustMoney(1, "usd")); !errors.Is(err, domain.ErrAmountOverflow) {
		t.Errorf("MaxInt64 + 1: err = %v, want ErrAmountOverflow", err)
	}
	if _, err := domain.MustMoney(math.MaxInt64/2+1, "jpy").Add(domain.MustMoney(math.MaxInt64/2+1, "jpy")); !errors.Is(err, domain.ErrAmountOverflow) {
		t.Errorf("two halves of MaxInt64 + 1: err = %v, want ErrAmountOverflow", err)
	}
}

func TestMoneySub(t *testing.T) {
	diff, err := domain.MustMoney(400, "gbp").Sub(domain.MustMoney(150, "gbp"))
	if err != nil || diff.Amount() != 250 || diff.Currency() != "gbp" {
		t.Errorf("400 - 150 gbp = %v, %v; want 250 gbp", diff, err)
	}
	zero, err := domain.MustMoney(7, "gbp").Sub(domain.MustMoney(7, "gbp"))
	if err != nil || !zero.IsZero() {
		t.Errorf("7 - 7 = %v, %v; want zero", zero, err)
	}
	if _, err := domain.MustMoney(1, "gbp").Sub(domain.MustMoney(2, "gbp")); !errors.Is(err, domain.ErrNegativeAmount) {
		t.Errorf("1 - 2: err = %v, want ErrNegativeAmount", err)
	}
	if _, err := domain.MustMoney(5, "gbp").Sub(domain.MustMoney(1, "usd")); !errors.Is(err, domain.ErrCurrencyMismatch) {
		t.Errorf("gbp - usd: err = %v, want ErrCurrencyMismatch", err)
	}
}

func TestMoneyArithmeticProperties(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 13))
	for i := 0; i < 50_000; i++ {
		a, b := randomAmount(rng), randomAmount(rng)
		sum, err := domain.MustMoney(a, "usd").Add(domain.MustMoney(b, "usd"))
		exact := new(big.Int).Add(big.NewInt(a), big.NewInt(b))
		if !exact.IsInt64() {
			if !errors.Is(err, domain.ErrAmountOverflow) {
				t.Fatalf("%d + %d: %v, %v; want ErrAmountOverflow", a, b, sum, err)
			}
			continue
		}
		if err != nil || sum.Amount() != exact.Int64() {
			t.Fatalf("%d + %d = %d, %v; want %d", a, b, sum.Amount(), err, exact.Int64())
		}
		back, err := sum.Sub(domain.MustMoney(b, "usd"))
		if err != nil || back.Amount() != a {
			t.Fatalf("(%d + %d) - %d = %d, %v; want %d", a, b, b, back.Amount(), err, a)
		}
	}
}

func TestNewMoneyRejectsInvalidInput(t *testing.T) {
	if _, err := domain.NewMoney(-1, "usd"); !errors.Is(err, domain.ErrNegativeAmount) {
		t.Errorf("NewMoney(-1): err = %v, want ErrNegativeAmount", err)
	}
	if _, err := domain.NewMoney(1, "xyz"); !errors.Is(err, domain.ErrUnsupportedCurrency) {
		t.Errorf("NewMoney(xyz): err = %v, want ErrUnsupportedCurrency", err)
	}
	if _, err := domain.NewMoney(1, "USD"); !errors.Is(err, domain.ErrUnsupportedCurrency) {
		t.Errorf("NewMoney(USD): err = %v; Money takes parsed, lower-case codes only", err)
	}
	defer func() {
		if recover() == nil {
			t.Error("MustMoney(-5) did not panic")
		}
	}()
	domain.MustMoney(-5, "usd")
}

func TestParseCurrency(t *testing.T) {
	for in, want := range map[string]domain.Currency{"usd": "usd", " USD ": "usd", "Jpy": "jpy", "krw": "krw"} {
		got, err := domain.ParseCurrency(in)
		if err != nil || got != want {
			t.Errorf("ParseCurrency(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"", "us", "xxx", "usdd"} {
		if _, err := domain.ParseCurrency(in); !errors.Is(err, domain.ErrUnsupportedCurrency) {
			t.Errorf("ParseCurrency(%q): err = %v, want ErrUnsupportedCurrency", in, err)
		}
	}
}

func TestCurrencyExponents(t *testing.T) {
	cases := []struct {
		currency domain.Currency
		exponent int
	}{
		{"usd", 2}, {"eur", 2}, {"gbp", 2}, {"jpy", 0}, {"krw", 0}, {"vnd", 0}, {"clp", 0},
	}
	for _, c := range cases {
		if got := c.currency.Exponent(); got != c.exponent {
			t.Errorf("%s exponent = %d, want %d", c.currency, got, c.exponent)
		}
		if got := c.currency.IsZeroDecimal(); got != (c.exponent == 0) {
			t.Errorf("%s IsZeroDecimal = %v, want %v", c.currency, got, c.exponent == 0)
		}
	}
}

func TestMoneyString(t *testing.T) {
	cases := []struct {
		money domain.Money
		want  string
	}{
		{domain.MustMoney(100, "usd"), "1.00 USD"},
		{domain.MustMoney(5, "usd"), "0.05 USD"},
		{domain.MustMoney(123456, "eur"), "1234.56 EUR"},
		{domain.MustMoney(0, "usd"), "0.00 USD"},
		{domain.MustMoney(100, "jpy"), "100 JPY"},
		{domain.MustMoney(5000, "krw"), "5000 KRW"},
		{domain.MustMoney(math.MaxInt64, "usd"), "92233720368547758.07 USD"},
	}
	for _, c := range cases {
		if got := c.money.String(); got != c.want {
			t.Errorf("String() = %q, want %q", got, c.want)
		}
	}
}

func TestZeroDecimalFeeIsWholeUnits(t *testing.T) {
	// ¥100 is one hundred yen, not one yen: the fee is 2.5 yen rounded up.
	fee, agent, err := domain.PlatformFee(domain.MustMoney(100, "jpy"), platformRate)
	if err != nil {
		t.Fatal(err)
	}
	if fee.Amount() != 3 || agent.Amount() != 97 || fee.Currency() != "jpy" {
		t.Errorf("¥100: fee %v agent %v, want 3 JPY and 97 JPY", fee, agent)
	}
}

func TestMinimumCharge(t *testing.T) {
	for cur, want := range map[domain.Currency]int64{"usd": 50, "jpy": 50, "gbp": 30, "krw": 100} {
		if got := cur.MinimumCharge(); got != want {
			t.Errorf("%s minimum charge = %d, want %d", cur, got, want)
		}
	}
}

func TestParseBasisPoints(t *testing.T) {
	for _, v := range []int64{0, 1, 250, 10000} {
		got, err := domain.ParseBasisPoints(v)
		if err != nil || int64(got) != v {
			t.Errorf("ParseBasisPoints(%d) = %d, %v", v, got, err)
		}
	}
	for _, v := range []int64{-1, 10001, math.MaxInt64} {
		if _, err := domain.ParseBasisPoints(v); err == nil {
			t.Errorf("ParseBasisPoints(%d) succeeded, want an error", v)
		}
	}
}
