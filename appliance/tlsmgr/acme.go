package tlsmgr

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"
)

// ACMEConfig is the [acme] table.
type ACMEConfig struct {
	Email string
	// CA is the ACME directory URL.
	CA string
	// CARoot, PEM, is the ACME server's root for its HTTPS, for private or
	// test CAs; empty: the system roots.
	CARoot []byte
	// Names are the certificate's names; the first is served to clients
	// that send no SNI.
	Names []string
	// Challenge is "tls-alpn-01" (answered by the https listener, which
	// must be reachable on port 443) or "http-01" (answered by the http
	// listener, on port 80).
	Challenge string
	// RenewCheck is how often certificates are checked for renewal
	// (certmagic's default, 10 minutes, when zero).
	RenewCheck time.Duration
	// RetryFirst is the first wait after a failed attempt to obtain the
	// certificates (default 30 s), doubled up to RetryMax (default 1 h).
	RetryFirst, RetryMax time.Duration
}

// ACME gets and renews certificates with certmagic, keeping them in the
// replicated store (certmagic.Storage), so every node of a cluster serves
// the same certificates and only one talks to the CA at a time. Until the
// first certificate is obtained (a CA unreachable at first start, say) the
// fallback Source, the local CA, answers.
type ACME struct {
	cfg      ACMEConfig
	magic    *certmagic.Config
	issuer   *certmagic.ACMEIssuer
	cache    *certmagic.Cache
	fallback Source
	logger   *slog.Logger

	stopOnce sync.Once

	mu      sync.Mutex
	lastErr string
	errAt   time.Time
}

// NewACME makes the certificate manager; Run obtains and maintains the
// certificates.
func NewACME(cfg ACMEConfig, storage certmagic.Storage, fallback Source, logger *slog.Logger) (*ACME, error) {
	if cfg.CA == "" || len(cfg.Names) == 0 {
		return nil, errors.New("acme: needs a CA directory URL and at least one name")
	}
	if cfg.Challenge == "" {
		cfg.Challenge = "tls-alpn-01"
	}
	if cfg.Challenge != "tls-alpn-01" && cfg.Challenge != "http-01" {
		return nil, fmt.Errorf("acme: challenge %q: use tls-alpn-01 or http-01", cfg.Challenge)
	}
	if cfg.RetryFirst <= 0 {
		cfg.RetryFirst = 30 * time.Second
	}
	if cfg.RetryMax <= 0 {
		cfg.RetryMax = time.Hour
	}
	if logger == nil {
		logger = slog.Default()
	}
	var roots *x509.CertPool
	if len(cfg.CARoot) > 0 {
		roots = x509.NewCertPool()
		if !roots.AppendCertsFromPEM(cfg.CARoot) {
			return nil, errors.New("acme: ca_root holds no PEM certificate")
		}
	}
	a := &ACME{cfg: cfg, fallback: fallback, logger: logger}
	var magic *certmagic.Config
	a.cache = certmagic.NewCache(certmagic.CacheOptions{
		GetConfigForCert:   func(certmagic.Certificate) (*certmagic.Config, error) { return magic, nil },
		RenewCheckInterval: cfg.RenewCheck,
		OCSPCheckInterval:  cfg.RenewCheck,
		Logger:             zap.NewNop(),
	})
	magic = certmagic.New(a.cache, certmagic.Config{
		Storage:           storage,
		DefaultServerName: cfg.Names[0],
		OnEvent:           a.onEvent,
		Logger:            zap.NewNop(),
	})
	a.issuer = certmagic.NewACMEIssuer(magic, certmagic.ACMEIssuer{
		CA:                      cfg.CA,
		TestCA:                  cfg.CA,
		Email:                   cfg.Email,
		Agreed:                  true,
		TrustedRoots:            roots,
		DisableHTTPChallenge:    cfg.Challenge != "http-01",
		DisableTLSALPNChallenge: cfg.Challenge != "tls-alpn-01",
		Logger:                  zap.NewNop(),
	})
	magic.Issuers = []certmagic.Issuer{a.issuer}
	a.magic = magic
	return a, nil
}

// onEvent records what certmagic did, for the log and `sigillo cert status`.
func (a *ACME) onEvent(_ context.Context, event string, data map[string]any) error {
	switch event {
	case "cert_obtained":
		a.mu.Lock()
		a.lastErr = ""
		a.mu.Unlock()
		a.logger.Info("ACME certificate obtained", "identifier", data["identifier"], "renewal", data["renewal"], "issuer", data["issuer"])
	case "cert_failed":
		msg := fmt.Sprint(data["error"])
		a.mu.Lock()
		a.lastErr, a.errAt = msg, time.Now()
		a.mu.Unlock()
		a.logger.Error("ACME certificate not obtained", "identifier", data["identifier"], "renewal", data["renewal"], "err", msg)
	}
	return nil
}

// Run obtains the certificates (retrying with backoff while the CA cannot
// be reached: the fallback serves meanwhile) and then leaves certmagic to
// renew them in the background, until ctx ends.
func (a *ACME) Run(ctx context.Context) {
	defer a.Close()
	wait := a.cfg.RetryFirst
	for {
		err := a.magic.ManageSync(ctx, a.cfg.Names)
		if err == nil {
			a.logger.Info("ACME certificates managed", "names", a.cfg.Names, "ca", a.cfg.CA)
			break
		}
		a.mu.Lock()
		a.lastErr, a.errAt = err.Error(), time.Now()
		a.mu.Unlock()
		a.logger.Warn("ACME certificates not obtained yet; serving the local CA's certificate and retrying",
			"names", a.cfg.Names, "ca", a.cfg.CA, "retry_in", wait, "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = min(wait*2, a.cfg.RetryMax)
	}
	<-ctx.Done()
}

// Close stops certmagic's maintenance goroutine (Run does, when it ends).
func (a *ACME) Close() { a.stopOnce.Do(a.cache.Stop) }

// GetCertificate serves certmagic's certificate for the name asked (the
// first configured name without SNI), the ACME tls-alpn-01 challenge
// certificate when the CA asks for it, and the fallback's certificate while
// there is no ACME certificate yet.
func (a *ACME) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	if slices.Contains(hello.SupportedProtos, "acme-tls/1") {
		return a.magic.GetCertificate(hello)
	}
	if c, err := a.magic.GetCertificate(hello); err == nil && c != nil {
		return c, nil
	}
	return a.fallback.GetCertificate(hello)
}

// HTTPChallengeHandler answers ACME http-01 challenges and passes every
// other request to next.
func (a *ACME) HTTPChallengeHandler(next http.Handler) http.Handler {
	return a.issuer.HTTPChallengeHandler(next)
}

// CertInfo describes one managed name for `sigillo cert status`.
type CertInfo struct {
	Name      string    `json:"name"`
	Issuer    string    `json:"issuer,omitempty"`
	NotBefore time.Time `json:"not_before,omitzero"`
	NotAfter  time.Time `json:"not_after,omitzero"`
	Source    string    `json:"source"` // "acme" or "local CA"
}

// Status lists the names with the certificate served for each, and the
// last error from the CA ("" when the last attempt worked).
func (a *ACME) Status() (certs []CertInfo, lastErr string, errAt time.Time) {
	for _, n := range a.cfg.Names {
		info := CertInfo{Name: n, Source: "local CA"}
		var c *tls.Certificate
		for _, mc := range a.cache.AllMatchingCertificates(n) {
			if c == nil || (mc.Leaf != nil && c.Leaf != nil && mc.Leaf.NotAfter.After(c.Leaf.NotAfter)) {
				cc := mc.Certificate
				c = &cc
			}
		}
		if c == nil {
			c, _ = a.fallback.GetCertificate(&tls.ClientHelloInfo{ServerName: n})
		} else {
			info.Source = "acme"
		}
		if c != nil {
			leaf := c.Leaf
			if leaf == nil && len(c.Certificate) > 0 {
				leaf, _ = x509.ParseCertificate(c.Certificate[0])
			}
			if leaf != nil {
				info.Issuer, info.NotBefore, info.NotAfter = leaf.Issuer.String(), leaf.NotBefore, leaf.NotAfter
			}
		}
		certs = append(certs, info)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	return certs, a.lastErr, a.errAt
}
