package target

import (
	"strings"
	"testing"
)

// An operator writes a target url in sigillo.toml: the good ones open, the
// bad ones are refused with an error that says what is wrong.
func TestOpenURL(t *testing.T) {
	env := map[string]string{envAccessKeyID: "AKIDEXAMPLE", envSecretAccessKey: "s3cr3t-never-shown"}
	getenv := func(k string) string { return env[k] }
	good := []struct{ url, str string }{
		{"file:///srv/backup", "file:///srv/backup"},
		{"file://localhost/srv/backup/", "file:///srv/backup"},
		{"file:///srv/x/../backup", "file:///srv/backup"},
		{"FILE:///srv/backup", "file:///srv/backup"},
		{"s3://sigillo-backups", "s3://sigillo-backups"},
		{"s3://sigillo-backups/", "s3://sigillo-backups"},
		{"s3://sigillo-backups/node1/daily/", "s3://sigillo-backups/node1/daily"},
		{"s3://b-1/p?endpoint=minio.lan:9000&region=eu-south-1&tls=false", "s3://b-1/p?endpoint=minio.lan:9000&region=eu-south-1&tls=false"},
		{"s3://b-1/p?tls=true&endpoint=[::1]:9000", "s3://b-1/p?endpoint=[::1]:9000"},
		{"s3://b-1?endpoint=s3.example.org", "s3://b-1?endpoint=s3.example.org"},
	}
	for _, c := range good {
		st, err := open(c.url, "", getenv)
		if err != nil {
			t.Errorf("%s: %v", c.url, err)
			continue
		}
		if got := st.String(); got != c.str {
			t.Errorf("%s: String() = %q, want %q", c.url, got, c.str)
		}
	}

	bad := []struct{ url, want string }{
		{"", "empty url"},
		{"/srv/backup", "no scheme"},
		{"ftp://host/x", `scheme "ftp"`},
		{"file:relative/dir", "must be absolute"},
		{"file://backup/dir", `host "backup"`},
		{"file://other.example/srv", `host "other.example"`},
		{"file://", "must be absolute"},
		{"file:///srv/backup?sync=1", "no parameters"},
		{"file:///srv/backup#x", "fragment"},
		{"file:///srv/%00x", "NUL"},
		{"s3://", "bucket"},
		{"s3://Bad_Bucket/x", "bucket"},
		{"s3://ab/x", "bucket"},
		{"s3://bucket/a/../b", `".." element`},
		{"s3://bucket/a//b", "empty element"},
		{"s3://bucket/x?endpoint=", "endpoint: empty"},
		{"s3://bucket/x?endpoint=http://minio:9000", "tls=false"},
		{"s3://bucket/x?endpoint=minio:http", "bad port"},
		{"s3://bucket/x?endpoint=minio:99999", "bad port"},
		{"s3://bucket/x?endpoint=:9000", "no host"},
		{"s3://bucket/x?tls=maybe", "want true or false"},
		{"s3://bucket/x?region=", "not a region"},
		{"s3://bucket/x?regoin=eu", `unknown parameter "regoin"`},
		{"s3://bucket/x?tls=false&tls=true", "given 2 times"},
		{"s3://bucket/x?%zz", "malformed parameters"},
		{"s3://AKIDEXAMPLE:s3cr3t@bucket/x", "do not belong in the url"},
		{"s3://bucket/x%zz", "malformed url"},
	}
	for _, c := range bad {
		_, err := open(c.url, "", getenv)
		if err == nil {
			t.Errorf("%q: opened, want an error with %q", c.url, c.want)
			continue
		}
		if !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: error %q, want it to say %q", c.url, err, c.want)
		}
		if strings.Contains(err.Error(), "s3cr3t") {
			t.Errorf("%q: the error shows the secret: %v", c.url, err)
		}
	}
}

// An S3 target with no credentials anywhere is refused at Open, naming
// what to set; a file target needs none and refuses a credentials file.
func TestOpenCredentialsRequired(t *testing.T) {
	none := func(string) string { return "" }
	_, err := open("s3://bucket/x?endpoint=127.0.0.1:9000", "", none)
	if err == nil || !strings.Contains(err.Error(), "no credentials") || !strings.Contains(err.Error(), envSecretAccessKey) {
		t.Fatalf("no credentials: %v", err)
	}
	half := func(k string) string {
		if k == envAccessKeyID {
			return "AKID"
		}
		return ""
	}
	_, err = open("s3://bucket/x", "", half)
	if err == nil || !strings.Contains(err.Error(), "environment: AWS_SECRET_ACCESS_KEY missing") {
		t.Fatalf("half the credentials: %v", err)
	}
	if _, err := open("file:///srv/backup", "/etc/creds", none); err == nil || !strings.Contains(err.Error(), "s3:// targets only") {
		t.Fatalf("file target with credentials file: %v", err)
	}
	if _, err := open("s3://bucket/x", "/nonexistent/creds", none); err == nil || !strings.Contains(err.Error(), "credentials file") {
		t.Fatalf("missing credentials file: %v", err)
	}
}

// FuzzOpenURL: no url makes Open panic, and what opens names itself in a
// form that opens again to the same name, without the secret.
func FuzzOpenURL(f *testing.F) {
	for _, s := range []string{"file:///srv/backup", "file://localhost/a/b", "s3://bucket/p?endpoint=h:1&region=r&tls=false",
		"s3://b-1", "s3://u:p@b/x", "file:rel", "s3://bucket/x?endpoint=[::1]:9000", "%", "s3://bucket/%2e%2e/x"} {
		f.Add(s)
	}
	getenv := func(k string) string {
		return map[string]string{envAccessKeyID: "AKID", envSecretAccessKey: "fuzz-secret-xyzzy"}[k]
	}
	f.Fuzz(func(t *testing.T, raw string) {
		st, err := open(raw, "", getenv)
		if err != nil {
			if strings.Contains(err.Error(), "fuzz-secret-xyzzy") {
				t.Fatalf("error shows the secret: %v", err)
			}
			return
		}
		name := st.String()
		if strings.Contains(name, "fuzz-secret-xyzzy") {
			t.Fatalf("String shows the secret: %s", name)
		}
		again, err := open(name, "", getenv)
		if err != nil {
			t.Fatalf("%q opened as %q, which does not open: %v", raw, name, err)
		}
		if again.String() != name {
			t.Fatalf("%q → %q → %q", raw, name, again.String())
		}
	})
}
