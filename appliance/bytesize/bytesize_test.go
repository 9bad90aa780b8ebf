package bytesize

import (
	"errors"
	"math"
	"strings"
	"testing"
)

func TestParseReadsWhatAdministratorsType(t *testing.T) {
	for _, c := range []struct {
		in   string
		want int64
	}{
		{"0", 0},
		{"1073741824", 1 << 30},
		{"1K", 1024},
		{"1k", 1024},
		{"500M", 500 << 20},
		{"500m", 500 << 20},
		{"2G", 2 << 30},
		{"2g", 2 << 30},
		{"1T", 1 << 40},
		{"1t", 1 << 40},
		{"1.5G", 1610612736},
		{"1.5g", 1610612736},
		{"0.5K", 512},
		{"1.25K", 1280},
		{"64KB", 64 << 10},
		{"64kb", 64 << 10},
		{"2GiB", 2 << 30},
		{"2gib", 2 << 30},
		{"1 GiB", 1 << 30},
		{" 300 M ", 300 << 20},
		{"100B", 100},
		{"100b", 100},
		{"1.1K", 1126}, // 1126.4, rounded to the nearest byte
		{"1.9990234375K", 2047},
		{"0.0001K", 0},
		{"007M", 7 << 20},
	} {
		got, err := Parse(c.in)
		if err != nil || got != c.want {
			t.Errorf("Parse(%q) = %d, %v; want %d", c.in, got, err, c.want)
		}
	}
}

func TestParseRefusesWithAReason(t *testing.T) {
	for _, c := range []struct{ in, reason string }{
		{"", "starts with a digit"},
		{"-1", "starts with a digit"},
		{"abc", "starts with a digit"},
		{".5G", "starts with a digit"},
		{"1.G", "no digit after the point"},
		{"1x", `unknown unit "x"`},
		{"1KK", `unknown unit "KK"`},
		{"1 G B", `unknown unit "G B"`},
		{"1e3", `unknown unit "e3"`},
		{"1,5G", `unknown unit ",5G"`},
		{"1P", `unknown unit "P"`},
		{"0x10", `unknown unit "x10"`},
		{"1.5.5G", `unknown unit ".5G"`},
		{"8388608T", "larger than"},
		{"9223372036854775808", "larger than"},
		{strings.Repeat("9", 100), "longer than"},
	} {
		n, err := Parse(c.in)
		var se *SyntaxError
		if !errors.As(err, &se) || !strings.Contains(err.Error(), c.reason) {
			t.Errorf("Parse(%q) = %d, %v; want an error saying %q", c.in, n, err, c.reason)
		}
	}
}

func TestParseRefusesBeyondInt64(t *testing.T) {
	if n, err := Parse("9223372036854775807"); err != nil || n != math.MaxInt64 {
		t.Errorf("Parse(MaxInt64) = %d, %v", n, err)
	}
	if n, err := Parse("8388607T"); err != nil || n != 8388607<<40 {
		t.Errorf("Parse(8388607T) = %d, %v", n, err)
	}
	if _, err := Parse("8388607.99999999999999T"); err == nil {
		t.Error("Parse of a size just under 2^63 bytes, rounded up to 2^63, did not fail")
	}
}

func TestFormatPrintsWhatParseReadsBack(t *testing.T) {
	for _, c := range []struct {
		in   int64
		want string
	}{
		{0, "0"},
		{1, "1"},
		{1000, "1000"},
		{1023, "1023"},
		{1024, "1K"},
		{1280, "1.25K"},
		{1536, "1.5K"},
		{1000000, "1000000"},
		{500 << 20, "500M"},
		{1 << 30, "1G"},
		{1610612736, "1.5G"},
		{1 << 40, "1T"},
		{3 << 40, "3T"},
		{1<<40 + 1<<30, "1025G"},
		{math.MaxInt64, "9223372036854775807"},
	} {
		if got := Format(c.in); got != c.want {
			t.Errorf("Format(%d) = %q, want %q", c.in, got, c.want)
		}
		if back, err := Parse(Format(c.in)); err != nil || back != c.in {
			t.Errorf("Parse(Format(%d)) = %d, %v", c.in, back, err)
		}
	}
}

func TestHumanIsShortAndApproximate(t *testing.T) {
	for _, c := range []struct {
		in   int64
		want string
	}{
		{0, "0"},
		{512, "512"},
		{1536, "1.5K"},
		{3355443, "3.2M"},
		{1 << 30, "1G"},
		{1<<30 - 1, "1024M"},
	} {
		if got := Human(c.in); got != c.want {
			t.Errorf("Human(%d) = %q, want %q", c.in, got, c.want)
		}
	}
}

// FuzzParse: any input either fails with a SyntaxError or gives a size that
// is not negative and that Format prints in a form Parse reads back to the
// same number. The seed corpus is in testdata/fuzz/FuzzParse.
func FuzzParse(f *testing.F) {
	f.Fuzz(func(t *testing.T, s string) {
		n, err := Parse(s)
		if err != nil {
			if se := (*SyntaxError)(nil); !errors.As(err, &se) {
				t.Fatalf("Parse(%q): error %v is not a SyntaxError", s, err)
			}
			return
		}
		if n < 0 {
			t.Fatalf("Parse(%q) = %d, negative", s, n)
		}
		back, err := Parse(Format(n))
		if err != nil || back != n {
			t.Fatalf("Parse(%q) = %d, Format gives %q, read back as %d, %v", s, n, Format(n), back, err)
		}
		if h := Human(n); h == "" {
			t.Fatalf("Human(%d) is empty", n)
		}
	})
}
