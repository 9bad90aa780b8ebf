package cli

import (
	"context"
	"log/slog"
	"os"
	"time"

	"sigillo/appliance"
	"sigillo/appliance/config"
	"sigillo/appliance/control"
	"sigillo/appliance/devtoken"
)

// config loads the configuration named by --config, or the embedded one.
// signer says that the subcommand uses the PEC gestore's key, which the
// embedded configuration finds in the development token.
func (e *env) config(fs *flagSet, signer bool) (config.Config, error) {
	cfg, err := config.Load(fs.config)
	if err != nil {
		return cfg, err
	}
	if signer && usesDevToken(fs.config, cfg) {
		if err := useDevToken(&cfg, false); err != nil {
			return cfg, err
		}
	}
	return cfg, nil
}

// usesDevToken says whether the configuration finds the gestore's key in
// the development token: the embedded one, without a [signer] of its own.
func usesDevToken(file string, cfg config.Config) bool {
	return file == "" && cfg.Signer.PKCS11Module == "" && cfg.Signer.KeyFile == ""
}

// useDevToken points [signer] at the development SoftHSM2 token under
// data_dir (the embedded default only: a configuration file says where its
// key is), made on first use; for serve it also makes the gestore key and a
// self-signed certificate when they are missing.
func useDevToken(cfg *config.Config, initKey bool) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tok, err := devtoken.Ensure(ctx, cfg.DataDir)
	if err != nil {
		return err
	}
	// SoftHSM2 reads SOFTHSM2_CONF from the process environment when the
	// module is initialised (signer.Open, signer.Init).
	if err := os.Setenv("SOFTHSM2_CONF", tok.Conf); err != nil {
		return err
	}
	cfg.Signer = config.Signer{PKCS11Module: tok.Module, TokenLabel: tok.TokenLabel, PinFile: tok.PinFile, KeyLabel: tok.KeyLabel}
	if cfg.PEC.ProviderName == "" {
		cfg.PEC.ProviderName = "Sigillo (sviluppo)"
	}
	if initKey {
		if _, err := appliance.GestoreInit(*cfg, "", "", slog.New(slog.DiscardHandler)); err != nil {
			return err
		}
		slog.Warn("PEC gestore key in the development SoftHSM2 token under data_dir: not for production", "token", tok.Dir)
	}
	return nil
}

// call sends one request to the running server over its control socket.
func call(cfg config.Config, op string, args map[string]string, out any) error {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	return control.Call(ctx, cfg.ControlSocket(), control.Request{Op: op, Args: args}, out)
}

// callLong is call for requests that read the whole legal log.
func callLong(cfg config.Config, op string, args map[string]string, out any) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	return control.Call(ctx, cfg.ControlSocket(), control.Request{Op: op, Args: args}, out)
}
