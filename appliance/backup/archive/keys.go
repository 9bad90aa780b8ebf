package archive

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"filippo.io/age"
)

// maxKeyFile bounds the recipients and identities files read (age's own limit).
const maxKeyFile = 1 << 24

// ReadRecipients reads an age recipients file: one public key a line ("age1…", or "age1pq1…"),
// blank lines and lines starting with # ignored. It returns the recipients and their text (for
// Manifest.Recipients). Errors name the file and the line, and never quote a line: a secret key
// given by mistake must not end up in a log.
func ReadRecipients(path string) ([]age.Recipient, []string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, fmt.Errorf("age recipients file: %w", err)
	}
	defer f.Close()
	var recs []age.Recipient
	var texts []string
	sc := bufio.NewScanner(io.LimitReader(f, maxKeyFile))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if strings.HasPrefix(strings.ToUpper(line), "AGE-SECRET-KEY-") {
			return nil, nil, fmt.Errorf("age recipients file %s: line %d is a secret key (an identity), not a recipient: give its public key (age-keygen -y)", path, n)
		}
		rs, err := age.ParseRecipients(strings.NewReader(line))
		if err != nil {
			return nil, nil, fmt.Errorf("age recipients file %s: line %d: not an age recipient (want age1…): %v", path, n, err)
		}
		recs = append(recs, rs...)
		texts = append(texts, line)
	}
	if err := sc.Err(); err != nil {
		return nil, nil, fmt.Errorf("age recipients file %s: %w", path, err)
	}
	if len(recs) == 0 {
		return nil, nil, fmt.Errorf("age recipients file %s: no recipients in it", path)
	}
	return recs, texts, nil
}

// ReadIdentities reads an age identities file (as age-keygen writes it: "AGE-SECRET-KEY-1…" lines,
// # comments). Errors name the file, never its content.
func ReadIdentities(path string) ([]age.Identity, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("age identity file: %w", err)
	}
	defer f.Close()
	ids, err := age.ParseIdentities(f)
	if err != nil {
		return nil, fmt.Errorf("age identity file %s: %w", path, err)
	}
	if len(ids) == 0 {
		return nil, fmt.Errorf("age identity file %s: %w", path, errors.New("no identities in it"))
	}
	return ids, nil
}
