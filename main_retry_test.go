package main

import (
	"bufio"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"net/smtp"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
)

// TestARetryAfterALostReplyLeavesOneCopy: alice's client sends a message
// and loses the connection before the 250 (it never reads it, as when the
// node it talks to dies after the commit); the message is stored. The
// client then sends the very same message again, gets 250, and alice's
// INBOX, over IMAP, still holds it once.
func TestARetryAfterALostReplyLeavesOneCopy(t *testing.T) {
	a := newInstance(t, "mail.a.test", "")
	a.start()
	a.provision("a.test", "alice@a.test")
	tlsConf := a.tlsClient(t, "mail.a.test")
	addr := fmt.Sprintf("127.0.0.1:%d", a.ports["submissions"])
	msg := "From: alice@a.test\r\nTo: alice@a.test\r\nSubject: sent twice\r\n" +
		"Message-ID: <retry.1@client.a.test>\r\nDate: Wed, 2 Dec 2026 10:00:00 +0000\r\n\r\nOnly once, please.\r\n"

	// The first attempt: the whole transaction pipelined, the connection
	// closed right after the final dot, before any reply is read.
	conn, err := tls.Dial("tcp", addr, tlsConf)
	if err != nil {
		t.Fatal(err)
	}
	auth := base64.StdEncoding.EncodeToString([]byte("\x00alice@a.test\x00" + password("alice@a.test")))
	if _, err := bufio.NewReader(conn).ReadString('\n'); err != nil { // the greeting
		t.Fatal(err)
	}
	fmt.Fprintf(conn, "EHLO client.a.test\r\nAUTH PLAIN %s\r\nMAIL FROM:<alice@a.test>\r\nRCPT TO:<alice@a.test>\r\nDATA\r\n", auth)
	time.Sleep(300 * time.Millisecond) // DATA's 354 is not pipelined
	fmt.Fprintf(conn, "%s.\r\n", msg)
	conn.Close()

	c, err := imapclient.DialTLS(fmt.Sprintf("127.0.0.1:%d", a.ports["imaps"]), &imapclient.Options{TLSConfig: tlsConf})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Login("alice@a.test", password("alice@a.test")).Wait(); err != nil {
		t.Fatal(err)
	}
	inbox := func() uint32 {
		t.Helper()
		st, err := c.Status("INBOX", &imap.StatusOptions{NumMessages: true}).Wait()
		if err != nil {
			t.Fatal(err)
		}
		return *st.NumMessages
	}
	deadline := time.Now().Add(10 * time.Second)
	for inbox() != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("the first attempt was not stored (INBOX holds %d)", inbox())
		}
		time.Sleep(50 * time.Millisecond)
	}

	// The retry, by a client that reads its replies.
	conn, err = tls.Dial("tcp", addr, tlsConf)
	if err != nil {
		t.Fatal(err)
	}
	sc, err := smtp.NewClient(conn, "mail.a.test")
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	if err := sc.Auth(smtp.PlainAuth("", "alice@a.test", password("alice@a.test"), "mail.a.test")); err != nil {
		t.Fatal(err)
	}
	if err := sendOne(sc, "alice@a.test", "alice@a.test", []byte(msg)); err != nil {
		t.Fatalf("the retry was not acknowledged: %v", err)
	}
	if n := inbox(); n != 1 {
		t.Fatalf("INBOX holds %d messages after the retry, want 1", n)
	}

	if _, err := c.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	msgs, err := c.Fetch(imap.SeqSetNum(1), &imap.FetchOptions{Envelope: true}).Collect()
	if err != nil || len(msgs) != 1 || msgs[0].Envelope.MessageID != "retry.1@client.a.test" {
		t.Fatalf("the stored message: %+v %v", msgs, err)
	}
	if !strings.Contains(a.logged(), "duplicate=1") {
		t.Errorf("the server did not log the retry as a duplicate")
	}
}
