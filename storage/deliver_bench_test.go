package storage

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"
)

// BenchmarkDeliverSMTP applies Deliver commands shaped as the SMTP server
// proposes them (trace fields, then a 4 KB message with its own
// Message-ID, one local recipient), one log entry per Apply as a lightly
// loaded raft leader does: the hot path of SMTP delivery inside the store.
// "dedupe" is the command as the SMTP server makes it since deliveries are
// idempotent (Deliver.Dedupe: one more statement per recipient, and a
// bounded purge); "plain" is without it, as before.
func BenchmarkDeliverSMTP(b *testing.B) {
	for _, dedupe := range []bool{false, true} {
		name := "plain"
		if dedupe {
			name = "dedupe"
		}
		b.Run(name, func(b *testing.B) { benchDeliverSMTP(b, dedupe) })
	}
}

func benchDeliverSMTP(b *testing.B, dedupe bool) {
	s, a := newBenchStore(b)
	body := strings.Repeat(strings.Repeat("x", 76)+"\r\n", 52)
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		msg := fmt.Sprintf("Message-ID: <%d.bench@far.test>\r\nSubject: bench\r\n\r\n%s", i, body)
		cmd := smtpDeliver(a.mailbox, int64(1_700_000_000+i), msg)
		if dedupe {
			sum := sha256.Sum256([]byte(msg))
			cmd.Dedupe = &Dedupe{MessageID: fmt.Sprintf("%d.bench@far.test", i), SHA256: hex.EncodeToString(sum[:])}
		}
		data, err := Encode(cmd)
		if err != nil {
			b.Fatal(err)
		}
		a.index++
		res, err := s.Apply(ctx, []Entry{{Index: a.index, Data: data}})
		if err != nil || res[0].Err != nil {
			b.Fatal(err, res[0].Err)
		}
	}
}

// smtpDeliver is the command the SMTP server proposes for msg, received at
// at for one local mailbox.
func smtpDeliver(mailbox, at int64, msg string) *Deliver {
	trace := fmt.Sprintf("Return-Path: <x@far.test>\r\nReceived: from far.test (unknown [192.0.2.1])\r\n\tby mx.example.test (Sigillo) with ESMTPS id Q%d; Mon, 02 Jan 2006 15:04:05 +0000\r\n", at)
	return &Deliver{Targets: []Target{{MailboxID: mailbox, EnforceQuota: true}}, InternalDate: at,
		Data: []byte(trace + msg)}
}

type benchApplier struct {
	index   uint64
	mailbox int64
}

func newBenchStore(b *testing.B) (*Store, *benchApplier) {
	b.Helper()
	s, err := Open(b.TempDir() + "/db.sqlite")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	a := &benchApplier{}
	apply := func(c Command) any {
		data, err := Encode(c)
		if err != nil {
			b.Fatal(err)
		}
		a.index++
		res, err := s.Apply(context.Background(), []Entry{{Index: a.index, Data: data}})
		if err != nil || res[0].Err != nil {
			b.Fatal(err, res[0].Err)
		}
		return res[0].Value
	}
	apply(&AddDomain{Name: "example.test", At: 1})
	a.mailbox = apply(&AddMailbox{Address: "bench@example.test", PasswordHash: "h", At: 1}).(int64)
	return s, a
}
