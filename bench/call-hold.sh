#!/usr/bin/env bash
# Memory per held call on loopback: what one established, idle call costs the server in
# memory once its INVITE transactions are gone. Printed, not asserted; not run by CI.
#
#   bench/call-hold.sh                              (both targets, the switch first)
#   HOLD_CALLS=1000 TARGETS=softswitch bench/call-hold.sh
#
# Per target (TARGETS, default "softswitch kamailio", one after the other in one run):
# the server on a free 127.0.0.1 port pinned to CPU SERVER_CPU (0); the callee u0002
# registered once (scenarios/load_register_callee.xml) with the Contact of the UAS
# (scenarios/load_call_uas.xml, SIPp server mode, no -m, stopped once it has seen every call
# end); a baseline of the server's memory; then the UAC (bench/call-hold-uac.xml, the
# caller u0001 answering the 407 with MD5 as scenarios/load_call_uac_auth.xml does) places
# HOLD_CALLS calls at HOLD_RATE calls/s: INVITE (SDP) -> 407 -> ACK -> INVITE with
# credentials -> 100/180/200 -> ACK, then each call pauses (held, no message either way)
# for the ramp time + SETTLE + HOLD_MARGIN seconds, then BYE -> 200. Both SIPps pinned
# to CPU SIPP_CPU (1).
#
# Measured: once every call is held (the UAC's -trace_counts: HOLD_CALLS sessions in the
# pause) the script waits SETTLE seconds (default 35 >= 64*T1 = 32 s: RFC 6026's
# Accepted-state INVITE server transactions and Timer D/K are over), checks that all
# HOLD_CALLS calls are still up (UAC: all in the pause, none failed; UAS: HOLD_CALLS
# current calls; the switch: softswitch_calls_active from /metrics), samples the memory,
# then checks the server's own view (the switch: the length of GET /api/calls, sampled
# again after it, printed apart: rendering 10,000 calls' JSON is the API's cost, not the
# held calls'; Kamailio: tm.stats via kamcmd, for its transactions left), and checks
# again that no call had ended meanwhile. Memory = Pss from
# /proc/PID/smaps_rollup summed over every process of the server's process group
# (Kamailio forks its workers, which share its shm: Pss splits each shared page between
# them, so the sum counts it once); plain Rss is printed too (for the single-process
# switch it is the familiar RSS). Figure: (Pss_hold - Pss_base) / HOLD_CALLS bytes per
# held call, and the switch's over Kamailio's.
#
# Then the calls end (BYE from the UAC), and the script checks every one completed (UAC:
# HOLD_CALLS successful calls, 0 failed; UAS: HOLD_CALLS successful; the switch:
# calls_active back to 0 and one CDR per call), waits SETTLE seconds more (the BYEs'
# transactions, Timer J) and samples the memory once more: what the server kept.
#
# Any check that fails stops that target with "FAILED: ..." and the script exits 1 at
# the end. Bounded: every SIPp has -m (the UAC) or is stopped by the script (the UAS),
# -timeout for the whole run and `timeout` around it; every wait has a deadline; the
# servers' start and stop have deadlines.
#
# Knobs: HOLD_CALLS (10000) HOLD_RATE (500) SETTLE (35) HOLD_MARGIN (20) TARGETS
# TRANSPORT (udp|tcp) SERVER_CPU SIPP_CPU CHILDREN (Kamailio's workers, 1 as in the
# call-load comparison) SOFTSWITCH_BIN (else `cargo build --release`, honouring
# CARGO_TARGET_DIR, as bench/call-load.sh) KEEP_LOGS=1. MIMALLOC_* variables reach the switch
# (its environment is otherwise empty): the allocator's options, for experiments.
# shellcheck disable=SC2015  # `[ ok ] && [ ok ] || fail`: fail and die always exit
set -euo pipefail
BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

cd "$(dirname "$0")/.."
HOLD_CALLS=${HOLD_CALLS:-10000}
HOLD_RATE=${HOLD_RATE:-500}
SETTLE=${SETTLE:-35}
HOLD_MARGIN=${HOLD_MARGIN:-20}
TARGETS=${TARGETS:-"softswitch kamailio"}
TRANSPORT=${TRANSPORT:-udp}
SERVER_CPU=${SERVER_CPU:-0}
SIPP_CPU=${SIPP_CPU:-1}
CHILDREN=${CHILDREN:-1}
DOMAIN=example.test
CALLEE=u0002 CALLEE_PW=p0002

die() { printf 'call-hold: %s\n' "$*" >&2; exit 1; }
fail() { printf 'call-hold: %s: FAILED: %s\n' "${TARGET:-?}" "$*" >&2; exit 1; }

# The ramp's length in whole seconds, and how long each call is held: every call must
# still be up when the script measures, SETTLE seconds after the last one was answered.
RAMP_S=$(( (HOLD_CALLS + HOLD_RATE - 1) / HOLD_RATE ))
HOLD_S=$((RAMP_S + SETTLE + HOLD_MARGIN))
# Deadlines: all calls up within twice the ramp + 30 s; all ended within twice the
# ramp + 60 s after the first BYE is due. SIPp's own -timeout covers the whole run.
UP_DEADLINE=$((2 * RAMP_S + 30))
SIPP_TIMEOUT=$((UP_DEADLINE + HOLD_S + 2 * RAMP_S + 90))

# ---- one target's measurement, run with the server up: TARGET, SERVER_PORT, SERVER_PGID
# set (and HTTP_PORT for the switch, KAMAILIO_CTL for Kamailio) ----
if [ "${1:-}" = --measure ]; then
  WORK=$2
  case $TRANSPORT in udp) T=u1 ;; tcp) T=t1 ;; *) die "TRANSPORT is udp or tcp" ;; esac
  PIN=()
  if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then PIN=(taskset -c "$SIPP_CPU"); fi
  # UAS SIP port and the SIPps' media ports: below the ephemeral range, free now.
  read -r UAS_PORT MP_UAC MP_UAS < <(python3 "$BENCH/free-ports.py" 20000 32000 0,10,12,20,22 0,10,20)
  [ -n "$MP_UAS" ] || die "no free ports"
  # SIPp keeps one socket for UDP (u1) or one connection (t1), but ask for the hard limit
  # anyway: SIPp sizes its tables from the open-file limit.
  ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
  D=$WORK/$TARGET
  mkdir -p "$D"
  cd "$D"
  BENCH=$OLDPWD/bench
  UAS='' UAC=''
  # shellcheck disable=SC2317  # called by the trap
  stop_sipps() {
    local p
    for p in $UAC $UAS; do kill "$p" 2>/dev/null || true; done
    for p in $UAC $UAS; do wait "$p" 2>/dev/null || true; done
  }
  trap stop_sipps EXIT

  mem() {  # "pss_kB rss_kB processes" summed over the server's process group
    local pss=0 rss=0 n=0 pid p r
    for pid in $(pgrep -g "$SERVER_PGID"); do
      read -r p r < <(awk '/^Pss:/ {p = $2} /^Rss:/ {r = $2} END {print p + 0, r + 0}' \
        "/proc/$pid/smaps_rollup" 2>/dev/null) || continue
      pss=$((pss + p)) rss=$((rss + r)) n=$((n + 1))
    done
    echo "$pss $rss $n"
  }
  last_csv() {  # FILE COLUMN...: the values of COLUMNs (names, or *suffix) in FILE's last row
    python3 - "$@" <<'PY'
import csv, sys
path, cols = sys.argv[1], sys.argv[2:]
try:
    rows = list(csv.reader(open(path), delimiter=";"))
except OSError:
    rows = []
if len(rows) < 2:
    print(" ".join("-" for _ in cols)); sys.exit(0)
head, last = rows[0], rows[-1]
out = []
for c in cols:
    idx = [i for i, h in enumerate(head) if (h.endswith(c[1:]) if c.startswith("*") else h == c)]
    out.append(last[idx[-1]] if idx and idx[-1] < len(last) and last[idx[-1]] != "" else "-")
print(" ".join(out))
PY
  }
  metric() {  # NAME: its value on the switch's /metrics (0 if absent)
    python3 - "$HTTP_PORT" "$1" <<'PY'
import sys, urllib.request
port, name = sys.argv[1], sys.argv[2]
text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
v = 0.0
for line in text.splitlines():
    if line.startswith(name + " ") or line.startswith(name + "{"):
        v += float(line.rsplit(" ", 1)[1])
print(int(v))
PY
  }
  api_calls() {  # the number of calls in GET /api/calls, and their states counted
    python3 - "$HTTP_PORT" <<'PY'
import collections, json, sys, urllib.request
calls = json.load(urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/api/calls", timeout=20))
states = collections.Counter(str(c.get("state", "?")) if isinstance(c, dict) else "?" for c in calls)
print(len(calls), ",".join(f"{k}={v}" for k, v in sorted(states.items())) or "-")
PY
  }
  tm_current() {  # Kamailio's live transactions (tm.stats "current")
    timeout 10 kamcmd -s "$KAMAILIO_CTL" tm.stats 2>/dev/null | awk '$1 == "current:" {print $2}' || true
  }
  up_now() {  # "held current failed": UAC calls in the pause, current calls, failed calls
    local held cur failed
    read -r held < <(last_csv "$D/uac_counts.csv" '*_Pause_Sessions')
    read -r cur failed < <(last_csv "$D/uac_stat.csv" CurrentCall 'FailedCall(C)')
    echo "$held $cur $failed"
  }

  printf 'SEQUENTIAL\n%s;[authentication username=%s password=%s]\n' $CALLEE $CALLEE $CALLEE_PW >users.csv
  printf 'SEQUENTIAL\nu0001;[authentication username=u0001 password=p0001]\n' >caller.csv
  timeout 30 sipp -sf "$BENCH/../scenarios/load_register_callee.xml" -inf users.csv -key domain $DOMAIN \
    -key contact_port "$UAS_PORT" -m 1 -timeout 10s -timeout_error -nostdin -t "$T" \
    -i 127.0.0.1 "127.0.0.1:$SERVER_PORT" >register.out 2>&1 || { tail -20 register.out >&2; fail "registering $CALLEE failed"; }

  # No -m for the UAS (a stray message would count as a call): stopped below once it has
  # seen every call end. -l: it must take all the held calls at once.
  timeout $((SIPP_TIMEOUT + 30)) "${PIN[@]}" sipp -sf "$BENCH/../scenarios/load_call_uas.xml" -t "$T" \
    -i 127.0.0.1 -mi 127.0.0.1 -p "$UAS_PORT" -mp "$MP_UAS" -buff_size 8388608 \
    -l $((HOLD_CALLS + 1000)) -timeout "${SIPP_TIMEOUT}s" -nostdin \
    -trace_err -error_file uas.errors -trace_stat -stf uas_stat.csv -fd 1 \
    "127.0.0.1:$SERVER_PORT" >uas.out 2>&1 &
  UAS=$!
  sleep 2
  kill -0 "$UAS" 2>/dev/null || { tail -20 uas.out >&2; fail "the UAS exited at once"; }
  read -r BASE_PSS BASE_RSS BASE_N < <(mem)

  timeout $((SIPP_TIMEOUT + 30)) "${PIN[@]}" sipp -sf "$BENCH/call-hold-uac.xml" -inf caller.csv \
    -s $CALLEE -key domain $DOMAIN -t "$T" -r "$HOLD_RATE" -m "$HOLD_CALLS" \
    -l "$HOLD_CALLS" -d $((HOLD_S * 1000)) -buff_size 8388608 \
    -i 127.0.0.1 -mi 127.0.0.1 -mp "$MP_UAC" -timeout "${SIPP_TIMEOUT}s" -timeout_error -nostdin \
    -trace_err -error_file uac.errors -trace_stat -stf uac_stat.csv -trace_counts -fd 1 \
    "127.0.0.1:$SERVER_PORT" >uac.out 2>&1 &
  UAC=$!
  START=$SECONDS
  # SIPp names the counts file after the scenario file and its PID.
  deadline=$((SECONDS + 10))
  COUNTS=
  until [ -n "$COUNTS" ]; do
    for f in ./*_counts.csv; do [ -e "$f" ] && COUNTS=$f; done
    [ -z "$COUNTS" ] || break
    kill -0 "$UAC" 2>/dev/null || { tail -20 uac.out >&2; fail "the UAC exited at once"; }
    [ $SECONDS -lt $deadline ] || fail "no SIPp counts file"
    sleep 0.2
  done
  ln -sf "$COUNTS" uac_counts.csv

  # Every call answered and held.
  deadline=$((SECONDS + UP_DEADLINE))
  while :; do
    read -r held cur failed < <(up_now)
    [ "$held" != "$HOLD_CALLS" ] || break
    [ "$failed" = - ] || [ "$failed" = 0 ] || fail "$failed calls failed during the ramp (see $D/uac.errors)"
    kill -0 "$UAC" 2>/dev/null || fail "the UAC exited during the ramp (held $held)"
    [ $SECONDS -lt $deadline ] || fail "only $held of $HOLD_CALLS calls held after ${UP_DEADLINE}s"
    sleep 0.5
  done
  UP_S=$((SECONDS - START))
  echo "  $HOLD_CALLS calls held ${UP_S}s after the first INVITE; settling ${SETTLE}s"
  sleep "$SETTLE"

  check_up() {  # WHEN: all HOLD_CALLS calls still up on every side, or fail
    local held cur failed ucur ufail
    read -r held cur failed < <(up_now)
    read -r ucur ufail < <(last_csv "$D/uas_stat.csv" CurrentCall 'FailedCall(C)')
    [ "$held" = "$HOLD_CALLS" ] && [ "$cur" = "$HOLD_CALLS" ] && [ "$failed" = 0 ] ||
      fail "$1: UAC holds $held calls, $cur current, $failed failed; want $HOLD_CALLS, $HOLD_CALLS, 0"
    [ "$ucur" = "$HOLD_CALLS" ] && [ "$ufail" = 0 ] ||
      fail "$1: UAS has $ucur current calls, $ufail failed; want $HOLD_CALLS, 0"
    if [ "$TARGET" = softswitch ]; then
      local active
      active=$(metric softswitch_calls_active)
      [ "$active" = "$HOLD_CALLS" ] || fail "$1: softswitch_calls_active is $active, want $HOLD_CALLS"
    fi
  }
  check_up "before the sample"
  read -r HOLD_PSS HOLD_RSS HOLD_N < <(mem)
  UP_INFO="UAC $HOLD_CALLS held, UAS $HOLD_CALLS current"
  API_PSS='' API_RSS=''
  if [ "$TARGET" = softswitch ]; then
    read -r n_api states < <(api_calls)
    [ "$n_api" = "$HOLD_CALLS" ] || fail "GET /api/calls lists $n_api calls, want $HOLD_CALLS"
    UP_INFO="$UP_INFO, switch: calls_active $(metric softswitch_calls_active), /api/calls $n_api ($states)"
    UP_INFO="$UP_INFO, call legs $(metric softswitch_call_legs_active), transactions $(metric softswitch_transactions_active)"
    # What rendering the whole call list costs on top (sampled after, not in the figure).
    read -r API_PSS API_RSS _ < <(mem)
  else
    UP_INFO="$UP_INFO, Kamailio tm transactions $(tm_current)"
  fi
  check_up "after the sample"
  echo "  up at the measurement point: $UP_INFO"

  # Let the calls end: the UAC sends every BYE after its pause and exits after -m calls.
  rc=0
  wait "$UAC" || rc=$?
  UAC=
  read -r ok failed < <(last_csv "$D/uac_stat.csv" 'SuccessfulCall(C)' 'FailedCall(C)')
  [ "$rc" = 0 ] && [ "$ok" = "$HOLD_CALLS" ] && [ "$failed" = 0 ] ||
    fail "UAC: exit $rc, $ok successful, $failed failed calls; want 0, $HOLD_CALLS, 0 (see $D/uac.errors)"
  deadline=$((SECONDS + 30))
  while :; do
    read -r uok ufail < <(last_csv "$D/uas_stat.csv" 'SuccessfulCall(C)' 'FailedCall(C)')
    [ "$uok" != "$HOLD_CALLS" ] || break
    [ $SECONDS -lt $deadline ] || fail "UAS: $uok successful, $ufail failed calls after the UAC ended; want $HOLD_CALLS"
    sleep 0.5
  done
  kill "$UAS" 2>/dev/null || true
  wait "$UAS" 2>/dev/null || true
  UAS=
  END_INFO="UAC $ok successful 0 failed, UAS $uok successful"
  if [ "$TARGET" = softswitch ]; then
    deadline=$((SECONDS + 30))
    until [ "$(metric softswitch_calls_active)" = 0 ]; do
      [ $SECONDS -lt $deadline ] || fail "softswitch_calls_active still $(metric softswitch_calls_active) 30 s after the last BYE"
      sleep 0.5
    done
    cdrs=$(wc -l <"$WORK/cdr.jsonl" 2>/dev/null || echo 0)
    [ "$cdrs" -ge "$HOLD_CALLS" ] || fail "only $cdrs CDRs written for $HOLD_CALLS calls"
    END_INFO="$END_INFO, switch: calls_active 0, $cdrs CDRs"
  fi
  echo "  all ended: $END_INFO; settling ${SETTLE}s"
  sleep "$SETTLE"
  read -r END_PSS END_RSS END_N < <(mem)
  if [ "$TARGET" = softswitch ]; then
    echo "  switch counters: calls $(metric softswitch_calls_active), call legs $(metric softswitch_call_legs_active)," \
      "transactions $(metric softswitch_transactions_active), retransmissions $(metric softswitch_sip_retransmissions_total)," \
      "transaction timeouts $(metric softswitch_transaction_timeouts_total), mailbox rejections $(metric softswitch_mailbox_rejected_total)," \
      "call panics $(metric softswitch_call_panics_total)"
  else
    echo "  Kamailio tm transactions left: $(tm_current)"
  fi

  per() { python3 -c 'import sys; print(round((int(sys.argv[1]) - int(sys.argv[2])) * 1024 / int(sys.argv[3])))' "$@"; }
  PER_PSS=$(per "$HOLD_PSS" "$BASE_PSS" "$HOLD_CALLS")
  PER_RSS=$(per "$HOLD_RSS" "$BASE_RSS" "$HOLD_CALLS")
  printf '  %-34s %10s %10s %s\n' "memory (kB)" Pss Rss processes
  printf '  %-34s %10s %10s %s\n' "baseline (callee registered)" "$BASE_PSS" "$BASE_RSS" "$BASE_N"
  printf '  %-34s %10s %10s %s\n' "$HOLD_CALLS calls held, settled" "$HOLD_PSS" "$HOLD_RSS" "$HOLD_N"
  [ -z "$API_PSS" ] || printf '  %-34s %10s %10s\n' "  right after GET /api/calls" "$API_PSS" "$API_RSS"
  printf '  %-34s %10s %10s %s\n' "all ended, settled" "$END_PSS" "$END_RSS" "$END_N"
  printf '  %-34s %10s %10s\n' "per held call (bytes)" "$PER_PSS" "$PER_RSS"
  printf '  %-34s %10s %10s\n' "kept after the calls (kB)" "$((END_PSS - BASE_PSS))" "$((END_RSS - BASE_RSS))"
  echo "$PER_PSS $PER_RSS $((END_PSS - BASE_PSS))" >"$WORK/result-$TARGET"
  exit 0
fi

# ---- driver ----
command -v sipp >/dev/null || die "sipp missing (apt-get install sip-tester)"
command -v python3 >/dev/null || die "python3 missing"
command -v setsid >/dev/null || die "setsid missing (util-linux)"
for v in HOLD_CALLS HOLD_RATE SETTLE HOLD_MARGIN; do
  [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a whole number"
done
[ "$HOLD_CALLS" -ge 1 ] && [ "$HOLD_CALLS" -le 100000 ] || die "HOLD_CALLS must be 1..100000"
[ "$HOLD_RATE" -ge 1 ] && [ "$HOLD_RATE" -le 5000 ] || die "HOLD_RATE must be 1..5000"
[ "$SETTLE" -le 600 ] && [ "$HOLD_MARGIN" -ge 5 ] && [ "$HOLD_MARGIN" -le 600 ] || die "SETTLE is 0..600, HOLD_MARGIN 5..600 s"
[ "$SETTLE" -ge 32 ] || echo "call-hold: warning: SETTLE=$SETTLE < 32 s (64*T1): INVITE transactions may still be there" >&2
PIN_SERVER=()
if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then PIN_SERVER=(-c "$SERVER_CPU"); fi

WORK=$(mktemp -d /tmp/call-hold.XXXXXX)
SELF=$PWD/bench/call-hold.sh
SW_STARTED=
# shellcheck disable=SC2317  # called by the trap
on_exit() {
  [ -z "$SW_STARTED" ] || kill -KILL "$SW_STARTED" 2>/dev/null || true
  [ "${KEEP_LOGS:-0}" = 1 ] || rm -rf "$WORK"
}
trap on_exit EXIT
echo "call-hold: $HOLD_CALLS calls at $HOLD_RATE/s, each held ${HOLD_S}s, settle ${SETTLE}s, $TRANSPORT, targets: $TARGETS"
[ "${KEEP_LOGS:-0}" != 1 ] || echo "call-hold: logs in $WORK"

run_softswitch() {
  # The switch on free ports below the ephemeral range, pinned like Kamailio, in its own
  # process group, with the two users configured (MD5: SIPp answers nothing else).
  if [ -z "${SOFTSWITCH_BIN:-}" ]; then
    cargo build --release --locked --bin softswitch >&2
    SOFTSWITCH_BIN=${CARGO_TARGET_DIR:-target}/release/softswitch
  fi
  [ -x "$SOFTSWITCH_BIN" ] || die "no switch binary at $SOFTSWITCH_BIN"
  read -r PORT HPORT < <(python3 "$BENCH/free-ports.py" 10000 20000 0,1 0,1)
  [ -n "$HPORT" ] || die "no free port for the switch"
  mkdir -p "$WORK/softswitch"
  # No session timer in the switch; its ring timer (no_answer_timeout_s) stops at the
  # answer, so a held call lasts until a BYE. max_transactions: the default (derived
  # from memory, millions here) is plenty for the calls' setup.
  "$BENCH/softswitch-toml.sh" "$WORK" "$PORT" "$HPORT" >"$WORK/softswitch.toml"
  local pin=(); [ ${#PIN_SERVER[@]} -gt 0 ] && pin=(taskset -c "$SERVER_CPU")
  # A clean environment, but for mimalloc's own knobs (MIMALLOC_*: experiments with
  # the allocator's options, e.g. MIMALLOC_PURGE_DELAY=0).
  local mi=(); mapfile -t mi < <(env | grep '^MIMALLOC_' || true)
  setsid env -i PATH="$PATH" "${mi[@]}" "${pin[@]}" "$SOFTSWITCH_BIN" --config "$WORK/softswitch.toml" \
    >"$WORK/switch.out" 2>"$WORK/switch.err" &
  SW_STARTED=$!
  local deadline=$((SECONDS + 30)) rc=0
  until grep -q '^ready' "$WORK/switch.out" 2>/dev/null; do
    kill -0 $SW_STARTED 2>/dev/null || { tail -5 "$WORK/switch.err" >&2; die "the switch exited"; }
    [ $SECONDS -lt $deadline ] || die "the switch not ready in 30 s"
    sleep 0.1
  done
  TARGET=softswitch SERVER_PORT=$PORT SERVER_PGID=$SW_STARTED HTTP_PORT=$HPORT \
    "$SELF" --measure "$WORK" || rc=$?
  # Still alive after the run? (A crash would show as a failed check above.)
  kill -0 $SW_STARTED 2>/dev/null || echo "  the switch is no longer running!" >&2
  kill -TERM $SW_STARTED 2>/dev/null || true
  deadline=$((SECONDS + 10))
  while kill -0 $SW_STARTED 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.1; done
  kill -KILL $SW_STARTED 2>/dev/null || true
  wait $SW_STARTED 2>/dev/null || true
  SW_STARTED=
  local lines; lines=$(grep -c . "$WORK/switch.err" 2>/dev/null || true)
  echo "  switch log (level warn): ${lines:-0} lines"
  if [ "${lines:-0}" -gt 0 ]; then
    # The most frequent messages, timestamps and call ids stripped.
    sed -E 's/^[^ ]+ +//; s/[0-9a-f]{8,}|[0-9]+/N/g' "$WORK/switch.err" | cut -c1-150 |
      sort | uniq -c | sort -rn | head -8 | sed 's/^/    /'
  fi
  return $rc
}
run_kamailio() {
  command -v kamailio >/dev/null || die "kamailio missing (apt-get install -y kamailio)"
  command -v kamcmd >/dev/null || die "kamcmd missing (kamailio package)"
  # The hook of bench/kamailio.sh: SERVER_PORT, SERVER_PGID (its process group) for the
  # measurement; digest auth on (-a) like the switch.
  # shellcheck disable=SC2016  # expanded by that bash, with kamailio.sh's variables
  bench/kamailio.sh "${PIN_SERVER[@]}" -a -A "CHILDREN=$CHILDREN" -- \
    env TARGET=kamailio bash -c 'SERVER_PORT=$KAMAILIO_PORT SERVER_PGID=$KAMAILIO_PID exec "$0" --measure "$1"' \
    "$SELF" "$WORK"
}

FAILED=0
for TARGET in $TARGETS; do
  echo
  echo "$TARGET:"
  case $TARGET in
    softswitch) run_softswitch || FAILED=1 ;;
    kamailio) run_kamailio || FAILED=1 ;;
    *) die "TARGETS are softswitch and/or kamailio" ;;
  esac
done

echo
echo "summary: bytes of server memory per held call ((Pss_hold - Pss_base) / $HOLD_CALLS),"
echo "  $HOLD_CALLS calls at $HOLD_RATE/s, $TRANSPORT, settled ${SETTLE}s, server on cpu $SERVER_CPU, sipp on cpu $SIPP_CPU"
printf '  %-12s %14s %14s %18s\n' target "Pss B/call" "Rss B/call" "kept after (kB)"
for TARGET in $TARGETS; do
  if [ -s "$WORK/result-$TARGET" ]; then
    read -r p r k <"$WORK/result-$TARGET"
    printf '  %-12s %14s %14s %18s\n' "$TARGET" "$p" "$r" "$k"
  else
    printf '  %-12s %14s\n' "$TARGET" FAILED
  fi
done
echo "  (Pss is the figure: Rss summed over Kamailio's processes counts each shared page once"
echo "  per process; the switch is one process. kept after: Pss once the calls ended and settled,"
echo "  over the baseline.)"
if [ -s "$WORK/result-softswitch" ] && [ -s "$WORK/result-kamailio" ]; then
  read -r sp _ _ <"$WORK/result-softswitch"
  read -r kp _ _ <"$WORK/result-kamailio"
  if [ "$kp" -gt 0 ]; then
    python3 -c 'import sys; print(f"  ratio softswitch / kamailio (Pss): {int(sys.argv[1]) / int(sys.argv[2]):.2f}x")' "$sp" "$kp"
  else
    echo "  ratio softswitch / kamailio: n/a (Kamailio's figure is $kp B, <= 0)"
  fi
fi
[ $FAILED = 0 ] || { echo "call-hold: FAILED (see above)" >&2; exit 1; }
