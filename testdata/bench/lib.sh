# shellcheck shell=bash
# Shared by testdata/bench/sigillo.sh (make bench) and baseline.sh (make
# bench-baseline): messages, ports, logs shown on failure, Sigillo's start
# and stop, one `sigillo bench` run, memory figures.

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$BENCH_DIR/../.." && pwd)
GO=${GO:-go}

# Settings (environment), the same for every server measured.
BENCH_USERS=${BENCH_USERS:-20}
BENCH_PASSWORD=${BENCH_PASSWORD:-bench password 2026}
BENCH_CONCURRENCY=${BENCH_CONCURRENCY:-8}
BENCH_DURATION=${BENCH_DURATION:-10s}
BENCH_SIZE=${BENCH_SIZE:-1024}
BENCH_SIZES=${BENCH_SIZES:-}
BENCH_MAILBOX_MESSAGES=${BENCH_MAILBOX_MESSAGES:-1000}
BENCH_PORT_TIMEOUT=${BENCH_PORT_TIMEOUT:-60}
SOFTHSM_MODULE=${SOFTHSM_MODULE:-/usr/lib/softhsm/libsofthsm2.so}
BENCH_DOMAIN=bench.test
BENCH_PEC_DOMAIN=pec.bench.test

say() { printf 'bench: %s\n' "$*" >&2; }
die() {
	printf 'bench: error: %s\n' "$*" >&2
	exit 1
}
need() { command -v "$1" >/dev/null 2>&1 || die "$1 is not installed${2:+ ($2)}"; }

# Log files worth showing when something fails (bench_logs_on_failure,
# called from each script's EXIT trap).
BENCH_LOGS=()
bench_logs_on_failure() {
	local f
	for f in "${BENCH_LOGS[@]}"; do
		[ -s "$f" ] || continue
		printf '\n----- last lines of %s -----\n' "$f" >&2
		tail -n 40 "$f" >&2 || true
	done
}

# check_fs DIR: fsync is what durability costs; on tmpfs it costs nothing.
check_fs() {
	local t
	t=$(stat -f -c %T "$1" 2>/dev/null || echo unknown)
	case $t in
	tmpfs | ramfs) say "!!! $1 is on $t: fsync costs nothing there, so durability is not measured; set TMPDIR to a disk !!!" ;;
	*) say "data under $1 ($t)" ;;
	esac
}

# free_port prints a TCP port free on 127.0.0.1 right now.
free_port() { python3 "$BENCH_DIR/benchutil.py" freeport; }

# wait_port PORT NAME [PID]: until something accepts on 127.0.0.1:PORT, for
# at most BENCH_PORT_TIMEOUT seconds; PID (if given) must stay alive.
wait_port() {
	local port=$1 name=$2 pid=${3:-} deadline=$((SECONDS + BENCH_PORT_TIMEOUT))
	while ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
		if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
			die "$name exited before listening on 127.0.0.1:$port"
		fi
		[ $SECONDS -lt $deadline ] || die "$name is not listening on 127.0.0.1:$port after ${BENCH_PORT_TIMEOUT}s"
		sleep 0.1
	done
}

# build_sigillo DIR: the binary, as `make build` makes it, into DIR.
build_sigillo() {
	say "building sigillo"
	(cd "$REPO" && "$GO" build -trimpath -o "$1/sigillo" .) || die "go build failed"
	SIGILLO=$1/sigillo
	"$SIGILLO" bench --help >/dev/null 2>&1 || die "this sigillo has no 'bench' subcommand ($SIGILLO bench --help fails)"
}

# sigillo_start DIR PEC CLAMD: writes DIR/sigillo.toml (every listener on a
# free loopback port), with a SoftHSM2 token and [signer]/[pec] when PEC=1,
# [scan] when CLAMD is an address; starts `sigillo serve` and waits for its
# control socket. Sets SIG_PID, SIG_CONF, SIG_CA, SIG_PORT_*.
sigillo_start() {
	local dir=$1 pec=$2 clamd=$3 l listen="" extra=""
	mkdir -p "$dir"
	for l in smtp submission submissions imap imaps pop3 pop3s https; do
		printf -v "SIG_PORT_${l^^}" '%s' "$(free_port)"
		local var="SIG_PORT_${l^^}"
		listen+="$l = \"127.0.0.1:${!var}\""$'\n'
	done
	if [ "$pec" = 1 ]; then
		export SOFTHSM2_CONF=$dir/softhsm2.conf
		mkdir -p "$dir/tokens"
		printf 'directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n' "$dir/tokens" >"$SOFTHSM2_CONF"
		softhsm2-util --init-token --free --label sigillo-bench --pin 123456 --so-pin 5678 >/dev/null ||
			die "softhsm2-util --init-token failed"
		printf '123456\n' >"$dir/hsm.pin"
		chmod 600 "$dir/hsm.pin"
		extra+="[signer]
pkcs11_module = \"$SOFTHSM_MODULE\"
token_label = \"sigillo-bench\"
pin_file = \"$dir/hsm.pin\"
key_label = \"gestore\"
[pec]
provider_name = \"Sigillo Bench S.p.A.\"
service_address = \"posta-certificata@$BENCH_PEC_DOMAIN\"
"
	fi
	if [ -n "$clamd" ]; then
		extra+="[scan]
clamd = \"$clamd\"
required = true
"
	fi
	SIG_CONF=$dir/sigillo.toml
	cat >"$SIG_CONF" <<EOF
hostname = "mail.$BENCH_DOMAIN"
data_dir = "$dir/data"
log_level = "info"
max_connections_per_host = 1000
max_unauthenticated_per_host = 1000

[listen]
$listen
$extra
EOF
	if [ "$pec" = 1 ]; then
		"$SIGILLO" gestore init --config "$SIG_CONF" >"$dir/gestore-init.log" 2>&1 ||
			die "sigillo gestore init failed: $(tail -n 5 "$dir/gestore-init.log")"
	fi
	BENCH_LOGS+=("$dir/sigillo.log")
	"$SIGILLO" serve --config "$SIG_CONF" >"$dir/sigillo.log" 2>&1 &
	SIG_PID=$!
	local deadline=$((SECONDS + BENCH_PORT_TIMEOUT))
	until "$SIGILLO" domain list --config "$SIG_CONF" >/dev/null 2>&1; do
		kill -0 "$SIG_PID" 2>/dev/null || die "sigillo exited at start"
		[ $SECONDS -lt $deadline ] || die "sigillo's control socket did not answer within ${BENCH_PORT_TIMEOUT}s"
		sleep 0.1
	done
	for l in SUBMISSIONS IMAPS POP3S; do
		local var="SIG_PORT_$l"
		wait_port "${!var}" "sigillo ($l)" "$SIG_PID"
	done
	SIG_CA=$dir/ca.pem
	"$SIGILLO" ca export --config "$SIG_CONF" >"$SIG_CA" || die "sigillo ca export failed"
	say "sigillo running (pid $SIG_PID): submissions $SIG_PORT_SUBMISSIONS, imaps $SIG_PORT_IMAPS, pop3s $SIG_PORT_POP3S"
}

# sigillo_provision PEC: the bench domain and its users (BENCH_ALL_USERS);
# with PEC=1, the PEC domain and its two users too.
sigillo_provision() {
	local pec=$1 addr pw
	"$SIGILLO" domain add "$BENCH_DOMAIN" --config "$SIG_CONF" >/dev/null || die "sigillo domain add failed"
	while read -r addr pw; do
		printf '%s\n' "$pw" | "$SIGILLO" mailbox add "$addr" --password-stdin --quota 0 --config "$SIG_CONF" >/dev/null ||
			die "sigillo mailbox add $addr failed"
	done <"$BENCH_ALL_USERS"
	if [ "$pec" = 1 ]; then
		"$SIGILLO" domain add "$BENCH_PEC_DOMAIN" --pec --config "$SIG_CONF" >/dev/null || die "sigillo domain add --pec failed"
		for addr in "$PEC_FROM" "$PEC_TO"; do
			printf '%s\n' "$BENCH_PASSWORD" | "$SIGILLO" mailbox add "$addr" --password-stdin --quota 0 --config "$SIG_CONF" >/dev/null ||
				die "sigillo mailbox add $addr failed"
		done
	fi
	local n
	n=$(wc -l <"$BENCH_ALL_USERS")
	if [ "$pec" = 1 ]; then
		say "sigillo: $n users in $BENCH_DOMAIN, $PEC_FROM and $PEC_TO in $BENCH_PEC_DOMAIN (PEC)"
	else
		say "sigillo: $n users in $BENCH_DOMAIN"
	fi
}

sigillo_stop() {
	[ -n "${SIG_PID:-}" ] || return 0
	if kill -0 "$SIG_PID" 2>/dev/null; then
		kill -TERM "$SIG_PID" 2>/dev/null || true
		local i
		for i in $(seq 1 300); do
			kill -0 "$SIG_PID" 2>/dev/null || break
			sleep 0.1
		done
		kill -KILL "$SIG_PID" 2>/dev/null || true
	fi
	wait "$SIG_PID" 2>/dev/null || true
	SIG_PID=
}

# write_users DIR: "address password" lines, BENCH_USERS of each kind:
# DIR/senders.txt (bench1…, the smtp and deliver scenarios) and
# DIR/readers.txt (reader1…, imap and pop3: their INBOXes are filled to
# exactly BENCH_MAILBOX_MESSAGES, whatever the servers' smtp rates were),
# DIR/users.txt both. Sets BENCH_USERS_FILE, BENCH_READERS_FILE, BENCH_ALL_USERS.
write_users() {
	local i
	: >"$1/senders.txt"
	: >"$1/readers.txt"
	for i in $(seq 1 "$BENCH_USERS"); do
		printf 'bench%d@%s %s\n' "$i" "$BENCH_DOMAIN" "$BENCH_PASSWORD" >>"$1/senders.txt"
		printf 'reader%d@%s %s\n' "$i" "$BENCH_DOMAIN" "$BENCH_PASSWORD" >>"$1/readers.txt"
	done
	cat "$1/senders.txt" "$1/readers.txt" >"$1/users.txt"
	BENCH_USERS_FILE=$1/senders.txt
	BENCH_READERS_FILE=$1/readers.txt
	BENCH_ALL_USERS=$1/users.txt
}

# run_bench SERVER SCENARIO OUT -- ARGS...: one `sigillo bench` run; its
# JSON lines are appended to OUT, its other output goes to standard error.
run_bench() {
	local server=$1 scenario=$2 out=$3
	shift 4
	local sizes=(--size "$BENCH_SIZE")
	[ -z "$BENCH_SIZES" ] || sizes=(--sizes "$BENCH_SIZES")
	local tmp
	tmp=$(mktemp)
	say "$server: $scenario (${BENCH_DURATION}, concurrency $BENCH_CONCURRENCY)"
	# pec takes its sender's password alone; the others, a users file.
	local users=(--users-file "$BENCH_USERS_FILE")
	case $scenario in
	imap | pop3) users=(--users-file "$BENCH_READERS_FILE") ;;
	pec) users=(--password "$BENCH_PASSWORD") ;;
	deliver)
		# NOOP polling, not IDLE: Dovecot delays IDLE notices by 500 ms,
		# which would measure that delay rather than delivery.
		users+=(--poll)
		;;
	esac
	if ! "$SIGILLO" bench --scenario "$scenario" --server "$server" --host 127.0.0.1 \
		"${users[@]}" --concurrency "$BENCH_CONCURRENCY" "${sizes[@]}" \
		--duration "$BENCH_DURATION" --mailbox-messages "$BENCH_MAILBOX_MESSAGES" --json "$@" >"$tmp"; then
		cat "$tmp" >&2
		rm -f "$tmp"
		die "sigillo bench --scenario $scenario --server $server failed"
	fi
	grep '^{' "$tmp" >>"$out" || true
	grep -v '^{' "$tmp" >&2 || true
	rm -f "$tmp"
}

# vm_kib PID FIELD: a /proc/PID/status field (VmHWM, VmRSS) in KiB.
vm_kib() { awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }

# mem_watch_start PID...: samples the summed PSS of the PIDs and their
# descendants until mem_watch_stop, which sets MEM_PEAK_KIB.
mem_watch_start() {
	MEM_WATCH_OUT=$(mktemp)
	python3 "$BENCH_DIR/benchutil.py" watch "$MEM_WATCH_OUT" "$@" &
	MEM_WATCH_PID=$!
}
mem_watch_stop() {
	MEM_PEAK_KIB=0
	[ -n "${MEM_WATCH_PID:-}" ] || return 0
	kill "$MEM_WATCH_PID" 2>/dev/null || true
	wait "$MEM_WATCH_PID" 2>/dev/null || true
	MEM_WATCH_PID=
	MEM_PEAK_KIB=$(cat "$MEM_WATCH_OUT" 2>/dev/null || true)
	MEM_PEAK_KIB=${MEM_PEAK_KIB:-0}
	rm -f "$MEM_WATCH_OUT"
}

# mem_record OUT SERVER SCENARIO KEY=NUMBER...: one JSON line of memory
# (and queue) figures for the tables.
mem_record() {
	local out=$1 server=$2 scenario=$3
	shift 3
	python3 -c 'import json,sys; d={"server":sys.argv[1],"scenario":sys.argv[2]}
d.update((k,int(v)) for k,v in (a.split("=",1) for a in sys.argv[3:])); print(json.dumps(d))' \
		"$server" "$scenario" "$@" >>"$out"
}
