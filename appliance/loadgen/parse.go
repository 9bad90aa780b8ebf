package loadgen

import (
	"bufio"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
)

// Scenarios are the scenario names, in the order "all" runs them.
var Scenarios = []string{"smtp", "deliver", "imap", "pop3", "pec"}

// ParseScenarios reads a comma-separated list of scenario names ("all":
// every one of Scenarios). Duplicates are dropped; the order is kept.
func ParseScenarios(s string) ([]string, error) {
	var out []string
	for _, name := range strings.Split(s, ",") {
		name = strings.ToLower(strings.TrimSpace(name))
		switch {
		case name == "all":
			for _, n := range Scenarios {
				out = appendNew(out, n)
			}
		case isScenario(name):
			out = appendNew(out, name)
		case name == "":
			return nil, fmt.Errorf("empty scenario name in %q", s)
		default:
			return nil, fmt.Errorf("unknown scenario %q (want %s or all)", name, strings.Join(Scenarios, ","))
		}
	}
	return out, nil
}

func isScenario(name string) bool {
	for _, n := range Scenarios {
		if n == name {
			return true
		}
	}
	return false
}

func appendNew(l []string, s string) []string {
	for _, x := range l {
		if x == s {
			return l
		}
	}
	return append(l, s)
}

// TLSMode is how a connection is secured.
type TLSMode int

const (
	// Implicit is TLS from the first byte (465, 993, 995).
	Implicit TLSMode = iota
	// StartTLS upgrades a plain connection (STARTTLS, STLS).
	StartTLS
	// NoTLS stays in plaintext.
	NoTLS
)

func (m TLSMode) String() string {
	switch m {
	case StartTLS:
		return "starttls"
	case NoTLS:
		return "none"
	}
	return "implicit"
}

// ParseTLSMode reads implicit, starttls or none.
func ParseTLSMode(s string) (TLSMode, error) {
	switch strings.ToLower(s) {
	case "implicit", "tls":
		return Implicit, nil
	case "starttls", "stls":
		return StartTLS, nil
	case "none", "plain":
		return NoTLS, nil
	}
	return 0, fmt.Errorf("TLS mode %q: want implicit, starttls or none", s)
}

// SizeWeight is one message size of a mix and its relative weight.
type SizeWeight struct {
	Size   int
	Weight int
}

// SizeMix is the message sizes a run sends, each picked in proportion to
// its weight.
type SizeMix []SizeWeight

// ParseSize reads a size in bytes: 1024, 10k, 2m (k = 1024 bytes, m = 1024 k).
func ParseSize(s string) (int, error) {
	t := strings.ToLower(strings.TrimSpace(s))
	mult := 1
	switch {
	case strings.HasSuffix(t, "k"), strings.HasSuffix(t, "kb"), strings.HasSuffix(t, "kib"):
		mult, t = 1<<10, strings.TrimRight(t, "kib")
	case strings.HasSuffix(t, "m"), strings.HasSuffix(t, "mb"), strings.HasSuffix(t, "mib"):
		mult, t = 1<<20, strings.TrimRight(t, "mib")
	}
	n, err := strconv.Atoi(t)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("size %q: want a positive number of bytes, like 1024, 10k or 1m", s)
	}
	if n > (64<<20)/mult {
		return 0, fmt.Errorf("size %q: larger than 64m", s)
	}
	return n * mult, nil
}

// ParseSizes reads a size mix, "1k:80,10k:15,100k:5" (size:weight, comma
// separated); a size without a weight weighs 1, so "1024" is a single size.
func ParseSizes(s string) (SizeMix, error) {
	if strings.TrimSpace(s) == "" {
		return nil, errors.New("empty size mix")
	}
	var mix SizeMix
	for _, item := range strings.Split(s, ",") {
		sz, w, hasWeight := strings.Cut(item, ":")
		size, err := ParseSize(sz)
		if err != nil {
			return nil, err
		}
		weight := 1
		if hasWeight {
			weight, err = strconv.Atoi(strings.TrimSpace(w))
			if err != nil || weight <= 0 {
				return nil, fmt.Errorf("size mix %q: weight %q is not a positive whole number", s, w)
			}
		}
		mix = append(mix, SizeWeight{Size: size, Weight: weight})
	}
	return mix, nil
}

// Pick chooses a size with probability proportional to its weight.
func (m SizeMix) Pick(rng *rand.Rand) int {
	total := 0
	for _, sw := range m {
		total += sw.Weight
	}
	if total <= 0 {
		return 1024
	}
	n := rng.IntN(total)
	for _, sw := range m {
		if n < sw.Weight {
			return sw.Size
		}
		n -= sw.Weight
	}
	return m[len(m)-1].Size
}

// Mean is the mix's average message size.
func (m SizeMix) Mean() float64 {
	total, sum := 0, 0.0
	for _, sw := range m {
		total += sw.Weight
		sum += float64(sw.Size) * float64(sw.Weight)
	}
	if total == 0 {
		return 0
	}
	return sum / float64(total)
}

func (m SizeMix) String() string {
	var parts []string
	for _, sw := range m {
		parts = append(parts, fmt.Sprintf("%d:%d", sw.Size, sw.Weight))
	}
	return strings.Join(parts, ",")
}

// User is a mailbox the load generator logs in as.
type User struct {
	Address  string
	Password string
}

// ExpandUsers makes n users from a pattern: "bench%d@bench.test" gives
// bench1@bench.test … benchN@bench.test; a pattern without %d is a single
// address, and then n must be 1.
func ExpandUsers(pattern string, n int, password string) ([]User, error) {
	if pattern == "" {
		return nil, errors.New("no user: give --user ADDRESS or PATTERN, or --users-file")
	}
	if n < 1 {
		return nil, fmt.Errorf("--users %d: want at least 1", n)
	}
	verbs := strings.Count(strings.ReplaceAll(pattern, "%%", ""), "%")
	switch {
	case verbs == 0 && n > 1:
		return nil, fmt.Errorf("--users %d needs a %%d in --user %q", n, pattern)
	case verbs > 1 || (verbs == 1 && !strings.Contains(pattern, "%d")):
		return nil, fmt.Errorf("--user %q: the only verb allowed is one %%d", pattern)
	}
	users := make([]User, n)
	for i := range users {
		addr := strings.ReplaceAll(pattern, "%%", "%")
		if verbs == 1 {
			addr = fmt.Sprintf(pattern, i+1)
		}
		if !strings.Contains(addr, "@") {
			return nil, fmt.Errorf("--user %q: %q is not an address", pattern, addr)
		}
		users[i] = User{Address: addr, Password: password}
	}
	return users, nil
}

// ReadUsersFile reads "address password" lines (the password is the rest
// of the line after the first blanks); blank lines and lines starting with
// # are skipped.
func ReadUsersFile(path string) ([]User, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var users []User
	sc := bufio.NewScanner(f)
	for line := 1; sc.Scan(); line++ {
		t := strings.TrimSpace(sc.Text())
		if t == "" || strings.HasPrefix(t, "#") {
			continue
		}
		addr, pw, ok := strings.Cut(t, " ")
		if !ok {
			addr, pw, ok = strings.Cut(t, "\t")
		}
		pw = strings.TrimSpace(pw)
		if !ok || pw == "" || !strings.Contains(addr, "@") {
			return nil, fmt.Errorf("%s:%d: want \"address password\"", path, line)
		}
		users = append(users, User{Address: addr, Password: pw})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(users) == 0 {
		return nil, fmt.Errorf("%s: no users", path)
	}
	return users, nil
}
