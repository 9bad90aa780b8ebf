#!/usr/bin/env python3
"""PEC scenarios' independent client: sends with smtplib, reads with imaplib,
takes messages apart with the email package.

  pecclient.py send FROM PASSWORD MESSAGE_FILE RCPT...   (SMTPS; prints the reply)
  pecclient.py fetch USER PASSWORD OUTDIR                (every INBOX message to
      OUTDIR/N.eml, its top-level daticert.xml to OUTDIR/N.daticert.xml, and one
      JSON line per message on stdout)

Environment: HOST, SMTPS, IMAPS, CA as for clients.py.
"""
import email
import email.policy
import imaplib
import json
import os
import smtplib
import ssl
import sys

E = os.environ
HOST = E.get("HOST", "127.0.0.1")
CTX = ssl.create_default_context(cafile=E["CA"])


def send(sender, password, path, rcpts):
    with open(path, "rb") as f:
        data = f.read()
    with smtplib.SMTP_SSL(HOST, int(E["SUBMISSIONS"]), context=CTX, timeout=60) as s:
        s.login(sender, password)
        try:
            refused = s.sendmail(sender, rcpts, data)
        except smtplib.SMTPDataError as e:
            print(json.dumps({"code": e.smtp_code, "reply": e.smtp_error.decode()}))
            return
        print(json.dumps({"code": 250, "refused": {k: v[0] for k, v in refused.items()}}))


def top_parts(msg):
    """The parts of a PEC message's signed multipart/mixed (not those inside
    postacert.eml)."""
    out = []
    if msg.get_content_type() != "multipart/signed":
        return out
    first = msg.get_payload(0)
    for part in first.get_payload() if first.is_multipart() else []:
        out.append(part)
    return out


def fetch(user, password, outdir):
    m = imaplib.IMAP4_SSL(HOST, int(E["IMAPS"]), ssl_context=CTX, timeout=60)
    m.login(user, password)
    m.select("INBOX", readonly=True)
    typ, data = m.uid("SEARCH", None, "ALL")
    uids = data[0].split()
    for n, uid in enumerate(uids, 1):
        typ, d = m.uid("FETCH", uid, "(BODY.PEEK[])")
        raw = d[0][1]
        path = os.path.join(outdir, "%d.eml" % n)
        with open(path, "wb") as f:
            f.write(raw)
        msg = email.message_from_bytes(raw, policy=email.policy.compat32)
        info = {
            "file": path,
            "subject": str(email.header.make_header(email.header.decode_header(msg.get("Subject", "")))),
            "from": msg.get("From", ""),
            "x_ricevuta": msg.get("X-Ricevuta", ""),
            "x_trasporto": msg.get("X-Trasporto", ""),
            "content_type": msg.get_content_type(),
            "parts": [],
        }
        for part in top_parts(msg):
            name = part.get_filename() or part.get_content_type()
            info["parts"].append(name)
            if name == "daticert.xml":
                xml = os.path.join(outdir, "%d.daticert.xml" % n)
                with open(xml, "wb") as f:
                    f.write(part.get_payload(decode=True))
                info["daticert"] = xml
            if name == "postacert.eml":
                inner = part.get_payload(0) if part.is_multipart() else None
                if inner is not None:
                    info["postacert_message_id"] = inner.get("Message-ID", "")
                    info["postacert_riferimento"] = inner.get("X-Riferimento-Message-ID", "")
                    info["postacert_subject"] = inner.get("Subject", "")
                    info["postacert_parts"] = [p.get_filename() or p.get_content_type() for p in inner.walk()]
            if part.get_content_type() == "multipart/alternative":
                for alt in part.get_payload():
                    if alt.get_content_type() == "text/plain":
                        info["text"] = alt.get_payload(decode=True).decode(alt.get_content_charset() or "ascii")
        print(json.dumps(info))
    m.logout()


def main():
    cmd = sys.argv[1]
    if cmd == "send":
        send(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5:])
    elif cmd == "fetch":
        fetch(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        sys.exit("unknown command " + cmd)


if __name__ == "__main__":
    main()
