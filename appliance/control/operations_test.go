package control_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"sigillo/appliance/apptest"
	"sigillo/appliance/control"
	"sigillo/appliance/manage"
	"sigillo/storage"
)

// TestOperationsOverTheSocket: the socket's requests reach manage as the
// operator, and a refusal comes back with its message and its code.
func TestOperationsOverTheSocket(t *testing.T) {
	s, err := storage.Open(filepath.Join(t.TempDir(), "db.sqlite"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	m := &manage.Manager{Store: s, Proposer: apptest.NewProposer(s), Now: time.Now}
	socket := filepath.Join(t.TempDir(), "control.sock")
	ln, err := control.Listen(socket)
	if err != nil {
		t.Fatal(err)
	}
	srv := &control.Server{Handler: control.Operations(m)}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	defer func() {
		srv.Shutdown(context.Background())
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	call := func(op string, args map[string]string, out any) error {
		return control.Call(ctx, socket, control.Request{Op: op, Args: args}, out)
	}

	var n manage.Named
	if err := call("domain.add", map[string]string{"name": "Bücher.example"}, &n); err != nil || n.Name != "xn--bcher-kva.example" {
		t.Fatalf("domain.add: %+v, %v", n, err)
	}
	for _, c := range []struct {
		op   string
		args map[string]string
		code manage.Code
		msg  string
	}{
		{"mailbox.add", map[string]string{"address": "a@bücher.example", "password": "short"}, manage.Invalid,
			"password too short (5 characters): use at least 8"},
		{"mailbox.list", map[string]string{"domain": "b.test"}, manage.NotFound,
			"no domain b.test here (sigillo domain list shows the hosted ones)"},
		{"domain.frobnicate", nil, manage.Invalid, `unknown request "domain.frobnicate"`},
	} {
		err := call(c.op, c.args, nil)
		if err == nil || err.Error() != c.msg || manage.CodeOf(err) != c.code {
			t.Errorf("%s: %v (%s), want %s %q", c.op, err, manage.CodeOf(err), c.code, c.msg)
		}
	}
	if err := call("domain.add", map[string]string{"name": "bücher.example"}, nil); manage.CodeOf(err) != manage.Conflict {
		t.Errorf("adding the domain twice: %v (%s), want conflict", err, manage.CodeOf(err))
	}
	var e *manage.Error
	if err := call("mailbox.remove", map[string]string{"address": "x@bücher.example"}, nil); !errors.As(err, &e) || e.Code != manage.NotFound {
		t.Errorf("removing an unknown mailbox: %v, want not_found", err)
	}
}
