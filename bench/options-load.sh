#!/usr/bin/env bash
# OPTIONS load on loopback: how many non-INVITE transactions a second the switch
# answers, and what each costs it in CPU.
#
# Builds the release binary, starts it on free 127.0.0.1 ports (SIP over UDP, HTTP on
# another port) with SOFTSWITCH_* overrides, waits for /readyz (bounded), runs SIPp's
# scenarios/options_uac.xml at a few fixed rates, and prints per rate: achieved rate,
# failed and retransmitted transactions, and the switch's CPU time (utime+stime from
# /proc/PID/stat) per successful transaction. Stops the switch at the end.
#
# Bounded: each rate runs DURATION seconds (default 10) and at most 200000 calls; SIPp
# gets -timeout 60s. Knobs: RATES="5000 10000 20000 30000" DURATION=10
# SOFTSWITCH_BIN=target/release/softswitch (set it to skip the build).
set -euo pipefail

cd "$(dirname "$0")/.."
RATES=${RATES:-"5000 10000 20000 30000"}
DURATION=${DURATION:-10}
MAX_CALLS=200000
READY_TIMEOUT=${READY_TIMEOUT:-20}

die() { printf 'options-load: %s\n' "$*" >&2; exit 1; }
command -v sipp >/dev/null || die "sipp missing (apt-get install sip-tester)"
command -v curl >/dev/null || die "curl missing"
command -v python3 >/dev/null || die "python3 missing"
[ "$DURATION" -ge 1 ] && [ "$DURATION" -le 30 ] || die "DURATION must be 1..30 seconds"

if [ -z "${SOFTSWITCH_BIN:-}" ]; then
  cargo build --release --locked --bin softswitch
  SOFTSWITCH_BIN=${CARGO_TARGET_DIR:-target}/release/softswitch
fi
[ -x "$SOFTSWITCH_BIN" ] || die "no executable at $SOFTSWITCH_BIN"

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
  # after "comm) " the fields start at field 3 (state): utime is the 12th, stime the 13th
  awk '{print $12 + $13}' <<<"$stat"
}

WORK=$(mktemp -d /tmp/options-load.XXXXXX)
SIP_PORT=$(free_port udp)
HTTP_PORT=$(free_port tcp)
PID=
cleanup() {
  if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then
    kill -TERM "$PID" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

SOFTSWITCH_SIP_LISTEN="udp:127.0.0.1:$SIP_PORT" \
SOFTSWITCH_HTTP_LISTEN="127.0.0.1:$HTTP_PORT" \
SOFTSWITCH_BILLING_CDR_PATH="$WORK/cdr.jsonl" \
SOFTSWITCH_LOG_LEVEL=warn \
  env -u SOFTSWITCH_BIN "$SOFTSWITCH_BIN" >"$WORK/switch.log" 2>&1 &
PID=$!

deadline=$((SECONDS + READY_TIMEOUT))
until curl -fsS -m 1 "http://127.0.0.1:$HTTP_PORT/readyz" >/dev/null 2>&1; do
  kill -0 "$PID" 2>/dev/null || { tail -20 "$WORK/switch.log" >&2; die "the switch exited before it was ready"; }
  [ $SECONDS -lt $deadline ] || { tail -20 "$WORK/switch.log" >&2; die "/readyz not 200 within ${READY_TIMEOUT}s"; }
  sleep 0.1
done
echo "switch pid $PID ready: SIP udp 127.0.0.1:$SIP_PORT, HTTP 127.0.0.1:$HTTP_PORT"
TCK=$(getconf CLK_TCK)

printf '\n%8s %10s %9s %9s %9s %9s %12s\n' rate calls achieved ok failed retrans "cpu_us/txn"
for rate in $RATES; do
  calls=$((rate * DURATION)); [ $calls -le $MAX_CALLS ] || calls=$MAX_CALLS
  stat="$WORK/stat-$rate.csv"
  before=$(cpu_ticks "$PID") || die "the switch is gone"
  rc=0
  (cd "$WORK" && timeout 90 sipp -sf "$OLDPWD/scenarios/options_uac.xml" \
      -r "$rate" -m "$calls" -timeout 60s -timeout_error -nostdin \
      -trace_stat -stf "$stat" -fd 1 \
      -i 127.0.0.1 "127.0.0.1:$SIP_PORT" >"$WORK/sipp-$rate.out" 2>&1) || rc=$?
  after=$(cpu_ticks "$PID") || die "the switch died during the $rate/s run"
  python3 - "$stat" "$rate" "$calls" "$((after - before))" "$TCK" "$rc" <<'PY'
import csv, sys
path, rate, calls, ticks, tck, rc = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
try:
    rows = list(csv.DictReader(open(path), delimiter=";"))
except OSError:
    rows = []
if not rows:
    print(f"{rate:8d} {calls:10d}  no statistics (sipp exit {rc})"); sys.exit(0)
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
print(f"{rate:8d} {calls:10d} {achieved:9.0f} {ok:9.0f} {failed:9.0f} {retrans:9.0f} {cpu_us:12.1f}"
      + ("" if rc == "0" else f"  (sipp exit {rc})"))
PY
done
echo
echo "cpu_us/txn: the switch's utime+stime over the run / successful transactions (${TCK} Hz ticks)"
