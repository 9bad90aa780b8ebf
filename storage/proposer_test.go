package storage

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestEveryCommandsResultCrossesTheNetwork applies one of every command
// that gives a value to a real store, encodes what it gave as a node would
// send it to the node that proposed it, and decodes it there: the value
// comes back equal and of the command's declared result type. Every op
// that Decode knows is covered, so a new command cannot forget its type.
func TestEveryCommandsResultCrossesTheNetwork(t *testing.T) {
	ctx := context.Background()
	s, err := Open(filepath.Join(t.TempDir(), "db.sqlite"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var index uint64
	apply := func(c Command) Result {
		t.Helper()
		data, err := Encode(c)
		if err != nil {
			t.Fatal(err)
		}
		index++
		res, err := s.Apply(ctx, []Entry{{Index: index, Data: data}})
		if err != nil {
			t.Fatalf("apply %s: %v", c.Op(), err)
		}
		return res[0]
	}
	check := func(c Command) Result {
		t.Helper()
		res := apply(c)
		op := c.Op()
		if want := ResultType(op); want == nil && res.Value != nil || want != nil && reflect.TypeOf(res.Value) != want {
			t.Fatalf("%s gave a %T, its declared result type is %v", op, res.Value, want)
		}
		data, err := EncodeResult(op, index, res.Value, res.Err)
		if err != nil {
			t.Fatal(err)
		}
		gotIndex, got, err := DecodeResult(op, data)
		if err != nil {
			t.Fatalf("%s: %v (%s)", op, err, data)
		}
		if gotIndex != index || !reflect.DeepEqual(got, res) {
			t.Fatalf("%s: sent %d %#v, received %d %#v", op, index, res, gotIndex, got)
		}
		return res
	}
	seen := map[string]bool{}
	do := func(c Command) Result {
		t.Helper()
		seen[c.Op()] = true
		res := check(c)
		if res.Err != nil {
			t.Fatalf("%s: %v", c.Op(), res.Err)
		}
		return res
	}

	do(&AddDomain{Name: "example.test", At: 1})
	do(&AddDomain{Name: "gone.test", At: 1})
	mb := do(&AddMailbox{Address: "ada@example.test", PasswordHash: "h", At: 1}).Value.(int64)
	do(&AddMailbox{Address: "bob@example.test", PasswordHash: "h", At: 1})
	do(&SetPassword{Address: "ada@example.test", PasswordHash: "h2"})
	do(&SetQuota{Address: "ada@example.test", QuotaBytes: 1 << 20})
	do(&RemoveMailbox{Address: "bob@example.test"})
	do(&RemoveDomain{Name: "gone.test"})
	del := do(&Deliver{Targets: []Target{{MailboxID: mb}, {MailboxID: mb, Folder: "Sent"}}, InternalDate: 1,
		Data: []byte("Subject: x\r\n\r\nbody\r\n")}).Value.(*DeliverResult)
	inbox := del.Placed[0].FolderID
	do(&Deliver{Targets: []Target{{MailboxID: mb}}, InternalDate: 2, Data: []byte("Subject: y\r\n\r\nbody\r\n"),
		Outbound: &Outbound{ID: "q1", Sender: "ada@example.test", Recipients: []string{"x@far.test"}, NextAttempt: 1}})
	do(&QueueRetry{ID: "q1", Recipients: []string{"x@far.test"}, NextAttempt: 5, LastError: "try later"})
	do(&QueueRemove{ID: "q1"})
	folder := do(&CreateFolder{MailboxID: mb, Name: "Work", At: 1}).Value.(int64)
	do(&RenameFolder{FolderID: folder, NewName: "Play", At: 2})
	do(&Subscribe{FolderID: folder, Subscribed: true})
	do(&StoreFlags{FolderID: inbox, UIDs: []uint32{1, 2}, Mode: FlagsAdd, Flags: []string{`\Seen`}})
	do(&Copy{FromFolderID: inbox, UIDs: []uint32{1}, ToFolderID: folder})
	do(&Expunge{FolderID: inbox, UIDs: []uint32{1}})
	do(&DeleteFolder{FolderID: folder})
	do(&PutKV{Key: "k", Value: []byte("v")})
	do(&DeleteKV{Key: "k"})
	at := time.UnixMilli(1_700_000_000_000).UTC()
	// The legal log's entries, built without naming their package.
	appendLog := &AppendLog{}
	appendLog.Entries = oneOf(appendLog.Entries)
	appendLog.Entries[0].Time, appendLog.Entries[0].Event, appendLog.Entries[0].MsgID = at, "accettazione", "m1"
	stored := do(appendLog).Value
	// An unsigned head is refused: the refusal crosses instead.
	head := &PutLogHead{}
	head.Head.Seq, head.Head.Time = 1, at
	head.Head.Hash = reflect.ValueOf(stored).Index(0).FieldByName("Hash").Bytes()
	if res := check(head); !IsCode(res.Err, ErrInvalid) {
		t.Fatalf("unsigned head: %v", res.Err)
	}
	seen["pec-log-head"] = true
	batch := &Batch{}
	batch.Log = oneOf(batch.Log)
	batch.Log[0].Time, batch.Log[0].Event, batch.Log[0].MsgID = at.Add(time.Second), "consegna", "m1"
	do(batch)
	do(&PurgeLog{Before: at.Add(time.Hour).UnixMilli()})
	do(&ForgetTracking{Before: 10})
	do(&PurgeVirusStore{Before: 10})
	do(&TryLock{Name: "l", Owner: "node1", Now: 1, Expires: 2})
	do(&Unlock{Name: "l", Owner: "node1"})

	// Every op that Decode knows, read from newCommand.
	src, err := os.ReadFile("commands.go")
	if err != nil {
		t.Fatal(err)
	}
	body := string(src)[strings.Index(string(src), "func newCommand"):]
	body = body[:strings.Index(body, "\n}\n")]
	ops := regexp.MustCompile(`case "([a-z-]+)":`).FindAllStringSubmatch(body, -1)
	if len(ops) < 26 {
		t.Fatalf("read %d ops from newCommand", len(ops))
	}
	for _, m := range ops {
		if !seen[m[1]] {
			t.Errorf("no round trip for %q: add it above", m[1])
		}
	}
}

// oneOf returns a slice of one zero E, for a slice typed elsewhere.
func oneOf[E any]([]E) []E { return make([]E, 1) }

// TestARefusalCrossesTheNetwork: the proposer gets the refusal back as a
// *Error with its code; an error that is not a refusal does not travel.
func TestARefusalCrossesTheNetwork(t *testing.T) {
	data, err := EncodeResult("add-domain", 7, nil, &Error{Code: ErrExists, Msg: "domain example.test already exists"})
	if err != nil {
		t.Fatal(err)
	}
	index, res, err := DecodeResult("add-domain", data)
	if err != nil || index != 7 || res.Value != nil || !IsCode(res.Err, ErrExists) || res.Err.Error() != (&Error{Code: ErrExists, Msg: "domain example.test already exists"}).Error() {
		t.Fatalf("got %d %+v %v", index, res, err)
	}
	if _, err := EncodeResult("add-domain", 7, nil, context.DeadlineExceeded); err == nil {
		t.Fatal("a deadline travelled as a refusal")
	}
	if _, err := EncodeResult("add-domain", 7, "not an id", nil); err == nil {
		t.Fatal("a value of the wrong type was encoded")
	}
	if _, _, err := DecodeResult("put-kv", []byte(`{"index":1,"value":5}`)); err == nil {
		t.Fatal("a value for a command without one was decoded")
	}
}
