#!/usr/bin/env python3
"""The SMTP server's policy seen by independent clients (Python's stdlib and
a raw socket): spoofed senders, address harvesting, postmaster, the fields
added on submission, quota without backscatter.

usage: smtppolicy.py SCENARIO  with settings in the environment:
  CA (root PEM file), HOST, SUBMISSIONS, SMTP, IMAPS, and per scenario more
  (USER and PASSWORD are the submitting user; READER and READER_PASSWORD the
  mailbox whose INBOX is checked).
Each scenario prints one line per check; exit status 0 means every check held.
"""
import email
import email.utils
import imaplib
import os
import re
import smtplib
import socket
import ssl
import sys
import time

E = os.environ
HOST = E.get("HOST", "127.0.0.1")
CTX = ssl.create_default_context(cafile=E["CA"])


def check(cond, what):
    if not cond:
        print("FAIL:", what, flush=True)
        sys.exit(1)
    print("ok:", what, flush=True)


def msg(sender, to, subject, extra=b"", body=b"Hello.\r\n"):
    return (b"From: " + sender.encode() + b"\r\nTo: " + to.encode() + b"\r\nSubject: " + subject.encode() +
            b"\r\n" + extra + b"\r\n" + body)


def submit(sender, to, data):
    """Sends over 465 as USER; returns (code, text) of the end of data."""
    with smtplib.SMTP_SSL(HOST, int(E["SUBMISSIONS"]), context=CTX, timeout=30) as s:
        s.login(E["USER"], E["PASSWORD"])
        try:
            s.sendmail(sender, [to], data)
            return 250, ""
        except smtplib.SMTPDataError as e:
            return e.smtp_code, e.smtp_error.decode()


def inbound(sender, rcpts, data, mail_options=()):
    """Sends to port 25 as another server would; returns the first refusal
    as (step, code, text), or ("data", 250, "")."""
    with smtplib.SMTP(HOST, int(E["SMTP"]), local_hostname="mx.remote.test", timeout=30) as s:
        s.ehlo()
        s.starttls(context=CTX)
        s.ehlo()
        code, text = s.mail(sender, mail_options)
        if code != 250:
            return "mail", code, text.decode()
        for r in rcpts:
            code, text = s.rcpt(r)
            if code != 250:
                return "rcpt", code, text.decode()
        code, text = s.data(data)
        return "data", code, text.decode()


def inbox_subjects(user, password):
    m = imaplib.IMAP4_SSL(HOST, int(E["IMAPS"]), ssl_context=CTX, timeout=30)
    m.login(user, password)
    m.select("INBOX", readonly=True)
    typ, data = m.uid("FETCH", "1:*", "(BODY.PEEK[HEADER])")
    out = []
    for item in data:
        if isinstance(item, tuple):
            out.append(email.message_from_bytes(item[1]))
    m.logout()
    return out


def reader():
    return inbox_subjects(E["READER"], E["READER_PASSWORD"])


def scenario_spoofing():
    user, victim, local = E["USER"], E["VICTIM"], E["READER"]
    code, text = submit(user, local, msg(victim, local, "forged by a user"))
    check(code == 553 and text.startswith("5.7.1"), "a user's From: %s is refused after DATA (%d %s)" % (victim, code, text))
    code, text = submit(user, local, msg(user, local, "own address"))
    check(code == 250, "the user's own From: is accepted")
    step, code, text = inbound(user, [local], msg(user, local, "forged mail from"))
    check(step == "mail" and code == 550 and text.startswith("5.7.1"),
          "port 25: MAIL FROM:<%s> without AUTH is refused (%s %d %s)" % (user, step, code, text))
    step, code, text = inbound("someone@remote.test", [local], msg("Boss <%s>" % user, local, "forged header"))
    check(step == "data" and code == 550 and text.startswith("5.7.1"),
          "port 25: From: %s from elsewhere is refused after DATA (%s %d %s)" % (user, step, code, text))
    step, code, text = inbound("", [local], msg("Mail Delivery System <MAILER-DAEMON@remote.test>", local, "a bounce"))
    check(code == 250, "port 25: the null sender (a bounce) passes (%s %d)" % (step, code))
    subjects = [m["Subject"] for m in reader()]
    check(sorted(subjects) == ["a bounce", "own address"], "%s got only the genuine mail: %s" % (local, subjects))


def scenario_relayed():
    user, local = E["USER"], E["READER"]
    step, code, text = inbound(user, [local], msg("App <%s>" % user, local, "from the app server"))
    check(code == 250, "a client in relay_networks sends as %s (%s %d %s)" % (user, step, code, text))
    step, code, text = inbound(user, ["someone@elsewhere.test"], msg(user, "someone@elsewhere.test", "relay"))
    check(step == "rcpt" and code == 554, "relay_networks is not a relay (%s %d %s)" % (step, code, text))
    check("from the app server" in [m["Subject"] for m in reader()], "%s got the application's mail" % local)


def scenario_harvest():
    n = int(E.get("GUESSES", "10000"))
    s = socket.create_connection((HOST, int(E["SMTP"])), timeout=30)
    f = s.makefile("rb")

    def reply():
        while True:
            line = f.readline()
            if not line:
                return None
            if line[3:4] != b"-":
                return line.decode().rstrip()
    start = time.monotonic()
    check(reply().startswith("220"), "greeting")
    s.sendall(b"EHLO harvester.remote.test\r\n")
    check(reply().startswith("250"), "EHLO")
    batch = b"MAIL FROM:<h@remote.test>\r\n" + b"".join(b"RCPT TO:<guess%d@%s>\r\n" % (i, E["DOMAIN"].encode()) for i in range(n))
    try:
        s.sendall(batch)
    except OSError as e:
        print("sending the %d RCPTs stopped: %s" % (n, e))
    check(reply().startswith("250"), "MAIL")
    refused, last = 0, None
    while True:
        last = reply()
        if last is None or not last.startswith("550"):
            break
        refused += 1
    check(refused == int(E["LIMIT"]), "%d guesses refused with 550 before the end, want %s" % (refused, E["LIMIT"]))
    check(last is not None and last.startswith("421 4.7.0"), "then 421 4.7.0: %r" % last)
    check(f.readline() == b"", "and the server closed the connection")
    print("harvest: %d RCPTs sent, %d answered 550, 421 after %.2f s" % (n, refused, time.monotonic() - start))
    s.close()


def scenario_postmaster():
    for rcpt, subject in (("postmaster", "bare postmaster"), (E["POSTMASTER_AT"], "postmaster at a hosted domain")):
        step, code, text = inbound("someone@remote.test", [rcpt], msg("someone@remote.test", rcpt, subject))
        check(code == 250, "RCPT TO:<%s> accepted and delivered (%s %d %s)" % (rcpt, step, code, text))
    subjects = sorted(m["Subject"] for m in reader())
    check(subjects == ["bare postmaster", "postmaster at a hosted domain"], "%s has both: %s" % (E["READER"], subjects))


def scenario_headers():
    user, local = E["USER"], E["READER"]
    code, _ = submit(user, local, msg(user, local, "no id, no date"))
    check(code == 250, "a message without Message-ID: and Date: is accepted")
    got = [m for m in reader() if m["Subject"] == "no id, no date"]
    check(len(got) == 1, "it arrived")
    mid, date = got[0]["Message-ID"], got[0]["Date"]
    check(mid is not None and re.fullmatch(r"<\d{14}\.[A-Z2-7]{16}@%s>" % re.escape(E["HOSTNAME"]), mid.strip()),
          "Message-ID: added: %s" % mid)
    when = email.utils.parsedate_to_datetime(date) if date else None
    check(when is not None and abs(time.time() - when.timestamp()) < 300, "Date: added, now: %s" % date)


def scenario_quota():
    tiny, sender = E["TINY"], "someone@remote.test"
    step, code, text = inbound(sender, [tiny], msg(sender, tiny, "announced big"), ("SIZE=20000",))
    check(step == "rcpt" and code == 552 and text.startswith("5.2.2"), "SIZE=20000 for a 10,000-byte quota: 552 at RCPT (%s %d)" % (step, code))
    step, code, text = inbound(sender, [tiny], msg(sender, tiny, "unannounced big", body=b"x" * 15000 + b"\r\n"))
    check(step == "data" and code == 552 and text.startswith("5.2.2"), "15,000 bytes without SIZE: 552 after DATA, to the client (%s %d)" % (step, code))
    step, code, text = inbound(sender, [tiny], msg(sender, tiny, "within the grace", body=b"x" * 10300 + b"\r\n"))
    check(code == 250, "10,500 bytes, over the quota by less than 10 %%: delivered (%s %d %s)" % (step, code, text))
    step, code, text = inbound(sender, [tiny], msg(sender, tiny, "once full"))
    check(step == "rcpt" and code == 552, "then the mailbox is full: 552 at RCPT (%s %d)" % (step, code))
    subjects = [m["Subject"] for m in reader()]
    check(subjects == ["within the grace"], "%s holds only the message within its grace: %s" % (tiny, subjects))


if __name__ == "__main__":
    globals()["scenario_" + sys.argv[1]]()
