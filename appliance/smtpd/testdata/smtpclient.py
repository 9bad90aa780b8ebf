#!/usr/bin/env python3
"""Drive an SMTP server with Python's smtplib, as an independent client for
smtpd's tests.

usage: smtpclient.py JOB.json

JOB is {"host": ..., "ca": CA PEM file, "helo": name, "steps": [[op, args...], ...]}.
Each step appends one JSON object to the output list, printed on stdout:
  ["connect", "smtps"|"plain", port]
  ["ehlo"]                         -> code, msg, features, auth
  ["starttls"]                     -> code, tls (negotiated version)
  ["login", user, password, mech]  -> code (mech PLAIN or LOGIN)
  ["cmd", line]                    -> code, msg (any command, via docmd)
  ["mail", from, [options]]        -> code, msg
  ["rcpt", to]                     -> code, msg
  ["data", file]                   -> code, msg (file's bytes, unmodified)
  ["sendmail", from, [to], file]   -> refused
  ["quit"]
A step that raises records exc (the exception class), code and msg; a lost
connection ends the job.
"""
import json
import smtplib
import ssl
import sys


def text(b):
    return b.decode("utf-8", "replace") if isinstance(b, bytes) else str(b)


def main():
    with open(sys.argv[1]) as f:
        job = json.load(f)
    ctx = ssl.create_default_context(cafile=job["ca"])
    host = job["host"]
    helo = job.get("helo", "client.test")
    out = []
    s = None
    for step in job["steps"]:
        op, args = step[0], step[1:]
        try:
            if op == "connect":
                if args[0] == "smtps":
                    s = smtplib.SMTP_SSL(host, args[1], local_hostname=helo, context=ctx, timeout=30)
                else:
                    s = smtplib.SMTP(host, args[1], local_hostname=helo, timeout=30)
                out.append({"ok": True})
            elif op == "ehlo":
                code, msg = s.ehlo(helo)
                out.append({"code": code, "msg": text(msg),
                            "features": sorted(s.esmtp_features.keys()),
                            "auth": s.esmtp_features.get("auth", "")})
            elif op == "starttls":
                code, msg = s.starttls(context=ctx)
                out.append({"code": code, "msg": text(msg), "tls": s.sock.version()})
            elif op == "login":
                user, password, mech = args
                s.user, s.password = user, password
                code, msg = s.auth(mech, getattr(s, "auth_" + mech.lower()))
                out.append({"code": code, "msg": text(msg)})
            elif op == "cmd":
                code, msg = s.docmd(args[0])
                out.append({"code": code, "msg": text(msg)})
            elif op == "mail":
                code, msg = s.mail(args[0], args[1] if len(args) > 1 else ())
                out.append({"code": code, "msg": text(msg)})
            elif op == "rcpt":
                code, msg = s.rcpt(args[0])
                out.append({"code": code, "msg": text(msg)})
            elif op == "data":
                with open(args[0], "rb") as f:
                    code, msg = s.data(f.read())
                out.append({"code": code, "msg": text(msg)})
            elif op == "sendmail":
                with open(args[2], "rb") as f:
                    refused = s.sendmail(args[0], args[1], f.read())
                out.append({"ok": True, "refused": {k: [v[0], text(v[1])] for k, v in refused.items()}})
            elif op == "quit":
                code, msg = s.quit()
                out.append({"code": code, "msg": text(msg)})
            else:
                raise ValueError("unknown step " + op)
        except smtplib.SMTPServerDisconnected as e:
            out.append({"exc": type(e).__name__, "msg": str(e)})
            break
        except smtplib.SMTPResponseException as e:
            out.append({"exc": type(e).__name__, "code": e.smtp_code, "msg": text(e.smtp_error)})
        except smtplib.SMTPRecipientsRefused as e:
            out.append({"exc": type(e).__name__,
                        "refused": {k: [v[0], text(v[1])] for k, v in e.recipients.items()}})
        except smtplib.SMTPException as e:
            out.append({"exc": type(e).__name__, "msg": str(e)})
        except OSError as e:
            out.append({"exc": type(e).__name__, "msg": str(e)})
            break
    print(json.dumps(out))


if __name__ == "__main__":
    main()
