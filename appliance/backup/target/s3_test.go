package target

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"sigillo/appliance/apptest"
)

// openS3 opens the target prefix in bucket of srv, with a credentials file
// as the operator writes it.
func openS3(t *testing.T, srv *apptest.S3, bucket, prefix string) *S3 {
	t.Helper()
	creds := filepath.Join(t.TempDir(), "s3.credentials")
	srv.WriteCredentials(t, creds)
	st, err := Open(srv.URL(bucket, prefix), creds)
	if err != nil {
		t.Fatal(err)
	}
	return st.(*S3)
}

// noUploadsLeft fails when a multipart upload was left behind in bucket:
// its parts would take space nobody sees.
func noUploadsLeft(t *testing.T, srv *apptest.S3, bucket string) {
	t.Helper()
	for u := range srv.Client(t).ListIncompleteUploads(context.Background(), bucket, "", true) {
		if u.Err != nil {
			t.Fatalf("list incomplete uploads: %v", u.Err)
		}
		t.Errorf("multipart upload of %s left behind", u.Key)
	}
}

// A bucket on an S3 server (versitygw): every scenario of a target, each
// under its own prefix of one bucket, and no upload left half done.
func TestS3Scenarios(t *testing.T) {
	srv := apptest.StartS3(t)
	srv.MakeBucket(t, "sigillo-backups")
	runStoreScenarios(t, func(t *testing.T) Store {
		return openS3(t, srv, "sigillo-backups", "node1/"+strings.ReplaceAll(t.Name(), "/", "-"))
	})
	noUploadsLeft(t, srv, "sigillo-backups")
}

// Two targets in one bucket under different prefixes (two clusters, or
// a prefix and the bucket's root) do not see each other's objects.
func TestS3Prefixes(t *testing.T) {
	srv := apptest.StartS3(t)
	srv.MakeBucket(t, "shared")
	a := openS3(t, srv, "shared", "site-a")
	ab := openS3(t, srv, "shared", "site-ab")
	root := openS3(t, srv, "shared", "")
	put(t, a, "snapshots/1/manifest.json", "a")
	put(t, ab, "snapshots/1/manifest.json", "ab")
	if got := list(t, a, ""); len(got) != 1 || got[0].Name != "snapshots/1/manifest.json" {
		t.Fatalf("site-a lists %v", got)
	}
	if got := get(t, ab, "snapshots/1/manifest.json"); got != "ab" {
		t.Fatalf("site-ab reads %q", got)
	}
	if got := list(t, root, ""); len(got) != 2 || got[0].Name != "site-a/snapshots/1/manifest.json" {
		t.Fatalf("the bucket's root lists %v", got)
	}
	if a.String() != "s3://shared/site-a?endpoint="+srv.Endpoint+"&region=us-east-1&tls=false" {
		t.Fatalf("String() = %s", a)
	}
}

// The operator pasted a wrong secret: every call is refused with an error
// that says to check the credentials, and that does not show the secret.
func TestS3WrongSecret(t *testing.T) {
	srv := apptest.StartS3(t)
	srv.MakeBucket(t, "backups")
	creds := filepath.Join(t.TempDir(), "creds")
	const wrong = "not-the-secret-0123456789"
	os.WriteFile(creds, []byte("AWS_ACCESS_KEY_ID="+srv.AccessKey+"\nAWS_SECRET_ACCESS_KEY="+wrong+"\n"), 0o600)
	st, err := Open(srv.URL("backups", "x"), creds)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	_, perr := st.Put(ctx, "snapshots/1/manifest.json", strings.NewReader("{}"))
	_, gerr := st.Get(ctx, "snapshots/1/manifest.json")
	lerr := st.List(ctx, "", func(string, int64) error { return nil })
	for _, err := range []error{perr, gerr, lerr} {
		if err == nil || !strings.Contains(err.Error(), "access refused") || !strings.Contains(err.Error(), "check the credentials") {
			t.Errorf("with a wrong secret: %v", err)
		} else if strings.Contains(err.Error(), wrong) || strings.Contains(err.Error(), srv.SecretKey) {
			t.Errorf("the error shows a secret: %v", err)
		}
	}
	t.Logf("wrong secret: %v", perr)
	if got := list(t, openS3(t, srv, "backups", "x"), ""); len(got) != 0 {
		t.Fatalf("the refused put left %v", got)
	}
}

// The bucket was never created (or has another name): a clear error; the
// target does not create it.
func TestS3MissingBucket(t *testing.T) {
	srv := apptest.StartS3(t)
	st := openS3(t, srv, "no-such-bucket", "x")
	ctx := context.Background()
	_, perr := st.Put(ctx, "a", strings.NewReader("x"))
	_, gerr := st.Get(ctx, "a")
	lerr := st.List(ctx, "", func(string, int64) error { return nil })
	derr := st.Delete(ctx, "a")
	for _, err := range []error{perr, gerr, lerr, derr} {
		if err == nil || !strings.Contains(err.Error(), "bucket no-such-bucket does not exist") {
			t.Errorf("missing bucket: %v", err)
		}
	}
	if ok, err := srv.Client(t).BucketExists(ctx, "no-such-bucket"); ok || err != nil {
		t.Fatalf("bucket exists %v (%v): the target created it", ok, err)
	}
}

// The S3 server goes down during the night: a Put fails within seconds
// (not after minutes of retries), and once the server is back the next
// Put works, with the objects of before still there.
func TestS3ServerDown(t *testing.T) {
	srv := apptest.StartS3(t)
	srv.MakeBucket(t, "backups")
	st := openS3(t, srv, "backups", "")
	put(t, st, "snapshots/1/manifest.json", "before")

	srv.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	start := time.Now()
	_, err := st.Put(ctx, "snapshots/2/manifest.json", strings.NewReader("during"))
	took := time.Since(start)
	if err == nil {
		t.Fatal("put with the server down succeeded")
	}
	t.Logf("server down: put failed after %v: %v", took.Round(time.Millisecond), err)
	if took > 15*time.Second {
		t.Errorf("put with the server down took %v to fail", took)
	}
	if !strings.Contains(err.Error(), "put snapshots/2/manifest.json") || !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("error does not say what failed and why: %v", err)
	}
	if _, err := st.Get(ctx, "snapshots/1/manifest.json"); err == nil || errors.Is(err, os.ErrNotExist) {
		t.Errorf("get with the server down: %v, want a failure that is not 'absent'", err)
	}

	srv.Start()
	put(t, st, "snapshots/2/manifest.json", "after")
	if got := list(t, st, ""); len(got) != 2 {
		t.Fatalf("after the restart: %v", got)
	}
	if got := get(t, st, "snapshots/1/manifest.json"); got != "before" {
		t.Fatalf("after the restart: %q", got)
	}
}

// Credentials from the environment, when the target has no credentials
// file (a systemd EnvironmentFile, say).
func TestS3CredentialsFromEnvironment(t *testing.T) {
	srv := apptest.StartS3(t)
	srv.MakeBucket(t, "backups")
	t.Setenv(envAccessKeyID, srv.AccessKey)
	t.Setenv(envSecretAccessKey, srv.SecretKey)
	t.Setenv(envSessionToken, "")
	st, err := Open(srv.URL("backups", "env"), "")
	if err != nil {
		t.Fatal(err)
	}
	put(t, st, "hello", "world")
	if got := get(t, st, "hello"); got != "world" {
		t.Fatalf("got %q", got)
	}
}

// A server that accepts connections and never answers (a hung proxy): the
// caller's context bounds every call.
func TestS3ServerHangs(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var conns []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
		}
	}()
	defer func() {
		ln.Close()
		<-done
		for _, c := range conns {
			c.Close()
		}
	}()
	creds := filepath.Join(t.TempDir(), "creds")
	os.WriteFile(creds, []byte("AWS_ACCESS_KEY_ID=a\nAWS_SECRET_ACCESS_KEY=b\n"), 0o600)
	st, err := Open("s3://backups?endpoint="+ln.Addr().String()+"&region=us-east-1&tls=false", creds)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	start := time.Now()
	_, err = st.Put(ctx, "snapshots/1/manifest.json", strings.NewReader("{}"))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("put to a hung server: %v, want the context's deadline", err)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Fatalf("put to a hung server returned after %v, its context ended after 2 s", took)
	}
}
