package appliance

import (
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"sigillo/appliance/config"
	"sigillo/appliance/pec"
	"sigillo/appliance/pecdir"
	"sigillo/appliance/signer"
	"sigillo/storage"
)

// openGestore opens the signer and makes the PEC gestore, when [signer] is
// configured; without it there is no gestore (nil), and PEC domains are
// served as ordinary ones, with a warning.
func openGestore(cfg config.Config, store *storage.Store, now func() time.Time, logger *slog.Logger) (*pec.Gestore, *signer.Signer, error) {
	if cfg.Signer.PKCS11Module == "" && cfg.Signer.KeyFile == "" {
		return nil, nil, nil
	}
	sc, err := signerConfig(cfg)
	if err != nil {
		return nil, nil, err
	}
	s, err := signer.Open(sc, logger)
	if err != nil {
		return nil, nil, fmt.Errorf("PEC gestore: %w (run `sigillo gestore init` first)", err)
	}
	var roots *x509.CertPool
	if cfg.PEC.RootsFile != "" {
		pemData, err := os.ReadFile(cfg.PEC.RootsFile)
		if err != nil {
			s.Close()
			return nil, nil, fmt.Errorf("pec roots_file: %w", err)
		}
		roots = x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pemData) {
			s.Close()
			return nil, nil, fmt.Errorf("pec roots_file %s: no certificate in it", cfg.PEC.RootsFile)
		}
	}
	name := cfg.PEC.ProviderName
	if name == "" {
		if org := s.Certificate().Subject.Organization; len(org) > 0 {
			name = org[0]
		} else {
			name = s.Certificate().Subject.CommonName
		}
	}
	g := &pec.Gestore{
		Provider: name, Service: cfg.ServiceAddress(), Signer: s, Chain: s.Chain(), Roots: roots,
		Store: store, MaxBytes: cfg.PECMaxTotalBytes(), Now: now, Logger: logger,
	}
	logger.Info("PEC gestore ready", "provider", name, "service_address", g.Service, "certificate_sha1", pecdir.SHA1Hex(s.Certificate()))
	return g, s, nil
}

// signerConfig turns the [signer] table into the signer's Config, reading
// the PIN from pin_file.
func signerConfig(cfg config.Config) (signer.Config, error) {
	s := cfg.Signer
	if s.PKCS11Module == "" && s.KeyFile == "" {
		return signer.Config{}, errors.New("no [signer] in the configuration: set pkcs11_module, token_label, pin_file (or, for development, key_file)")
	}
	sc := signer.Config{PKCS11Module: s.PKCS11Module, TokenLabel: s.TokenLabel, KeyLabel: s.KeyLabel, KeyFile: s.KeyFile}
	if s.PinFile != "" {
		pin, err := os.ReadFile(s.PinFile)
		if err != nil {
			return sc, fmt.Errorf("signer pin_file: %w", err)
		}
		sc.PIN = strings.TrimSpace(string(pin))
	}
	return sc, nil
}

// GestoreInit makes the gestore key in the token if it is absent and a
// certificate for it following PEC.md §2.1: self-signed, or signed by the
// CA in caCertFile/caKeyFile. Run again, it keeps what still fits.
func GestoreInit(cfg config.Config, caCertFile, caKeyFile string, logger *slog.Logger) (*x509.Certificate, error) {
	sc, err := signerConfig(cfg)
	if err != nil {
		return nil, err
	}
	name := cfg.PEC.ProviderName
	if name == "" {
		return nil, errors.New("set provider_name in [pec]: it names the gestore in its certificate and in daticert.xml")
	}
	opts := signer.InitOptions{ProviderName: name, ServiceAddress: cfg.ServiceAddress(), Now: time.Now()}
	if (caCertFile == "") != (caKeyFile == "") {
		return nil, errors.New("--ca and --ca-key go together")
	}
	if caCertFile != "" {
		if opts.CACertPEM, err = os.ReadFile(caCertFile); err != nil {
			return nil, fmt.Errorf("--ca: %w", err)
		}
		if opts.CAKeyPEM, err = os.ReadFile(caKeyFile); err != nil {
			return nil, fmt.Errorf("--ca-key: %w", err)
		}
	}
	cert, err := signer.Init(sc, opts)
	if err != nil {
		return nil, fmt.Errorf("gestore init: %w", err)
	}
	// Open it as the server will, so a problem shows now.
	s, err := signer.Open(sc, logger)
	if err != nil {
		return nil, fmt.Errorf("gestore init: %w", err)
	}
	s.Close()
	return cert, nil
}

// GestoreCert returns the certificate chain in use, leaf first.
func GestoreCert(cfg config.Config, logger *slog.Logger) ([]*x509.Certificate, error) {
	sc, err := signerConfig(cfg)
	if err != nil {
		return nil, err
	}
	s, err := signer.Open(sc, logger)
	if err != nil {
		return nil, fmt.Errorf("gestore cert: %w", err)
	}
	defer s.Close()
	return s.Chain(), nil
}
