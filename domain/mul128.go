package domain

import "math/bits"

// mulDiv128 returns the quotient and remainder of a×b÷d using a 128-bit
// intermediate product. The quotient saturates at the maximum uint64 when it
// would not fit, which callers treat as overflow.
func mulDiv128(a, b, d uint64) (q, r uint64) {
	hi, lo := bits.Mul64(a, b)
	if hi >= d {
		return ^uint64(0), 0
	}
	return bits.Div64(hi, lo, d)
}
