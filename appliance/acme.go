package appliance

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"sigillo/appliance/config"
	"sigillo/appliance/tlsmgr"
	"sigillo/appliance/tlsmgr/certstore"
	"sigillo/storage"
)

// newACME makes the ACME certificate manager of [acme]: certmagic keeping
// its certificates, keys, account and locks in the replicated store,
// encrypted with a key kept in the data directory, with the local CA
// serving until the first certificate arrives.
func newACME(cfg config.Config, nodeID string, store *storage.Store, proposer storage.Proposer, fallback tlsmgr.Source, log *slog.Logger) (*tlsmgr.ACME, error) {
	a := cfg.ACME
	key, err := certstore.LoadOrCreateKey(filepath.Join(cfg.DataDir, "acme-storage.key"))
	if err != nil {
		return nil, fmt.Errorf("acme: storage key: %w", err)
	}
	// The owner of certmagic's locks: this node, the same across restarts
	// and unlike the other nodes behind the same MX (which share its
	// host name).
	st := &certstore.Storage{Reader: store, Proposer: proposer, Key: key, Owner: nodeID, Now: time.Now}
	ac := tlsmgr.ACMEConfig{Email: a.Email, CA: a.CA, Names: a.Names, Challenge: a.Challenge}
	if a.CARoot != "" {
		if ac.CARoot, err = os.ReadFile(a.CARoot); err != nil {
			return nil, fmt.Errorf("acme: ca_root: %w", err)
		}
	}
	// Validate has checked these.
	ac.RenewCheck, _ = time.ParseDuration(a.RenewCheck)
	ac.RetryFirst, _ = time.ParseDuration(a.RetryFirst)
	return tlsmgr.NewACME(ac, st, fallback, log.With("component", "acme"))
}
