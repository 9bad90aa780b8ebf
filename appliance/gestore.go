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
	"sigillo/appliance/signer"
)

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
