#!/usr/bin/env bash
# REGISTER load on loopback: how many digest-authenticated registrations a second the
# switch sustains, what each costs it in CPU, and how much memory a binding takes.
# Printed, not asserted; not run by CI.
#
# One registration = one SIPp call of bench/register-load.xml (F1 without the checks of
# scenarios/register_f1.xml, which made SIPp the ceiling): REGISTER -> 401 ->
# authenticated REGISTER -> 200 (two requests). Users are distinct: USERS users (default
# 100000) in a generated --config file and the same users in SIPp's injection file
# (SEQUENTIAL); a step never has more calls than users, so every registration creates a
# binding rather than refreshing one.
#
# 1. Rate ramp (TRANSPORT, default udp): for each rate in RATES, a fresh switch and
#    SIPp for DURATION seconds or USERS calls, whichever is fewer; per step: achieved
#    rate, failed calls, retransmissions, and the switch's CPU time (utime+stime from
#    /proc/PID/stat, every thread) per successful registration. A step passes with
#    < 0.1 % failed, >= 97 % of the target rate achieved and retransmissions <= 5 % of
#    the REGISTERs sent; the ramp stops at the first failure.
# 2. Memory: a fresh switch; the first half of the users register (this also takes up
#    what start-up parsing of the users file left free in the allocator), VmRSS; then the
#    second half, VmRSS again: growth / (USERS/2) = bytes per binding. REGISTER is
#    answered statelessly, so no server transaction is left behind to count.
#
# SIPp 3.6 answers only MD5 challenges (scenarios/README.md), so the switch runs with
# SOFTSWITCH_AUTH_ALGORITHMS=MD5. The machine has 2 cores: the switch is pinned to CPU
# SWITCH_CPU (0), SIPp to SIPP_CPU (1), with taskset when it exists.
#
# Bounded: each step DURATION seconds (1..30) and at most MAX_CALLS calls; SIPp gets
# -timeout 60s and `timeout 120`; every wait has a deadline. Knobs: RATES DURATION USERS
# MEM_RATE TRANSPORT STORE_SYNC (registrar.store_sync, default true as the switch's
# default) SOFTSWITCH_BIN (set it to skip the build).
set -euo pipefail

cd "$(dirname "$0")/.."
RATES=${RATES:-"2000 5000 10000 15000 20000 25000 30000"}
DURATION=${DURATION:-10}
USERS=${USERS:-100000}
MEM_RATE=${MEM_RATE:-5000}
TRANSPORT=${TRANSPORT:-udp}
STORE_SYNC=${STORE_SYNC:-true}
SWITCH_CPU=${SWITCH_CPU:-0}
SIPP_CPU=${SIPP_CPU:-1}
MAX_CALLS=400000
READY_TIMEOUT=${READY_TIMEOUT:-60}
DOMAIN=example.test

die() { printf 'register-load: %s\n' "$*" >&2; exit 1; }
command -v sipp >/dev/null || die "sipp missing (apt-get install sip-tester)"
command -v curl >/dev/null || die "curl missing"
command -v python3 >/dev/null || die "python3 missing"
[ "$DURATION" -ge 1 ] && [ "$DURATION" -le 30 ] || die "DURATION must be 1..30 seconds"
[ "$USERS" -ge 1 ] && [ "$USERS" -le 1000000 ] || die "USERS must be 1..1000000"
case $TRANSPORT in udp) SIPP_T=u1 ;; tcp) SIPP_T=t1 ;; *) die "TRANSPORT is udp or tcp" ;; esac

if [ -z "${SOFTSWITCH_BIN:-}" ]; then
  cargo build --release --locked --bin softswitch
  SOFTSWITCH_BIN=${CARGO_TARGET_DIR:-target}/release/softswitch
fi
[ -x "$SOFTSWITCH_BIN" ] || die "no executable at $SOFTSWITCH_BIN"

PIN_SWITCH=() PIN_SIPP=() PINNING="not pinned"
if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
  PIN_SWITCH=(taskset -c "$SWITCH_CPU") PIN_SIPP=(taskset -c "$SIPP_CPU")
  PINNING="switch on cpu $SWITCH_CPU, sipp on cpu $SIPP_CPU"
fi

free_port() {  # $1: udp|tcp -> a port free on 127.0.0.1 right now
  python3 - "$1" <<'PY'
import socket, sys
kind = socket.SOCK_DGRAM if sys.argv[1] == "udp" else socket.SOCK_STREAM
s = socket.socket(socket.AF_INET, kind); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])
PY
}

cpu_ticks() {  # $1 pid -> utime+stime in clock ticks (fields 14, 15; comm may hold spaces)
  local stat; stat=$(cat "/proc/$1/stat") || return 1
  stat=${stat##*) }
  awk '{print $12 + $13}' <<<"$stat"
}

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

WORK=$(mktemp -d /tmp/register-load.XXXXXX)
PID=
stop_switch() {
  if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then
    kill -KILL "$PID" 2>/dev/null || true  # nothing to drain: the run is over
    wait "$PID" 2>/dev/null || true
  fi
  PID=
}
cleanup() { stop_switch; rm -rf "$WORK"; }
trap cleanup EXIT

# The users: the switch's [[users]] and SIPp's injection file, u000001/p000001 ...
# (all of them, and the two halves the memory profile uses).
awk -v n="$USERS" -v inf="$WORK/users.csv" -v toml="$WORK/users.toml" 'BEGIN {
  a = inf ".first"; b = inf ".second"
  print "SEQUENTIAL" > inf; print "SEQUENTIAL" > a; print "SEQUENTIAL" > b
  for (i = 1; i <= n; i++) {
    u = sprintf("u%06d", i); p = sprintf("p%06d", i)
    line = sprintf("%s;[authentication username=%s password=%s]", u, u, p)
    print line > inf
    print line > (i <= int(n / 2) ? a : b)
    printf "[[users]]\nuser = \"%s\"\npassword = \"%s\"\n", u, p > toml
  }
}'

SIP_PORT= HTTP_PORT=
start_switch() {  # $1: tag; extra SOFTSWITCH_* overrides follow as NAME=VALUE
  local tag=$1; shift
  rm -rf "$WORK/data-$tag"; mkdir -p "$WORK/data-$tag"
  SIP_PORT=$(free_port udp)
  HTTP_PORT=$(free_port tcp)
  env -i PATH="$PATH" \
    SOFTSWITCH_SIP_LISTEN="udp:127.0.0.1:$SIP_PORT,tcp:127.0.0.1:$SIP_PORT" \
    SOFTSWITCH_SIP_DOMAIN=$DOMAIN \
    SOFTSWITCH_HTTP_LISTEN="127.0.0.1:$HTTP_PORT" \
    SOFTSWITCH_BILLING_CDR_PATH="$WORK/data-$tag/cdr.jsonl" \
    SOFTSWITCH_REGISTRAR_STORE_PATH="$WORK/data-$tag/registrations.journal" \
    SOFTSWITCH_REGISTRAR_STORE_SYNC="$STORE_SYNC" \
    SOFTSWITCH_AUTH_ALGORITHMS=MD5 \
    SOFTSWITCH_LOG_LEVEL=warn \
    "$@" \
    "${PIN_SWITCH[@]}" "$SOFTSWITCH_BIN" --config "$WORK/users.toml" >"$WORK/switch-$tag.log" 2>&1 &
  PID=$!
  local deadline=$((SECONDS + READY_TIMEOUT))
  until curl -fsS -m 1 "http://127.0.0.1:$HTTP_PORT/readyz" >/dev/null 2>&1; do
    kill -0 "$PID" 2>/dev/null || { tail -20 "$WORK/switch-$tag.log" >&2; die "the switch exited before it was ready"; }
    [ $SECONDS -lt $deadline ] || { tail -20 "$WORK/switch-$tag.log" >&2; die "/readyz not 200 within ${READY_TIMEOUT}s"; }
    sleep 0.1
  done
}

metric() {  # $1: series prefix -> the sum of the matching series' values
  curl -fsS -m 5 "http://127.0.0.1:$HTTP_PORT/metrics" |
    awk -v s="$1" 'index($0, s) == 1 && $0 !~ /^#/ {t += $NF} END {printf "%d\n", t}'
}

run_sipp() {  # $1 rate, $2 calls, $3 sipp transport, $4 stat file, $5 out file, [$6 users file] -> exit code
  local rc=0
  (cd "$WORK" && timeout 120 "${PIN_SIPP[@]}" sipp -sf "$OLDPWD/bench/register-load.xml" \
      -inf "${6:-$WORK/users.csv}" -key domain $DOMAIN -t "$3" \
      -r "$1" -m "$2" -l $(( $1 * 4 )) -buff_size 8388608 \
      -timeout 60s -timeout_error -nostdin -trace_err -error_file "$4.errors" \
      -trace_stat -stf "$4" -fd 1 \
      -i 127.0.0.1 "127.0.0.1:$SIP_PORT" >"$5" 2>&1) || rc=$?
  echo $rc
}

TCK=$(getconf CLK_TCK)
echo "register-load: $USERS users, MD5 digest, transport $TRANSPORT, store_sync=$STORE_SYNC, $PINNING"

# 1. The rate ramp: a fresh switch per step, at most USERS calls a step (distinct users).
printf '\n%8s %9s %9s %9s %8s %8s %9s %12s  %s\n' \
  target calls achieved ok failed retrans txns_live "cpu_us/reg" verdict
BEST=0 BEST_CPU=- RAMP_BINDINGS=-
for rate in $RATES; do
  calls=$((rate * DURATION)); [ $calls -le $MAX_CALLS ] || calls=$MAX_CALLS
  [ $calls -le "$USERS" ] || calls=$USERS
  start_switch "ramp-$rate"
  stat="$WORK/stat-$rate.csv"
  before=$(cpu_ticks "$PID") || die "the switch is gone"
  rc=$(run_sipp "$rate" "$calls" "$SIPP_T" "$stat" "$WORK/sipp-$rate.out")
  after=$(cpu_ticks "$PID") || die "the switch died during the $rate/s step"
  live=$(metric softswitch_transactions_active)
  RAMP_BINDINGS=$(metric softswitch_registrations_active)
  line=$(python3 - "$stat" "$rate" "$calls" "$((after - before))" "$TCK" "$rc" "$live" <<'PY'
import csv, sys
path, rate, calls, ticks, tck, rc, live = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6], sys.argv[7]
try:
    rows = list(csv.DictReader(open(path), delimiter=";"))
except OSError:
    rows = []
if not rows:
    print(f"{rate:8d} {calls:9d}  no statistics (sipp exit {rc})|FAIL|-"); sys.exit(0)
last = rows[-1]
def num(k):
    try: return float(last.get(k, "0") or 0)
    except ValueError: return 0.0
def epoch(k):  # StartTime / CurrentTime: "date<TAB>time<TAB>epoch-seconds"
    try: return float((last.get(k) or "").split("\t")[-1])
    except ValueError: return 0.0
ok, failed, retrans = num("SuccessfulCall(C)"), num("FailedCall(C)"), num("Retransmissions(C)")
elapsed = epoch("CurrentTime") - epoch("StartTime")
achieved = ok / elapsed if elapsed > 0 else 0.0
cpu_us = ticks * 1e6 / tck / ok if ok > 0 else float("nan")
sent = 2 * (ok + failed)  # two REGISTERs a call
passed = (ok + failed > 0 and failed / (ok + failed) < 0.001 and achieved >= 0.97 * rate
          and (retrans / sent if sent else 1) <= 0.05 and rc == "0")
print(f"{rate:8d} {calls:9d} {achieved:9.0f} {ok:9.0f} {failed:8.0f} {retrans:8.0f} {live:>9} {cpu_us:12.1f}"
      + ("  pass" if passed else "  FAIL") + ("" if rc == "0" else f" (sipp exit {rc})")
      + f"|{'PASS' if passed else 'FAIL'}|{cpu_us:.1f}")
PY
)
  printf '%s\n' "${line%%|*}"
  verdict=${line#*|}; verdict=${verdict%%|*}
  if [ "$verdict" = PASS ]; then BEST=$rate BEST_CPU=${line##*|}; else
    # Why calls failed: SIPp's error log, by unexpected status line and by other reason.
    if [ -s "$stat.errors" ]; then
      echo "  failed calls by cause (SIPp's error log):"
      { grep -ao "received 'SIP/2.0 [0-9][0-9][0-9] [^']*" "$stat.errors" | cut -c11- | head -c 2000000 | tr -d '\r' | awk 'NF' |
          sed -n 's/^\(SIP\/2.0 [0-9]* [^V]*\)Via.*/\1/p; /^SIP/p' | sort | uniq -c | sort -rn | head -5
        grep -ao "receive timeout\|Aborting call on unexpected message" "$stat.errors" | sort | uniq -c; } | sed 's/^/    /' || true
    fi
    break
  fi
  stop_switch
done
stop_switch

# 2. Memory per binding: the second half of the users, after the first half.
start_switch mem
HALF=$((USERS / 2))
wait_bindings() {  # $1: how many
  local deadline=$((SECONDS + 60))
  until [ "$(metric softswitch_registrations_active)" = "$1" ]; do
    [ $SECONDS -lt $deadline ] || die "bindings $(metric softswitch_registrations_active)/$1 after 60 s"
    sleep 0.2
  done
}
rc=$(run_sipp "$MEM_RATE" "$HALF" "$SIPP_T" "$WORK/stat-mem1.csv" "$WORK/sipp-mem1.out" "$WORK/users.csv.first")
[ "$rc" = 0 ] || { tail -30 "$WORK/sipp-mem1.out" >&2; die "the memory run's SIPp exited $rc"; }
wait_bindings "$HALF"
RSS0=$(rss_kb "$PID")
rc=$(run_sipp "$MEM_RATE" "$((USERS - HALF))" "$SIPP_T" "$WORK/stat-mem2.csv" "$WORK/sipp-mem2.out" "$WORK/users.csv.second")
[ "$rc" = 0 ] || { tail -30 "$WORK/sipp-mem2.out" >&2; die "the memory run's SIPp exited $rc"; }
wait_bindings "$USERS"
RSS1=$(rss_kb "$PID")
PER_BINDING=$(( (RSS1 - RSS0) * 1024 / (USERS - HALF) ))
stop_switch

echo
echo "cpu_us/reg: the switch's utime+stime over the step / successful registrations (${TCK} Hz ticks);"
echo "retrans: SIPp's retransmitted requests; txns_live: the switch's live transactions after the step."
echo
echo "summary"
printf '  %-44s %s\n' "highest passing rate ($TRANSPORT)" "$BEST registrations/s"
printf '  %-44s %s\n' "switch CPU per registration at that rate" "$BEST_CPU us"
printf '  %-44s %s\n' "bindings held after the last step" "$RAMP_BINDINGS"
printf '  %-44s %s\n' "RSS with $HALF bindings ($TRANSPORT)" "$RSS0 KiB"
printf '  %-44s %s\n' "RSS with $USERS bindings ($TRANSPORT)" "$RSS1 KiB"
printf '  %-44s %s\n' "growth per binding" "$PER_BINDING bytes"
