// Package system provides the real clock and the random id generator.
package system

import (
	"crypto/rand"
	"math/big"
	"time"
)

// Clock reads the machine's clock in UTC, truncated to microseconds, the
// precision PostgreSQL stores.
type Clock struct{}

// Now returns the current time.
func (Clock) Now() time.Time { return time.Now().UTC().Truncate(time.Microsecond) }

// IDs makes random identifiers of base62 characters.
type IDs struct{}

const alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// idLength gives 12 × log2(62) ≈ 71 bits with a prefix, 20 chars (≈119 bits)
// for prefixed ids of money objects.
const (
	shortLength = 12
	longLength  = 20
)

// NewID returns prefix_<20 random characters>, or 12 random characters
// when prefix is empty (the style of agent ids).
func (IDs) NewID(prefix string) string {
	if prefix == "" {
		return random(shortLength)
	}
	return prefix + "_" + random(longLength)
}

func random(n int) string {
	out := make([]byte, n)
	max := big.NewInt(int64(len(alphabet)))
	for i := range out {
		k, err := rand.Int(rand.Reader, max)
		if err != nil {
			panic("crypto/rand failed: " + err.Error())
		}
		out[i] = alphabet[k.Int64()]
	}
	return string(out)
}
