package cli

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"syscall"

	"sigillo/appliance"
	"sigillo/appliance/config"
)

var serveCommand = command{
	name:  "serve",
	usage: "serve [--config FILE]",
	notes: []string{configNote},
	run:   runServe,
}

func runServe(e *env, words []string) error {
	fs := e.flags("serve", true)
	if _, err := e.parse(fs, words, 0, 0); err != nil {
		return err
	}
	cfg, err := config.Load(fs.config)
	if err != nil {
		return err
	}
	if usesDevToken(fs.config, cfg) {
		if err := useDevToken(&cfg, true); err != nil {
			// make run without SoftHSM2: mail works, PEC does not.
			fmt.Fprintf(e.stderr, "no development PKCS#11 token, so no PEC gestore: %v\n", err)
		}
	}
	return serve(cfg, fs.config, CommandLine(e.argv0, fs.config), e)
}

// serve runs the server with cfg, read from file ("" for the embedded
// one); command is how the user ran this binary, for the banner's examples.
func serve(cfg config.Config, file, command string, e *env) error {
	var level slog.Level
	if err := level.UnmarshalText([]byte(cfg.LogLevel)); err != nil {
		level = slog.LevelInfo
	}
	logger := slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: level}))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	// SIGILLO_CPUPROFILE=FILE: a CPU profile of the whole run, for
	// `go tool pprof` (how the benchmark's figures were explained).
	if path := os.Getenv("SIGILLO_CPUPROFILE"); path != "" {
		f, err := os.Create(path)
		if err != nil {
			return fmt.Errorf("SIGILLO_CPUPROFILE: %w", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return fmt.Errorf("SIGILLO_CPUPROFILE: %w", err)
		}
		defer pprof.StopCPUProfile()
	}
	// SIGILLO_MEMPROFILE=FILE: a heap profile written at exit, for `go
	// tool pprof -sample_index=alloc_space` (where every copy of a message
	// was made) or inuse_space (what was still held at the end).
	if path := os.Getenv("SIGILLO_MEMPROFILE"); path != "" {
		defer func() {
			if err := writeHeapProfile(path); err != nil {
				logger.Error("SIGILLO_MEMPROFILE", "err", err)
			}
		}()
	}
	return appliance.Run(ctx, cfg, appliance.Options{Logger: logger, Out: e.stdout, Command: command, ConfigFile: file})
}

func writeHeapProfile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	runtime.GC() // the in-use figures as of now
	if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
