package target

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// An operator writes the S3 credentials in a file next to sigillo.toml, in
// the KEY=VALUE form of an environment file.
func TestReadCredentials(t *testing.T) {
	const secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
	good := []struct {
		name, text string
		want       s3Credentials
	}{
		{"plain", "AWS_ACCESS_KEY_ID=AKIDEXAMPLE\nAWS_SECRET_ACCESS_KEY=" + secret + "\n",
			s3Credentials{"AKIDEXAMPLE", secret, ""}},
		{"comments, blanks, spaces, CRLF, no final newline",
			"# backups to the office NAS\r\n\r\n  AWS_ACCESS_KEY_ID = AKIDEXAMPLE \r\n\t# secret below\nAWS_SECRET_ACCESS_KEY=" + secret,
			s3Credentials{"AKIDEXAMPLE", secret, ""}},
		{"quotes and export", "export AWS_ACCESS_KEY_ID=\"AKIDEXAMPLE\"\nAWS_SECRET_ACCESS_KEY='" + secret + "'\nAWS_SESSION_TOKEN=\"tok=en#1\"\n",
			s3Credentials{"AKIDEXAMPLE", secret, "tok=en#1"}},
		{"value with = and #", "AWS_ACCESS_KEY_ID=AKID\nAWS_SECRET_ACCESS_KEY=a=b#c\n", s3Credentials{"AKID", "a=b#c", ""}},
		{"other keys ignored", "AWS_REGION=eu-south-1\nAWS_ACCESS_KEY_ID=AKID\nAWS_SECRET_ACCESS_KEY=x\n", s3Credentials{"AKID", "x", ""}},
		{"unknown key ignored, quotes and all", "AWS_ACCESS_KEY_ID=A\nX=\"unterminated\n" + secret + "=x\nAWS_SECRET_ACCESS_KEY=y\n", s3Credentials{"A", "y", ""}},
		{"byte order mark", "\ufeffAWS_ACCESS_KEY_ID=AKID\nAWS_SECRET_ACCESS_KEY=x\n", s3Credentials{"AKID", "x", ""}},
	}
	dir := t.TempDir()
	for _, c := range good {
		p := filepath.Join(dir, "creds")
		if err := os.WriteFile(p, []byte(c.text), 0o600); err != nil {
			t.Fatal(err)
		}
		got, err := readCredentials(p)
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		if got != c.want {
			t.Errorf("%s: got %#v, want %#v", c.name, got, c.want)
		}
	}

	bad := []struct{ name, text, want string }{
		{"empty file", "", "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY missing"},
		{"only comments", "# AWS_ACCESS_KEY_ID=AKID\n# AWS_SECRET_ACCESS_KEY=" + secret + "\n", "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY missing"},
		{"no secret", "AWS_ACCESS_KEY_ID=AKID\n", "AWS_SECRET_ACCESS_KEY missing"},
		{"no key id", "AWS_SECRET_ACCESS_KEY=" + secret + "\n", "AWS_ACCESS_KEY_ID missing"},
		{"empty secret", "AWS_ACCESS_KEY_ID=AKID\nAWS_SECRET_ACCESS_KEY=\n", "line 2: AWS_SECRET_ACCESS_KEY is empty"},
		{"empty quoted secret", "AWS_ACCESS_KEY_ID=AKID\nAWS_SECRET_ACCESS_KEY=''\n", "line 2: AWS_SECRET_ACCESS_KEY is empty"},
		{"not key=value", "AWS_ACCESS_KEY_ID=AKID\n" + secret + "\n", "line 2: not KEY=VALUE"},
		{"unterminated quote", "AWS_ACCESS_KEY_ID=AKID\nAWS_SECRET_ACCESS_KEY=\"" + secret + "\n", "line 2: AWS_SECRET_ACCESS_KEY: unterminated quote"},
		{"lone quote", "AWS_ACCESS_KEY_ID=\"\nAWS_SECRET_ACCESS_KEY=x\n", "line 1: AWS_ACCESS_KEY_ID: unterminated quote"},
		{"twice", "AWS_ACCESS_KEY_ID=A\nAWS_SECRET_ACCESS_KEY=" + secret + "\nAWS_SECRET_ACCESS_KEY=" + secret + "\n", "line 3: AWS_SECRET_ACCESS_KEY given twice"},
		{"no key", "=" + secret + "\n", "line 1: no key"},
		{"too big", strings.Repeat("# padding\n", 7000), "longer than"},
		{"one huge line", "AWS_SECRET_ACCESS_KEY=" + strings.Repeat("x", 70000), "longer than"},
	}
	for _, c := range bad {
		p := filepath.Join(dir, "creds")
		if err := os.WriteFile(p, []byte(c.text), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := readCredentials(p)
		if err == nil {
			t.Errorf("%s: read, want an error with %q", c.name, c.want)
			continue
		}
		if !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), p) {
			t.Errorf("%s: error %q, want it to name the file and say %q", c.name, err, c.want)
		}
		if strings.Contains(err.Error(), secret) {
			t.Errorf("%s: the error shows the secret: %v", c.name, err)
		}
	}
	if _, err := readCredentials(filepath.Join(dir, "absent")); err == nil || !strings.Contains(err.Error(), "credentials file") {
		t.Errorf("absent file: %v", err)
	}
}

// Printing credentials, by mistake, shows the key id but not the secret.
func TestCredentialsNotPrinted(t *testing.T) {
	c := s3Credentials{"AKIDEXAMPLE", "the-secret", "the-token"}
	for _, s := range []string{c.String(), strings.TrimSpace(sprintAll(c))} {
		if strings.Contains(s, "the-secret") || strings.Contains(s, "the-token") || !strings.Contains(s, "AKIDEXAMPLE") {
			t.Errorf("printed as %q", s)
		}
	}
}

func sprintAll(c s3Credentials) string {
	return fmt.Sprintf("%v %+v %#v %s", c, c, c, c)
}

// The only texts a credentials error may hold: line numbers and key names,
// never a value nor an unknown key (which could be a pasted secret).
var credentialsError = regexp.MustCompile(`^(line \d+: (not KEY=VALUE|no key before =|(AWS_ACCESS_KEY_ID|AWS_SECRET_ACCESS_KEY|AWS_SESSION_TOKEN)(: unterminated quote| given twice| is empty| holds a control character))|(AWS_ACCESS_KEY_ID|AWS_SECRET_ACCESS_KEY)( and AWS_SECRET_ACCESS_KEY)? missing|(a line )?longer than \d+ bytes)$`)

// FuzzParseCredentials: no file makes the parser panic, an error holds
// nothing of the file but line numbers and key names, and what parses is
// complete.
func FuzzParseCredentials(f *testing.F) {
	f.Add("AWS_ACCESS_KEY_ID=AKID\nAWS_SECRET_ACCESS_KEY=x\n")
	f.Add("# c\nexport AWS_ACCESS_KEY_ID='a'\nAWS_SECRET_ACCESS_KEY=\"b\"\nAWS_SESSION_TOKEN=c")
	f.Add("AWS_SECRET_ACCESS_KEY=\"")
	f.Add("=\n==\nsecret\"x=\"y\n")
	f.Fuzz(func(t *testing.T, text string) {
		c, err := parseCredentials(strings.NewReader(text))
		if err != nil {
			if !credentialsError.MatchString(err.Error()) {
				t.Fatalf("error %q is not one of the known forms", err)
			}
			return
		}
		if c.AccessKeyID == "" || c.SecretAccessKey == "" {
			t.Fatalf("accepted incomplete credentials %#v", c)
		}
	})
}
