package scan

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"sigillo/appliance/apptest"
)

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func infected() []byte {
	return []byte("From: a@a.test\r\nTo: b@b.test\r\nSubject: fattura\r\nMIME-Version: 1.0\r\n" +
		"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nciao\r\n--b\r\n" +
		"Content-Type: application/octet-stream; name=x.com\r\n\r\n" + apptest.EICAR + "\r\n--b--\r\n")
}

func clean() []byte {
	return []byte("From: a@a.test\r\nTo: b@b.test\r\nSubject: ciao\r\n\r\n" + strings.Repeat("testo pulito\r\n", 100))
}

func newScanner(t *testing.T, cfg Config) *Scanner {
	t.Helper()
	s, err := New(cfg, quiet())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestClamdFindsEICARAndPassesCleanMail(t *testing.T) {
	cd := apptest.StartClamd(t)
	for _, addr := range []string{cd.Address, cd.TCP} {
		s := newScanner(t, Config{Address: addr, Required: true})
		v, err := scanBytes(s, infected())
		if err != nil || !v.Infected || v.Virus != apptest.EICARSignature {
			t.Fatalf("%s: EICAR: %+v, %v", addr, v, err)
		}
		found := v.Virus
		v, err = scanBytes(s, clean())
		if err != nil || v.Infected || v.Skipped != "" || v.Header() != "" {
			t.Fatalf("%s: clean message: %+v, %v", addr, v, err)
		}
		ver, err := s.Version(context.Background())
		if err != nil || !strings.HasPrefix(ver, "ClamAV ") {
			t.Fatalf("%s: version %q, %v", addr, ver, err)
		}
		if st := s.Status(); !st.OK {
			t.Fatalf("status %+v", st)
		}
		t.Logf("%s: %s; EICAR found as %s", addr, ver, found)
	}
}

func TestScansRunSideBySide(t *testing.T) {
	cd := apptest.StartClamd(t)
	s := newScanner(t, Config{Address: cd.Address, Required: true, Concurrency: 4})
	var wg sync.WaitGroup
	errs := make(chan error, 40)
	start := time.Now()
	for i := range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			msg, want := clean(), false
			if i%2 == 0 {
				msg, want = infected(), true
			}
			v, err := scanBytes(s, msg)
			if err != nil || v.Infected != want {
				errs <- errors.Join(err, errors.New("wrong verdict"))
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	t.Logf("40 scans, 4 at a time: %v", time.Since(start).Round(time.Millisecond))
}

func TestClamdDownIsAFailureWhenRequiredAndASkipWhenNot(t *testing.T) {
	cd := apptest.StartClamd(t)
	required := newScanner(t, Config{Address: cd.Address, Required: true})
	optional := newScanner(t, Config{Address: cd.Address})
	cd.Stop()
	if _, err := scanBytes(required, clean()); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("required, clamd down: %v", err)
	}
	if st := required.Status(); st.OK || st.LastErr == "" {
		t.Fatalf("status with clamd down: %+v", st)
	}
	v, err := scanBytes(optional, infected())
	if err != nil || v.Infected || v.Skipped == "" || !strings.HasPrefix(v.Header(), "X-Sigillo-Scan: skipped") {
		t.Fatalf("not required, clamd down: %+v, %v", v, err)
	}
	if _, err := required.Version(context.Background()); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("version with clamd down: %v", err)
	}
}

// A clamd that accepts connections and never answers costs one Timeout,
// not a stuck delivery.
func TestAClamdThatHangsTimesOut(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "hang.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var conns []net.Conn
	var mu sync.Mutex
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			go io.Copy(io.Discard, c)
		}
	}()
	defer func() {
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	}()
	s := newScanner(t, Config{Address: "unix:" + sock, Required: true, Timeout: 500 * time.Millisecond})
	start := time.Now()
	_, err = scanBytes(s, clean())
	if took := time.Since(start); !errors.Is(err, ErrUnavailable) || took > 3*time.Second {
		t.Fatalf("hung clamd: %v after %v", err, took)
	}
}

func TestAMessageOverTheLimitIsNotScanned(t *testing.T) {
	cd := apptest.StartClamd(t)
	s := newScanner(t, Config{Address: cd.Address, Required: true, MaxScanBytes: 100})
	v, err := scanBytes(s, infected())
	if err != nil || v.Infected || !strings.Contains(v.Header(), "larger than max_scan_bytes") {
		t.Fatalf("over max_scan_bytes: %+v %v", v, err)
	}
}

func TestBadAddressesAreRefused(t *testing.T) {
	for _, a := range []string{"clamd", "http://x", "tcp://", "unix:"} {
		if _, err := New(Config{Address: a}, nil); err == nil {
			t.Errorf("%q accepted", a)
		}
	}
	if s, err := New(Config{}, nil); s != nil || err != nil {
		t.Errorf("empty address: %v %v", s, err)
	}
}

// scanBytes scans a message held in memory.
func scanBytes(s *Scanner, msg []byte) (Verdict, error) {
	return s.Scan(context.Background(), bytes.NewReader(msg), int64(len(msg)))
}
