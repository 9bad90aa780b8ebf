package manage_test

import (
	"context"
	"testing"

	"sigillo/appliance/manage"
)

// The cluster-wide settings are the operator's: a domain's admin and a
// user are refused, and nothing is written; the operator's bad value is
// Invalid, a good one comes back as the cluster's.
func TestSettingsAreForTheOperator(t *testing.T) {
	ctx := context.Background()
	m, _ := newManager(t)
	before, err := m.Store.AppliedIndex(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range []manage.Actor{manage.DomainAdmin{Domain: "example.test"}, manage.User{Address: "a@example.test"}} {
		_, err := m.SetSetting(ctx, a, manage.SetSetting{Key: "max_message_bytes", Value: "1G"})
		refused(t, "set by a non-operator", err, manage.Forbidden, "a cluster-wide setting is for the server's operator")
		_, err = m.ListSettings(ctx, a)
		refused(t, "list by a non-operator", err, manage.Forbidden, "for the server's operator")
	}
	if after, _ := m.Store.AppliedIndex(ctx); after != before {
		t.Errorf("refused sets wrote: %d → %d", before, after)
	}
	_, err = m.SetSetting(ctx, op, manage.SetSetting{Key: "routes", Value: "example.org"})
	refused(t, "a bad route", err, manage.Invalid, `setting routes: "example.org" is not domain=host:port`)
	_, err = m.GetSetting(ctx, op, manage.GetSetting{Key: "hostname"})
	refused(t, "a node-local key", err, manage.Invalid, `no cluster-wide setting "hostname"`)
	r := must(m.SetSetting(ctx, op, manage.SetSetting{Key: "scan.required", Value: "false"}))(t)
	if r.Value != "false" || r.Source != "cluster" {
		t.Errorf("set scan.required: %+v", r)
	}
}
