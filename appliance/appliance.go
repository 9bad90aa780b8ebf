// Package appliance is the Sigillo server process: it opens the store and
// the raft node, makes the certificates, starts every listener and the
// leader-only jobs, answers the command line on the control socket, and
// stops it all in order. It wires the front ends together; it holds no
// protocol or storage logic of its own.
package appliance

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"syscall"
	"time"

	"sigillo/admin"
	"sigillo/appliance/accounts"
	"sigillo/appliance/authlimit"
	"sigillo/appliance/cluster"
	"sigillo/appliance/config"
	"sigillo/appliance/connlimit"
	"sigillo/appliance/control"
	"sigillo/appliance/datalock"
	"sigillo/appliance/deadline"
	"sigillo/appliance/diskguard"
	"sigillo/appliance/imapd"
	"sigillo/appliance/inflight"
	"sigillo/appliance/leader"
	"sigillo/appliance/manage"
	"sigillo/appliance/memlimit"
	"sigillo/appliance/nodeid"
	"sigillo/appliance/pop3d"
	"sigillo/appliance/queue"
	"sigillo/appliance/scan"
	"sigillo/appliance/settings"
	"sigillo/appliance/smtpd"
	"sigillo/appliance/spool"
	"sigillo/appliance/tlsmgr"
	"sigillo/raftfsm"
	"sigillo/storage"

	"github.com/hashicorp/raft"
)

// Version is set at build time with -ldflags "-X sigillo/appliance.Version=...".
var Version = "dev"

// Options are what the process takes besides the configuration: the clock
// and the resolver, which tests replace.
type Options struct {
	Logger   *slog.Logger
	Now      func() time.Time
	Resolver queue.Resolver
	// Ready, if set, is called once every listener is up, with their
	// actual addresses (by config name).
	Ready func(addrs map[string]string)
	// Out receives the start-up banner (where it listens, how to begin).
	Out io.Writer
	// Command is how the user ran the binary ("./bin/sigillo --config
	// FILE"), for the banner's examples; "" means "sigillo".
	Command string
	// ConfigFile is the configuration file ("" for the embedded one),
	// which every backup carries.
	ConfigFile string
}

// Grace is how long the process has from the end of Run's context (SIGTERM)
// to exit: sessions get most of it to finish, raft and the store the rest,
// and at its end the process exits anyway, however far it got (as after a
// kill -9, nothing acknowledged is lost: it is in the raft log).
const Grace = 15 * time.Second

// Run serves until ctx ends, then shuts down gracefully.
func Run(ctx context.Context, cfg config.Config, opts Options) error {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Resolver == nil {
		opts.Resolver = net.DefaultResolver
	}
	log := opts.Logger
	finished := make(chan struct{})
	defer close(finished)
	go exitAfterGrace(ctx, finished, log)

	// The database holds password hashes and the CA key: nothing the
	// server writes is for other users, whatever the directory was before.
	syscall.Umask(0o077)
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	if err := os.Chmod(cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	// One server per data directory, before anything in it is opened.
	lock, err := datalock.Acquire(cfg.DataDir)
	if err != nil {
		return err
	}
	defer lock.Release()

	// Memory: the bytes of messages in memory at once are bounded by the
	// in-flight budget, and the Go runtime's soft limit follows it.
	machine := memlimit.Detect()
	inflightBytes := cfg.MaxInflightBytes
	if inflightBytes == 0 {
		inflightBytes = memlimit.DefaultBudget(machine, cfg.MaxMessageBytes)
	}
	budget := inflight.New(inflightBytes, inflight.DefaultMaxWait)
	memLimit, memLimitFromEnv := memlimit.SetLimit(inflightBytes, os.Getenv)
	log.Info("memory", "machine", memlimit.Describe(machine), "max_inflight_bytes", inflightBytes,
		"go_memory_limit", memLimit, "go_memory_limit_from_GOMEMLIMIT", memLimitFromEnv)
	// Messages being received wait on disk, not in memory.
	spoolDir, err := spool.Open(filepath.Join(cfg.DataDir, "spool"))
	if err != nil {
		return err
	}

	// This node's name in the cluster: the raft server ID and the owner
	// of its locks, chosen once and kept in the data directory.
	raftDir := filepath.Join(cfg.DataDir, "raft")
	nodeID, err := nodeid.Load(cfg.DataDir, raftDir, cfg.Cluster.NodeID)
	if err != nil {
		return err
	}

	// A database of an older schema is backed up before it is migrated.
	if err := backupBeforeMigrating(ctx, cfg, opts.ConfigFile, nodeID, log); err != nil {
		return err
	}
	store, err := storage.Open(DatabaseFile(cfg))
	if err != nil {
		return err
	}
	defer store.Close()

	// No deadline: a long replay of the raft log says how far it is and
	// goes on; only the end of ctx (SIGTERM) stops it. A single node is a
	// one-node cluster: it bootstraps itself when it has no raft state
	// (joining a cluster, with no bootstrap, comes with the cluster).
	// A clustered node (raft_addr) first gets its certificate (made by
	// the first node, or through a join token) and opens the cluster port.
	var port *clusterPort
	var transport raft.Transport
	bootstrap := true
	if cfg.Cluster.Clustered() {
		if port, err = openClusterPort(ctx, cfg, nodeID, raftDir, store, log); err != nil {
			if ctx.Err() != nil {
				log.Info("stopped while joining", "reason", err)
				return nil
			}
			return err
		}
		defer port.close()
		transport, bootstrap = port.transport, port.bootstrap
	}
	node, err := raftfsm.Open(ctx, raftfsm.Config{Dir: raftDir, NodeID: nodeID, Logger: log, Bootstrap: bootstrap, Transport: transport,
		SnapshotBytes: cfg.Raft.SnapshotBytes, SnapshotInterval: cfg.Raft.SnapshotEvery()}, store)
	if err != nil {
		if ctx.Err() != nil {
			log.Info("stopped while starting", "reason", err)
			return nil
		}
		return err
	}
	defer node.Close()

	// Every write goes through the leader: a follower forwards it and
	// waits until it has applied it (read your own writes).
	var proposer storage.Proposer = node
	var clusterInfo manage.Cluster = loneNode{id: nodeID, node: node}
	if port != nil {
		fwd, svc, stopPort, err := port.serve(ctx, node, store, node.Health)
		if err != nil {
			if ctx.Err() != nil {
				log.Info("stopped while joining", "reason", err)
				return nil
			}
			return err
		}
		defer stopPort()
		proposer, clusterInfo = fwd, clusterOps{svc: svc}
	}

	// Cluster-wide settings: the first node seeds them from its TOML; the
	// replicated values win over any node's TOML (which is warned about),
	// and changes at runtime reach the front ends that read them live.
	switch {
	case port == nil:
		// Alone, the file stays where the operator edits them.
		if written, err := settings.Adopt(ctx, store, proposer, cfg); err != nil {
			return err
		} else if len(written) > 0 {
			log.Info("settings taken from the configuration file", "keys", written)
		}
	case port.bootstrap:
		// A key added by this version is seeded through the leader; with
		// no quorum yet (the whole cluster restarting) the node starts
		// anyway, on its TOML's value, and seeds at its next start.
		if _, err := settings.Seed(ctx, store, proposer, cfg); err != nil {
			log.Warn("cluster-wide settings not seeded now", "err", err)
		}
	}
	toml := cfg
	cfg, stored, err := settings.ForNode(ctx, store, cfg, log)
	if err != nil {
		return err
	}
	live := settings.NewLive(toml, stored)

	ca, err := tlsmgr.NewLocalCA(ctx, cfg.Hostname, store, proposer, opts.Now)
	if err != nil {
		return err
	}
	// Each server gets its own copy: net/http adds its ALPN protocols to
	// the config it is given, which would make IMAP clients that offer
	// ALPN fail the handshake.
	var certs tlsmgr.Source = ca
	var acme *tlsmgr.ACME
	if cfg.ACME != nil {
		if acme, err = newACME(cfg, nodeID, store, proposer, ca, log); err != nil {
			return err
		}
		defer acme.Close()
		certs = acme
	}
	tlsConf := func() *tls.Config { return tlsmgr.ServerConfig(certs) }

	// New mail waits (4xx) while the disk is nearly full, before the raft
	// log or the database would run out of room.
	guard := &diskguard.Guard{Dir: cfg.DataDir, MinFree: cfg.MinFree()}
	mailWriter := diskguard.Guarded{Next: proposer, Guard: guard}
	// Nor may messages being received fill it.
	spoolDir.Check = guard.Check

	// Self-exclusion: a node without a leader for a few seconds, or
	// behind, or halted at a command it does not know, takes no new
	// mail or changes (the front ends' Ready) and says so on /readyz.
	ready := func() (bool, string) {
		h := node.Health()
		return h.Ready, h.Reason
	}

	limiter := authlimit.Default()
	auth := &accounts.Authenticator{Store: store, Limiter: limiter}
	if fwd, ok := proposer.(*cluster.Forwarder); ok {
		auth.Sync = fwd.Barrier
	}
	timeouts := cfg.Timeouts.Values()

	runner := &queue.Runner{
		Hostname:  cfg.Hostname,
		Store:     store,
		Proposer:  proposer,
		Resolver:  opts.Resolver,
		Routes:    cfg.Routes,
		RoutesNow: func() map[string]string { return live.Config().Routes },
		Now:       opts.Now,
		Logger:    log.With("component", "queue"),
	}
	gestore, gestoreKey, err := openGestore(cfg, store, opts.Now, log.With("component", "pec"))
	if err != nil {
		return err
	}
	if gestoreKey != nil {
		defer gestoreKey.Close()
	}
	if gestore == nil {
		if ds, err := store.Domains(ctx); err == nil {
			for _, d := range ds {
				if d.PEC {
					log.Warn("PEC domain served as ordinary mail: no [signer] configured, so no gestore", "domain", d.Name)
				}
			}
		}
	}
	runner.VerifyPeerTLS = cfg.PEC.VerifyPeerTLS
	scanner, err := scan.New(scan.Config{Address: cfg.Scan.Clamd, Required: cfg.ScanRequired(), MaxScanBytes: cfg.Scan.MaxScanBytes},
		log.With("component", "scan"))
	if err != nil {
		return err
	}
	smtpServer := &smtpd.Server{
		Hostname:        cfg.Hostname,
		Store:           store,
		Proposer:        mailWriter,
		Auth:            auth,
		TLSConfig:       tlsConf(),
		MaxMessageBytes: cfg.MaxMessageBytes,
		// A settings change of max_message_bytes reaches new sessions.
		MaxMessageBytesNow: func() int64 { return live.Config().MaxMessageBytes },
		Spool:              spoolDir,
		Budget:             budget,
		StorageCheck:       guard.Check,
		Logger:             log.With("component", "smtp"),
		Now:                opts.Now,
		Timeouts:           deadline.Policy{Login: timeouts.Login, Session: timeouts.SMTP, Data: timeouts.Data, MinRate: timeouts.MinDataRate},

		RelayNetworks:         cfg.RelayPrefixes(),
		MaxRejectedRecipients: cfg.MaxRejectedRecipients,
		Postmaster:            cfg.Postmaster,
		Ready:                 ready,
	}
	if gestore != nil {
		smtpServer.PEC = gestore
	}
	var scanHealth func() (bool, string)
	if scanner != nil {
		smtpServer.Scanner = scanner
		scanHealth = func() (bool, string) { st := scanner.Status(); return st.OK, st.LastErr }
		log.Info("virus scanning with clamd", "clamd", cfg.Scan.Clamd, "required", cfg.ScanRequired())
	}
	imapServer := &imapd.Server{
		Store:           store,
		Proposer:        mailWriter,
		Auth:            auth,
		TLSConfig:       tlsConf(),
		Logger:          log.With("component", "imap"),
		MaxMessageBytes: cfg.MaxMessageBytes,
		Spool:           spoolDir,
		Budget:          budget,
		Now:             opts.Now,
		Timeouts:        deadline.Policy{Login: timeouts.Login, Session: timeouts.IMAP, Data: timeouts.Data, MinRate: timeouts.MinDataRate},
		Ready:           ready,

		MaxMessageBytesNow: func() int64 { return live.Config().MaxMessageBytes },
	}
	pop3Server := &pop3d.Server{
		Backend:      pop3Backend{store: store, proposer: proposer, auth: auth},
		TLSConfig:    tlsConf(),
		Limiter:      limiter,
		Hostname:     cfg.Hostname,
		Logger:       log.With("component", "pop3"),
		LoginTimeout: timeouts.Login,
		IdleTimeout:  timeouts.POP3,
		Ready:        ready,
	}
	httpsConf := tlsConf()
	if acme != nil && cfg.ACME.Challenge == "tls-alpn-01" {
		// The CA's tls-alpn-01 validation comes to port 443.
		httpsConf.NextProtos = append(httpsConf.NextProtos, "acme-tls/1")
	}
	// /readyz: ready to serve, and the scanner answers when it is required.
	serving := func() (bool, string) {
		if ok, reason := ready(); !ok {
			return ok, reason
		}
		if scanHealth != nil && cfg.ScanRequired() {
			if ok, _ := scanHealth(); !ok {
				return false, "clamd is not answering (scanning is required)"
			}
		}
		return true, ""
	}
	// net/http bounds the TLS handshake by the shortest of the Read*
	// and Write timeouts: login's.
	adminServer := &http.Server{
		Handler:           admin.New(admin.Status{Node: node, Store: store, Version: Version, Scan: scanHealth, Ready: serving}),
		TLSConfig:         httpsConf,
		ReadHeaderTimeout: timeouts.Login,
		IdleTimeout:       timeouts.Login,
		ReadTimeout:       timeouts.Data,
		WriteTimeout:      timeouts.Data,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	backups, err := newBackuper(cfg, opts.ConfigFile, nodeID, backupSource{store: store, node: node}, gestoreKey, opts.Now, log)
	if err != nil {
		return err
	}
	ops := &manage.Manager{Store: store, Proposer: proposer, Cluster: clusterInfo, TOML: toml, Now: opts.Now, NoGestore: gestore == nil,
		Scanner: scanner, ACME: acme, CA: ca, Hostname: cfg.Hostname, Version: Version, IsLeader: node.IsLeader}
	if backups != nil {
		ops.Backups = &backupOps{b: backups}
	}
	ctl := &control.Server{
		Handler: control.Operations(ops),
		Logger:  log.With("component", "control"),
	}

	// Listeners. Each is opened before anything is served, so a port in
	// use is one clear error at start.
	type listener struct {
		name  string
		ln    net.Listener
		serve func(net.Listener) error
	}
	serveTLS := func(serve func(net.Listener) error) func(net.Listener) error {
		return func(ln net.Listener) error { return serve(tls.NewListener(ln, tlsConf())) }
	}
	plan := []struct {
		name, addr string
		serve      func(net.Listener) error
	}{
		{"smtp", cfg.Listen.SMTP, func(ln net.Listener) error { return smtpServer.Serve(ln, smtpd.Inbound) }},
		{"submission", cfg.Listen.Submission, func(ln net.Listener) error { return smtpServer.Serve(ln, smtpd.Submission) }},
		{"submissions", cfg.Listen.Submissions, serveTLS(func(ln net.Listener) error { return smtpServer.Serve(ln, smtpd.Submissions) })},
		{"imap", cfg.Listen.IMAP, func(ln net.Listener) error { return imapServer.Serve(ln, false) }},
		{"imaps", cfg.Listen.IMAPS, serveTLS(func(ln net.Listener) error { return imapServer.Serve(ln, true) })},
		{"pop3", cfg.Listen.POP3, func(ln net.Listener) error { return pop3Server.Serve(ln, false) }},
		{"pop3s", cfg.Listen.POP3S, serveTLS(func(ln net.Listener) error { return pop3Server.Serve(ln, true) })},
		{"https", cfg.Listen.HTTPS, func(ln net.Listener) error {
			err := adminServer.ServeTLS(ln, "", "")
			if errors.Is(err, http.ErrServerClosed) {
				return nil
			}
			return err
		}},
	}
	if acme != nil && cfg.ACME.Challenge == "http-01" {
		// Port 80: the ACME http-01 challenges, and a redirect to https.
		redirect := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "https://"+r.Host+r.URL.RequestURI(), http.StatusMovedPermanently)
		})
		httpServer := &http.Server{Handler: acme.HTTPChallengeHandler(redirect),
			ReadHeaderTimeout: timeouts.Login, IdleTimeout: timeouts.Login, ReadTimeout: timeouts.Data, WriteTimeout: timeouts.Data,
			ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
		plan = append(plan, struct {
			name, addr string
			serve      func(net.Listener) error
		}{"http", cfg.Listen.HTTP, func(ln net.Listener) error {
			if err := httpServer.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		}})
		defer httpServer.Close()
	}
	// What a client over the connection limits is told, on the plain
	// ports; on the TLS ports the connection is just closed.
	refusals := map[string]string{
		"smtp":       "421 4.7.0 " + cfg.Hostname + " Error: too many connections from your address\r\n",
		"submission": "421 4.7.0 " + cfg.Hostname + " Error: too many connections from your address\r\n",
		"imap":       "* BYE Too many connections from your address\r\n",
		"pop3":       "-ERR [SYS/TEMP] Too many connections from your address\r\n",
	}
	var listeners []listener
	closeAll := func() {
		for _, l := range listeners {
			l.ln.Close()
		}
	}
	for _, p := range plan {
		if p.addr == "" {
			continue
		}
		ln, err := net.Listen("tcp", p.addr)
		if err != nil {
			closeAll()
			return fmt.Errorf("listen %s on %s: %w", p.name, p.addr, err)
		}
		ln = &connlimit.Listener{Listener: ln, Total: cfg.MaxConnections, PerHost: cfg.MaxConnectionsPerHost,
			Unauthenticated: cfg.UnauthenticatedPerHost(), Refusal: refusals[p.name], Logger: log.With("listener", p.name)}
		listeners = append(listeners, listener{p.name, ln, p.serve})
	}
	ctlLn, err := control.Listen(cfg.ControlSocket())
	if err != nil {
		closeAll()
		return err
	}

	var wg sync.WaitGroup
	errc := make(chan error, len(listeners)+2)
	for _, l := range listeners {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := l.serve(l.ln); err != nil {
				errc <- fmt.Errorf("%s: %w", l.name, err)
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := ctl.Serve(ctlLn); err != nil {
			errc <- err
		}
	}()

	// ACME runs on every node: certmagic's locks in the replicated store
	// let one of them talk to the CA, and all serve the result.
	jobsCtx, stopJobs := context.WithCancel(ctx)
	// After a burst of large messages, their memory goes back to the
	// system at once rather than at the runtime's next forced collection.
	wg.Add(1)
	go func() {
		defer wg.Done()
		memlimit.GiveBack(jobsCtx, budget, min(16<<20, inflightBytes/4), 10*time.Second, log.With("component", "memory"))
	}()
	if acme != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			acme.Run(jobsCtx)
		}()
	}

	wg.Add(1)
	go func() {
		defer wg.Done()
		settings.Watch(jobsCtx, store, time.Second, log.With("component", "settings"), live.Update)
	}()

	// Every node gives its own full-text index the text of messages
	// stored before the index existed (storage.RunTextIndexer).
	wg.Add(1)
	go func() {
		defer wg.Done()
		store.RunTextIndexer(jobsCtx, log.With("component", "search"))
	}()

	// Every node renews its own certificate from the local CA.
	wg.Add(1)
	go func() {
		defer wg.Done()
		renewCertificates(jobsCtx, ca, log)
	}()

	// Leader-only jobs: one list, started when this node becomes leader
	// and stopped when it stops leading. One node alone is always its own
	// leader.
	wg.Add(1)
	go func() {
		defer wg.Done()
		leader.Run(jobsCtx, node, leaderJobs(runner, gestore, gestoreKey, store, node, backups, opts.Now, log), log.With("component", "leader"))
	}()

	addrs := map[string]string{}
	for _, l := range listeners {
		addrs[l.name] = l.ln.Addr().String()
	}
	log.Info("sigillo is serving", "version", Version, "hostname", cfg.Hostname, "node_id", nodeID, "data_dir", cfg.DataDir)
	if opts.Out != nil {
		printBanner(opts.Out, cfg, addrs, opts.Command)
	}
	if opts.Ready != nil {
		opts.Ready(addrs)
	}

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errc:
		log.Error("a listener failed; stopping", "err", runErr)
	}

	// Shut down: stop taking new work, let sessions finish, then stop the
	// jobs, raft (deferred) and the store (deferred).
	log.Info("shutting down")
	shutCtx, cancelShut := context.WithTimeout(context.Background(), Grace-5*time.Second)
	defer cancelShut()
	stopJobs()
	var sw sync.WaitGroup
	for _, stop := range []func(context.Context) error{
		smtpServer.Shutdown, imapServer.Shutdown, pop3Server.Shutdown, adminServer.Shutdown, ctl.Shutdown,
	} {
		sw.Add(1)
		go func() {
			defer sw.Done()
			if err := stop(shutCtx); err != nil {
				log.Warn("shutdown", "err", err)
			}
		}()
	}
	sw.Wait()
	closeAll()
	wg.Wait()
	os.Remove(cfg.ControlSocket())
	return runErr
}

// exitAfterGrace ends the process when Run has not returned within Grace
// of the end of ctx: a stop must never hang, whatever it waits for.
func exitAfterGrace(ctx context.Context, finished <-chan struct{}, log *slog.Logger) {
	select {
	case <-finished:
		return
	case <-ctx.Done():
	}
	t := time.NewTimer(Grace)
	defer t.Stop()
	select {
	case <-finished:
	case <-t.C:
		log.Error("not stopped within the grace period: exiting now", "grace", Grace)
		os.Exit(1)
	}
}

func printBanner(w io.Writer, cfg config.Config, addrs map[string]string, command string) {
	if command == "" {
		command = "sigillo"
	}
	names := make([]string, 0, len(addrs))
	for n := range addrs {
		names = append(names, n)
	}
	sort.Strings(names)
	fmt.Fprintf(w, "Sigillo %s serving %s (data in %s)\n", Version, cfg.Hostname, cfg.DataDir)
	for _, n := range names {
		fmt.Fprintf(w, "  %-12s %s\n", n, addrs[n])
	}
	fmt.Fprintf(w, `
Add a first mailbox (from another terminal, in this directory):
  %[1]s domain add example.test
  echo 'a long password' | %[1]s mailbox add alice@example.test --password-stdin
Trust the local CA in your mail client:
  %[1]s ca export > sigillo-ca.pem
`, command)
}
