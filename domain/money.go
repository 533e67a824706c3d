package domain

import (
	"errors"
	"fmt"
	"math"
	"strings"
)

// Currency is a lower-case ISO 4217 code, the spelling Stripe uses.
type Currency string

// currencyInfo holds the facts about a currency that money arithmetic needs.
type currencyInfo struct {
	// exponent is the number of decimal digits of the minor unit as Stripe
	// counts it: 0 for zero-decimal currencies such as JPY, whose amounts are
	// never multiplied by 100.
	exponent int
	// minimumCharge is Stripe's smallest chargeable amount in minor units
	// (Stripe docs, "Minimum and maximum charge amounts").
	minimumCharge int64
}

// currencies lists the currencies this service can charge in. Stripe's
// zero-decimal currencies are marked with exponent 0.
var currencies = map[Currency]currencyInfo{
	"usd": {2, 50}, "eur": {2, 50}, "gbp": {2, 30}, "cad": {2, 50},
	"aud": {2, 50}, "nzd": {2, 50}, "sgd": {2, 50}, "chf": {2, 50},
	"dkk": {2, 250}, "nok": {2, 300}, "sek": {2, 300}, "pln": {2, 200},
	"czk": {2, 1500}, "hkd": {2, 400}, "mxn": {2, 1000}, "brl": {2, 50},
	"inr": {2, 50}, "jpy": {0, 50}, "krw": {0, 100}, "vnd": {0, 10000},
	"clp": {0, 1000}, "huf": {2, 17500},
}

// ErrUnsupportedCurrency is returned for a code outside the known table.
var ErrUnsupportedCurrency = errors.New("unsupported currency")

// ErrCurrencyMismatch is returned by arithmetic on two different currencies.
var ErrCurrencyMismatch = errors.New("currency mismatch")

// ErrAmountOverflow is returned when a result does not fit in int64.
var ErrAmountOverflow = errors.New("amount overflows int64 minor units")

// ErrNegativeAmount is returned where an amount must not be below zero.
var ErrNegativeAmount = errors.New("amount is negative")

// ParseCurrency normalises a code to lower case and checks that it is known.
func ParseCurrency(code string) (Currency, error) {
	c := Currency(strings.ToLower(strings.TrimSpace(code)))
	if _, ok := currencies[c]; !ok {
		return "", fmt.Errorf("%w: %q", ErrUnsupportedCurrency, code)
	}
	return c, nil
}

// Exponent returns the number of decimal digits of the minor unit.
func (c Currency) Exponent() int { return currencies[c].exponent }

// MinimumCharge returns Stripe's minimum charge in minor units.
func (c Currency) MinimumCharge() int64 { return currencies[c].minimumCharge }

// IsZeroDecimal reports whether amounts are whole units (JPY, KRW, ...).
func (c Currency) IsZeroDecimal() bool { return currencies[c].exponent == 0 }

// Money is a non-negative amount in minor units of one currency.
type Money struct {
	amount   int64
	currency Currency
}

// NewMoney builds an amount, rejecting negatives and unknown currencies.
func NewMoney(amount int64, currency Currency) (Money, error) {
	if amount < 0 {
		return Money{}, fmt.Errorf("%w: %d", ErrNegativeAmount, amount)
	}
	if _, ok := currencies[currency]; !ok {
		return Money{}, fmt.Errorf("%w: %q", ErrUnsupportedCurrency, currency)
	}
	return Money{amount: amount, currency: currency}, nil
}

// MustMoney is NewMoney for constants in tests and fixed tables; it panics on error.
func MustMoney(amount int64, currency Currency) Money {
	m, err := NewMoney(amount, currency)
	if err != nil {
		panic(err)
	}
	return m
}

// Amount returns the amount in minor units.
func (m Money) Amount() int64 { return m.amount }

// Currency returns the currency.
func (m Money) Currency() Currency { return m.currency }

// IsZero reports whether the amount is zero.
func (m Money) IsZero() bool { return m.amount == 0 }

// Add returns m + o; both must share a currency.
func (m Money) Add(o Money) (Money, error) {
	if m.currency != o.currency {
		return Money{}, fmt.Errorf("%w: %s + %s", ErrCurrencyMismatch, m.currency, o.currency)
	}
	if o.amount > math.MaxInt64-m.amount {
		return Money{}, ErrAmountOverflow
	}
	return Money{amount: m.amount + o.amount, currency: m.currency}, nil
}

// Sub returns m - o; both must share a currency and the result must not be negative.
func (m Money) Sub(o Money) (Money, error) {
	if m.currency != o.currency {
		return Money{}, fmt.Errorf("%w: %s - %s", ErrCurrencyMismatch, m.currency, o.currency)
	}
	if o.amount > m.amount {
		return Money{}, fmt.Errorf("%w: %d - %d", ErrNegativeAmount, m.amount, o.amount)
	}
	return Money{amount: m.amount - o.amount, currency: m.currency}, nil
}

// String formats the amount in major units with the currency, for logs and messages.
func (m Money) String() string {
	exp := m.currency.Exponent()
	if exp == 0 {
		return fmt.Sprintf("%d %s", m.amount, strings.ToUpper(string(m.currency)))
	}
	div := int64(math.Pow10(exp))
	return fmt.Sprintf("%d.%0*d %s", m.amount/div, exp, m.amount%div, strings.ToUpper(string(m.currency)))
}

// BasisPoints is a rate in hundredths of a percent: 250 is 2.5 %.
type BasisPoints int64

// maxBasisPoints bounds a fee rate to 100 %.
const maxBasisPoints BasisPoints = 10000

// ParseBasisPoints checks that a fee rate lies within 0..10000.
func ParseBasisPoints(v int64) (BasisPoints, error) {
	if v < 0 || BasisPoints(v) > maxBasisPoints {
		return 0, fmt.Errorf("fee rate %d basis points is outside 0..10000", v)
	}
	return BasisPoints(v), nil
}

// MulRateHalfUp returns half-up(amount × numerator ÷ denominator) for
// non-negative operands, without overflow for any int64 amount: the product
// is formed in 128 bits.
func MulRateHalfUp(amount, numerator, denominator int64) (int64, error) {
	if amount < 0 || numerator < 0 || denominator <= 0 {
		return 0, fmt.Errorf("invalid operands %d × %d ÷ %d", amount, numerator, denominator)
	}
	q, r := mulDiv128(uint64(amount), uint64(numerator), uint64(denominator))
	// A quotient of 2^64-1 would wrap to zero when rounded up, so overflow
	// is checked before rounding as well as after.
	if q > math.MaxInt64 {
		return 0, ErrAmountOverflow
	}
	if 2*r >= uint64(denominator) {
		q++
	}
	if q > math.MaxInt64 {
		return 0, ErrAmountOverflow
	}
	return int64(q), nil
}

// PlatformFee splits a captured amount into the platform fee, rounded half-up
// to the minor unit, and the agent's share, which is the rest, so the two
// always add up to the captured amount exactly.
func PlatformFee(captured Money, rate BasisPoints) (fee, agentShare Money, err error) {
	f, err := MulRateHalfUp(captured.amount, int64(rate), int64(maxBasisPoints))
	if err != nil {
		return Money{}, Money{}, err
	}
	fee = Money{amount: f, currency: captured.currency}
	agentShare = Money{amount: captured.amount - f, currency: captured.currency}
	return fee, agentShare, nil
}
