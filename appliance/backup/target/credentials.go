package target

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// s3Credentials sign the requests of an S3 target. Its String never shows the
// secret or the session token.
type s3Credentials struct {
	AccessKeyID     string
	SecretAccessKey string
	SessionToken    string // optional
}

// String shows the access key id only.
func (c s3Credentials) String() string {
	return fmt.Sprintf("access key %s (secret not shown)", c.AccessKeyID)
}

// GoString keeps %#v from printing the secret.
func (c s3Credentials) GoString() string { return "target.s3Credentials{" + c.String() + "}" }

// The names of the credentials, in the file and in the environment.
const (
	envAccessKeyID     = "AWS_ACCESS_KEY_ID"
	envSecretAccessKey = "AWS_SECRET_ACCESS_KEY"
	envSessionToken    = "AWS_SESSION_TOKEN"
)

// maxCredentialsFile bounds what readCredentials reads: a credentials file
// is a few lines, a bigger file is a mistake.
const maxCredentialsFile = 64 << 10

// readCredentials reads an S3 credentials file: lines KEY=VALUE, blank lines
// and lines starting with # ignored, an optional "export " before KEY, and
// VALUE optionally in single or double quotes (taken literally, no escapes).
// AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are required,
// AWS_SESSION_TOKEN is optional, other keys are ignored. Its errors name the
// file, the line and the key, never a value.
func readCredentials(path string) (s3Credentials, error) {
	fh, err := os.Open(path)
	if err != nil {
		return s3Credentials{}, fmt.Errorf("credentials file: %w", err)
	}
	defer fh.Close()
	c, err := parseCredentials(io.LimitReader(fh, maxCredentialsFile+1))
	if err != nil {
		return s3Credentials{}, fmt.Errorf("credentials file %s: %w", path, err)
	}
	return c, nil
}

func parseCredentials(r io.Reader) (s3Credentials, error) {
	var c s3Credentials
	seen := map[string]bool{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 4096), maxCredentialsFile)
	total := 0
	for line := 1; sc.Scan(); line++ {
		total += len(sc.Bytes()) + 1
		if total > maxCredentialsFile {
			return s3Credentials{}, fmt.Errorf("longer than %d bytes", maxCredentialsFile)
		}
		text := strings.TrimSpace(strings.TrimPrefix(sc.Text(), "\ufeff"))
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		text = strings.TrimPrefix(text, "export ")
		key, value, ok := strings.Cut(text, "=")
		if !ok {
			return s3Credentials{}, fmt.Errorf("line %d: not KEY=VALUE", line)
		}
		key = strings.TrimSpace(key)
		value = strings.TrimSpace(value)
		if key == "" {
			return s3Credentials{}, fmt.Errorf("line %d: no key before =", line)
		}
		// Only the three keys are looked at; anything else is ignored
		// before its text can reach an error message.
		var dst *string
		switch key {
		case envAccessKeyID:
			dst = &c.AccessKeyID
		case envSecretAccessKey:
			dst = &c.SecretAccessKey
		case envSessionToken:
			dst = &c.SessionToken
		default:
			continue
		}
		if n := len(value); n > 0 && (value[0] == '"' || value[0] == '\'') {
			if n < 2 || value[n-1] != value[0] {
				return s3Credentials{}, fmt.Errorf("line %d: %s: unterminated quote", line, key)
			}
			value = value[1 : n-1]
		}
		if seen[key] {
			return s3Credentials{}, fmt.Errorf("line %d: %s given twice", line, key)
		}
		seen[key] = true
		if value == "" {
			return s3Credentials{}, fmt.Errorf("line %d: %s is empty", line, key)
		}
		if strings.ContainsAny(value, "\x00\r\n") {
			return s3Credentials{}, fmt.Errorf("line %d: %s holds a control character", line, key)
		}
		*dst = value
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return s3Credentials{}, fmt.Errorf("a line longer than %d bytes", maxCredentialsFile)
		}
		return s3Credentials{}, err
	}
	return c, c.complete()
}

func (c s3Credentials) complete() error {
	var missing []string
	if c.AccessKeyID == "" {
		missing = append(missing, envAccessKeyID)
	}
	if c.SecretAccessKey == "" {
		missing = append(missing, envSecretAccessKey)
	}
	if len(missing) > 0 {
		return fmt.Errorf("%s missing", strings.Join(missing, " and "))
	}
	return nil
}

// credentialsFromEnv reads the credentials of the environment.
func credentialsFromEnv(getenv func(string) string) (s3Credentials, error) {
	c := s3Credentials{
		AccessKeyID:     strings.TrimSpace(getenv(envAccessKeyID)),
		SecretAccessKey: strings.TrimSpace(getenv(envSecretAccessKey)),
		SessionToken:    strings.TrimSpace(getenv(envSessionToken)),
	}
	if c.AccessKeyID == "" && c.SecretAccessKey == "" {
		return s3Credentials{}, fmt.Errorf("no credentials: give the target a credentials file, or set %s and %s in the environment", envAccessKeyID, envSecretAccessKey)
	}
	if err := c.complete(); err != nil {
		return s3Credentials{}, fmt.Errorf("environment: %w", err)
	}
	return c, nil
}
