#!/usr/bin/env python3
"""Helpers of testdata/bench/*.sh (make bench, make bench-baseline).

  benchutil.py freeport
  benchutil.py watch OUT PID...      peak summed PSS (KiB) of the PIDs and their
                                     descendants, sampled every 0.2 s, kept in OUT
                                     until killed
  benchutil.py smoke HOST SMTPS IMAPS POP3S CA USER PASSWORD
                                     one message through SMTPS (AUTH PLAIN), then
                                     seen in IMAP INBOX and over POP3
  benchutil.py table RESULTS MEM     Sigillo alone (make bench)
  benchutil.py sidebyside RESULTS MEM BASELINE-NAME   ratios Sigillo/baseline
RESULTS are `sigillo bench --json` lines; MEM lines are
{"server","scenario","peak_pss_kib"[,"vmhwm_kib"][,"drain_s"]}.
"""
import email.message
import imaplib
import json
import os
import poplib
import smtplib
import socket
import ssl
import sys
import time
import uuid


def freeport():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    print(s.getsockname()[1])


def tree_pss(roots):
    kids = {}
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open(f"/proc/{p}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        kids.setdefault(ppid, []).append(int(p))
    todo, seen, total = list(roots), set(), 0
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        todo += kids.get(p, [])
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def watch(out, pids):
    roots = [int(p) for p in pids]
    peak = 0
    while True:
        now = tree_pss(roots)
        if now > peak:
            peak = now
            with open(out + ".tmp", "w") as f:
                f.write(f"{peak}\n")
            os.replace(out + ".tmp", out)
        time.sleep(0.2)


def smoke(host, smtps, imaps, pop3s, ca, user, password):
    ctx = ssl.create_default_context(cafile=ca)
    token = "bench-smoke-" + uuid.uuid4().hex
    msg = email.message.EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = user, user, token
    msg["Message-ID"] = f"<{token}@bench.test>"
    msg.set_content("smoke test of the bench setup\n")
    step = "SMTPS"
    try:
        with smtplib.SMTP_SSL(host, int(smtps), context=ctx, timeout=30) as s:
            s.login(user, password)
            s.send_message(msg)
        step = "IMAPS"
        deadline = time.time() + 30
        m = imaplib.IMAP4_SSL(host, int(imaps), ssl_context=ctx, timeout=30)
        m.login(user, password)
        while True:
            m.select("INBOX", readonly=True)
            typ, data = m.search(None, "SUBJECT", token)
            if typ == "OK" and data[0].split():
                break
            if time.time() > deadline:
                raise RuntimeError(f"message {token} not in {user}'s INBOX after 30 s")
            time.sleep(0.2)
        m.logout()
        step = "POP3S"
        p = poplib.POP3_SSL(host, int(pop3s), context=ctx, timeout=30)
        p.user(user)
        p.pass_(password)
        count, _ = p.stat()
        found = any(token.encode() in b"\n".join(p.top(i, 0)[1]) for i in range(count, max(count - 5, 0), -1))
        p.quit()
        if not found:
            raise RuntimeError(f"message {token} not among the last POP3 messages of {user}")
    except Exception as e:  # one clear line for the shell script
        print(f"smoke test failed at {step} ({host}: smtps {smtps}, imaps {imaps}, pop3s {pop3s}): {e!r}", file=sys.stderr)
        sys.exit(1)
    print(f"bench: smoke test passed: SMTPS AUTH + send, IMAPS SEARCH, POP3S TOP for {user}", file=sys.stderr)


def load(path):
    rows = []
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                line = line.strip()
                if line.startswith("{"):
                    rows.append(json.loads(line))
    return rows


MAIN_OP = {"smtp": "submit", "deliver": "deliver", "imap": None, "pop3": "retr", "pec": "consegna"}


def rows(r):
    """The scenario's own row, then one per kind of operation (imap's
    select, fetch…; pop3's login, session…), but the one the scenario's row
    already is."""
    yield r.get("scenario", "?"), r
    sc = r.get("scenario")
    for o in r.get("ops") or []:
        if o.get("op") != MAIN_OP.get(sc):
            yield f"{sc} · {o.get('op')}", o


def num(v, fmt="{:.1f}"):
    return "–" if v is None else fmt.format(v)


def mib(kib):
    return None if not kib else kib / 1024


def table(results, mem):
    res, mems = load(results), {(m["server"], m["scenario"]): m for m in load(mem)}
    print("| scenario | ops/s | p50 ms | p90 ms | p99 ms | max ms | errors | count | peak RSS MiB |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in res:
        m = mems.get((r.get("server"), r.get("scenario")), {})
        for name, x in rows(r):
            rss = num(mib(m.get("vmhwm_kib"))) if x is r else ""
            print(f"| {name} | {num(x.get('ops_per_s'))} | {num(x.get('p50_ms'), '{:.2f}')} | {num(x.get('p90_ms'), '{:.2f}')} "
                  f"| {num(x.get('p99_ms'), '{:.2f}')} | {num(x.get('max_ms'), '{:.1f}')} | {x.get('errors', '–')} "
                  f"| {x.get('count', '–')} | {rss} |")
        if r.get("error"):
            print(f"| {r.get('scenario')}: did not run: {r['error']} |||||||||")


def ratio(a, b):
    if a is None or b is None or b == 0:
        return "–"
    return f"{a / b:.2f}×"


def sidebyside(results, mem, baseline):
    res, mems = load(results), {(m["server"], m["scenario"]): m for m in load(mem)}
    by, order = {}, []
    for r in res:
        for name, x in rows(r):
            if name not in order:
                order.append(name)
            by[(r.get("server"), name)] = (r.get("scenario"), x, x is r)
    print(f"| scenario | Sigillo ops/s | {baseline} ops/s | ratio (≥1 better) | Sigillo p99 ms | {baseline} p99 ms "
          f"| ratio (≤1 better) | errors S/B | peak memory MiB S/B |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name in order:
        sc, s, top = by.get(("sigillo", name), (None, {}, False))
        sc2, b, top2 = by.get((baseline, name), (None, {}, False))
        sc = sc or sc2
        memcol = ""
        if top or top2:
            ms, mb = mems.get(("sigillo", sc), {}), mems.get((baseline, sc), {})
            memcol = f"{num(mib(ms.get('peak_pss_kib')), '{:.0f}')}/{num(mib(mb.get('peak_pss_kib')), '{:.0f}')}"
        print(f"| {name} | {num(s.get('ops_per_s'))} | {num(b.get('ops_per_s'))} | {ratio(s.get('ops_per_s'), b.get('ops_per_s'))} "
              f"| {num(s.get('p99_ms'), '{:.2f}')} | {num(b.get('p99_ms'), '{:.2f}')} | {ratio(s.get('p99_ms'), b.get('p99_ms'))} "
              f"| {s.get('errors', '–')}/{b.get('errors', '–')} | {memcol} |")
    notes = [m for m in load(mem) if m.get("server") == baseline and m.get("queued")]
    if notes:
        print()
    for m in notes:
        b = next((r for r in res if r.get("server") == baseline and r.get("scenario") == m["scenario"]), {})
        s = next((r for r in res if r.get("server") == "sigillo" and r.get("scenario") == m["scenario"]), {})
        line = (f"{baseline}, {m['scenario']}: {m['queued']} accepted messages were still in Postfix's queue when the run "
                f"ended, and in the Maildirs {m.get('drain_ms', 0) / 1000:.1f} s later")
        if b.get("count") and b.get("duration_s"):
            e2e = b["count"] / (b["duration_s"] + m.get("drain_ms", 0) / 1000)
            line += f": {e2e:.1f} messages/s into the Maildirs"
            if s.get("ops_per_s"):
                line += f" (Sigillo/{baseline} on that: {ratio(s['ops_per_s'], e2e)}; Sigillo's 250 comes after delivery)"
        print(line + ".")
    b = next((r for r in res if r.get("server") == baseline and r.get("scenario") == "deliver"), None)
    if b and (b.get("p50_ms") or 0) >= 400:
        print(f"{baseline}, deliver: Dovecot tells an IDLE client of new mail {500} ms after it sees it (NOTIFY_DELAY_MSECS in "
              "src/lib-storage/mailbox-watch.c, not a setting), so this row measures that delay more than delivery; "
              "with one message in flight per worker it also caps the rate near concurrency / 0.5 s.")


def main(argv):
    if not argv:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    cmd, args = argv[0], argv[1:]
    if cmd == "freeport":
        freeport()
    elif cmd == "watch":
        watch(args[0], args[1:])
    elif cmd == "pss":
        print(tree_pss([int(p) for p in args]))
    elif cmd == "smoke":
        smoke(*args)
    elif cmd == "table":
        table(*args)
    elif cmd == "sidebyside":
        sidebyside(*args)
    else:
        print(__doc__, file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main(sys.argv[1:])
