package main

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// policyScenario runs a scenario of testdata/smtppolicy.py against the
// instance.
func (in *instance) policyScenario(t *testing.T, scenario string, env ...string) string {
	t.Helper()
	py := need(t, "python3")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, py, "testdata/smtppolicy.py", scenario)
	cmd.Env = append(append(os.Environ(), in.env()...), env...)
	out, err := cmd.CombinedOutput()
	t.Logf("smtppolicy.py %s:\n%s", scenario, out)
	if err != nil {
		t.Fatalf("scenario %s: %v", scenario, err)
	}
	return string(out)
}

func login(addr string) []string { return []string{"USER=" + addr, "PASSWORD=" + password(addr)} }

func reader(addr string) []string {
	return []string{"READER=" + addr, "READER_PASSWORD=" + password(addr)}
}

// The attacks of issue 10 on the SMTP server, through the real binary: a
// user and an outsider forging hosted senders, a harvester guessing 10,000
// addresses, mail to postmaster, a submission without Message-ID: and
// Date:, and mail for a full mailbox that must not bounce to a forged
// sender.
func TestTheSMTPServerRefusesSpoofingHarvestingAndBackscatter(t *testing.T) {
	in := newInstance(t, "mail.example.test", "", `postmaster = "admin@example.test"`)
	in.start()
	in.provision("example.test", "alice@example.test", "bob@example.test", "admin@example.test", "dave@example.test")
	in.provision("second.test", "carol@second.test")
	in.cli(password("tiny@example.test")+"\n", "mailbox", "add", "tiny@example.test", "--password-stdin", "--quota", "10000")
	alice := login("alice@example.test")

	t.Run("spoofed senders", func(t *testing.T) {
		in.policyScenario(t, "spoofing", append(append(alice, reader("bob@example.test")...), "VICTIM=carol@second.test")...)
	})
	t.Run("harvesting", func(t *testing.T) {
		in.policyScenario(t, "harvest", "DOMAIN=example.test", "GUESSES=10000", "LIMIT=20")
	})
	t.Run("postmaster", func(t *testing.T) {
		in.policyScenario(t, "postmaster", append(reader("admin@example.test"), "POSTMASTER_AT=PostMaster@second.test")...)
	})
	t.Run("Message-ID and Date added on submission", func(t *testing.T) {
		in.policyScenario(t, "headers", append(append(alice, reader("dave@example.test")...), "HOSTNAME=mail.example.test")...)
	})
	t.Run("quota without backscatter", func(t *testing.T) {
		in.policyScenario(t, "quota", append(reader("tiny@example.test"), "TINY=tiny@example.test")...)
		var items []json.RawMessage
		out := in.cli("", "queue", "list", "--json")
		if err := json.Unmarshal([]byte(out), &items); err != nil || len(items) != 0 {
			t.Fatalf("something went out (a bounce to someone@remote.test?): %s", out)
		}
	})
	t.Run("relay_networks", func(t *testing.T) {
		in.stop(syscall.SIGTERM)
		in.top += "\nrelay_networks = [\"127.0.0.1/32\"]"
		in.saveConfig()
		in.start()
		in.policyScenario(t, "relayed", append(alice, reader("bob@example.test")...)...)
	})
}

// A PEC user's submission goes through the same policy first: the fields
// added on submission reach the access point, which keeps the client's
// Message-ID (ours, here) in X-Riferimento-Message-ID; and a From: that is
// not the user is the access point's to refuse, with its signed avviso.
func TestPECSubmissionsMeetTheSubmissionPolicy(t *testing.T) {
	w := newPECWorld(t)
	bare := filepath.Join(w.dir, "bare.eml")
	os.WriteFile(bare, []byte("From: alice@a.test\r\nTo: bob@b.test\r\nSubject: Senza identificativo\r\n\r\nTesto.\r\n"), 0o600)
	if reply := w.a.pecClient(t, "send", "alice@a.test", password("alice@a.test"), bare, "bob@b.test"); !strings.Contains(reply, `"code": 250`) {
		t.Fatalf("submission without Message-ID: and Date: %s", reply)
	}
	if acc := bySubjectPrefix(w.a.inbox(t, "alice@a.test", 1), "ACCETTAZIONE: Senza identificativo"); len(acc) != 1 {
		t.Fatal("no accettazione")
	}
	got := w.b.inbox(t, "bob@b.test", 1)
	if len(got) != 1 || got[0].Subject != "POSTA CERTIFICATA: Senza identificativo" {
		t.Fatalf("bob got %+v", got)
	}
	if !regexp.MustCompile(`^<\d{14}\.[A-Z2-7]{16}@mail\.a\.test>$`).MatchString(got[0].PostaRif) || !strings.HasPrefix(got[0].PostaMsgID, "<sigillo.") {
		t.Errorf("postacert.eml Message-ID %q, X-Riferimento-Message-ID %q (want the one added on submission)", got[0].PostaMsgID, got[0].PostaRif)
	}
	w.checkSigned(t, got[0], w.certA)

	forged := filepath.Join(w.dir, "forged.eml")
	os.WriteFile(forged, []byte("From: posta-certificata@a.test\r\nTo: bob@b.test\r\nSubject: Falso\r\n\r\nTesto.\r\n"), 0o600)
	reply := w.a.pecClient(t, "send", "alice@a.test", password("alice@a.test"), forged, "bob@b.test")
	if !strings.Contains(reply, `"code": 550`) {
		t.Fatalf("a PEC submission with another From: %s", reply)
	}
	if avviso := bySubjectPrefix(w.a.inbox(t, "alice@a.test", 3), "AVVISO DI NON ACCETTAZIONE: Falso"); len(avviso) != 1 {
		t.Fatal("no avviso di non accettazione for the forged From:")
	}
}
