// Package bytesize reads and prints the sizes an administrator types, such
// as a mailbox quota: "1073741824", "500M", "1.5g", "2 GiB". Units are
// binary (K = 1024) whatever their spelling, as the README's "1 GiB"
// says. It only converts strings and numbers; what a size limits is its
// caller's business.
package bytesize

import (
	"fmt"
	"math"
	"math/big"
	"strconv"
	"strings"
)

// maxInput bounds what Parse reads: a size needs a few characters, and
// big arithmetic on a megabyte of digits is not worth doing.
const maxInput = 64

// units are the multipliers by the first letter of a suffix.
var units = [...]struct {
	letter byte
	shift  uint
}{{'K', 10}, {'M', 20}, {'G', 30}, {'T', 40}}

// SyntaxError is every error of Parse: what is wrong with the input,
// for the caller to put beside the name of what was being set.
type SyntaxError struct{ Reason string }

func (e *SyntaxError) Error() string { return e.Reason }

func syntaxError(format string, args ...any) error {
	return &SyntaxError{Reason: fmt.Sprintf(format, args...)}
}

// Parse reads a number of bytes, optionally with a fraction and a unit:
// K, M, G or T (1024-based), in any case, optionally followed by B or iB
// ("1k", "500M", "1.5G", "2TiB", "64KB"), and space between number and
// unit. A plain B means bytes. A fraction that does not come to a whole
// number of bytes is rounded to the nearest one. Negative numbers and
// sizes beyond an int64 are errors.
func Parse(s string) (int64, error) {
	if len(s) > maxInput {
		return 0, syntaxError("longer than %d characters", maxInput)
	}
	t := strings.TrimSpace(s)
	// The number: digits, optionally a point and more digits.
	i := 0
	for i < len(t) && t[i] >= '0' && t[i] <= '9' {
		i++
	}
	intDigits := i
	if i < len(t) && t[i] == '.' {
		i++
		for i < len(t) && t[i] >= '0' && t[i] <= '9' {
			i++
		}
		if i == intDigits+1 {
			return 0, syntaxError("no digit after the point")
		}
	}
	if intDigits == 0 {
		return 0, syntaxError("a size starts with a digit")
	}
	num, unit := t[:i], strings.TrimSpace(t[i:])
	shift, err := parseUnit(unit)
	if err != nil {
		return 0, err
	}
	r, ok := new(big.Rat).SetString(num)
	if !ok {
		return 0, syntaxError("%q is not a number", num)
	}
	r.Mul(r, new(big.Rat).SetInt(new(big.Int).Lsh(big.NewInt(1), shift)))
	// Round half up: r is not negative.
	n := new(big.Int).Quo(new(big.Int).Add(new(big.Int).Mul(r.Num(), big.NewInt(2)), r.Denom()), new(big.Int).Mul(r.Denom(), big.NewInt(2)))
	if !n.IsInt64() {
		return 0, syntaxError("larger than %d bytes", int64(math.MaxInt64))
	}
	return n.Int64(), nil
}

// parseUnit returns the power of two a suffix stands for.
func parseUnit(u string) (uint, error) {
	if u == "" || strings.EqualFold(u, "B") {
		return 0, nil
	}
	letter := u[0] &^ 0x20 // upper case, for ASCII letters
	if rest := strings.ToLower(u[1:]); rest == "" || rest == "b" || rest == "ib" {
		for _, x := range units {
			if letter == x.letter {
				return x.shift, nil
			}
		}
	}
	return 0, syntaxError("unknown unit %q", u)
}

// Format prints n in the shortest form Parse reads back as n exactly:
// "1G", "1.5G", "500M", "1000" (a size that is no whole or two-decimal
// number of any unit is printed in bytes).
func Format(n int64) string {
	if n < 0 {
		return strconv.FormatInt(n, 10)
	}
	for i := len(units) - 1; i >= 0; i-- {
		unit := int64(1) << units[i].shift
		if n < unit {
			continue
		}
		whole, rem := n/unit, n%unit
		// rem < 2^40, so rem*100 cannot overflow.
		if rem*100%unit != 0 {
			continue
		}
		s := strconv.FormatInt(whole, 10)
		if c := rem * 100 / unit; c != 0 {
			s += strings.TrimRight(fmt.Sprintf(".%02d", c), "0")
		}
		return s + string(units[i].letter)
	}
	return strconv.FormatInt(n, 10)
}

// Human prints n approximately, as ls -h does: "512", "1.5K", "3.2M",
// "1G" (one decimal at most; not meant to be read back exactly).
func Human(n int64) string {
	for i := len(units) - 1; i >= 0; i-- {
		unit := int64(1) << units[i].shift
		if n >= unit {
			s := strconv.FormatFloat(float64(n)/float64(unit), 'f', 1, 64)
			return strings.TrimSuffix(s, ".0") + string(units[i].letter)
		}
	}
	return strconv.FormatInt(n, 10)
}
