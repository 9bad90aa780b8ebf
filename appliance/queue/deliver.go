package queue

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"regexp"
	"sort"
	"strings"
	"time"

	"sigillo/appliance/tlsname"
)

// Protocol timeouts, as RFC 5321 §4.5.3.2 suggests (each is also bounded
// by the attempt's context).
const (
	dialTimeout    = 30 * time.Second
	commandTimeout = 5 * time.Minute
	dataEndTimeout = 10 * time.Minute
	// maxAddrs bounds the addresses tried for one domain in one attempt.
	maxAddrs = 10
	// maxReplyBytes bounds what one SMTP session may read from the peer.
	maxReplyBytes = 1 << 20
)

// outcome is what became of one recipient in one attempt.
type outcome struct {
	rcpt   string
	state  state
	status string // RFC 3463 code
	reply  string // the peer's reply, or our explanation
	remote string // the host that answered, if any
	tls    string // how the session was protected, for the log
}

type state int

const (
	deferred state = iota
	delivered
	failed
)

func (s state) String() string {
	switch s {
	case delivered:
		return "delivered"
	case failed:
		return "failed"
	}
	return "deferred"
}

func all(rcpts []string, st state, status, reply, remote string) []outcome {
	out := make([]outcome, len(rcpts))
	for i, r := range rcpts {
		out[i] = outcome{rcpt: r, state: st, status: status, reply: reply, remote: remote}
	}
	return out
}

// hop is one next-hop host for a domain.
type hop struct {
	name string // host name (or IP literal) to connect to and name in TLS
	port string
	// implicit: the domain has no MX and is its own mail host (RFC 5321
	// §5.1); then a name that does not exist means the domain does not.
	implicit bool
}

// hopError is a failure to find where to send a domain's mail.
type hopError struct {
	permanent bool
	status    string
	msg       string
}

func (e *hopError) Error() string { return e.msg }

// hostResolver is the optional address lookup of a Resolver
// (*net.Resolver has it); without it names are resolved when dialling.
type hostResolver interface {
	LookupHost(ctx context.Context, host string) ([]string, error)
}

// hops returns the hosts to try for domain: the static route if there is
// one, else the MX hosts by preference, else the domain itself.
func (r *Runner) hops(ctx context.Context, domain string) ([]hop, error) {
	if route, ok := r.route(domain); ok {
		host, port, err := net.SplitHostPort(route)
		if err != nil {
			host, port = route, r.port()
		}
		return []hop{{name: strings.Trim(host, "[]"), port: port}}, nil
	}
	mxs, err := r.Resolver.LookupMX(ctx, domain)
	if err != nil {
		var dnsErr *net.DNSError
		if !errors.As(err, &dnsErr) || !dnsErr.IsNotFound {
			return nil, &hopError{status: "4.4.3", msg: fmt.Sprintf("MX lookup for %s failed: %v", domain, err)}
		}
		mxs = nil
	}
	if len(mxs) == 1 && (mxs[0].Host == "." || mxs[0].Host == "") {
		return nil, &hopError{permanent: true, status: "5.1.10",
			msg: fmt.Sprintf("domain %s does not accept mail (null MX, RFC 7505)", domain)}
	}
	if len(mxs) == 0 {
		return []hop{{name: domain, port: r.port(), implicit: true}}, nil
	}
	sort.SliceStable(mxs, func(i, j int) bool { return mxs[i].Pref < mxs[j].Pref })
	var out []hop
	for _, mx := range mxs {
		h := strings.TrimSuffix(mx.Host, ".")
		if h == "" {
			continue
		}
		out = append(out, hop{name: h, port: r.port()})
	}
	return out, nil
}

func (r *Runner) route(domain string) (string, bool) {
	routes := r.Routes
	if r.RoutesNow != nil {
		routes = r.RoutesNow()
	}
	for d, route := range routes {
		if strings.EqualFold(strings.TrimSuffix(d, "."), domain) {
			return route, true
		}
	}
	return "", false
}

// addrs resolves a hop to dialable host:port strings.
func (r *Runner) addrs(ctx context.Context, h hop) ([]string, error) {
	if ip := net.ParseIP(h.name); ip != nil {
		return []string{net.JoinHostPort(h.name, h.port)}, nil
	}
	hr, ok := r.Resolver.(hostResolver)
	if !ok {
		return []string{net.JoinHostPort(h.name, h.port)}, nil
	}
	ips, err := hr.LookupHost(ctx, h.name)
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(ips))
	for _, ip := range ips {
		out = append(out, net.JoinHostPort(ip, h.port))
	}
	return out, nil
}

// deliverDomain sends msg to the recipients of one domain, trying its hosts
// in order until one of them gives a verdict.
//
// With requireTLS (PEC traffic between gestori, RFC 6109 §5.3) a host that
// does not offer STARTTLS, or whose handshake fails, gets nothing: the
// recipients are deferred, never sent in plaintext. Its certificate chain
// is then also required to verify when VerifyPeerTLS is set.
func (r *Runner) deliverDomain(ctx context.Context, domain, sender string, rcpts []string, msg []byte, requireTLS bool) []outcome {
	hops, err := r.hops(ctx, domain)
	if err != nil {
		var he *hopError
		if errors.As(err, &he) && he.permanent {
			return all(rcpts, failed, he.status, he.msg, "")
		}
		st := "4.4.3"
		if errors.As(err, &he) {
			st = he.status
		}
		return all(rcpts, deferred, st, err.Error(), "")
	}
	var lastErr error
	tried := 0
	for _, h := range hops {
		addrs, err := r.addrs(ctx, h)
		if err != nil {
			var dnsErr *net.DNSError
			if h.implicit && errors.As(err, &dnsErr) && dnsErr.IsNotFound {
				return all(rcpts, failed, "5.1.2", fmt.Sprintf("domain %s not found: no MX and no address", domain), "")
			}
			lastErr = fmt.Errorf("look up %s: %w", h.name, err)
			continue
		}
		for _, addr := range addrs {
			if tried >= maxAddrs || ctx.Err() != nil {
				break
			}
			tried++
			out, err := r.session(ctx, h, addr, sender, rcpts, msg, tlsPolicy{use: true, require: requireTLS})
			if errors.Is(err, errTLSHandshake) && !requireTLS {
				// Opportunistic TLS: a peer whose TLS is broken still
				// gets the mail in plaintext, as Postfix's "may" level.
				r.logger().Warn("STARTTLS failed; retrying in plaintext", "relay", h.name, "addr", addr, "err", err)
				out, err = r.session(ctx, h, addr, sender, rcpts, msg, tlsPolicy{})
			}
			if err == nil {
				return out
			}
			r.logger().Info("next hop unusable", "domain", domain, "relay", h.name, "addr", addr, "err", err)
			lastErr = err
		}
	}
	if lastErr == nil {
		lastErr = fmt.Errorf("no usable host for %s", domain)
	}
	return all(rcpts, deferred, "4.4.1", lastErr.Error(), "")
}

var errTLSHandshake = errors.New("TLS handshake failed")

// tlsPolicy is how one session uses STARTTLS: use it when offered, or
// require it (no plaintext).
type tlsPolicy struct{ use, require bool }

// conn is a minimal SMTP client connection: what delivery needs and no
// more (no AUTH, no PIPELINING, no CHUNKING).
type conn struct {
	raw  net.Conn // the TCP connection
	nc   net.Conn // raw, or TLS on top of it
	text *textproto.Conn
	ext  map[string]string
	read int64 // bytes left to read in this session
}

type limitedReader struct {
	r io.Reader
	n *int64
}

func (l limitedReader) Read(p []byte) (int, error) {
	if *l.n <= 0 {
		return 0, errors.New("peer sent too much")
	}
	if int64(len(p)) > *l.n {
		p = p[:*l.n]
	}
	n, err := l.r.Read(p)
	*l.n -= int64(n)
	return n, err
}

func (c *conn) setConn(nc net.Conn) {
	c.nc = nc
	rw := struct {
		io.Reader
		io.Writer
		io.Closer
	}{limitedReader{nc, &c.read}, nc, nc}
	c.text = textproto.NewConn(rw)
}

// reply is an SMTP response.
type reply struct {
	code int
	msg  string
}

func (rp reply) String() string {
	return fmt.Sprintf("%d %s", rp.code, strings.ReplaceAll(rp.msg, "\n", " "))
}

var enhancedRE = regexp.MustCompile(`^([245])\.(\d{1,3})\.(\d{1,3})\b`)

// status is the reply's enhanced code, or one made from its class.
func (rp reply) status() string {
	if m := enhancedRE.FindStringSubmatch(rp.msg); m != nil && m[1][0] == byte('0'+rp.code/100) {
		return m[0]
	}
	switch rp.code / 100 {
	case 2:
		return "2.0.0"
	case 5:
		return "5.0.0"
	}
	return "4.0.0"
}

func (c *conn) deadline(ctx context.Context, d time.Duration) {
	t := time.Now().Add(d)
	if dl, ok := ctx.Deadline(); ok && dl.Before(t) {
		t = dl
	}
	c.raw.SetDeadline(t)
}

func (c *conn) readReply(ctx context.Context, d time.Duration) (reply, error) {
	c.deadline(ctx, d)
	code, msg, err := c.text.ReadResponse(0)
	if err != nil {
		return reply{}, err
	}
	return reply{code, msg}, nil
}

func (c *conn) cmd(ctx context.Context, format string, args ...any) (reply, error) {
	c.deadline(ctx, commandTimeout)
	if err := c.text.PrintfLine(format, args...); err != nil {
		return reply{}, err
	}
	return c.readReply(ctx, commandTimeout)
}

func (c *conn) hello(ctx context.Context, name string) error {
	rp, err := c.cmd(ctx, "EHLO %s", name)
	if err != nil {
		return err
	}
	if rp.code/100 == 5 {
		// Not an ESMTP server: HELO, no extensions.
		rp, err = c.cmd(ctx, "HELO %s", name)
		if err != nil {
			return err
		}
		c.ext = map[string]string{}
	} else if rp.code == 250 {
		c.ext = map[string]string{}
		lines := strings.Split(rp.msg, "\n")
		for _, l := range lines[1:] {
			k, v, _ := strings.Cut(strings.TrimSpace(l), " ")
			c.ext[strings.ToUpper(k)] = v
		}
	}
	if rp.code != 250 {
		return fmt.Errorf("hello refused: %s", rp)
	}
	return nil
}

// tlsInfo records how a session was protected.
type tlsInfo struct {
	version, cipher string
	verified        bool
	verifyErr       error
}

func (t *tlsInfo) String() string {
	if t == nil || t.version == "" {
		return "none"
	}
	trust := "trusted"
	if !t.verified {
		trust = "untrusted"
	}
	return t.version + " " + t.cipher + " " + trust
}

// clientTLS is the configuration for STARTTLS to serverName. It implements
// opportunistic TLS like Postfix's "may" security level: the peer's
// certificate is verified (against TLSConfig.RootCAs, or the system roots)
// and the result logged, but an unverifiable certificate does not stop
// delivery, since without DANE or MTA-STS a sender cannot know which name
// the peer ought to prove, and refusing would only push the mail to
// plaintext.
func (r *Runner) clientTLS(serverName string, info *tlsInfo) *tls.Config {
	var cfg *tls.Config
	if r.TLSConfig != nil {
		cfg = r.TLSConfig.Clone()
	} else {
		cfg = &tls.Config{}
	}
	if cfg.MinVersion == 0 {
		cfg.MinVersion = tls.VersionTLS12
	}
	roots := cfg.RootCAs
	cfg.ServerName = serverName
	cfg.InsecureSkipVerify = true
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			info.verifyErr = errors.New("no certificate")
			return nil
		}
		inter := x509.NewCertPool()
		for _, c := range cs.PeerCertificates[1:] {
			inter.AddCert(c)
		}
		_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{
			Roots: roots, Intermediates: inter, DNSName: serverName,
		})
		info.verified, info.verifyErr = err == nil, err
		return nil
	}
	return cfg
}

// session runs one SMTP session with addr. A non-nil error means the host
// gave no verdict on the message (could not connect, bad greeting, failed
// EHLO or TLS): the caller tries the next host. Otherwise every recipient
// has an outcome.
func (r *Runner) session(ctx context.Context, h hop, addr, sender string, rcpts []string, msg []byte, policy tlsPolicy) ([]outcome, error) {
	d := net.Dialer{Timeout: dialTimeout}
	raw, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("connect to %s[%s]: %w", h.name, addr, err)
	}
	defer raw.Close()
	stop := context.AfterFunc(ctx, func() { raw.Close() })
	defer stop()

	c := &conn{raw: raw, read: maxReplyBytes}
	c.setConn(raw)
	rp, err := c.readReply(ctx, commandTimeout)
	if err != nil {
		return nil, fmt.Errorf("%s[%s]: reading greeting: %w", h.name, addr, err)
	}
	if rp.code != 220 {
		return nil, fmt.Errorf("%s[%s] refused to talk to me: %s", h.name, addr, rp)
	}
	if err := c.hello(ctx, r.hostname()); err != nil {
		return nil, fmt.Errorf("%s[%s]: %w", h.name, addr, err)
	}
	var info *tlsInfo
	_, offered := c.ext["STARTTLS"]
	if policy.require && !offered {
		return nil, fmt.Errorf("%s[%s] does not offer STARTTLS, which PEC traffic requires", h.name, addr)
	}
	if offered && (policy.use || policy.require) {
		rp, err := c.cmd(ctx, "STARTTLS")
		if err != nil {
			return nil, fmt.Errorf("%s[%s]: STARTTLS: %w", h.name, addr, err)
		}
		if rp.code != 220 && policy.require {
			return nil, fmt.Errorf("%s[%s] refused STARTTLS, which PEC traffic requires: %s", h.name, addr, rp)
		}
		if rp.code == 220 {
			info = &tlsInfo{}
			tc := tls.Client(raw, r.clientTLS(h.name, info))
			c.deadline(ctx, commandTimeout)
			if err := tc.HandshakeContext(ctx); err != nil {
				return nil, fmt.Errorf("%w with %s[%s]: %v", errTLSHandshake, h.name, addr, err)
			}
			st := tc.ConnectionState()
			info.version = tlsname.Version(st.Version)
			info.cipher = tls.CipherSuiteName(st.CipherSuite)
			if !info.verified && policy.require && r.VerifyPeerTLS {
				return nil, fmt.Errorf("%s[%s]: certificate not trusted (verify_peer_tls is on): %v", h.name, addr, info.verifyErr)
			}
			if !info.verified {
				r.logger().Info("untrusted TLS connection (delivering anyway, opportunistic TLS)",
					"relay", h.name, "addr", addr, "err", info.verifyErr)
			}
			c.setConn(tc)
			c.ext = nil
			if err := c.hello(ctx, r.hostname()); err != nil {
				return nil, fmt.Errorf("%s[%s] after STARTTLS: %w", h.name, addr, err)
			}
		}
	}
	tlsDesc := info.String()

	lost := func(stage string, err error, undecided []string, out []outcome) []outcome {
		text := fmt.Sprintf("lost connection with %s[%s] while sending %s: %v", h.name, addr, stage, err)
		for _, rc := range undecided {
			out = append(out, outcome{rcpt: rc, state: deferred, status: "4.4.2", reply: text, remote: h.name, tls: tlsDesc})
		}
		return out
	}
	withTLS := func(out []outcome) []outcome {
		for i := range out {
			out[i].tls = tlsDesc
		}
		return out
	}

	mail := fmt.Sprintf("MAIL FROM:<%s>", sender)
	if _, ok := c.ext["SIZE"]; ok {
		mail += fmt.Sprintf(" SIZE=%d", len(msg))
	}
	if _, ok := c.ext["8BITMIME"]; ok && has8bit(msg) {
		mail += " BODY=8BITMIME"
	}
	rp, err = c.cmd(ctx, "%s", mail)
	if err != nil {
		return lost("MAIL FROM", err, rcpts, nil), nil
	}
	switch rp.code / 100 {
	case 2:
	case 5:
		return withTLS(all(rcpts, failed, rp.status(), rp.String(), h.name)), nil
	default:
		return withTLS(all(rcpts, deferred, rp.status(), rp.String(), h.name)), nil
	}

	var out, accepted []outcome
	for i, rc := range rcpts {
		rp, err := c.cmd(ctx, "RCPT TO:<%s>", rc)
		if err != nil {
			return lost("RCPT TO", err, rcpts[i:], out), nil
		}
		o := outcome{rcpt: rc, status: rp.status(), reply: rp.String(), remote: h.name, tls: tlsDesc}
		switch rp.code / 100 {
		case 2:
			accepted = append(accepted, o)
			continue
		case 5:
			o.state = failed
		default:
			o.state = deferred
		}
		out = append(out, o)
	}
	if len(accepted) == 0 {
		c.cmd(ctx, "QUIT")
		return out, nil
	}
	undecided := func() []string {
		var l []string
		for _, a := range accepted {
			l = append(l, a.rcpt)
		}
		return l
	}
	settle := func(rp reply) []outcome {
		for _, a := range accepted {
			a.status, a.reply = rp.status(), rp.String()
			switch rp.code / 100 {
			case 2:
				a.state = delivered
			case 5:
				a.state = failed
			default:
				a.state = deferred
			}
			out = append(out, a)
		}
		return out
	}
	rp, err = c.cmd(ctx, "DATA")
	if err != nil {
		return lost("DATA", err, undecided(), out), nil
	}
	if rp.code != 354 {
		if rp.code/100 == 2 || rp.code/100 == 3 {
			rp.code = 451 // nonsense to DATA: try again later
		}
		return settle(rp), nil
	}
	c.deadline(ctx, dataEndTimeout)
	dw := c.text.DotWriter()
	if _, err := dw.Write(msg); err != nil {
		return lost("message content", err, undecided(), out), nil
	}
	if err := dw.Close(); err != nil {
		return lost("end of data", err, undecided(), out), nil
	}
	rp, err = c.readReply(ctx, dataEndTimeout)
	if err != nil {
		return lost("end of data", err, undecided(), out), nil
	}
	res := settle(rp)
	c.cmd(ctx, "QUIT")
	return res, nil
}

func has8bit(b []byte) bool {
	for _, c := range b {
		if c >= 0x80 {
			return true
		}
	}
	return false
}
