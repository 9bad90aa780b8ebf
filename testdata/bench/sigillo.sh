#!/usr/bin/env bash
# make bench (first half): a fresh Sigillo on loopback, measured with
# `sigillo bench` (smtp, deliver, imap, pop3, pec), one table, and Sigillo's
# peak RSS (VmHWM) after each scenario. The Go benchmarks (bench_test.go)
# run after it from the Makefile.
#
# Settings (environment): BENCH_USERS (20), BENCH_CONCURRENCY (8),
# BENCH_DURATION (10s), BENCH_SIZE (1024) or BENCH_SIZES ("1k:80,10k:15,100k:5"),
# BENCH_MAILBOX_MESSAGES (1000), BENCH_SCENARIOS ("smtp deliver imap pop3 pec"),
# BENCH_CLAMD=1 (scan every message with a private clamd), BENCH_JSON=FILE
# (keep the JSON lines), BENCH_KEEP=1 (keep the temporary directory).
#
# Needs Go, python3, and for the pec scenario softhsm2 (else it is skipped,
# and said so); for BENCH_CLAMD=1 clamav-daemon. Nothing is installed and
# nothing outside a temporary directory is written.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

BENCH_SCENARIOS=${BENCH_SCENARIOS:-smtp deliver imap pop3 pec}
PEC_FROM=mittente@$BENCH_PEC_DOMAIN
PEC_TO=destinatario@$BENCH_PEC_DOMAIN
need python3
need "$GO" "Go 1.26"

PEC=0
case " $BENCH_SCENARIOS " in
*" pec "*)
	if command -v softhsm2-util >/dev/null 2>&1 && [ -f "$SOFTHSM_MODULE" ]; then
		PEC=1
	else
		say "!!! no SoftHSM2 (softhsm2-util, $SOFTHSM_MODULE): the pec scenario is SKIPPED; apt-get install softhsm2 !!!"
		kept=
		for sc in $BENCH_SCENARIOS; do
			[ "$sc" = pec ] || kept+="$sc "
		done
		BENCH_SCENARIOS=$kept
	fi
	;;
esac

WORK=$(mktemp -d "${TMPDIR:-/tmp}/sigillo-bench.XXXXXX")
check_fs "$WORK"
SIG_PID=
MEM_WATCH_PID=
CLAMD_PID=
cleanup() {
	local rc=$?
	set +e
	mem_watch_stop
	sigillo_stop
	if [ -n "$CLAMD_PID" ]; then
		kill -TERM "$CLAMD_PID" 2>/dev/null
		wait "$CLAMD_PID" 2>/dev/null
	fi
	[ $rc = 0 ] || [ $rc = 130 ] || bench_logs_on_failure
	if [ "${BENCH_KEEP:-0}" = 1 ]; then
		say "temporary directory kept: $WORK"
	else
		rm -rf "$WORK"
	fi
	exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

build_sigillo "$WORK/bin"
write_users "$WORK"

# A private clamd with an EICAR-only signature database (no freshclam).
CLAMD_ADDR=
if [ "${BENCH_CLAMD:-0}" = 1 ]; then
	need clamd "apt-get install clamav-daemon"
	c=$WORK/clamd
	mkdir -p "$c/db" "$c/tmp"
	# shellcheck disable=SC2016 # the EICAR string, literally
	eicar='X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*'
	echo "Test.EICAR-NDB:0:*:$(printf '%s' "$eicar" | od -An -tx1 | tr -d ' \n')" >"$c/db/custom.ndb"
	cat >"$c/clamd.conf" <<EOF
Foreground yes
DatabaseDirectory $c/db
TemporaryDirectory $c/tmp
LocalSocket $c/clamd.sock
LogFile $c/clamd.log
MaxThreads 8
StreamMaxLength 50M
SelfCheck 0
Bytecode no
EOF
	BENCH_LOGS+=("$c/clamd.log")
	clamd --config-file="$c/clamd.conf" >"$c/stdout.log" 2>&1 &
	CLAMD_PID=$!
	deadline=$((SECONDS + BENCH_PORT_TIMEOUT))
	until python3 -c 'import socket,sys; s=socket.socket(socket.AF_UNIX); s.settimeout(2); s.connect(sys.argv[1]); s.sendall(b"zPING\0"); sys.exit(0 if s.recv(16).startswith(b"PONG") else 1)' "$c/clamd.sock" 2>/dev/null; do
		kill -0 "$CLAMD_PID" 2>/dev/null || die "clamd exited at start: $(tail -n 5 "$c/stdout.log" "$c/clamd.log" 2>/dev/null)"
		[ $SECONDS -lt $deadline ] || die "clamd did not answer PING on $c/clamd.sock within ${BENCH_PORT_TIMEOUT}s"
		sleep 0.1
	done
	CLAMD_ADDR=unix:$c/clamd.sock
	say "clamd running (pid $CLAMD_PID), every message is scanned"
fi

sigillo_start "$WORK/sigillo" "$PEC" "$CLAMD_ADDR"
sigillo_provision "$PEC"
python3 "$BENCH_DIR/benchutil.py" smoke 127.0.0.1 "$SIG_PORT_SUBMISSIONS" "$SIG_PORT_IMAPS" "$SIG_PORT_POP3S" "$SIG_CA" \
	"$(head -n 1 "$BENCH_USERS_FILE" | cut -d' ' -f1)" "$BENCH_PASSWORD" || die "sigillo smoke test failed"

RAW=$WORK/results.json
MEM=$WORK/mem.json
: >"$RAW"
: >"$MEM"
for sc in $BENCH_SCENARIOS; do
	args=(--smtp-port "$SIG_PORT_SUBMISSIONS" --smtp-tls implicit --imap-port "$SIG_PORT_IMAPS" --imap-tls implicit
		--pop3-port "$SIG_PORT_POP3S" --pop3-tls implicit --ca "$SIG_CA")
	[ "$sc" != pec ] || args+=(--pec-from "$PEC_FROM" --pec-to "$PEC_TO")
	mem_watch_start "$SIG_PID"
	run_bench sigillo "$sc" "$RAW" -- "${args[@]}"
	mem_watch_stop
	hwm=$(vm_kib "$SIG_PID" VmHWM)
	mem_record "$MEM" sigillo "$sc" vmhwm_kib="$hwm" peak_pss_kib="$MEM_PEAK_KIB"
	say "sigillo after $sc: peak RSS (VmHWM) $((hwm / 1024)) MiB"
done

echo
echo "Sigillo, $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs ($(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)), $(awk '/^MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo) RAM${CLAMD_ADDR:+, clamd scanning}"
echo "users $BENCH_USERS senders + $BENCH_USERS readers, concurrency $BENCH_CONCURRENCY, duration $BENCH_DURATION, ${BENCH_SIZES:+sizes $BENCH_SIZES}${BENCH_SIZES:-size $BENCH_SIZE B}, mailbox messages $BENCH_MAILBOX_MESSAGES"
echo
python3 "$BENCH_DIR/benchutil.py" table "$RAW" "$MEM"
echo
[ -z "${BENCH_JSON:-}" ] || { cp "$RAW" "$BENCH_JSON" && say "JSON lines: $BENCH_JSON"; }
