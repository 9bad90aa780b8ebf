package peclog

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"sync"
	"testing"
	"time"
)

type testKey struct {
	signer crypto.Signer
	cert   *x509.Certificate
}

var (
	keysOnce          sync.Once
	ecKey, rsaKey     testKey
	keysErr           error
	chainStart        = time.Date(2025, 3, 1, 0, 7, 0, 0, time.UTC)
	entrySpacing      = 15 * time.Minute
	certNotBefore     = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	certNotAfter      = time.Date(2035, 1, 1, 0, 0, 0, 0, time.UTC)
	testRoots         *x509.CertPool
	otherRoots        *x509.CertPool
	otherKey, shortKy testKey
)

func selfSigned(signer crypto.Signer, cn string, notBefore, notAfter time.Time) (*x509.Certificate, error) {
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(int64(len(cn)) + 1000),
		Subject:               pkix.Name{CommonName: cn, Organization: []string{"Example PEC S.p.A."}},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageContentCommitment | x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		EmailAddresses:        []string{"posta-certificata@pec.example.it"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, signer.Public(), signer)
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(der)
}

func keys(t testing.TB) {
	t.Helper()
	keysOnce.Do(func() {
		mk := func(s crypto.Signer, err error, cn string, nb, na time.Time) testKey {
			if err != nil {
				keysErr = err
				return testKey{}
			}
			c, err := selfSigned(s, cn, nb, na)
			if err != nil {
				keysErr = err
			}
			return testKey{s, c}
		}
		ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		ecKey = mk(ec, err, "gestore ECDSA", certNotBefore, certNotAfter)
		rk, err := rsa.GenerateKey(rand.Reader, 2048)
		rsaKey = mk(rk, err, "gestore RSA", certNotBefore, certNotAfter)
		ok, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		otherKey = mk(ok, err, "somebody else", certNotBefore, certNotAfter)
		sk, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		// valid for the first days of the chain only
		shortKy = mk(sk, err, "short lived", certNotBefore, chainStart.Add(48*time.Hour))
		if keysErr == nil {
			testRoots = x509.NewCertPool()
			testRoots.AddCert(ecKey.cert)
			testRoots.AddCert(rsaKey.cert)
			testRoots.AddCert(shortKy.cert)
			otherRoots = x509.NewCertPool()
			otherRoots.AddCert(otherKey.cert)
		}
	})
	if keysErr != nil {
		t.Fatal(keysErr)
	}
}

// sampleEntry returns the i-th (unchained) entry of a synthetic log.
func sampleEntry(i int) Entry {
	events := Events()
	id := fmt.Sprintf("opec2100.20250301%06d.%d.1.1@pec.example.it", i, i%7)
	return Entry{
		Time:       chainStart.Add(time.Duration(i) * entrySpacing),
		Event:      events[i%len(events)],
		MsgID:      id,
		RelatedIDs: []string{fmt.Sprintf("<user-%d@client.example>", i)},
		Sender:     fmt.Sprintf("mittente%d@pec.example.it", i%13),
		Recipients: []string{fmt.Sprintf("dest%d@pec.b.test", i%5), "ordinario@example.com"},
		Subject:    fmt.Sprintf("Fattura n. %d — città", i),
		Gestore:    "Example PEC S.p.A.",
		Detail:     map[bool]string{true: "5.1.1 utente sconosciuto", false: ""}[i%17 == 0],
	}
}

// buildChain returns n chained entries, and a head signed a few minutes
// after the last entry of each day (alternating ECDSA and RSA), plus one
// over the last entry.
func buildChain(t testing.TB, n int) ([]Entry, []Head) {
	t.Helper()
	keys(t)
	entries := make([]Entry, 0, n)
	var heads []Head
	var prev *Entry
	for i := 0; i < n; i++ {
		e := Next(prev, sampleEntry(i))
		entries = append(entries, e)
		prev = &entries[len(entries)-1]
		nextDay := chainStart.Add(time.Duration(i+1) * entrySpacing).YearDay()
		if i == n-1 || nextDay != e.Time.YearDay() {
			k := ecKey
			if len(heads)%2 == 1 {
				k = rsaKey
			}
			h, err := SignHead(e, e.Time.Add(3*time.Minute), k.signer, k.cert)
			if err != nil {
				t.Fatal(err)
			}
			heads = append(heads, h)
		}
	}
	return entries, heads
}

// cloneChain deep-copies entries and heads so a test may tamper freely.
func cloneChain(entries []Entry, heads []Head) ([]Entry, []Head) {
	es := make([]Entry, len(entries))
	for i, e := range entries {
		e.RelatedIDs = cloneStrings(e.RelatedIDs)
		e.Recipients = cloneStrings(e.Recipients)
		e.PrevHash = clone(e.PrevHash)
		e.Hash = clone(e.Hash)
		es[i] = e
	}
	hs := make([]Head, len(heads))
	for i, h := range heads {
		h.Hash = clone(h.Hash)
		h.Signature = clone(h.Signature)
		h.Certificate = clone(h.Certificate)
		hs[i] = h
	}
	return es, hs
}
