package clusternet

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/base32"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"
)

// TokenPrefix starts every join token; the digit is the format's version.
const TokenPrefix = "sgjt1"

const (
	tokenIDBytes     = 10 // 16 base32 characters
	tokenSecretBytes = 32
	minTokenID       = 8
	maxTokenID       = 32
	// maxTokenLen bounds what ParseToken reads: a token is 113 characters.
	maxTokenLen = 256
)

var (
	tokenIDEncoding = base32.StdEncoding.WithPadding(base32.NoPadding)
	tokenB64        = base64.RawURLEncoding.Strict()
)

// Token is a join token: what a new node presents to join the cluster.
// Its ID names it (to list and revoke it); its Secret proves it, and the
// cluster stores only HashSecret(Secret); CAPin lets the joining node check
// it talks to this cluster (JoinClient) before it sends the secret.
//
// On one line: "sgjt1.<id>.<secret>.<pin>", the ID in lower-case base32,
// secret and pin in unpadded base64url.
type Token struct {
	ID     string
	Secret []byte
	CAPin  [32]byte
}

// NewToken makes a token for the cluster whose CA is caCert: a random ID
// (16 characters) and a random 32-byte secret.
func NewToken(caCert *x509.Certificate) (Token, error) {
	if caCert == nil {
		return Token{}, errors.New("join token: no cluster CA")
	}
	id := make([]byte, tokenIDBytes)
	secret := make([]byte, tokenSecretBytes)
	if _, err := rand.Read(id); err != nil {
		return Token{}, fmt.Errorf("join token: %w", err)
	}
	if _, err := rand.Read(secret); err != nil {
		return Token{}, fmt.Errorf("join token: %w", err)
	}
	return Token{
		ID:     strings.ToLower(tokenIDEncoding.EncodeToString(id)),
		Secret: secret,
		CAPin:  Pin(caCert),
	}, nil
}

// ParseToken reads a token as String writes it; spaces and line ends around
// it (a token file's) are ignored. Its errors say what is wrong without
// repeating the input, which holds a secret.
func ParseToken(s string) (Token, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return Token{}, errors.New("join token: empty")
	}
	if len(s) > maxTokenLen {
		return Token{}, fmt.Errorf("join token: %d characters, too long for a join token", len(s))
	}
	parts := strings.Split(s, ".")
	if parts[0] != TokenPrefix {
		if strings.HasPrefix(parts[0], "sgjt") {
			return Token{}, fmt.Errorf("join token: unknown version %q (this node reads %q)", parts[0], TokenPrefix)
		}
		return Token{}, fmt.Errorf("join token: does not start with %q", TokenPrefix+".")
	}
	if len(parts) != 4 {
		return Token{}, fmt.Errorf("join token: %d dot-separated parts, want 4 (%s.<id>.<secret>.<pin>)", len(parts), TokenPrefix)
	}
	id := parts[1]
	if len(id) < minTokenID || len(id) > maxTokenID {
		return Token{}, fmt.Errorf("join token: id of %d characters, want %d to %d", len(id), minTokenID, maxTokenID)
	}
	for _, c := range id {
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') {
			return Token{}, errors.New("join token: the id has a character other than a-z, 0-9")
		}
	}
	// Go's base64 skips line ends inside the text: refuse them first.
	secret, err := decodeTokenPart(parts[2])
	if err != nil {
		return Token{}, errors.New("join token: the secret is not base64url")
	}
	if len(secret) != tokenSecretBytes {
		return Token{}, fmt.Errorf("join token: a secret of %d bytes, want %d", len(secret), tokenSecretBytes)
	}
	pin, err := decodeTokenPart(parts[3])
	if err != nil {
		return Token{}, errors.New("join token: the CA pin is not base64url")
	}
	if len(pin) != 32 {
		return Token{}, fmt.Errorf("join token: a CA pin of %d bytes, want 32", len(pin))
	}
	t := Token{ID: id, Secret: secret}
	copy(t.CAPin[:], pin)
	return t, nil
}

// decodeTokenPart decodes unpadded base64url, and nothing else.
func decodeTokenPart(s string) ([]byte, error) {
	for _, c := range s {
		if (c < 'A' || c > 'Z') && (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' && c != '_' {
			return nil, errors.New("a character outside base64url")
		}
	}
	return tokenB64.DecodeString(s)
}

// String is the token on one line, secret included: for the operator to
// copy, never for a log (a Token logged through slog shows its ID only).
func (t Token) String() string {
	return TokenPrefix + "." + t.ID + "." + tokenB64.EncodeToString(t.Secret) + "." + tokenB64.EncodeToString(t.CAPin[:])
}

// LogValue keeps the secret out of logs: a Token logs as its ID.
func (t Token) LogValue() slog.Value {
	return slog.GroupValue(slog.String("id", t.ID))
}

// HashSecret is what the cluster stores of a token's secret: its SHA-256
// in hex. A plain hash is enough: the secret is 256 random bits, not a
// password.
func HashSecret(secret []byte) string {
	sum := sha256.Sum256(secret)
	return hex.EncodeToString(sum[:])
}

// Matches tells, in constant time, whether t's secret is the one whose hash
// the cluster stored.
func (t Token) Matches(storedHash string) bool {
	if len(t.Secret) == 0 {
		return false
	}
	return subtle.ConstantTimeCompare([]byte(HashSecret(t.Secret)), []byte(storedHash)) == 1
}
