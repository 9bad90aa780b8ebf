package config

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"
)

// Backup is the [backup] table: where and how often the store is backed
// up (a leader job, appliance/backup). No target: no scheduled backups.
type Backup struct {
	// Interval between snapshots, a Go duration; default 1h. A snapshot
	// is skipped when nothing changed since the last one.
	Interval string `toml:"interval"`
	// LogInterval: how often the log entries committed since the last
	// snapshot are shipped (the recovery point); default 1m.
	LogInterval string `toml:"log_interval"`
	// Encrypt: false stores the parts compressed only, in the clear (and
	// leaves the node's secrets out). With targets, either this is false
	// or AgeRecipientsFile is set.
	Encrypt *bool `toml:"encrypt"`
	// AgeRecipientsFile lists the age public keys the backups are
	// encrypted for, one per line.
	AgeRecipientsFile string `toml:"age_recipients_file"`
	// BeforeMigrate: serve backs the database up to the first target
	// before a schema migration (default true).
	BeforeMigrate *bool `toml:"before_migrate"`
	// Targets: one [[backup.target]] each; two on separate media is what
	// the README recommends.
	Targets []BackupTarget `toml:"target"`
}

// BackupTarget is one [[backup.target]].
type BackupTarget struct {
	// URL: file:///dir or s3://bucket/prefix?endpoint=host:port&region=…&tls=false.
	URL string `toml:"url"`
	// CredentialsFile holds AWS_ACCESS_KEY_ID=… and AWS_SECRET_ACCESS_KEY=…
	// for s3:// (else they come from the environment).
	CredentialsFile string `toml:"credentials_file"`
	// Retention on this target: the newest KeepLast snapshots, the newest
	// of each of the last KeepDaily days and KeepMonthly months. All zero:
	// keep everything.
	KeepLast    int `toml:"keep_last"`
	KeepDaily   int `toml:"keep_daily"`
	KeepMonthly int `toml:"keep_monthly"`
}

// Every is the effective interval.
func (b Backup) Every() time.Duration { return durationOr(b.Interval, time.Hour) }

// LogEvery is the effective log_interval.
func (b Backup) LogEvery() time.Duration { return durationOr(b.LogInterval, time.Minute) }

// Encrypted says whether backups are encrypted (a recipients file given).
func (b Backup) Encrypted() bool { return b.AgeRecipientsFile != "" }

// MigrateBackup says whether serve backs up before migrating.
func (b Backup) MigrateBackup() bool {
	return len(b.Targets) > 0 && (b.BeforeMigrate == nil || *b.BeforeMigrate)
}

func durationOr(s string, def time.Duration) time.Duration {
	if d, err := time.ParseDuration(s); err == nil && d > 0 {
		return d
	}
	return def
}

func (b Backup) validate() error {
	for _, d := range []struct{ name, v string }{{"interval", b.Interval}, {"log_interval", b.LogInterval}} {
		if d.v == "" {
			continue
		}
		if v, err := time.ParseDuration(d.v); err != nil || v < time.Second {
			return fmt.Errorf("backup.%s %q is not a duration of at least a second (\"1h\")", d.name, d.v)
		}
	}
	if b.Encrypt != nil && !*b.Encrypt && b.AgeRecipientsFile != "" {
		return errors.New("backup: encrypt = false and age_recipients_file contradict each other: keep one")
	}
	if b.Encrypt != nil && *b.Encrypt && b.AgeRecipientsFile == "" {
		return errors.New("backup: encrypt = true needs age_recipients_file (the age public keys to encrypt for)")
	}
	if len(b.Targets) == 0 {
		return nil
	}
	if b.AgeRecipientsFile == "" && (b.Encrypt == nil || *b.Encrypt) {
		return errors.New("backup: set age_recipients_file (the age public keys backups are encrypted for), or say encrypt = false to store them in the clear")
	}
	seen := map[string]bool{}
	for i, t := range b.Targets {
		name := fmt.Sprintf("backup.target[%d]", i)
		u, err := url.Parse(t.URL)
		if err != nil || t.URL == "" {
			return fmt.Errorf("%s: url %q is not a URL (file:///dir or s3://bucket/prefix?endpoint=…)", name, t.URL)
		}
		switch u.Scheme {
		case "file":
			if u.Path == "" || !strings.HasPrefix(u.Path, "/") {
				return fmt.Errorf("%s: url %q: a file target needs an absolute path (file:///srv/backup/sigillo)", name, t.URL)
			}
			if t.CredentialsFile != "" {
				return fmt.Errorf("%s: credentials_file is for s3:// targets", name)
			}
		case "s3":
			if u.Host == "" {
				return fmt.Errorf("%s: url %q names no bucket (s3://bucket/prefix)", name, t.URL)
			}
			if u.User != nil {
				return fmt.Errorf("%s: credentials do not go in the url: use credentials_file or the environment", name)
			}
		default:
			return fmt.Errorf("%s: url %q: scheme must be file or s3", name, t.URL)
		}
		if t.KeepLast < 0 || t.KeepDaily < 0 || t.KeepMonthly < 0 {
			return fmt.Errorf("%s: keep_last, keep_daily and keep_monthly must not be negative", name)
		}
		key := strings.TrimSuffix(t.URL, "/")
		if seen[key] {
			return fmt.Errorf("%s: url %q is listed twice", name, t.URL)
		}
		seen[key] = true
	}
	return nil
}
