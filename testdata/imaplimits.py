#!/usr/bin/env python3
"""IMAP searches and mailbox names an attacker (or a careless client) sends,
with Python's imaplib against a running Sigillo.

usage: imaplimits.py SCENARIO  with CA, HOST, IMAPS, USER, PASSWORD in the
environment. Prints one line per check; exit status 0 means all held.
"""
import base64
import imaplib
import os
import quopri
import ssl
import sys
import time

E = os.environ
CTX = ssl.create_default_context(cafile=E["CA"])
imaplib._MAXLINE = 10_000_000


def check(cond, what):
    if not cond:
        print("FAIL:", what, flush=True)
        sys.exit(1)
    print("ok:", what, flush=True)


def login():
    m = imaplib.IMAP4_SSL(E.get("HOST", "127.0.0.1"), int(E["IMAPS"]), ssl_context=CTX, timeout=30)
    m.login(E["USER"], E["PASSWORD"])
    return m


def answer(f):
    """(typ, text) of a command; BAD (which imaplib raises) included."""
    try:
        typ, data = f()
    except imaplib.IMAP4.abort as e:
        return "ABORT", str(e)
    except imaplib.IMAP4.error as e:
        return "BAD", str(e)
    return typ, b" ".join(d if isinstance(d, bytes) else b" ".join(d) for d in data if d).decode(errors="replace")


def with_literal(m, cmd, lit, *args):
    """cmd with lit sent as a literal (its last argument)."""
    m.literal = lit
    return answer(lambda: m._simple_command(cmd, *args))


def message(i, kind):
    word = "needle%dx" % i
    head = "From: a@example.org\r\nTo: %s\r\nSubject: message %d\r\nMIME-Version: 1.0\r\n" % (E["USER"], i)
    if kind == "base64":
        body = base64.encodebytes(("Un caffè, per favore: %s è qui.\n" % word).encode()).decode().replace("\n", "\r\n")
        return head + "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n" + body
    if kind == "qp":
        body = quopri.encodestring(("Città di Bologna, " + "lunga riga " * 10 + word + "\n").encode("latin-1")).decode()
        return head + "Content-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n" + body.replace("\n", "\r\n")
    if kind == "html":
        return head + "Content-Type: text/html; charset=utf-8\r\n\r\n<p>Hello <b>wor</b>ld, %s</p>\r\n" % word
    return head + "\r\nplain text %s\r\n" % word


KINDS = ["base64", "qp", "html", "plain"]


def scenario_fill():
    m = login()
    n = int(E.get("MESSAGES", "200"))
    for i in range(n):
        typ, data = m.append("INBOX", None, None, message(i, KINDS[i % 4]).encode())
        assert typ == "OK", data
    check(True, "%d messages appended" % n)
    m.logout()


def scenario_limits():
    m = login()
    m.select("INBOX")
    start = time.monotonic()
    typ, text = answer(lambda: m.search(None, *(["OR", "BODY", "a"] * 5000 + ["ALL"])))
    took = time.monotonic() - start
    print("5,000 OR BODY terms:", typ, text, "in %.3f s" % took)
    check(typ == "NO" and "[LIMIT]" in text and took < 1, "a SEARCH of 5,000 OR terms answers NO [LIMIT] within a second")
    typ, text = answer(lambda: m.search(None, *(["OR", "BODY", "needle"] * 1000 + ["BODY", "needle"])))
    check(typ == "NO" and "[LIMIT]" in text, "1,000 OR BODY terms: NO [LIMIT] (%s)" % text)
    typ, text = answer(lambda: m.search(None, "(" * 1000 + "ALL" + ")" * 1000))
    print("1,000 nested parentheses:", typ, text)
    check(typ == "BAD" and "SERVERBUG" not in text, "a 1,000-level parenthesised SEARCH is BAD, not SERVERBUG")
    typ, text = answer(lambda: m.search(None, "(" * 500 + "BODY needle1x" + ")" * 500))
    check(typ == "OK" and text.split() == ["2"], "500 nested parentheses still search (%s)" % text)

    def found(*crit):
        typ, data = m.search(None, *crit)
        assert typ == "OK", data
        return [int(x) for x in data[0].split()]
    n = int(E.get("MESSAGES", "200"))
    check(found("BODY", "needle0x") == [1], "BODY finds a word in a base64 part")
    check(found("BODY", "NEEDLE4X") == [5], "BODY ignores case")
    check(found("BODY", "needle1x") == [2], "BODY finds a word in a quoted-printable Latin-1 part")

    def found_utf8(key, pattern):
        m.literal = pattern.encode()  # sent as a literal, the last argument
        typ, data = m.search("UTF-8", key)
        assert typ == "OK", data
        return [int(x) for x in data[0].split()]
    check(found_utf8("BODY", "caffè, per favore: needle4x") == [5], "BODY finds decoded UTF-8 across words in base64")
    check(found_utf8("BODY", "CITTÀ DI BOLOGNA, lunga riga lunga") == list(range(2, n + 1, 4)),
          "BODY finds a phrase with accents across a quoted-printable soft line break")
    check(found("BODY", '"ello world, needle2x"') == [3], "BODY finds the text of HTML, not its tags")
    check(found("BODY", "<b>") == [], "BODY does not find HTML markup")
    check(found("BODY", "eedle3x") == [4], "BODY finds a substring inside a word")
    last = '"message %d"' % (n - 1)
    check(found("TEXT", last) == [n] and found("BODY", last) == [], "TEXT looks in the header, BODY does not")
    check(found("OR", "BODY", "needle1x", "BODY", "needle3x") == [2, 4], "OR of BODY keys")
    check(len(found("NOT", "BODY", "needle1x")) == n - 1, "NOT BODY")
    start = time.monotonic()
    found("BODY", "needle77x")
    print("SEARCH BODY on %d messages: %.1f ms" % (n, (time.monotonic() - start) * 1000))
    m.logout()


def scenario_names():
    m = login()
    for what, (typ, text), want in [
        ("CREATE with CR (literal)", with_literal(m, "CREATE", b"a\rb"), "BAD"),
        ("CREATE with LF (literal)", with_literal(m, "CREATE", b"a\nb"), "BAD"),
        ("CREATE with NUL (literal)", with_literal(m, "CREATE", b"a\x00b"), "BAD"),
        ("CREATE with CR (modified UTF-7)", answer(lambda: m.create("a&AA0-b")), "NO [CANNOT]"),
        ("CREATE with NUL (modified UTF-7)", answer(lambda: m.create("a&AAA-b")), "NO [CANNOT]"),
        ("CREATE of 300 bytes", answer(lambda: m.create("x" * 300)), "NO [CANNOT]"),
        ("CREATE of 21 levels", answer(lambda: m.create("/".join(["l"] * 21))), "NO [CANNOT]"),
        ("CREATE with a 1 MB literal", with_literal(m, "CREATE", b"x" * (1 << 20)), "NO [TOOBIG]"),
        ("RENAME to CR", answer(lambda: m.rename("Archive", "a&AA0-b")), "NO [CANNOT]"),
        ("RENAME to 300 bytes", answer(lambda: m.rename("Archive", "y" * 300)), "NO [CANNOT]"),
        ("SELECT with CR", answer(lambda: m.select("a&AA0-b")), "NO [NONEXISTENT]"),
        ("SELECT with NUL (literal)", with_literal(m, "SELECT", b"a\x00b"), "BAD"),
        ("STATUS with LF", answer(lambda: m.status("a&AAo-b", "(MESSAGES)")), "NO [NONEXISTENT]"),
        ("DELETE with NUL", answer(lambda: m.delete("a&AAA-b")), "NO [NONEXISTENT]"),
        ("SUBSCRIBE with CR", answer(lambda: m.subscribe("a&AA0-b")), "NO [NONEXISTENT]"),
    ]:
        print(what + ":", typ, text)
        check(typ == want.split()[0] and want in typ + " " + text and "SERVERBUG" not in text,
              "%s: %s" % (what, want))
    # The 1 MB name the tester sent, quoted: too long a line.
    typ, text = answer(lambda: m.create("z" * (1 << 20)))
    print("CREATE of a 1 MB quoted name:", typ, text[:200])
    check(typ in ("BAD", "ABORT") and "SERVERBUG" not in text, "a 1 MB quoted name is BAD, not SERVERBUG")
    m = login()
    typ, data = m.list()
    check(typ == "OK" and len(data) == 6, "no mailbox was made (%d listed)" % len(data))
    m.logout()


if __name__ == "__main__":
    globals()["scenario_" + sys.argv[1]]()
