#!/usr/bin/env python3
"""Independent mail clients (Python's stdlib) driving a running Sigillo.

usage: clients.py SCENARIO  with settings in the environment:
  CA (root PEM file), HOST, SMTPS, SUBMISSION, SMTP, IMAPS, IMAP, POP3S, POP3,
  USER, PASSWORD, and per scenario more.
Each scenario asserts what a user would see and prints one line per check.
Exit status 0 means every check held.
"""
import email
import imaplib
import os
import poplib
import re
import smtplib
import socket
import ssl
import sys
import threading
import time
from email.message import EmailMessage

E = os.environ
HOST = E.get("HOST", "127.0.0.1")
CTX = ssl.create_default_context(cafile=E["CA"])
PORTS = {"SMTPS": "SUBMISSIONS"}  # scenario names -> config listener names




def port(name):
    return int(E[PORTS.get(name, name)])


def check(cond, what):
    if not cond:
        print("FAIL:", what, flush=True)
        sys.exit(1)
    print("ok:", what, flush=True)


def message(sender, rcpt, subject, body="Hello from the scenario.\n"):
    m = EmailMessage()
    m["From"] = sender
    m["To"] = rcpt
    m["Subject"] = subject
    m["Message-ID"] = email.utils.make_msgid(domain="scenario.test")
    m["Date"] = email.utils.formatdate(localtime=True)
    m.set_content(body)
    return m


def send_smtps(sender, rcpt, subject, user=None, password=None, body="Hello.\n"):
    with smtplib.SMTP_SSL(HOST, port("SMTPS"), context=CTX, timeout=30) as s:
        s.login(user or E["USER"], password or E["PASSWORD"])
        s.send_message(message(sender, rcpt, subject, body))


def imap():
    m = imaplib.IMAP4_SSL(HOST, port("IMAPS"), ssl_context=CTX, timeout=30)
    m.login(E["USER"], E["PASSWORD"])
    return m


def uids(m, criteria="ALL"):
    typ, data = m.uid("SEARCH", None, criteria)
    assert typ == "OK", data
    return [int(x) for x in data[0].split()]


def scenario_mailflow():
    user = E["USER"]
    # 1. Send by SMTPS with AUTH to ourselves and to a second local mailbox.
    send_smtps(user, user, "first")
    send_smtps(user, user, "second")
    send_smtps(user, E["OTHER"], "to the other mailbox")
    check(True, "three messages accepted over SMTPS with AUTH PLAIN")

    # Submission on 587: STARTTLS, then AUTH LOGIN.
    with smtplib.SMTP(HOST, port("SUBMISSION"), timeout=30) as s:
        s.ehlo()
        check("auth" not in s.esmtp_features, "587 does not offer AUTH before STARTTLS")
        s.starttls(context=CTX)
        s.ehlo()
        check("LOGIN" in s.esmtp_features.get("auth", ""), "587 offers AUTH LOGIN after STARTTLS")
        s.user, s.password = user, E["PASSWORD"]
        s.auth("LOGIN", s.auth_login)
        s.send_message(message(user, user, "third via 587"))
    check(True, "message accepted on 587 after STARTTLS and AUTH LOGIN")

    # 2. Read by IMAPS.
    m = imap()
    typ, data = m.list()
    listing = b"\n".join(data)
    for flag in (rb"\Sent", rb"\Drafts", rb"\Trash", rb"\Junk"):
        check(flag in listing, "LIST shows special-use %s" % flag.decode())
    typ, data = m.select("INBOX")
    check(typ == "OK" and int(data[0]) == 3, "INBOX holds 3 messages (%s)" % data[0])
    all_uids = uids(m)
    check(all_uids == [1, 2, 3], "UIDs are 1 2 3 (%s)" % all_uids)
    typ, data = m.uid("FETCH", "1", "(BODY.PEEK[] ENVELOPE BODYSTRUCTURE FLAGS INTERNALDATE RFC822.SIZE)")
    raw = data[0][1]
    check(b"Subject: first" in raw, "BODY[] of UID 1 is the first message")
    check(b"Received: from" in raw and b"Return-Path:" in raw, "the message carries Received: and Return-Path:")
    check(b"RFC822.SIZE %d" % len(raw) in data[0][0], "RFC822.SIZE matches the bytes fetched")
    check(b"ENVELOPE" in data[0][0] and b"BODYSTRUCTURE" in data[0][0], "ENVELOPE and BODYSTRUCTURE fetched")

    # 3. Flags.
    typ, data = m.uid("STORE", "1", "+FLAGS", r"(\Flagged $Important)")
    check(typ == "OK", "STORE +FLAGS")
    check(uids(m, "FLAGGED") == [1], "SEARCH FLAGGED finds UID 1")
    check(uids(m, "UNSEEN") == [1, 2, 3], "all three still unseen")
    m.uid("FETCH", "2", "(BODY[])")
    check(uids(m, "SEEN") == [2], "fetching BODY[] set \\Seen on UID 2")

    # 4. MOVE to Archive (RFC 6851) and EXPUNGE.
    typ, data = m.uid("MOVE", "1", "Archive")
    check(typ == "OK", "UID MOVE 1 to Archive")
    check(uids(m) == [2, 3], "INBOX keeps UIDs 2 3 after MOVE")
    m.uid("STORE", "2", "+FLAGS", r"(\Deleted)")
    typ, data = m.expunge()
    check(typ == "OK" and uids(m) == [3], "EXPUNGE removed UID 2")
    typ, data = m.status("Archive", "(MESSAGES UIDNEXT)")
    check(b"MESSAGES 1" in data[0], "Archive holds the moved message (%s)" % data[0])
    m.select("Archive")
    typ, data = m.uid("FETCH", "1:*", "(FLAGS)")
    check(b"\\Flagged" in data[0], "the moved message kept its flags (%s)" % data[0])
    m.logout()

    # 5. POP3S sees the INBOX; a deletion there is gone in IMAP too.
    p = poplib.POP3_SSL(HOST, port("POP3S"), context=CTX, timeout=30)
    p.user(user)
    p.pass_(E["PASSWORD"])
    count, size = p.stat()
    check(count == 1, "POP3 STAT shows the 1 INBOX message")
    resp, lines, octets = p.retr(1)
    check(any(b"third via 587" in l for l in lines), "POP3 RETR returns it")
    resp, uidl, _ = p.uidl()
    check(len(uidl) == 1, "UIDL lists it")
    p.dele(1)
    p.quit()
    m = imap()
    m.select("INBOX")
    check(uids(m) == [], "after POP3 DELE+QUIT the INBOX is empty over IMAP")
    m.logout()


def scenario_pop3seen():
    """A message downloaded over POP3 and kept on the server shows as read in IMAP."""
    user = E["USER"]
    send_smtps(user, user, "downloaded by pop3")
    m = imap()
    m.select("INBOX")
    u = uids(m, 'SUBJECT "downloaded by pop3"')
    check(len(u) == 1 and u[0] not in uids(m, "SEEN"), "the new message is unread")
    p = poplib.POP3_SSL(HOST, port("POP3S"), context=CTX, timeout=30)
    p.user(user)
    p.pass_(E["PASSWORD"])
    count, _ = p.stat()
    p.top(count, 0)  # TOP alone does not make it read
    p.retr(count)
    p.quit()
    m.noop()
    check(u[0] in uids(m, "SEEN"), "after POP3 RETR and QUIT it is \\Seen in IMAP")
    m.logout()


def scenario_idle():
    """A message delivered while a client IDLEs reaches it within 1 s."""
    user = E["USER"]
    m = imap()
    typ, data = m.select("INBOX")
    before = int(data[0])
    tag = m._new_tag()
    m.send(tag + b" IDLE\r\n")
    line = m.readline()
    check(line.startswith(b"+"), "server accepted IDLE (%r)" % line)
    sent_at = {}

    def deliver():
        time.sleep(0.3)
        # From before the SMTP connection: an upper bound on the delay
        # from acceptance to EXISTS (it includes TLS, AUTH and DATA).
        sent_at["t"] = time.monotonic()
        send_smtps(user, user, "wake up")

    t = threading.Thread(target=deliver)
    t.start()
    m.sock.settimeout(20)
    got = None
    while True:
        line = m.readline()
        if not line:
            break
        if re.match(rb"\* (\d+) EXISTS", line):
            got = time.monotonic()
            break
    t.join()
    check(got is not None, "EXISTS arrived during IDLE")
    delay = got - sent_at["t"]
    print("idle wake-up, counted from the start of the SMTP session: %.3f s" % delay)
    check(delay < 1.0, "IDLE wake-up within 1 s of acceptance (%.3f s, upper bound)" % delay)
    m.send(b"DONE\r\n")
    while True:
        line = m.readline()
        if line.startswith(tag):
            check(b"OK" in line, "IDLE ended with OK")
            break
    typ, data = m.select("INBOX")
    check(int(data[0]) == before + 1, "INBOX has one more message")
    m.logout()


def scenario_snapshot():
    """Print the INBOX's UIDVALIDITY and UIDs and the Archive's (restart checks)."""
    m = imap()
    out = []
    for folder in ("INBOX", "Archive"):
        m.select(folder, readonly=True)
        typ, data = m.response("UIDVALIDITY")
        out.append("%s uidvalidity=%s uids=%s" % (folder, data[0].decode(), ",".join(map(str, uids(m)))))
    m.logout()
    print("STATE " + " ".join(out))


def scenario_mailflow_archive_one():
    """Move the oldest INBOX message to Archive."""
    m = imap()
    m.select("INBOX")
    first = uids(m)[0]
    typ, data = m.uid("MOVE", str(first), "Archive")
    check(typ == "OK", "moved UID %d to Archive" % first)
    m.logout()


def scenario_send():
    """Send one message: FROM, TO, SUBJECT from the environment."""
    send_smtps(E["FROM"], E["TO"], E["SUBJECT"])
    print("ok: sent %s" % E["SUBJECT"])


def expect_smtp_error(fn, codes, what):
    try:
        fn()
    except smtplib.SMTPResponseException as e:
        check(e.smtp_code in codes, "%s: %d %s" % (what, e.smtp_code, e.smtp_error.decode(errors="replace")))
        return
    except smtplib.SMTPRecipientsRefused as e:
        code = list(e.recipients.values())[0][0]
        check(code in codes, "%s: %d" % (what, code))
        return
    except smtplib.SMTPSenderRefused as e:
        check(e.smtp_code in codes, "%s: %d" % (what, e.smtp_code))
        return
    check(False, "%s: accepted" % what)


def scenario_refusals():
    user = E["USER"]

    def relay():
        with smtplib.SMTP(HOST, port("SMTP"), timeout=30) as s:
            s.ehlo("attacker.test")
            s.sendmail("spam@attacker.test", ["victim@elsewhere.test"], "Subject: relay\r\n\r\nx\r\n")
    expect_smtp_error(relay, (550, 554), "relay without auth on port 25 refused")

    def unknown_user():
        with smtplib.SMTP(HOST, port("SMTP"), timeout=30) as s:
            s.sendmail("someone@remote.test", ["nobody@" + user.split("@")[1]], "Subject: x\r\n\r\nx\r\n")
    expect_smtp_error(unknown_user, (550,), "unknown local user refused at RCPT")

    def auth_before_tls():
        with smtplib.SMTP(HOST, port("SUBMISSION"), timeout=30) as s:
            s.ehlo()
            s.esmtp_features["auth"] = "PLAIN LOGIN"
            s.login(user, E["PASSWORD"])
    try:
        auth_before_tls()
        check(False, "AUTH before STARTTLS on 587 accepted")
    except smtplib.SMTPException as e:
        check(True, "AUTH before STARTTLS on 587 refused (%s)" % str(e)[:80])

    def literal():
        with smtplib.SMTP_SSL(HOST, port("SMTPS"), context=CTX, timeout=30) as s:
            s.login(user, E["PASSWORD"])
            s.sendmail(user, ["x@[127.0.0.1]"], "Subject: literal\r\n\r\nx\r\n")
    expect_smtp_error(literal, (550,), "an address-literal recipient is refused at RCPT")

    def not_owner():
        send_smtps("ceo@" + user.split("@")[1], user, "forged")
    expect_smtp_error(not_owner, (553,), "sender not owned by the login refused")

    def oversize():
        with smtplib.SMTP_SSL(HOST, port("SMTPS"), context=CTX, timeout=60) as s:
            s.login(user, E["PASSWORD"])
            big = "Subject: big\r\n\r\n" + ("x" * 998 + "\r\n") * (int(E["MAX_BYTES"]) // 1000 + 10)
            s.sendmail(user, [user], big)
    expect_smtp_error(oversize, (552,), "oversize message refused")

    # Wrong passwords: refused, and slower each time from one address.
    times = []
    for i in range(3):
        t0 = time.monotonic()
        try:
            with smtplib.SMTP_SSL(HOST, port("SMTPS"), context=CTX, timeout=60) as s:
                s.ehlo()
                s.user, s.password = user, "wrong password %d" % i
                s.auth("PLAIN", s.auth_plain)
            check(False, "wrong password accepted")
        except smtplib.SMTPAuthenticationError as e:
            times.append(time.monotonic() - t0)
    print("wrong-password answer times: " + " ".join("%.2fs" % t for t in times))
    check(times[2] > times[0] and times[2] >= 1.0, "repeated failures are slowed down")
    try:
        m = imaplib.IMAP4_SSL(HOST, port("IMAPS"), ssl_context=CTX, timeout=60)
        m.login(user, "wrong")
        check(False, "IMAP wrong password accepted")
    except imaplib.IMAP4.error as e:
        check(True, "IMAP wrong password refused (%s)" % e)

    # IMAP LOGIN on the plain port before STARTTLS is refused.
    m = imaplib.IMAP4(HOST, port("IMAP"), timeout=30)
    try:
        m.login(user, E["PASSWORD"])
        check(False, "IMAP LOGIN before STARTTLS accepted")
    except imaplib.IMAP4.error as e:
        check(True, "IMAP LOGIN before STARTTLS refused (%s)" % e)
    m.starttls(ssl_context=CTX)
    m.login(user, E["PASSWORD"])
    check(True, "IMAP LOGIN after STARTTLS works")
    m.logout()

    # POP3 USER before STLS is refused; after STLS it works.
    p = poplib.POP3(HOST, port("POP3"), timeout=30)
    try:
        p.user(user)
        p.pass_(E["PASSWORD"])
        check(False, "POP3 login before STLS accepted")
    except poplib.error_proto as e:
        check(True, "POP3 login before STLS refused (%s)" % e)
    p.quit()
    p = poplib.POP3(HOST, port("POP3"), timeout=30)
    p.stls(context=CTX)
    p.user(user)
    p.pass_(E["PASSWORD"])
    check(True, "POP3 login after STLS works")
    p.quit()


def raw_lines(portname, lines, tls):
    s = socket.create_connection((HOST, port(portname)), timeout=20)
    if tls:
        s = CTX.wrap_socket(s, server_hostname=HOST)
    f = s.makefile("rb")
    greeting = f.readline()
    answers = []
    for l in lines:
        s.sendall(l)
        answers.append(f.readline())
    s.close()
    return greeting, answers


def scenario_garbage():
    """Garbage and overlong lines on all three protocols, then normal service."""
    long_line = b"A" * 100000 + b"\r\n"
    for name, tls, bad_prefixes in (("SMTPS", True, (b"5",)), ("IMAPS", True, (b"a BAD",)), ("POP3S", True, (b"-ERR",))):
        junk = b"\x00\xff\xfe garbage \x01\r\n" if name != "IMAPS" else b"a FROBNICATE the server\r\n"
        g, answers = raw_lines(name, [junk], tls)
        check(any(answers[0].startswith(p) for p in bad_prefixes), "%s answers an unknown command with an error (%r)" % (name, answers[0][:60]))
        g, answers = raw_lines(name, [b"\x00\xff\xfe \x01\x02\r\n"], tls)
        check(not answers[0].startswith((b"+OK", b"250", b"* OK")), "%s answers binary junk with an error or by closing (%r)" % (name, answers[0][:60]))
        try:
            g, answers = raw_lines(name, [long_line], tls)
            ans = answers[0]
        except (ConnectionError, ssl.SSLError, socket.timeout) as e:
            ans = repr(e).encode()
        check(not ans.startswith((b"+OK", b"250", b"a OK")), "%s refuses a 100 kB line (%r)" % (name, ans[:60]))
    send_smtps(E["USER"], E["USER"], "still serving")
    m = imap()
    m.select("INBOX")
    p = poplib.POP3_SSL(HOST, port("POP3S"), context=CTX, timeout=30)
    p.user(E["USER"])
    p.pass_(E["PASSWORD"])
    p.quit()
    m.logout()
    check(True, "all three protocols still serve after the garbage")


def scenario_malformed():
    """Malformed MIME is stored as-is and still fetchable."""
    user = E["USER"]
    bad = (b"From: " + user.encode() + b"\r\nTo: " + user.encode() + b"\r\nSubject: broken mime\r\n"
           b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"never-closed\"\r\n\r\n"
           b"--never-closed\r\nContent-Type: text/plain; charset=\"bogus\r\n"
           b"Content-Transfer-Encoding: base64\r\n\r\n!!!! not base64 !!!!\r\n")
    with smtplib.SMTP_SSL(HOST, port("SMTPS"), context=CTX, timeout=30) as s:
        s.login(user, E["PASSWORD"])
        s.sendmail(user, [user], bad)
    m = imap()
    m.select("INBOX")
    u = uids(m, 'SUBJECT "broken mime"')
    check(len(u) == 1, "the malformed message arrived")
    typ, data = m.uid("FETCH", str(u[0]), "(BODY.PEEK[] BODYSTRUCTURE)")
    check(typ == "OK" and data[0][1].endswith(bad), "BODY[] returns the malformed bytes unchanged")

    # A 10,000-character line (generated HTML does this) is accepted too.
    long_line = b"<p>" + b"x" * 10000 + b"</p>"
    msg = (b"From: " + user.encode() + b"\r\nTo: " + user.encode() + b"\r\nSubject: long line\r\n"
           b"Content-Type: text/html\r\n\r\n" + long_line + b"\r\n")
    with smtplib.SMTP_SSL(HOST, port("SMTPS"), context=CTX, timeout=30) as s:
        s.login(user, E["PASSWORD"])
        s.sendmail(user, [user], msg)
    m.select("INBOX")
    u = uids(m, 'SUBJECT "long line"')
    typ, data = m.uid("FETCH", str(u[0]), "(BODY.PEEK[TEXT])")
    check(long_line in data[0][1], "a message with a 10,000-character line arrives whole")
    m.logout()


def scenario_remote():
    """Wait for a message routed to the second instance to arrive there."""
    deadline = time.monotonic() + float(E.get("WAIT", "30"))
    while time.monotonic() < deadline:
        m = imap()
        m.select("INBOX")
        u = uids(m, 'SUBJECT "%s"' % E["SUBJECT"])
        if u:
            typ, data = m.uid("FETCH", str(u[0]), "(BODY.PEEK[HEADER])")
            hdr = data[0][1]
            check(re.search(rb"with ESMTPS", hdr) is not None, "it crossed between the servers with STARTTLS")
            check(True, "the routed message arrived at the remote instance")
            m.logout()
            return
        m.logout()
        time.sleep(0.5)
    check(False, "the routed message did not arrive in time")


if __name__ == "__main__":
    globals()["scenario_" + sys.argv[1]]()
