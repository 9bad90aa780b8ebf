package apptest_test

import (
	"context"
	"strings"
	"testing"

	"sigillo/appliance/apptest"
)

// TestS3StopStart: the S3 server a backup test starts keeps its port and
// its buckets across Stop and Start, as a real server that restarts.
func TestS3StopStart(t *testing.T) {
	s := apptest.StartS3(t)
	s.MakeBucket(t, "kept")
	endpoint := s.Endpoint
	s.Stop()
	s.Stop() // again: nothing
	ctx := context.Background()
	if _, err := s.Client(t).BucketExists(ctx, "kept"); err == nil {
		t.Fatal("the stopped server answers")
	}
	s.Start()
	if s.Endpoint != endpoint {
		t.Fatalf("endpoint %s after the restart, was %s", s.Endpoint, endpoint)
	}
	if ok, err := s.Client(t).BucketExists(ctx, "kept"); !ok || err != nil {
		t.Fatalf("bucket after the restart: %v %v", ok, err)
	}
	if u := s.URL("kept", "p/q"); u != "s3://kept/p/q?endpoint="+endpoint+"&region=us-east-1&tls=false" {
		t.Fatalf("URL = %s", u)
	}
}

// TestS3MissingBinary: without versitygw a test skips loudly, or fails
// under CI=true, saying how to install it.
func TestS3MissingBinary(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	t.Setenv("HOME", t.TempDir())
	run := func(ci string) *tb {
		t.Setenv("CI", ci)
		r := &tb{TB: t}
		done := make(chan struct{})
		go func() {
			defer close(done)
			apptest.StartS3(r)
		}()
		<-done
		return r
	}
	if r := run(""); r.fatal != "" || !strings.Contains(r.skip, "SKIPPING TestNeedsIt") || !strings.Contains(r.skip, "go install github.com/versity/versitygw/cmd/versitygw@v1.8.0") {
		t.Errorf("outside CI: fatal %q, skip %q; want a loud skip", r.fatal, r.skip)
	}
	if r := run("true"); r.skip != "" || !strings.Contains(r.fatal, "versitygw (the S3 server) is not in PATH") {
		t.Errorf("in CI: fatal %q, skip %q; want a failure", r.fatal, r.skip)
	}
}
