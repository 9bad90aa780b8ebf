#!/usr/bin/env bash
# make bench-baseline: the same load (`sigillo bench`: smtp, deliver, imap,
# pop3) against a private Postfix + Dovecot and against Sigillo, one after
# the other on this machine, then a side-by-side table with the ratios
# Sigillo/baseline. Every JSON line goes to bench-results.json at the
# repository root.
#
#   testdata/bench/baseline.sh            the whole comparison (as root)
#   testdata/bench/baseline.sh --check    set both up, one message through
#                                         each (SMTPS, IMAPS, POP3S), stop
#
# Settings (environment): BENCH_USERS (20), BENCH_CONCURRENCY (8),
# BENCH_DURATION (10s), BENCH_SIZE (1024) or BENCH_SIZES ("1k:80,10k:15,100k:5"),
# BENCH_MAILBOX_MESSAGES (1000), BENCH_SCENARIOS ("smtp deliver imap pop3"),
# BENCH_KEEP=1 keeps the private directory (logs, Maildirs, queue).
#
# Installs postfix, dovecot-imapd, dovecot-pop3d, dovecot-lmtpd if missing
# (without letting Debian start their system services), and starts only
# private instances: own config, queue, base_dir and Maildirs under a
# temporary directory, loopback ports only. Nothing under /etc is changed.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

CHECK_ONLY=0
case "${1:-}" in
--check) CHECK_ONLY=1 ;;
"") ;;
*) die "usage: $0 [--check]" ;;
esac
BASELINE=postfix-dovecot
BENCH_SCENARIOS=${BENCH_SCENARIOS:-smtp deliver imap pop3}
RESULTS=$REPO/bench-results.json

[ "$(id -u)" = 0 ] || die "run as root: it installs packages and starts Postfix and Dovecot, which drop to their own users"
need python3
need openssl

# --- packages ----------------------------------------------------------------
install_packages() {
	local missing=() p
	for p in postfix dovecot-imapd dovecot-pop3d dovecot-lmtpd; do
		dpkg-query -W -f '${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
	done
	[ ${#missing[@]} -gt 0 ] || return 0
	need apt-get
	say "installing ${missing[*]} (apt-get)"
	# No system instance may start: Debian's postinst starts services unless
	# policy-rc.d says no, and postfix is left unconfigured ("No configuration").
	local policy=/usr/sbin/policy-rc.d made_policy=0
	if [ ! -e "$policy" ]; then
		printf '#!/bin/sh\n# sigillo bench-baseline: no service starts during its apt-get install\nexit 101\n' >"$policy"
		chmod 755 "$policy"
		made_policy=1
	fi
	echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
	local rc=0
	{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"; } \
		>/tmp/sigillo-bench-apt.log 2>&1 || rc=$?
	[ $made_policy = 0 ] || rm -f "$policy"
	if [ $rc != 0 ]; then
		tail -n 20 /tmp/sigillo-bench-apt.log >&2
		die "apt-get install ${missing[*]} failed (log: /tmp/sigillo-bench-apt.log)"
	fi
	# Should a service have started anyway (no policy-rc.d honoured), stop it
	# and keep it from starting at boot: this script installed it.
	if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
		for p in postfix dovecot; do
			systemctl disable --now "$p" >/dev/null 2>&1 || true
		done
	fi
}
install_packages
for f in /usr/sbin/postfix /usr/sbin/dovecot /usr/lib/dovecot/imap /usr/lib/dovecot/pop3 /usr/lib/dovecot/lmtp; do
	[ -x "$f" ] || die "$f is missing after installing postfix and dovecot"
done
id postfix >/dev/null 2>&1 || die "user postfix is missing (postfix's postinst makes it)"
{ id dovecot && id dovenull; } >/dev/null 2>&1 || die "users dovecot/dovenull are missing (dovecot-core's postinst makes them)"

# --- private directory and cleanup -------------------------------------------
WORK=$(mktemp -d "${TMPDIR:-/tmp}/sigillo-baseline.XXXXXX")
check_fs "$WORK"
chmod 755 "$WORK" # Postfix and Dovecot drop to their users and must get in
if command -v runuser >/dev/null 2>&1 && ! runuser -u postfix -- test -x "$WORK"; then
	rmdir "$WORK"
	die "user postfix cannot reach $WORK: set TMPDIR to a directory every user can traverse"
fi
PF=$WORK/postfix
DV=$WORK/dovecot
MADE_VMAIL=0
SIG_PID=
MEM_WATCH_PID=

stop_baseline() {
	if [ -f "$PF/etc/main.cf" ] && [ -f "$PF/spool/pid/master.pid" ]; then
		postfix -c "$PF/etc" stop >/dev/null 2>&1 || true
		local pid
		pid=$(tr -dc 0-9 <"$PF/spool/pid/master.pid" 2>/dev/null || true)
		if [ -n "$pid" ]; then
			for _ in $(seq 1 100); do
				kill -0 "$pid" 2>/dev/null || break
				sleep 0.1
			done
			kill -KILL "$pid" 2>/dev/null || true
		fi
		rm -f "$PF/spool/pid/master.pid"
	fi
	if [ -f "$DV/run/master.pid" ]; then
		local pid
		pid=$(tr -dc 0-9 <"$DV/run/master.pid" 2>/dev/null || true)
		if [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null; then
			for _ in $(seq 1 100); do
				kill -0 "$pid" 2>/dev/null || break
				sleep 0.1
			done
			kill -KILL "$pid" 2>/dev/null || true
		fi
		rm -f "$DV/run/master.pid"
	fi
}

cleanup() {
	local rc=$?
	set +e
	mem_watch_stop
	sigillo_stop
	stop_baseline
	if [ $rc != 0 ] && [ $rc != 130 ]; then
		bench_logs_on_failure
	fi
	if [ "${BENCH_KEEP:-0}" = 1 ]; then
		say "private directory kept: $WORK"
	else
		rm -rf "$WORK"
	fi
	if [ $MADE_VMAIL = 1 ]; then
		userdel vmail >/dev/null 2>&1 || true
	fi
	exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ $CHECK_ONLY = 0 ]; then
	build_sigillo "$WORK/bin"
else
	say "building sigillo"
	(cd "$REPO" && "$GO" build -trimpath -o "$WORK/bin/sigillo" .) || die "go build failed"
	SIGILLO=$WORK/bin/sigillo
fi

# --- TLS: one CA, one server certificate (ECDSA P-256, as Sigillo's) ---------
tls_setup() {
	local d=$WORK/tls
	mkdir -p "$d"
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3 \
		-keyout "$d/ca.key" -out "$d/ca.crt" -subj "/CN=Sigillo bench baseline CA" \
		-addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
		>"$d/openssl.log" 2>&1 || die "openssl: CA: $(cat "$d/openssl.log")"
	openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
		-keyout "$d/server.key" -out "$d/server.csr" -subj "/CN=mail.$BENCH_DOMAIN" \
		>>"$d/openssl.log" 2>&1 || die "openssl: server key: $(cat "$d/openssl.log")"
	printf '%s\n' "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:mail.$BENCH_DOMAIN" \
		"basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature" \
		"extendedKeyUsage=serverAuth" "authorityKeyIdentifier=keyid" "subjectKeyIdentifier=hash" >"$d/server.ext"
	openssl x509 -req -in "$d/server.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -CAcreateserial -days 3 \
		-extfile "$d/server.ext" -out "$d/server.crt" >>"$d/openssl.log" 2>&1 ||
		die "openssl: server certificate: $(cat "$d/openssl.log")"
	chmod 600 "$d"/*.key
	BASE_CA=$d/ca.crt
}
tls_setup

write_users "$WORK"

# --- Postfix + Dovecot --------------------------------------------------------
# fill TEMPLATE OUT: the @NAME@ placeholders of a testdata/bench template.
fill() {
	sed -e "s|@DIR@|$WORK|g" -e "s|@DOMAIN@|$BENCH_DOMAIN|g" \
		-e "s|@SMTPS_PORT@|$BASE_SMTPS|g" -e "s|@IMAPS_PORT@|$BASE_IMAPS|g" -e "s|@POP3S_PORT@|$BASE_POP3S|g" \
		-e "s|@VMAIL_UID@|$VMAIL_UID|g" -e "s|@VMAIL_GID@|$VMAIL_GID|g" "$BENCH_DIR/$1" >"$2"
	if grep -q '@[A-Z0-9_]*@' "$2"; then
		die "$2: placeholder left unfilled: $(grep -o '@[A-Z0-9_]*@' "$2" | sort -u | tr '\n' ' ')"
	fi
}

start_baseline() {
	if ! id vmail >/dev/null 2>&1; then
		useradd --system --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin vmail ||
			die "useradd vmail failed"
		MADE_VMAIL=1
	fi
	VMAIL_UID=$(id -u vmail)
	VMAIL_GID=$(id -g vmail)
	BASE_SMTPS=$(free_port)
	BASE_IMAPS=$(free_port)
	BASE_POP3S=$(free_port)
	if [ "$BASE_SMTPS" = "$BASE_IMAPS" ] || [ "$BASE_IMAPS" = "$BASE_POP3S" ] || [ "$BASE_SMTPS" = "$BASE_POP3S" ]; then
		die "free_port gave the same port twice"
	fi

	# Dovecot first: Postfix needs its auth and LMTP sockets.
	mkdir -p "$DV/run" "$DV/state" "$WORK/mail"
	chown "$VMAIL_UID:$VMAIL_GID" "$WORK/mail"
	chmod 700 "$WORK/mail"
	fill dovecot.conf.in "$DV/dovecot.conf"
	local hash
	hash=$(printf '%s\n' "$BENCH_PASSWORD" | (cd "$REPO" && "$GO" run ./testdata/bench/pwhash)) ||
		die "could not hash the bench password (go run ./testdata/bench/pwhash)"
	local addr pw
	: >"$DV/users"
	: >"$WORK/vmailbox"
	while read -r addr pw; do
		printf '%s:{ARGON2ID}%s\n' "$addr" "$hash" >>"$DV/users"
		printf '%s ok\n' "$addr" >>"$WORK/vmailbox"
	done <"$BENCH_ALL_USERS"
	chown root:dovecot "$DV/users"
	chmod 640 "$DV/users"
	BENCH_LOGS+=("$DV/dovecot.log" "$PF/postfix.log" "$PF/start.log")
	dovecot -c "$DV/dovecot.conf" >"$DV/start.log" 2>&1 || {
		cat "$DV/start.log" >&2
		die "dovecot did not start (config $DV/dovecot.conf)"
	}
	local pid
	for _ in $(seq 1 50); do
		[ -s "$DV/run/master.pid" ] && break
		sleep 0.1
	done
	pid=$(tr -dc 0-9 <"$DV/run/master.pid" 2>/dev/null || true)
	[ -n "$pid" ] || die "dovecot wrote no $DV/run/master.pid"
	DV_PID=$pid
	wait_port "$BASE_IMAPS" "dovecot (imaps)" "$DV_PID"
	wait_port "$BASE_POP3S" "dovecot (pop3s)" "$DV_PID"
	for s in lmtp auth-postfix; do
		for _ in $(seq 1 100); do
			[ -S "$DV/run/$s" ] && break
			sleep 0.1
		done
		[ -S "$DV/run/$s" ] || die "dovecot made no socket $DV/run/$s"
	done

	mkdir -p "$PF/etc" "$PF/spool" "$PF/data"
	chown postfix: "$PF/data"
	chmod 700 "$PF/data"
	fill postfix-main.cf.in "$PF/etc/main.cf"
	fill postfix-master.cf.in "$PF/etc/master.cf"
	mv "$WORK/vmailbox" "$PF/etc/vmailbox"
	# Postfix prints its errors only to a terminal; `script` gives it one.
	if ! script -qec "postfix -c '$PF/etc' check && postfix -c '$PF/etc' start" /dev/null >"$PF/start.log" 2>&1; then
		die "postfix did not start (config $PF/etc): $(tr -d '\r' <"$PF/start.log" | tail -n 5)"
	fi
	for _ in $(seq 1 50); do
		[ -s "$PF/spool/pid/master.pid" ] && break
		sleep 0.1
	done
	PF_PID=$(tr -dc 0-9 <"$PF/spool/pid/master.pid" 2>/dev/null || true)
	[ -n "$PF_PID" ] || die "postfix wrote no $PF/spool/pid/master.pid"
	wait_port "$BASE_SMTPS" "postfix (smtps)" "$PF_PID"
	say "postfix (pid $PF_PID) smtps $BASE_SMTPS; dovecot (pid $DV_PID) imaps $BASE_IMAPS, pop3s $BASE_POP3S; in $WORK"
}

# postfix_queued: messages in the private Postfix queue.
postfix_queued() {
	find "$PF/spool/maildrop" "$PF/spool/incoming" "$PF/spool/active" "$PF/spool/deferred" "$PF/spool/hold" \
		-type f 2>/dev/null | wc -l
}

# postfix_drain: waits (at most 10 min) until Postfix has handed every
# accepted message to Dovecot; prints the milliseconds it took.
postfix_drain() {
	local start now queued
	start=$(date +%s%N)
	for _ in $(seq 1 6000); do
		queued=$(postfix_queued)
		if [ "$queued" = 0 ]; then
			now=$(date +%s%N)
			echo $(((now - start) / 1000000))
			return 0
		fi
		if [ -n "$(find "$PF/spool/deferred" -type f 2>/dev/null | head -n 1)" ]; then
			die "postfix deferred mail (LMTP delivery to dovecot failed); see $PF/postfix.log"
		fi
		sleep 0.1
	done
	die "postfix still has $queued messages queued after 10 minutes"
}

bench_args() { # SERVER: the per-server arguments of sigillo bench
	if [ "$1" = sigillo ]; then
		echo --smtp-port "$SIG_PORT_SUBMISSIONS" --smtp-tls implicit --imap-port "$SIG_PORT_IMAPS" --imap-tls implicit \
			--pop3-port "$SIG_PORT_POP3S" --pop3-tls implicit --ca "$SIG_CA"
	else
		echo --smtp-port "$BASE_SMTPS" --smtp-tls implicit --imap-port "$BASE_IMAPS" --imap-tls implicit \
			--pop3-port "$BASE_POP3S" --pop3-tls implicit --ca "$BASE_CA"
	fi
}

RAW=$WORK/results.json
MEM=$WORK/mem.json
: >"$RAW"
: >"$MEM"

# --- the baseline --------------------------------------------------------------
start_baseline
say "$BASELINE: smoke test"
python3 "$BENCH_DIR/benchutil.py" smoke 127.0.0.1 "$BASE_SMTPS" "$BASE_IMAPS" "$BASE_POP3S" "$BASE_CA" \
	"$(head -n 1 "$BENCH_USERS_FILE" | cut -d' ' -f1)" "$BENCH_PASSWORD" || die "$BASELINE smoke test failed"
if [ $CHECK_ONLY = 0 ]; then
	for sc in $BENCH_SCENARIOS; do
		mem_watch_start "$PF_PID" "$DV_PID"
		# shellcheck disable=SC2046
		run_bench "$BASELINE" "$sc" "$RAW" -- $(bench_args "$BASELINE")
		queued=$(postfix_queued)
		drain=$(postfix_drain)
		mem_watch_stop
		mem_record "$MEM" "$BASELINE" "$sc" peak_pss_kib="$MEM_PEAK_KIB" queued="$queued" drain_ms="$drain"
		say "$BASELINE after $sc: peak PSS $((MEM_PEAK_KIB / 1024)) MiB (postfix + dovecot, every process); $queued queued at the end, delivered ${drain} ms later"
	done
fi
stop_baseline

# --- Sigillo -----------------------------------------------------------------
sigillo_start "$WORK/sigillo" 0 ""
sigillo_provision 0
say "sigillo: smoke test"
python3 "$BENCH_DIR/benchutil.py" smoke 127.0.0.1 "$SIG_PORT_SUBMISSIONS" "$SIG_PORT_IMAPS" "$SIG_PORT_POP3S" "$SIG_CA" \
	"$(head -n 1 "$BENCH_USERS_FILE" | cut -d' ' -f1)" "$BENCH_PASSWORD" || die "sigillo smoke test failed"
if [ $CHECK_ONLY = 0 ]; then
	for sc in $BENCH_SCENARIOS; do
		mem_watch_start "$SIG_PID"
		# shellcheck disable=SC2046
		run_bench sigillo "$sc" "$RAW" -- $(bench_args sigillo)
		mem_watch_stop
		mem_record "$MEM" sigillo "$sc" peak_pss_kib="$MEM_PEAK_KIB" vmhwm_kib="$(vm_kib "$SIG_PID" VmHWM)"
		say "sigillo after $sc: peak PSS $((MEM_PEAK_KIB / 1024)) MiB, VmHWM $(($(vm_kib "$SIG_PID" VmHWM) / 1024)) MiB"
	done
fi
sigillo_stop

if [ $CHECK_ONLY = 1 ]; then
	say "check passed: Postfix + Dovecot and Sigillo both take a message over SMTPS and serve it over IMAPS and POP3S"
	exit 0
fi

cp "$RAW" "$RESULTS"
echo
echo "Sigillo vs $BASELINE, $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs ($(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)), $(awk '/^MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo) RAM"
echo "users $BENCH_USERS senders + $BENCH_USERS readers, concurrency $BENCH_CONCURRENCY, duration $BENCH_DURATION, ${BENCH_SIZES:+sizes $BENCH_SIZES}${BENCH_SIZES:-size $BENCH_SIZE B}, mailbox messages $BENCH_MAILBOX_MESSAGES"
echo
python3 "$BENCH_DIR/benchutil.py" sidebyside "$RAW" "$MEM" "$BASELINE"
echo
say "every JSON line: $RESULTS"
