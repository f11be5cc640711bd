#!/usr/bin/env bash
# Run every call-flow scenario pair of scenarios/ against Kamailio (bench/kamailio.cfg
# with digest auth, a plain RFC 3261 stateful proxy + registrar) over UDP and TCP, and
# print pass/fail per pair and transport. The pairs must pass here as well as against
# the switch (a B2BUA): whatever they check is what both must do.
#
#   bench/validate-scenarios.sh [PAIR...]     (default: every pair below)
#   TRANSPORTS="udp tcp" (default) KEEP_LOGS=1 (keep each case's SIPp logs, path printed)
#
# One case = a fresh Kamailio (bench/kamailio.sh -a, tm fr_inv_timer 3 s, fr_timer 2 s,
# so F8 caller gets 408 3 s after the 180 over UDP and TCP alike; one worker process per
# socket, so it relays in the order it receives: with several UDP workers a 200 may
# overtake the 180 sent just before it, which the callers would rightly fail), then:
#   1. the callee (u0002): scenarios/callee_register.xml with -oocsf PAIR_uas.xml on its
#      own port; it registers and logs "registered u0002";
#   2. once that line is in its log (bounded wait), the caller (u0001): PAIR_uac.xml
#      dialling u0002;
#   3. pass = both SIPps exit 0 (every message each expected on its own leg came, with
#      the checked contents, and nothing unexpected did).
# Bounded: every SIPp has -timeout and runs under `timeout`; every wait has a deadline.
# Loopback only. Exit status: 0 if every case passed.
set -euo pipefail
BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
SCEN=${SCENARIOS_DIR:-$ROOT/scenarios}  # another dir of pairs: SCENARIOS_DIR=...
DOMAIN=example.test
ALL_PAIRS="f03_basic_call f04_release_caller_bye f04_release_callee_bye f06_busy f07_cancel f08_no_answer"
TRANSPORTS=${TRANSPORTS:-"udp tcp"}
REG_TIMEOUT=${REG_TIMEOUT:-10}

die() { printf 'validate-scenarios: %s\n' "$*" >&2; exit 2; }

# ---- one case, run by bench/kamailio.sh (KAMAILIO_PORT is set) ----
if [ "${1:-}" = --case ]; then
  pair=$2 transport=$3 work=$4
  KAMAILIO_PORT=${SERVER_PORT:-${KAMAILIO_PORT:?}}  # the server under test: Kamailio, or the switch (tests/sipp_calls.rs)
  case $transport in udp) t=u1 ;; tcp) t=t1 ;; *) die "transport is udp or tcp" ;; esac
  # Ports below the ephemeral range (32768+ here), so no connect()/bind(0) of any
  # process can take one between this check and SIPp's bind: SIP ports B, B+1 and
  # media ports B+10, B+20 (SIPp's RTP echo also uses media+2), all free now.
  read -r callee_port caller_port mp_a mp_b < <(python3 "$BENCH/free-ports.py" 20000 32000 0,1,10,12,20,22 0,1,10,20)
  [ -n "$mp_b" ] || die "no free ports"
  echo "ports: callee $callee_port caller $caller_port media $mp_a $mp_b" >"$work/ports"
  printf 'SEQUENTIAL\nu0001;[authentication username=u0001 password=p0001]\n' >"$work/caller.csv"
  printf 'SEQUENTIAL\nu0002;[authentication username=u0002 password=p0002]\n' >"$work/callee.csv"
  common=(-key domain $DOMAIN -m 1 -timeout_error -nostdin -trace_err -trace_msg -trace_logs
          -i 127.0.0.1 -mi 127.0.0.1 -t "$t")
  cd "$work"
  timeout 200 sipp -sf "$SCEN/callee_register.xml" -oocsf "$SCEN/${pair}_uas.xml" -inf callee.csv \
    "${common[@]}" -timeout 180s -p "$callee_port" -mp "$mp_b" \
    -log_file callee.log -message_file callee.msg -error_file callee.err \
    "127.0.0.1:$KAMAILIO_PORT" >callee.out 2>&1 &
  callee=$!
  deadline=$((SECONDS + REG_TIMEOUT))
  until grep -q '^.*registered u0002' callee.log 2>/dev/null; do
    if ! kill -0 "$callee" 2>/dev/null; then echo "callee exited before it registered" >reason; break; fi
    if [ $SECONDS -ge $deadline ]; then echo "callee not registered within ${REG_TIMEOUT}s" >reason; break; fi
    sleep 0.05
  done
  caller_rc=-
  if [ ! -s reason ]; then
    caller_rc=0
    timeout 200 sipp -sf "$SCEN/${pair}_uac.xml" -inf caller.csv -s u0002 \
      "${common[@]}" -timeout 150s -p "$caller_port" -mp "$mp_a" \
      -log_file caller.log -message_file caller.msg -error_file caller.err \
      "127.0.0.1:$KAMAILIO_PORT" >caller.out 2>&1 || caller_rc=$?
  fi
  callee_rc=0
  if [ -s reason ]; then kill "$callee" 2>/dev/null || true; fi
  wait "$callee" || callee_rc=$?
  echo "$caller_rc $callee_rc" >rc
  [ "$caller_rc" = 0 ] && [ "$callee_rc" = 0 ]
  exit
fi

# ---- driver ----
command -v sipp >/dev/null || die "sipp missing (apt-get install sip-tester)"
command -v kamailio >/dev/null || die "kamailio missing (apt-get install kamailio)"
PAIRS=${*:-$ALL_PAIRS}
for p in $PAIRS; do
  [ -f "$SCEN/${p}_uac.xml" ] && [ -f "$SCEN/${p}_uas.xml" ] || die "no pair $p in scenarios/"
done

WORK=$(mktemp -d /tmp/validate-scenarios.XXXXXX)
[ "${KEEP_LOGS:-0}" = 1 ] || trap 'rm -rf "$WORK"' EXIT

printf '%-26s %-4s %-6s %8s  %s\n' pair tr result seconds "exit codes (caller callee) / reason"
passed=0 failed=0
for p in $PAIRS; do
  for tr in $TRANSPORTS; do
    dir=$WORK/$p-$tr; mkdir -p "$dir"
    start=$(date +%s.%N)
    if "$HERE/kamailio.sh" -a -A FR_INV_TIMER=3000 -A FR_TIMER=2000 -A CHILDREN=1 -- "$0" --case "$p" "$tr" "$dir" >"$dir/case.out" 2>&1; then
      verdict=PASS; passed=$((passed + 1))
    else
      verdict=FAIL; failed=$((failed + 1))
    fi
    secs=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN {printf "%.1f", e - s}')
    why=$(cat "$dir/rc" 2>/dev/null || echo "-"); [ ! -s "$dir/reason" ] || why="$why / $(cat "$dir/reason")"
    printf '%-26s %-4s %-6s %8s  %s\n' "$p" "$tr" "$verdict" "$secs" "$why"
    if [ $verdict = FAIL ]; then
      for side in caller callee; do
        [ -s "$dir/$side.err" ] && { echo "  $side errors:"; grep -v '^\s*$' "$dir/$side.err" | head -8 | sed 's/^/    /'; }
      done
      tail -3 "$dir/case.out" | sed 's/^/  /'
    fi
  done
done
echo
echo "$passed passed, $failed failed"
[ "${KEEP_LOGS:-0}" != 1 ] || echo "logs kept in $WORK"
[ $failed = 0 ]
