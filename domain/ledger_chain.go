package domain

import (
	"crypto/sha256"
	"encoding/binary"
	"strconv"
	"time"
)

// SealHashSize is the length in bytes of a seal hash (SHA-256).
const SealHashSize = sha256.Size

// sealFormat names the canonical encoding below. A change to the encoding
// needs a new name, so old seals stay verifiable by the old rules.
const sealFormat = "taskpod-ledger-seal-v1"

// SealedEntry is one stored entry as the chain covers it, with the columns
// the database copies from its transaction.
type SealedEntry struct {
	ID          int64
	Account     AccountID
	Currency    Currency
	Amount      int64
	Pending     bool
	EffectiveAt time.Time
}

// SealRecord is everything one seal hashes: the chain position, the previous
// hash and the stored transaction with its entries in id order. Entries of
// Transaction are ignored in favour of Entries, which carry the stored ids.
type SealRecord struct {
	Sequence    int64
	PrevHash    []byte
	Transaction LedgerTransaction
	RecordedAt  time.Time
	Entries     []SealedEntry
}

// SealHash returns the SHA-256 of the canonical encoding of r. Each field is
// written as its byte length (uvarint) followed by its bytes, so no choice
// of field content can make two different records encode alike. Times are
// UTC at microsecond precision, the precision PostgreSQL stores.
func SealHash(r SealRecord) []byte {
	h := sha256.New()
	var buf [binary.MaxVarintLen64]byte
	field := func(s string) {
		n := binary.PutUvarint(buf[:], uint64(len(s)))
		h.Write(buf[:n])
		h.Write([]byte(s))
	}

	t := r.Transaction
	m := t.Meta
	field(sealFormat)
	field(strconv.FormatInt(r.Sequence, 10))
	field(string(r.PrevHash))
	for _, s := range []string{
		t.ID, string(t.Kind), strconv.FormatBool(t.Pending), t.ResolvesID, t.ReversesID,
		m.Actor, m.RequestID, m.Reason, m.TaskID, m.PaymentID,
		m.Stripe.PaymentIntentID, m.Stripe.ChargeID, m.Stripe.BalanceTransactionID, m.Stripe.TransferID, m.Stripe.RefundID,
		sealTime(m.EffectiveAt), sealTime(r.RecordedAt),
		strconv.Itoa(len(r.Entries)),
	} {
		field(s)
	}
	for _, e := range r.Entries {
		field(strconv.FormatInt(e.ID, 10))
		field(string(e.Account))
		field(string(e.Currency))
		field(strconv.FormatInt(e.Amount, 10))
		field(strconv.FormatBool(e.Pending))
		field(sealTime(e.EffectiveAt))
	}
	return h.Sum(nil)
}

func sealTime(t time.Time) string {
	return t.UTC().Truncate(time.Microsecond).Format("2006-01-02T15:04:05.000000Z")
}
