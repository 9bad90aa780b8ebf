package imapd

import (
	"bytes"
	"context"
	"strconv"
	"testing"

	"sigillo/storage"
)

// These tests drive the server with Python's imaplib, an independent client.

func TestImaplibMailboxesAndMessages(t *testing.T) {
	e := newEnv(t)
	e.runPython(`
M = login()

# LIST: special-use attributes, children, patterns, the delimiter.
ok(M.create("Work/Projects/2024"), "create nested")
ok(M.create("Work"), "create parent after child")
ok(M.create("Work/Notes/"), "create with trailing delimiter")
lines = [l.decode() for l in ok(M.list(), "list")]
def attrs(name, lines=lines):
    for l in lines:
        m = re.match(r'\((.*?)\) "/" "?(.*?)"?$', l)
        if m and m.group(2) == name:
            return m.group(1).split()
    raise AssertionError("no %s in %r" % (name, lines))
for name, use in [("Sent", "\\Sent"), ("Drafts", "\\Drafts"), ("Trash", "\\Trash"), ("Junk", "\\Junk"), ("Archive", "\\Archive")]:
    assert use in attrs(name), (name, attrs(name))
assert "\\HasNoChildren" in attrs("INBOX")
assert "\\HasChildren" in attrs("Work"), attrs("Work")
assert "\\HasChildren" in attrs("Work/Projects") and "\\Noselect" in attrs("Work/Projects"), attrs("Work/Projects")
assert lines[0].endswith("INBOX"), lines
pct = [l.decode() for l in ok(M.list('""', "%"), "list %")]
assert "Work" in names(pct) and not any("Work/" in n for n in names(pct)), pct
sub = [l.decode() for l in ok(M.list("Work/", "%"), "list Work/ %")]
assert sorted(names(sub)) == ["Work/Notes", "Work/Projects"], sub
star = [l.decode() for l in ok(M.list('""', "Work/*"), "list Work/*")]
assert len(star) == 3, star
assert len(ok(M.list('""', "inbox"), "list inbox")) == 1
root = ok(M.list('""', '""'), "list root")
assert b'"/"' in root[0], root
ns = ok(M.namespace(), "namespace")
assert b'(("" "/"))' in ns[0], ns

# LIST-STATUS.
typ, data = M.list('""', '"INBOX" RETURN (STATUS (MESSAGES UNSEEN))')
assert typ == "OK", data
st = M.response("STATUS")[1]
assert st and b"MESSAGES 0" in st[-1], st

# SUBSCRIBE / UNSUBSCRIBE / LSUB.
ok(M.unsubscribe("Work"), "unsubscribe")
assert "Work" not in names(ok(M.lsub(), "lsub"))
ok(M.subscribe("Work"), "subscribe")
assert "Work" in names(ok(M.lsub(), "lsub"))
no(M.subscribe("Nope"), "NONEXISTENT", "subscribe missing")

# CREATE / RENAME / DELETE and their refusals.
no(M.create("Archive"), "ALREADYEXISTS", "create existing")
ok(M.rename("Work", "Job"), "rename")
after = names(ok(M.list('""', "*"), "list after rename"))
assert "Job/Projects/2024" in after and not any("Work" in n for n in after), after
no(M.rename("Work", "Other"), "NONEXISTENT", "rename missing")
no(M.rename("Job", "Sent"), "ALREADYEXISTS", "rename onto existing")
ok(M.delete("Job/Notes"), "delete")
no(M.delete("Job/Notes"), "NONEXISTENT", "delete twice")
typ, data = M.delete("INBOX")
assert typ == "NO", data
no(M.select("Nope"), "NONEXISTENT", "select missing")

# APPEND with flags and date; APPENDUID.
date = imaplib.Time2Internaldate(datetime(2024, 3, 5, 10, 20, 30, tzinfo=timezone.utc))
typ, data = M.append("INBOX", "(\\Flagged $Label1)", date, MSG)
assert typ == "OK", data
m = re.search(rb"\[APPENDUID (\d+) (\d+)\]", data[0])
assert m and m.group(2) == b"1", data
validity = int(m.group(1))
second = MSG.replace(b"Hello there", b"Other subject").replace(b"unique-word", b"common-word")
ok(M.append("INBOX", None, None, second + b"x" * 600), "append 2")
ok(M.append("INBOX", "(\\Seen)", imaplib.Time2Internaldate(datetime(2023, 6, 1, tzinfo=timezone.utc)), b"Subject: third\r\n\r\nshort\r\n"), "append 3")
no(M.append("Nope", None, None, MSG), "TRYCREATE", "append to missing")
refused(lambda: M.append("INBOX", "(\\Bogus)", None, MSG), "append with an invalid system flag")

# STATUS.
st = ok(M.status("INBOX", "(MESSAGES UIDNEXT UIDVALIDITY UNSEEN SIZE)"), "status")[0].decode()
assert "MESSAGES 3" in st and "UIDNEXT 4" in st and "UNSEEN 2" in st and ("UIDVALIDITY %d" % validity) in st, st
size = int(re.search(r"SIZE (\d+)", st).group(1))

# SELECT and FETCH of every item.
assert ok(M.select("INBOX"), "select") == [b"3"]
parts = fetch_parts(ok(M.fetch("1", "(BODY.PEEK[] FLAGS)"), "fetch body.peek"))
assert parts[0][1] == MSG, parts
assert b"\\Flagged" in parts[0][0] and b"$Label1" in parts[0][0] and b"\\Seen" not in parts[0][0], parts
meta = ok(M.fetch("1", "(UID FLAGS INTERNALDATE RFC822.SIZE ENVELOPE BODYSTRUCTURE BODY)"), "fetch meta")[0].decode()
assert "UID 1" in meta and ('RFC822.SIZE %d' % len(MSG)) in meta, meta
assert re.search(r'INTERNALDATE "( 5|05)-Mar-2024 10:20:30 \+0000"', meta), meta
assert '"Hello there"' in meta and '("Bob" NIL "bob" "example.org")' in meta, meta
assert '<m1@example.org>' in meta, meta
assert '("text" "plain" ("charset" "utf-8") NIL NIL "7bit" 36 ' in meta, meta
assert '"alternative" ("boundary" "BB")' in meta, meta
hdr = fetch_parts(ok(M.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT FROM)])"), "header fields"))[0][1]
assert hdr == b"From: Bob <bob@example.org>\r\nSubject: Hello there\r\n\r\n", hdr
hdr = fetch_parts(ok(M.fetch("1", "(BODY.PEEK[HEADER.FIELDS.NOT (X-Custom MIME-Version Content-Type Message-ID Date To)])"), "header fields not"))[0][1]
assert hdr == b"From: Bob <bob@example.org>\r\nSubject: Hello there\r\n\r\n", hdr
header, text = MSG.split(b"\r\n\r\n", 1)
assert fetch_parts(ok(M.fetch("1", "(BODY.PEEK[HEADER])"), "header"))[0][1] == header + b"\r\n\r\n"
assert fetch_parts(ok(M.fetch("1", "(BODY.PEEK[TEXT])"), "text"))[0][1] == text
assert fetch_parts(ok(M.fetch("1", "(BODY.PEEK[1])"), "part 1"))[0][1] == b"plain text with a unique-word inside"
assert fetch_parts(ok(M.fetch("1", "(BODY.PEEK[2])"), "part 2"))[0][1] == b"<p>html text</p>"
assert b"text/html" in fetch_parts(ok(M.fetch("1", "(BODY.PEEK[2.MIME])"), "part 2 mime"))[0][1]
p = fetch_parts(ok(M.fetch("1", "(BODY.PEEK[]<6.10>)"), "partial"))[0]
assert p[1] == MSG[6:16] and b"BODY[]<6>" in p[0], p
assert fetch_parts(ok(M.fetch("3", "(RFC822.HEADER)"), "rfc822.header"))[0][1] == b"Subject: third\r\n\r\n"
assert fetch_parts(ok(M.fetch("3", "(RFC822.TEXT)"), "rfc822.text"))[0][1] == b"short\r\n"
assert fetch_parts(ok(M.fetch("3", "(BODY.PEEK[1])"), "single part 1"))[0][1] == b"short\r\n"
assert b"FLAGS" in ok(M.fetch("1:*", "FAST"), "fast")[0]
assert b"ENVELOPE" in ok(M.fetch("1", "ALL"), "all")[0]
# BODY[] without PEEK sets \Seen (and says so).
p = fetch_parts(ok(M.fetch("1", "(BODY[])"), "fetch body"))
assert p[0][1] == MSG and b"\\Seen" in p[0][0], p
assert b"\\Seen" in ok(M.fetch("1", "(FLAGS)"), "flags")[0]
p = fetch_parts(ok(M.fetch("2", "(RFC822)"), "rfc822"))
assert p[0][1].startswith(b"From: Bob") and b"\\Seen" in p[0][0], p
ok(M.store("2", "-FLAGS.SILENT", "(\\Seen)"), "unseen again")
refused(lambda: M.fetch("9", "(FLAGS)"), "fetch beyond the last message")

# SEARCH with the criteria imaplib users send.
def search(*crit):
    return ok(M.search(None, *crit), str(crit))[0].split()
assert search("ALL") == [b"1", b"2", b"3"]
assert search("FLAGGED") == [b"1"]
assert search("UNSEEN") == [b"2"]
assert search("SEEN", "NOT", "FLAGGED") == [b"3"]
assert search("SUBJECT", '"hello"') == [b"1"]
assert search("FROM", '"bob@EXAMPLE.org"') == [b"1", b"2"]
assert search("TO", "alice") == [b"1", b"2"]
assert search("HEADER", "X-Custom", "needle") == [b"1", b"2"]
assert search("BODY", "unique-word") == [b"1"]
assert search("TEXT", '"needle-in-header"') == [b"1", b"2"]
assert search("TEXT", "short") == [b"3"]
assert search("LARGER", "1000") == [b"2"]
assert search("SMALLER", "100") == [b"3"]
assert search("SINCE", "05-Mar-2024") == [b"1", b"2"]
assert search("BEFORE", "05-Mar-2024") == [b"3"]
assert search("ON", "01-Jun-2023") == [b"3"]
assert search("SENTON", "05-Mar-2024") == [b"1", b"2"]
assert search("SENTBEFORE", "01-Jan-2000") == []
assert search("KEYWORD", "$Label1") == [b"1"]
assert search("UNKEYWORD", "$Label1") == [b"2", b"3"]
assert search("OR", "FLAGGED", "SMALLER", "100") == [b"1", b"3"]
assert search("2:*") == [b"2", b"3"]
assert search("UID", "1,3") == [b"1", b"3"]
assert search("NOT", "OR", "SEEN", "FLAGGED") == [b"2"]
assert search("NEW") == [] and search("OLD") == [b"1", b"2", b"3"]
assert ok(M.uid("SEARCH", "UID", "2:*"), "uid search")[0].split() == [b"2", b"3"]
assert ok(M.uid("SEARCH", "*"), "uid search *")[0].split() == [b"3"]
assert search("CHARSET", "UTF-8", "BODY", "html") == [b"1", b"2"]

# STORE forms.
r = ok(M.store("2", "+FLAGS", "(\\Answered $Label2)"), "store +flags")
assert b"\\Answered" in r[0] and b"$Label2" in r[0], r
r = ok(M.store("2", "-FLAGS", "$Label2"), "store -flags")
assert b"$Label2" not in r[0], r
r = ok(M.store("2", "FLAGS.SILENT", "(\\Draft)"), "store silent")
assert r == [None], r
assert b"(\\Draft)" in ok(M.fetch("2", "FLAGS"), "flags after set")[0]
r = ok(M.uid("STORE", "3", "+FLAGS", "(\\Flagged)"), "uid store")
assert b"UID 3" in r[0] and b"\\Flagged" in r[0], r
refused(lambda: M.store("1", "+FLAGS", "(\\Bogus)"), "store an invalid system flag")

# UID FETCH.
r = ok(M.uid("FETCH", "2:*", "(FLAGS)"), "uid fetch")
assert b"UID 2" in r[0] and b"UID 3" in r[1], r
r = ok(M.uid("FETCH", "100:*", "(UID)"), "uid fetch past the end")
assert len(r) == 1 and b"UID 3" in r[0], r

# COPY and UID COPY with COPYUID.
typ, data = M.copy("1:2", "Archive")
assert typ == "OK" and re.search(rb"\[COPYUID \d+ 1:2 1:2\]", data[0]), data
typ, data = M._simple_command("UID", "COPY", "3", "Archive")
assert typ == "OK" and re.search(rb"\[COPYUID \d+ 3 3\]", data[0]), data
no(M.copy("1", "Nope"), "TRYCREATE", "copy to missing")

# MOVE: the message leaves INBOX with an EXPUNGE.
typ, data = M.uid("MOVE", "3", "Trash")
assert typ == "OK", data
assert M.response("EXPUNGE")[1] == [b"3"], M.response("EXPUNGE")
cu = M.response("COPYUID")[1]
assert re.match(rb"\d+ 3 1$", cu[-1]), cu
assert ok(M.select("INBOX"), "reselect") == [b"2"]
assert ok(M.status("Trash", "(MESSAGES)"), "trash")[0].endswith(b"(MESSAGES 1)")

# EXPUNGE and UID EXPUNGE.
ok(M.store("1", "+FLAGS", "\\Deleted"), "delete 1")
assert ok(M.expunge(), "expunge") == [b"1"]
assert ok(M.select("Archive"), "select archive") == [b"3"]
ok(M.store("1:3", "+FLAGS", "\\Deleted"), "delete all")
typ, data = M.uid("EXPUNGE", "2")
assert typ == "OK", data
assert M.response("EXPUNGE")[1] == [b"2"], M.response("EXPUNGE")
assert ok(M.status("Archive", "(MESSAGES)"), "archive")[0].endswith(b"(MESSAGES 2)")

# EXAMINE is read-only: no STORE, no \Seen from FETCH, CLOSE expunges nothing.
ok(M.append("Archive", None, None, b"Subject: unseen\r\n\r\nx\r\n"), "append unseen")
assert ok(M.select("Archive", readonly=True), "examine") == [b"3"]
typ, data = M._simple_command("STORE", "1", "-FLAGS", "(\\Deleted)")
assert typ == "NO", (typ, data)
assert fetch_parts(ok(M.fetch("3", "(BODY[])"), "fetch read-only"))[0][1] == b"Subject: unseen\r\n\r\nx\r\n"
assert b"\\Seen" not in ok(M.fetch("3", "(FLAGS)"), "flags read-only")[0]
typ, data = M.expunge()
assert typ == "NO", data
typ, data = M.uid("MOVE", "4", "INBOX")
assert typ == "NO", data
ok(M.close(), "close read-only")
assert ok(M.status("Archive", "(MESSAGES)"), "archive")[0].endswith(b"(MESSAGES 3)")
ok(M.select("Archive"), "select archive rw")
ok(M.close(), "close")
assert ok(M.status("Archive", "(MESSAGES)"), "archive after close")[0].endswith(b"(MESSAGES 1)")

# Size limit and UNSELECT.
ok(M.select("INBOX"), "select")
no(M.append("INBOX", None, None, b"x" * (int(os.environ["MAX_MESSAGE"]) + 1)), "TOOBIG", "too big")
typ, data = M._simple_command("UNSELECT")
assert typ == "OK", data
M.logout()
print("PASS")
`, nil)

	// The state the client saw is the state in the store.
	inbox := e.messages("INBOX")
	if len(inbox) != 1 || inbox[0].UID != 2 {
		t.Fatalf("INBOX after the session: %+v", inbox)
	}
	if got := e.messages("Trash"); len(got) != 1 {
		t.Fatalf("Trash: %+v", got)
	}
}

func TestImaplibStartTLSAndAuthentication(t *testing.T) {
	e := newEnv(t)
	e.runPython(`
# Plain port: no login before STARTTLS.
M = imaplib.IMAP4(HOST, IMAP_PORT, timeout=10)
assert "LOGINDISABLED" in M.capabilities and "STARTTLS" in M.capabilities, M.capabilities
try:
    M.login(USER, PASS)
    raise AssertionError("LOGIN accepted before STARTTLS")
except imaplib.IMAP4.error as err:
    assert "PRIVACYREQUIRED" in str(err), err
typ, data = M._simple_command("AUTHENTICATE", "PLAIN")
assert typ == "NO", (typ, data)
M.starttls(ssl_context=CTX)
assert "AUTH=PLAIN" in M.capabilities and "LOGINDISABLED" not in M.capabilities, M.capabilities
ok(M.login(USER, PASS), "login after starttls")
ok(M.select("INBOX"), "select")
M.logout()

# Implicit TLS: AUTHENTICATE PLAIN, wrong passwords, unknown users.
M = connect()
ok(M.authenticate("PLAIN", lambda _: ("\0%s\0%s" % (USER, PASS)).encode()), "authenticate plain")
M.logout()
for user, password in [(USER, "wrong"), ("nobody@example.test", PASS)]:
    M = connect()
    try:
        M.login(user, password)
        raise AssertionError("bad credentials accepted")
    except imaplib.IMAP4.error as err:
        assert "AUTHENTICATIONFAILED" in str(err), err
    M.logout()
print("PASS")
`, nil)
}

// TestImaplibIdleWakesUp: imaplib (by hand, 3.11 has no idle()) idles on
// INBOX; a delivery through the proposer (what SMTP does), an APPEND by a
// second client, a flag change and an expunge by it must each reach the
// idling client within a second.
func TestImaplibIdleWakesUp(t *testing.T) {
	e := newEnv(t)
	e.deliver("INBOX", []byte("Subject: before\r\n\r\nbefore\r\n"))
	e.runPython(`
M = login()
assert ok(M.select("INBOX"), "select") == [b"1"]
tag = M._new_tag()
M.send(tag + b" IDLE\r\n")
assert M.readline().startswith(b"+"), "no continuation"
M.sock.settimeout(1.0)

def expect(what, pred):
    t0 = time.monotonic()
    while True:
        line = M.readline()
        assert line, "connection closed waiting for " + what
        if pred(line):
            took = time.monotonic() - t0
            assert took < 1.0, (what, took)
            print("got %s after %.3fs: %r" % (what, took, line), flush=True)
            return line

print("IDLING", flush=True)
expect("EXISTS after delivery", lambda l: l == b"* 2 EXISTS\r\n")

N = login()
ok(N.append("INBOX", None, None, MSG), "append from second client")
expect("EXISTS after append", lambda l: l == b"* 3 EXISTS\r\n")
ok(N.select("INBOX"), "select second")
ok(N.store("1", "+FLAGS.SILENT", "(\\Flagged)"), "store from second")
expect("FETCH FLAGS", lambda l: l.startswith(b"* 1 FETCH") and b"\\Flagged" in l)
ok(N.store("2", "+FLAGS.SILENT", "(\\Deleted)"), "delete from second")
ok(N.expunge(), "expunge from second")
expect("EXPUNGE", lambda l: l == b"* 2 EXPUNGE\r\n")
N.logout()

M.send(b"DONE\r\n")
expect("IDLE completion", lambda l: l.startswith(tag + b" OK"))
M.sock.settimeout(10)
assert ok(M.fetch("1:*", "(UID)"), "fetch after idle") == [b"1 (UID 1)", b"2 (UID 3)"]
M.logout()
print("PASS")
`, func(line string) {
		if line == "IDLING" {
			e.deliver("INBOX", []byte("Subject: during\r\n\r\nwhile idling\r\n"))
		}
	})
}

// TestMalformedMIMEIsStoredAsIs: messages that break MIME in various ways,
// delivered raw (as SMTP would) and appended, come back byte for byte, and
// their structure, envelope and parts can be fetched without breaking the
// session.
func TestMalformedMIMEIsStoredAsIs(t *testing.T) {
	e := newEnv(t)
	bad := [][]byte{
		// A multipart whose closing boundary never comes.
		[]byte("Subject: unterminated\r\nContent-Type: multipart/mixed; boundary=XX\r\n\r\n--XX\r\nContent-Type: text/plain\r\n\r\nfirst part\r\n--XX\r\nContent-Type: text/html\r\n\r\n<b>no end"),
		// A multipart without a boundary parameter.
		[]byte("Subject: no boundary\r\nContent-Type: multipart/mixed\r\n\r\njust text\r\n"),
		// Broken header lines, NUL and 8-bit bytes, LF-only endings.
		[]byte(" leading space line\nthis line has no colon\nSubject: =?bogus?Q?x?=\n\n\x00\xff\xfe binary body\n"),
		// A header and no body at all, no final newline.
		[]byte("Subject: header only"),
		// Nothing.
		{},
		// Garbage Content-Type and Content-Transfer-Encoding.
		[]byte("Content-Type: ;;;===\r\nContent-Transfer-Encoding: rot13\r\n\r\nbody\r\n"),
		// message/rfc822 that is not a message, inside a multipart with a boundary that appears nowhere.
		[]byte("Content-Type: multipart/mixed; boundary=\"nowhere\"\r\n\r\n--elsewhere\r\nContent-Type: message/rfc822\r\n\r\n\r\n"),
		// A deeply nested multipart.
		nested(300),
	}
	for _, b := range bad {
		e.deliver("INBOX", b)
	}
	var script bytes.Buffer
	script.WriteString("BAD = [\n")
	for _, b := range bad {
		script.WriteString("    " + pyBytes(b) + ",\n")
	}
	script.WriteString("]\n")
	script.WriteString(`
M = login()
assert ok(M.select("INBOX"), "select") == [str(len(BAD)).encode()]
for i, want in enumerate(BAD, 1):
    got = fetch_parts(ok(M.fetch(str(i), "(BODY.PEEK[])"), "body %d" % i))[0][1]
    assert got == want or (want == b"" and got in (b"", None)), (i, got, want)
    r = M.fetch(str(i), "(BODYSTRUCTURE BODY ENVELOPE RFC822.SIZE FLAGS)")
    assert r[0] == "OK" and ("RFC822.SIZE %d" % len(want)).encode() in b"".join(x if isinstance(x, bytes) else b"".join(x) for x in r[1]), (i, r)
    for section in ["HEADER", "TEXT", "1", "2", "1.MIME", "2.1", "HEADER.FIELDS (Subject)", "1.HEADER", "1.TEXT"]:
        r = M.fetch(str(i), "(BODY.PEEK[%s])" % section)
        assert r[0] == "OK", (i, section, r)
    r = M.fetch(str(i), "(BINARY.PEEK[1] BINARY.SIZE[1])")
    assert r[0] == "OK", (i, r)
for crit in [("BODY", "part"), ("TEXT", "binary"), ("HEADER", "Subject", "x"), ("SENTSINCE", "01-Jan-2000")]:
    ok(M.search(None, *crit), str(crit))
assert ok(M.search(None, "BODY", "first"), "search unterminated")[0] == b"1"

# The same bytes through APPEND (imaplib sends CRLF line endings).
weird = b"Subject: appended\r\nContent-Type: multipart/mixed; boundary=Q\r\n\r\n--Q\r\nContent-Type: text/plain\r\n\r\nunfinished\r\n"
typ, data = M.append("INBOX", None, None, weird)
assert typ == "OK", data
n = str(len(BAD) + 1)
assert fetch_parts(ok(M.fetch(n, "(BODY.PEEK[])"), "appended"))[0][1] == weird
assert b"BODYSTRUCTURE" in ok(M.fetch(n, "(BODYSTRUCTURE)"), "appended structure")[0]
M.logout()
print("PASS")
`)
	e.runPython(script.String(), nil)
}

func nested(depth int) []byte {
	var b bytes.Buffer
	for i := 0; i < depth; i++ {
		b.WriteString("Content-Type: multipart/mixed; boundary=\"b" + strconv.Itoa(i) + "\"\r\n\r\n--b" + strconv.Itoa(i) + "\r\n")
	}
	b.WriteString("Content-Type: text/plain\r\n\r\ndeep\r\n")
	return b.Bytes()
}

// pyBytes writes b as a Python bytes literal.
func pyBytes(b []byte) string {
	var s bytes.Buffer
	s.WriteString(`b"`)
	for _, c := range b {
		switch {
		case c == '"' || c == '\\':
			s.WriteByte('\\')
			s.WriteByte(c)
		case c >= 0x20 && c < 0x7f:
			s.WriteByte(c)
		default:
			s.WriteString(`\x`)
			s.WriteByte("0123456789abcdef"[c>>4])
			s.WriteByte("0123456789abcdef"[c&15])
		}
	}
	s.WriteString(`"`)
	return s.String()
}

func TestImaplibQuota(t *testing.T) {
	e := newEnv(t)
	e.must(&storage.SetQuota{Address: e.user, QuotaBytes: 2000})
	e.runPython(`
M = login()
ok(M.append("INBOX", None, None, b"Subject: fits\r\n\r\n" + b"x" * 1200), "first append")
no(M.append("INBOX", None, None, b"Subject: too much\r\n\r\n" + b"x" * 1200), "OVERQUOTA", "second append")
assert ok(M.status("INBOX", "(MESSAGES)"), "status")[0].endswith(b"(MESSAGES 1)")
M.logout()
print("PASS")
`, nil)
	ctx := context.Background()
	mb, err := e.store.MailboxByAddress(ctx, e.user)
	if err != nil || mb.UsedBytes > 2000 {
		t.Fatalf("used %d, %v", mb.UsedBytes, err)
	}
}
