package clusternet_test

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"sigillo/appliance/clusternet"
)

// TestTokenRoundTrip: `cluster token` prints a token on one line; the
// joining node reads it back from its token file, and the cluster, which
// kept only the hash, recognises it. Logging a token shows its ID, never
// its secret.
func TestTokenRoundTrip(t *testing.T) {
	ca := mustCA(t, "c")
	tok, err := clusternet.NewToken(ca.Cert)
	if err != nil {
		t.Fatal(err)
	}
	line := tok.String()
	t.Logf("token: %d characters, id %s", len(line), tok.ID)
	if len(tok.ID) < 8 || len(tok.Secret) != 32 || tok.CAPin != clusternet.Pin(ca.Cert) {
		t.Fatalf("token id %q, secret %d bytes", tok.ID, len(tok.Secret))
	}
	if strings.ContainsAny(line, " \t\r\n") || !strings.HasPrefix(line, "sgjt1.") {
		t.Fatalf("token %q is not one printable line", line)
	}
	back, err := clusternet.ParseToken(line + "\n")
	if err != nil {
		t.Fatal(err)
	}
	if back.ID != tok.ID || !bytes.Equal(back.Secret, tok.Secret) || back.CAPin != tok.CAPin {
		t.Fatal("the token read back differs")
	}
	stored := clusternet.HashSecret(tok.Secret)
	if strings.Contains(stored, string(tok.Secret)) || len(stored) != 64 {
		t.Fatalf("stored hash %q", stored)
	}
	if !back.Matches(stored) {
		t.Fatal("the token does not match its own stored hash")
	}
	other, _ := clusternet.NewToken(ca.Cert)
	if other.ID == tok.ID || other.Matches(stored) || (clusternet.Token{}).Matches(stored) || tok.Matches("") {
		t.Fatal("another token (or none) matched")
	}

	var logged bytes.Buffer
	slog.New(slog.NewTextHandler(&logged, nil)).Info("token made", "token", tok)
	secretPart := strings.Split(line, ".")[2]
	if strings.Contains(logged.String(), secretPart) || !strings.Contains(logged.String(), tok.ID) {
		t.Fatalf("log line %q", logged.String())
	}
}

// TestParseTokenErrors: each malformed token gets an error that says what
// is wrong, and none repeats the secret.
func TestParseTokenErrors(t *testing.T) {
	tok, err := clusternet.NewToken(mustCA(t, "c").Cert)
	if err != nil {
		t.Fatal(err)
	}
	p := strings.Split(tok.String(), ".")
	join := func(parts ...string) string { return strings.Join(parts, ".") }
	for _, c := range []struct{ in, want string }{
		{"", "empty"},
		{"   \n", "empty"},
		{"hello", `does not start with "sgjt1."`},
		{join("sgjt2", p[1], p[2], p[3]), "unknown version"},
		{join(p[0], p[1], p[2]), "3 dot-separated parts, want 4"},
		{join(p[0], p[1], p[2], p[3], "x"), "5 dot-separated parts"},
		{join(p[0], "abc", p[2], p[3]), "id of 3 characters"},
		{join(p[0], strings.ToUpper(p[1]), p[2], p[3]), "a character other than"},
		{join(p[0], p[1], p[2]+"!", p[3]), "secret is not base64url"},
		{join(p[0], p[1], p[2][:20], p[3]), "a secret of 15 bytes, want 32"},
		{join(p[0], p[1], p[2], p[3][:40]), "a CA pin of 30 bytes"},
		{join(p[0], p[1], p[2], p[3]+"=="), "CA pin is not base64url"},
		{join(p[0], p[1], p[2][:20]+"\n"+p[2][20:], p[3]), "secret is not base64url"},
		{strings.Repeat("x", 300), "too long"},
	} {
		_, err := clusternet.ParseToken(c.in)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("ParseToken(%.30q): %v; want an error with %q", c.in, err, c.want)
			continue
		}
		if strings.Contains(err.Error(), p[2]) {
			t.Errorf("the error %q repeats the secret", err)
		}
	}
}

// FuzzParseToken: whatever the input, ParseToken returns a token or an
// error, never panics; a token it accepts writes back as the same line.
func FuzzParseToken(f *testing.F) {
	ca, err := clusternet.NewCA("fuzz", now)
	if err != nil {
		f.Fatal(err)
	}
	tok, err := clusternet.NewToken(ca.Cert)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(tok.String())
	f.Add(tok.String() + "\n")
	f.Add("sgjt1....")
	f.Add("sgjt1.abcdefgh.x.y")
	f.Fuzz(func(t *testing.T, s string) {
		tok, err := clusternet.ParseToken(s)
		if err != nil {
			return
		}
		if got := tok.String(); got != strings.TrimSpace(s) {
			t.Fatalf("ParseToken(%q).String() = %q", s, got)
		}
		again, err := clusternet.ParseToken(tok.String())
		if err != nil || again.ID != tok.ID || !bytes.Equal(again.Secret, tok.Secret) || again.CAPin != tok.CAPin {
			t.Fatalf("round trip of %q: %v", s, err)
		}
	})
}
