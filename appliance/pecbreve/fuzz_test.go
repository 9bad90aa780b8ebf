package pecbreve

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// FuzzTransform: whatever the input, TransformReport returns (no panic, no
// hang) and leaves its input alone; with nothing replaced the output is the
// input; an input that cannot name a part (no "name", "message" or
// "digest" in any case) has nothing replaced; each hash is 40 hex digits
// found in the output; and the output transformed again has the same
// number of parts replaced: its hash parts, renamed ".hash.hash".
//
// The seed corpus in testdata/fuzz/FuzzTransform is written by
// TestWriteFuzzSeeds under SIGILLO_WRITE_FUZZ_SEEDS=1.
func FuzzTransform(f *testing.F) {
	f.Add([]byte("Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain; name=a.txt\r\n\r\nx\r\n--b--\r\n"))
	f.Add([]byte("Content-Type: multipart/signed; boundary=s\n\n--s\nContent-Type: multipart/mixed; boundary=m\n\n--m\nContent-Disposition: attachment; filename*=utf-8''%C3%A8.pdf\n\nQUJD\n--m--\n--s\nContent-Type: application/pkcs7-signature; name=smime.p7s\n\nMIAG\n--s--\n"))
	f.Fuzz(func(t *testing.T, msg []byte) {
		keep := bytes.Clone(msg)
		out, rep := TransformReport(msg)
		if !bytes.Equal(msg, keep) {
			t.Fatal("the input was written to")
		}
		if len(rep) == 0 && !bytes.Equal(out, msg) {
			t.Fatalf("nothing replaced, yet the output differs:\n%q\n%q", out, msg)
		}
		lower := bytes.ToLower(msg)
		if len(rep) > 0 && !bytes.Contains(lower, []byte("name")) && !bytes.Contains(lower, []byte("message")) && !bytes.Contains(lower, []byte("digest")) {
			t.Fatalf("replaced %+v in a message that names no part", rep)
		}
		for _, r := range rep {
			if b, err := hex.DecodeString(r.SHA1); err != nil || len(b) != 20 || strings.ToLower(r.SHA1) != r.SHA1 || !bytes.Contains(out, []byte(r.SHA1)) {
				t.Fatalf("hash %q (%v) is not 40 lower-case hex digits in the output", r.SHA1, err)
			}
		}
		_, rep2 := TransformReport(out)
		if len(rep2) != len(rep) {
			t.Fatalf("%d replaced in the output, %d in the input: %+v then %+v", len(rep2), len(rep), rep, rep2)
		}
		for i := range rep {
			if rep2[i].SHA1 != sha1hex(rep[i].SHA1) || rep2[i].Size != 40 {
				t.Fatalf("second time %+v, not the hash part of %+v", rep2[i], rep[i])
			}
			// A name that still holds an encoded word may decode further
			// once written back; a name near the limit is cut.
			if want := rep[i].FileName + ".hash"; rep2[i].FileName != want && !strings.Contains(rep[i].FileName, "=?") && len(want) <= maxName {
				t.Fatalf("second time named %q, want %q", rep2[i].FileName, want)
			}
		}
	})
}

// TestWriteFuzzSeeds writes the seed corpus of FuzzTransform from the
// scenarios of breve_test.go and a few hostile shapes. Run it with
// SIGILLO_WRITE_FUZZ_SEEDS=1.
func TestWriteFuzzSeeds(t *testing.T) {
	if os.Getenv("SIGILLO_WRITE_FUZZ_SEEDS") != "1" {
		t.Skip("set SIGILLO_WRITE_FUZZ_SEEDS=1 to rewrite testdata/fuzz/FuzzTransform")
	}
	var deep strings.Builder
	deep.WriteString("Content-Type: multipart/mixed; boundary=b1\n\n")
	for i := 1; i <= maxDepth+2; i++ {
		fmt.Fprintf(&deep, "--b%d\nContent-Type: multipart/mixed; boundary=b%d\n\n", i, i+1)
	}
	deep.WriteString("--b35\nContent-Type: text/plain; name=deep.txt\n\nx\n")
	seeds := map[string]string{
		"mixed-pdf-crlf": fixtureMixedPDF("\r\n"),
		"nested-lf":      fixtureNested("\n"),
		"forward-crlf":   fixtureForward("\r\n"),
		"signed-lf":      fixtureSigned("\n"),
		"names-crlf":     nameFixture("\r\n"),
		"digest":         "Content-Type: multipart/digest; boundary=d\n\n--d\n\nFrom: x@example.it\n\nuno\n--d\nContent-Type: message/global\n\nFrom: y@example.it\n\ndue\n--d--\n",
		"truncated":      "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: application/pdf; name=\"a.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBE",
		"opaque":         "Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m\r\n\r\nMIAG\r\n",
		"deep":           deep.String(),
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzTransform")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, s := range seeds {
		body := "go test fuzz v1\n[]byte(" + strconv.Quote(s) + ")\n"
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
