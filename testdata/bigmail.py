#!/usr/bin/env python3
"""Fill a running Sigillo with large messages, and count them (restart scenarios).

usage: bigmail.py send|count  with settings in the environment:
  CA (root PEM file), HOST, SUBMISSIONS, IMAPS, USER, PASSWORD;
  send: COUNT messages of SIZE bytes each (random, incompressible), from USER
  to USER over SMTPS; count: prints "COUNT n", the messages in USER's INBOX.
"""
import base64
import imaplib
import os
import smtplib
import ssl
import sys
import time

E = os.environ
HOST = E.get("HOST", "127.0.0.1")
CTX = ssl.create_default_context(cafile=E["CA"])


def send():
    count, size, user = int(E["COUNT"]), int(E["SIZE"]), E["USER"]
    start = time.time()
    with smtplib.SMTP_SSL(HOST, int(E["SUBMISSIONS"]), context=CTX, timeout=300) as s:
        s.login(user, E["PASSWORD"])
        for i in range(count):
            body = base64.encodebytes(os.urandom(size * 3 // 4)).replace(b"\n", b"\r\n")
            head = ("From: %s\r\nTo: %s\r\nSubject: big %d\r\nMessage-ID: <big%d.%f@bigmail.test>\r\n"
                    "Date: Mon, 2 Mar 2026 09:00:00 +0100\r\n\r\n" % (user, user, i, i, start)).encode()
            s.sendmail(user, [user], head + body)
    took = time.time() - start
    print("SENT %d messages of %d bytes in %.1f s (%.1f MB/s)" % (count, size, took, count * size / took / 1e6), flush=True)


def count():
    m = imaplib.IMAP4_SSL(HOST, int(E["IMAPS"]), ssl_context=CTX, timeout=60)
    m.login(E["USER"], E["PASSWORD"])
    typ, data = m.select("INBOX", readonly=True)
    if typ != "OK":
        print("FAIL: select INBOX:", data)
        sys.exit(1)
    print("COUNT", int(data[0]), flush=True)
    m.logout()


{"send": send, "count": count}[sys.argv[1]]()
