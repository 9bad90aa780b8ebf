package apptest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// VersityGWVersion is the versitygw the tests run, as .ci/run installs it.
const VersityGWVersion = "v1.8.0"

// S3 is an S3 server started by a test: versitygw with its posix backend
// in a temporary directory, on 127.0.0.1 over plain HTTP. Its access key
// and a fresh secret are the root account's.
type S3 struct {
	Endpoint  string // "127.0.0.1:port"
	AccessKey string
	SecretKey string
	Region    string

	t      testing.TB
	bin    string
	root   string // the posix backend's directory: the buckets
	logf   string // the server's output
	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
}

// StartS3 starts versitygw (from PATH or $HOME/go/bin) and waits until it
// answers; it is stopped when the test ends. Without the binary the test is
// skipped loudly, or fails under CI=true. Install it with
// GOBIN=$HOME/go/bin go install github.com/versity/versitygw/cmd/versitygw@v1.8.0
func StartS3(t testing.TB) *S3 {
	t.Helper()
	bin := versitygw(t)
	dir := t.TempDir()
	secret := make([]byte, 16)
	rand.Read(secret)
	s := &S3{
		Endpoint:  fmt.Sprintf("127.0.0.1:%d", freeTCPPort(t)),
		AccessKey: "sigillotest",
		SecretKey: hex.EncodeToString(secret),
		Region:    "us-east-1",
		t:         t,
		bin:       bin,
		root:      filepath.Join(dir, "s3root"),
		logf:      filepath.Join(dir, "versitygw.log"),
	}
	if err := os.Mkdir(s.root, 0o700); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	s.Start()
	return s
}

func versitygw(t testing.TB) string {
	t.Helper()
	if p, err := exec.LookPath("versitygw"); err == nil {
		return p
	}
	if home, err := os.UserHomeDir(); err == nil {
		p := filepath.Join(home, "go", "bin", "versitygw")
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return p
		}
	}
	msg := fmt.Sprintf("versitygw (the S3 server) is not in PATH nor in $HOME/go/bin; install it with "+
		"`GOBIN=$HOME/go/bin go install github.com/versity/versitygw/cmd/versitygw@%s`", VersityGWVersion)
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s: %s cannot run, and in CI that is a failure", msg, t.Name())
	}
	t.Skipf("!!! SKIPPING %s: %s !!!", t.Name(), msg)
	return ""
}

// Start starts the server (again) on the same port with the same data,
// and waits until it answers. Starting a running server does nothing.
func (s *S3) Start() {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		return
	}
	logf, err := os.OpenFile(s.logf, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		s.t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(s.bin, "--port", s.Endpoint, "--region", s.Region, "--quiet", "posix", s.root)
	cmd.Env = append(os.Environ(), "ROOT_ACCESS_KEY_ID="+s.AccessKey, "ROOT_SECRET_ACCESS_KEY="+s.SecretKey)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	deadline := time.Now().Add(30 * time.Second)
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("versitygw: %v", err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	s.cmd, s.exited = cmd, exited
	for !s.answers() {
		select {
		case <-exited:
			s.cmd = nil
			out, _ := os.ReadFile(s.logf)
			s.t.Fatalf("versitygw exited at start:\n%s", out)
		default:
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("versitygw did not answer on %s within 30 s", s.Endpoint)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// answers is true when the server gives any HTTP answer (an anonymous
// request is refused: that is an answer).
func (s *S3) answers() bool {
	c := http.Client{Timeout: time.Second}
	resp, err := c.Get("http://" + s.Endpoint + "/")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return true
}

// Stop stops the server (SIGTERM, then SIGKILL after 10 s) and waits for
// it to exit; the data stays for Start. It may be called again.
func (s *S3) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	syscall.Kill(-s.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(10 * time.Second):
		syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
		<-s.exited
	}
	s.cmd = nil
}

// Client is a minio-go client of the server with the root credentials.
func (s *S3) Client(t testing.TB) *minio.Client {
	t.Helper()
	c, err := minio.New(s.Endpoint, &minio.Options{
		Creds:        credentials.NewStaticV4(s.AccessKey, s.SecretKey, ""),
		Region:       s.Region,
		BucketLookup: minio.BucketLookupPath,
		MaxRetries:   2, // a stopped server is an answer, not a reason to wait
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// MakeBucket creates a bucket.
func (s *S3) MakeBucket(t testing.TB, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.Client(t).MakeBucket(ctx, name, minio.MakeBucketOptions{Region: s.Region}); err != nil {
		t.Fatalf("make bucket %s: %v", name, err)
	}
}

// URL is the backup target url of prefix in bucket on this server.
func (s *S3) URL(bucket, prefix string) string {
	u := "s3://" + bucket
	if prefix != "" {
		u += "/" + prefix
	}
	return u + "?endpoint=" + s.Endpoint + "&region=" + s.Region + "&tls=false"
}

// WriteCredentials writes a credentials file (mode 0600) with the server's
// access key and secret, as target.Open reads it.
func (s *S3) WriteCredentials(t testing.TB, path string) {
	t.Helper()
	var b bytes.Buffer
	fmt.Fprintf(&b, "# S3 credentials of the test server %s\nAWS_ACCESS_KEY_ID=%s\nAWS_SECRET_ACCESS_KEY=%s\n", s.Endpoint, s.AccessKey, s.SecretKey)
	if err := os.WriteFile(path, b.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
}
