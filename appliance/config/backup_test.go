package config

import (
	"strings"
	"testing"
	"time"
)

func TestTheBackupTableOfTheIssueReadsAsWritten(t *testing.T) {
	cfg, err := Load(write(t, `
[backup]
interval = "1h"
log_interval = "1m"
encrypt = false
[[backup.target]]
url = "file:///srv/backup/sigillo"
keep_last = 24
[[backup.target]]
url = "s3://bucket/prefix?endpoint=127.0.0.1:9000&region=us-east-1&tls=false"
credentials_file = "/etc/sigillo/s3.env"
keep_daily = 7
keep_monthly = 12
`))
	if err != nil {
		t.Fatal(err)
	}
	b := cfg.Backup
	if len(b.Targets) != 2 || b.Every() != time.Hour || b.LogEvery() != time.Minute || b.Encrypted() || !b.MigrateBackup() {
		t.Fatalf("[backup] read as %+v", b)
	}
	if b.Targets[1].CredentialsFile != "/etc/sigillo/s3.env" || b.Targets[0].KeepLast != 24 || b.Targets[1].KeepMonthly != 12 {
		t.Fatalf("targets read as %+v", b.Targets)
	}
	cfg, err = Load(write(t, "[backup]\nage_recipients_file = \"/etc/sigillo/backup.age.pub\"\nbefore_migrate = false\n[[backup.target]]\nurl = \"file:///b\"\n"))
	if err != nil || !cfg.Backup.Encrypted() || cfg.Backup.MigrateBackup() {
		t.Fatalf("encrypted backups without a backup before migrating: %+v, %v", cfg.Backup, err)
	}
	if cfg, err := Load(write(t, `hostname = "mail.example.test"`)); err != nil || len(cfg.Backup.Targets) != 0 || cfg.Backup.MigrateBackup() {
		t.Fatalf("without [backup]: %+v, %v; want no target and nothing taken before migrating", cfg.Backup, err)
	}
}

func TestABackupTableThatCannotWorkIsRefusedAtLoad(t *testing.T) {
	const file = "[[backup.target]]\nurl = \"file:///b\"\n"
	for text, want := range map[string]string{
		"[backup]\n" + file:                                                                              "or say encrypt = false",
		"[backup]\nencrypt = true\n" + file:                                                              "encrypt = true needs age_recipients_file",
		"[backup]\nencrypt = false\nage_recipients_file = \"k\"\n":                                       "contradict",
		"[backup]\ninterval = \"soon\"\nencrypt = false\n" + file:                                        "backup.interval",
		"[backup]\nlog_interval = \"10ms\"\n":                                                            "backup.log_interval",
		"[backup]\nencrypt = false\n[[backup.target]]\nurl = \"ftp://x/y\"\n":                            "scheme must be file or s3",
		"[backup]\nencrypt = false\n[[backup.target]]\nurl = \"file://relative\"\n":                      "absolute path",
		"[backup]\nencrypt = false\n[[backup.target]]\nurl = \"s3:///prefix\"\n":                         "names no bucket",
		"[backup]\nencrypt = false\n[[backup.target]]\nurl = \"s3://AKIA:secret@bucket/p\"\n":            "credentials do not go in the url",
		"[backup]\nencrypt = false\n[[backup.target]]\nurl = \"file:///b\"\nkeep_last = -1\n":            "must not be negative",
		"[backup]\nencrypt = false\n" + file + file:                                                      "listed twice",
		"[backup]\nencrypt = false\n[[backup.target]]\nurl = \"file:///b\"\ncredentials_file = \"/x\"\n": "for s3:// targets",
		"[backup]\nencrypt = false\n[[backup.target]]\nurl = \"file:///b\"\npassword = \"x\"\n":          "unknown key backup.target.password",
	} {
		_, err := Load(write(t, text))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: got %v, want an error saying %q", text, err, want)
		}
	}
}
