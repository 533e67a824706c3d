package ports

import "github.com/taskpod/billing/domain"

// PaymentObserver is told about payment state changes after they commit,
// for metrics. Implementations must not block.
type PaymentObserver interface {
	PaymentTransitioned(to domain.PaymentStatus, currency domain.Currency, amount int64)
}

// NopObserver ignores every notification.
type NopObserver struct{}

// PaymentTransitioned does nothing.
func (NopObserver) PaymentTransitioned(domain.PaymentStatus, domain.Currency, int64) {}
