package control

import (
	"context"
	"fmt"
	"time"

	"sigillo/appliance/manage"
)

// Operations answers the command line's requests with m's operations,
// as the operator: the socket is the server's user's (mode 0600). It only
// decodes; the rules are manage's.
func Operations(m *manage.Manager) Handler {
	return func(ctx context.Context, req Request) (any, error) {
		return operate(ctx, m, manage.Operator{}, req)
	}
}

func operate(ctx context.Context, m *manage.Manager, a manage.Actor, req Request) (any, error) {
	arg := func(k string) string { return req.Args[k] }
	switch req.Op {
	case "domain.add":
		return m.AddDomain(ctx, a, manage.AddDomain{Name: arg("name"), PEC: arg("pec") == "true"})
	case "domain.remove":
		return m.RemoveDomain(ctx, a, manage.RemoveDomain{Name: arg("name")})
	case "domain.list":
		return m.ListDomains(ctx, a)
	case "mailbox.add":
		return m.AddMailbox(ctx, a, manage.AddMailbox{Address: arg("address"), Password: arg("password"), Quota: arg("quota")})
	case "mailbox.passwd":
		return m.SetPassword(ctx, a, manage.SetPassword{Address: arg("address"), Password: arg("password")})
	case "mailbox.remove":
		return m.RemoveMailbox(ctx, a, manage.RemoveMailbox{Address: arg("address")})
	case "mailbox.list":
		return m.ListMailboxes(ctx, a, manage.ListMailboxes{Domain: arg("domain")})
	case "queue.list":
		return m.ListQueue(ctx, a)
	case "directory.import":
		return m.ImportDirectory(ctx, a, manage.ImportDirectory{LDIF: arg("ldif")})
	case "directory.list":
		return m.ListDirectory(ctx, a)
	case "log.search":
		return m.SearchLog(ctx, a, manage.SearchLog{Args: req.Args})
	case "log.verify":
		return m.VerifyLog(ctx, a, manage.VerifyLog{RootsPEM: arg("roots")})
	case "scan.status":
		return m.ScanStatus(ctx, a)
	case "cert.status":
		return m.CertStatus(ctx, a)
	case "ca.export":
		return m.CARoot(ctx, a)
	case "cluster.status":
		return m.ClusterStatus(ctx, a)
	case "cluster.token":
		ttl, err := time.ParseDuration(arg("ttl"))
		if arg("ttl") == "" {
			ttl, err = 0, nil
		}
		if err != nil {
			return nil, &manage.Error{Code: manage.Invalid, Message: fmt.Sprintf("--ttl %q is not a duration (24h, 90m)", arg("ttl"))}
		}
		return m.ClusterToken(ctx, a, ttl)
	case "cluster.tokens":
		return m.ClusterTokens(ctx, a)
	case "cluster.revoke":
		return nil, m.RevokeToken(ctx, a, arg("id"))
	case "cluster.remove":
		return nil, m.RemoveNode(ctx, a, arg("node"))
	case "backup.now":
		return m.BackupNow(ctx, a)
	case "backup.status":
		return m.BackupStatus(ctx, a)
	case "settings.list":
		return m.ListSettings(ctx, a)
	case "settings.get":
		return m.GetSetting(ctx, a, manage.GetSetting{Key: arg("key")})
	case "settings.set":
		return m.SetSetting(ctx, a, manage.SetSetting{Key: arg("key"), Value: arg("value")})
	case "status":
		return m.Status(ctx, a)
	}
	if v, known, err := nextVersionRequest(ctx, m, a, req); known {
		return v, err
	}
	return nil, &manage.Error{Code: manage.Invalid, Message: fmt.Sprintf("unknown request %q", req.Op)}
}
