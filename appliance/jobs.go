package appliance

import (
	"context"
	"log/slog"
	"time"

	"sigillo/appliance/backup"
	"sigillo/appliance/leader"
	"sigillo/appliance/legallog"
	"sigillo/appliance/pec"
	"sigillo/appliance/queue"
	"sigillo/appliance/signer"
	"sigillo/appliance/tlsmgr"
	"sigillo/storage"
)

// leaderJobs is the list of what only the leader does: the outbound
// queue, the backups (with a [[backup.target]]) and, with a gestore, the PEC timeouts and the legal log's daily
// signed head and 30-month purge. (The local CA's certificates are every
// node's own job: renewCertificates.)
func leaderJobs(runner *queue.Runner, gestore *pec.Gestore, gestoreKey *signer.Signer,
	store *storage.Store, proposer storage.Proposer, backups *backup.Backuper, now func() time.Time, log *slog.Logger) []leader.Job {
	jobs := []leader.Job{{Name: "queue", Run: runner.Run}}
	if backups != nil {
		jobs = append(jobs, leader.Job{Name: "backup", Run: backups.Run})
	}
	if gestore != nil {
		jobs = append(jobs,
			leader.Job{Name: "pec-timers", Run: func(ctx context.Context) error {
				(&pec.Timer{Gestore: gestore, Store: store, Proposer: proposer}).Run(ctx)
				return nil
			}},
			leader.Job{Name: "legal-log", Run: (&legallog.Keeper{Store: store, Proposer: proposer, Signer: gestoreKey.Key(),
				Chain: gestoreKey.Chain(), Now: now, Logger: log.With("component", "legallog")}).Run},
		)
	}
	return jobs
}

// renewCertificates renews this node's certificate from the local CA
// (each node of a cluster has its own host name, so its own certificate)
// when a third of its life is left, looking twice a day.
func renewCertificates(ctx context.Context, ca *tlsmgr.LocalCA, log *slog.Logger) {
	t := time.NewTicker(12 * time.Hour)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := ca.Refresh(ctx); err != nil {
				log.Error("certificate renewal failed", "err", err)
			}
		}
	}
}
