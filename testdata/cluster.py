#!/usr/bin/env python3
"""Mail clients (Python's stdlib) driving a cluster of Sigillo nodes.

usage: cluster.py SCENARIO  with settings in the environment:
  CA (root PEM file), HOST, USER, PASSWORD, and per scenario:
  login:  IMAPS (one node's port): logs in and selects INBOX.
  load:   SUBMISSIONS_PORTS (every node's, comma-separated), SENDERS, COUNT,
          RCPT, OUT, PAD (bytes added to each body, default 0): SENDERS threads send COUNT messages in all, each with its
          own Message-ID, starting on different nodes; a message that fails
          (connection lost, 4xx, a 250 that never came) is sent again, the
          same bytes, on the next node until it gets 250. The Message-IDs that
          got 250 are appended to OUT as they do.
  count:  IMAPS: prints one JSON object {message-id: copies in INBOX}.
  peccount: IMAPS: prints one JSON object {kind: {message-id: copies}} of the
          PEC messages in INBOX, kind the X-Ricevuta value (accettazione,
          avvenuta-consegna, ...) or "posta-certificata" for a busta (its
          X-Trasporto), message-id its X-Riferimento-Message-ID: the client's
          Message-ID of the message it is about.
"""
import email
import email.utils
import imaplib
import json
import os
import re
import smtplib
import ssl
import sys
import threading
import time
from email.message import EmailMessage

E = os.environ
HOST = E.get("HOST", "127.0.0.1")
CTX = ssl.create_default_context(cafile=E["CA"])


def imap(port):
    m = imaplib.IMAP4_SSL(HOST, port, ssl_context=CTX, timeout=30)
    m.login(E["USER"], E["PASSWORD"])
    return m


def scenario_login():
    m = imap(int(E["IMAPS"]))
    typ, data = m.select("INBOX")
    print("ok: logged in and selected INBOX:", typ, data[0].decode(), flush=True)
    m.logout()


def scenario_load():
    ports = [int(p) for p in E["SUBMISSIONS_PORTS"].split(",")]
    senders, count = int(E.get("SENDERS", "3")), int(E["COUNT"])
    rcpt, out = E["RCPT"], E["OUT"]
    lock = threading.Lock()
    stats = {"acked": 0, "retries": 0}
    deadline = time.time() + float(E.get("DEADLINE", "240"))

    def one(i, start):
        m = EmailMessage()
        m["From"] = E["USER"]
        m["To"] = rcpt
        m["Subject"] = "load %d" % i
        mid = "<load-%d@cluster.test>" % i
        m["Message-ID"] = mid
        m["Date"] = email.utils.formatdate(localtime=True)
        m.set_content("message %d of the load\n" % i + "x" * int(E.get("PAD", "0")) + "\n")
        k = start
        while time.time() < deadline:
            port = ports[k % len(ports)]
            try:
                with smtplib.SMTP_SSL(HOST, port, context=CTX, timeout=15) as s:
                    s.login(E["USER"], E["PASSWORD"])
                    s.send_message(m)
                with lock:
                    stats["acked"] += 1
                    with open(out, "a") as f:
                        f.write(mid + "\n")
                return
            except Exception:
                with lock:
                    stats["retries"] += 1
                k += 1
                time.sleep(0.2)
        print("FAIL: %s never got 250 before the deadline" % mid, flush=True)

    def sender(s):
        for i in range(s, count, senders):
            one(i, s + i)

    threads = [threading.Thread(target=sender, args=(s,)) for s in range(senders)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print("ok: %d of %d messages got 250 (%d attempts failed and were retried)"
          % (stats["acked"], count, stats["retries"]), flush=True)
    if stats["acked"] != count:
        sys.exit(1)


def scenario_count():
    m = imap(int(E["IMAPS"]))
    m.select("INBOX", readonly=True)
    typ, data = m.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
    counts = {}
    if typ == "OK":
        for part in data:
            if isinstance(part, tuple):
                found = re.search(rb"<[^>]*>", part[1])
                if found:
                    mid = found.group(0).decode()
                    counts[mid] = counts.get(mid, 0) + 1
    print(json.dumps(counts), flush=True)
    m.logout()


def scenario_peccount():
    m = imap(int(E["IMAPS"]))
    m.select("INBOX", readonly=True)
    typ, data = m.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (X-RICEVUTA X-TRASPORTO X-RIFERIMENTO-MESSAGE-ID)])")
    counts = {}
    if typ == "OK":
        for part in data:
            if not isinstance(part, tuple):
                continue
            h = email.message_from_bytes(part[1])
            kind = h.get("X-Ricevuta") or h.get("X-Trasporto") or "other"
            ref = re.search(r"<[^>]*>", h.get("X-Riferimento-Message-ID", ""))
            mid = ref.group(0) if ref else ""
            per = counts.setdefault(kind.strip(), {})
            per[mid] = per.get(mid, 0) + 1
    print(json.dumps(counts), flush=True)
    m.logout()


if __name__ == "__main__":
    globals()["scenario_" + sys.argv[1]]()
