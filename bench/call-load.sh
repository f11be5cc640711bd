#!/usr/bin/env bash
# Call load on loopback: how many complete calls a second (INVITE/100/180/200/ACK/BYE/200,
# hold time 0) the target server carries, and what each costs it in CPU.
# Printed, not asserted; not run by CI.
#
#   TARGET=kamailio [AUTH=1] bench/call-load.sh     (the default)
#   TARGET=softswitch bench/call-load.sh              (always with AUTH=1)
#   TARGET=both bench/call-load.sh                    (the switch, then Kamailio with
#                                                     AUTH=1 CHILDREN=1, and the ratio;
#                                                     ORDER="kamailio softswitch" swaps;
#                                                     ROUNDS=2 runs ABBA, see below)
#
# Set-up: the server on a free 127.0.0.1 port pinned to CPU SERVER_CPU (0); the callee
# "bench" registered once (scenarios/load_register_callee.xml) with the Contact of the load
# UAS (scenarios/load_call_uas.xml, SIPp server mode, its own port); then the ramp: for each
# rate in RATES a fresh UAS and the UAC (scenarios/load_call_uac.xml, INVITE to
# sip:bench@example.test, so every call goes through the location lookup) for DURATION
# seconds; both SIPps pinned to CPU SIPP_CPU (1). Per step: achieved CPS, failed calls,
# retransmissions, and the server's CPU time per successful call: utime+stime from
# /proc/PID/stat summed over every process of the server (Kamailio forks its workers;
# they all stay in its process group) before and after the step. A step passes with
# < 0.1 % failed calls, >= 97 % of the target rate achieved and retransmissions <= 5 %
# of the retransmittable requests sent (INVITE and BYE: 2 per call); the ramp stops at
# the first step that fails.
#
# TARGET=kamailio: bench/kamailio.cfg, without auth unless AUTH=1 (a pure stateful proxy +
# registrar). TARGET=softswitch: the switch (a B2BUA: both legs, a CDR fsynced per call),
# always with AUTH=1.
#
# Steady state: a step counts only if it lasts longer than the longest timer that holds
# a transaction (64*T1 = 32 s: RFC 6026 Timer L/M, Timer J), so that what each server
# keeps per call has built up; DURATION defaults to 60 s. At the end of each step the
# server's memory is printed: rss_mb, the sum of VmRSS over its processes, and pss_mb,
# the sum of their Pss (Kamailio's workers share one memory segment, which RSS counts
# once per worker and Pss once).
#
# Bounded: each step DURATION seconds (1..300) and at most MAX_CALLS calls; SIPp gets
# -timeout DURATION+60 s and `timeout` DURATION+120 s; the server start and stop have
# deadlines.
# Knobs: TARGET RATES DURATION TRANSPORT (udp|tcp) SERVER_CPU SIPP_CPU CHILDREN ORDER ROUNDS;
# with TARGET=both, RATES_SOFTSWITCH and RATES_KAMAILIO give each server its own ramp
# (default RATES), so a 60 s step is not spent far below a server's ceiling.
set -euo pipefail
BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

cd "$(dirname "$0")/.."
TARGET=${TARGET:-kamailio}
# AUTH=1: every INVITE is challenged (407) and answered with MD5 credentials, the
# caller u0001 calling the callee u0002 (scenarios/load_call_uac_auth.xml). The switch
# carries no unauthenticated call, so TARGET=softswitch always runs it; compare it with
# TARGET=kamailio AUTH=1 (bench/kamailio.cfg with digest auth) for a like-for-like ratio.
AUTH=${AUTH:-0}
[ "$TARGET" != softswitch ] || AUTH=1
RATES=${RATES:-"200 500 1000 2000 3000 4000 5000 6000 8000 10000"}
DURATION=${DURATION:-60}
TRANSPORT=${TRANSPORT:-udp}
SERVER_CPU=${SERVER_CPU:-0}
SIPP_CPU=${SIPP_CPU:-1}
CHILDREN=${CHILDREN:-4}
MAX_CALLS=1000000
DOMAIN=example.test
if [ "$AUTH" = 1 ]; then CALLEE=u0002 CALLEE_PW=p0002; else CALLEE=bench CALLEE_PW=p0000; fi

die() { printf 'call-load: %s\n' "$*" >&2; exit 1; }

# ---- the ramp, run with the server up: SERVER_PORT and SERVER_PGID are set ----
if [ "${1:-}" = --ramp ]; then
  WORK=$2
  case $TRANSPORT in udp) T=u1 ;; tcp) T=t1 ;; *) die "TRANSPORT is udp or tcp" ;; esac
  PIN=()
  if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then PIN=(taskset -c "$SIPP_CPU"); fi
  # UAS SIP port and the SIPps' media ports: below the ephemeral range, free now.
  read -r UAS_PORT MP_UAC MP_UAS < <(python3 "$BENCH/free-ports.py" 20000 32000 0,10,12,20,22 0,10,20)
  [ -n "$MP_UAS" ] || die "no free ports"
  TCK=$(getconf CLK_TCK)
  server_ticks() {  # utime+stime of every process in the server's process group
    local total=0 pid stat
    for pid in $(pgrep -g "$SERVER_PGID"); do
      stat=$(cat "/proc/$pid/stat" 2>/dev/null) || continue
      stat=${stat##*) }
      total=$((total + $(awk '{print $12 + $13}' <<<"$stat")))
    done
    echo $total
  }
  cd "$WORK"
  printf 'SEQUENTIAL\n%s;[authentication username=%s password=%s]\n' $CALLEE $CALLEE $CALLEE_PW >users.csv
  printf 'SEQUENTIAL\nu0001;[authentication username=u0001 password=p0001]\n' >caller.csv
  if [ "$AUTH" = 1 ]; then UAC=(-sf "$OLDPWD/scenarios/load_call_uac_auth.xml" -inf caller.csv); else UAC=(-sf "$OLDPWD/scenarios/load_call_uac.xml"); fi
  timeout 30 sipp -sf "$OLDPWD/scenarios/load_register_callee.xml" -inf users.csv -key domain $DOMAIN \
    -key contact_port "$UAS_PORT" -m 1 -timeout 10s -timeout_error -nostdin -t "$T" \
    -i 127.0.0.1 "127.0.0.1:$SERVER_PORT" >register.out 2>&1 || { tail -20 register.out >&2; die "registering $CALLEE failed"; }

  server_memory() {  # "rss_mb pss_mb" summed over every process in the server's group
    local rss=0 pss=0 pid v
    for pid in $(pgrep -g "$SERVER_PGID"); do
      v=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status" 2>/dev/null) && rss=$((rss + ${v:-0}))
      v=$(awk '/^Pss:/ {print $2}' "/proc/$pid/smaps_rollup" 2>/dev/null) && pss=$((pss + ${v:-0}))
    done
    awk -v r="$rss" -v p="$pss" 'BEGIN { printf "%.1f %.1f", r / 1024, p / 1024 }'
  }
  printf '%8s %8s %9s %8s %8s %8s %9s %12s %8s %8s  %s\n' target calls achieved ok failed retrans "retrans%" "cpu_us/call" rss_mb pss_mb verdict
  BEST=0 BEST_CPU=-
  for rate in $RATES; do
    calls=$((rate * DURATION)); [ $calls -le $MAX_CALLS ] || calls=$MAX_CALLS
    stat=$WORK/stat-$rate.csv
    # No -m for the UAS: a stray message (a late ACK as a new call) would count towards
    # it and the UAS would stop before the last calls; it is stopped after the UAC.
    timeout $((DURATION + 120)) "${PIN[@]}" sipp -sf "$OLDPWD/scenarios/load_call_uas.xml" -t "$T" \
      -i 127.0.0.1 -mi 127.0.0.1 -p "$UAS_PORT" -mp "$MP_UAS" -buff_size 8388608 \
      -timeout $((DURATION + 60))s -nostdin -trace_err -error_file "uas-$rate.errors" \
      "127.0.0.1:$SERVER_PORT" >"uas-$rate.out" 2>&1 &
    uas=$!
    before=$(server_ticks)
    rc=0
    timeout $((DURATION + 120)) "${PIN[@]}" sipp "${UAC[@]}" -s $CALLEE -key domain $DOMAIN \
      -t "$T" -r "$rate" -m "$calls" -l $((rate * 4 + 100)) -buff_size 8388608 \
      -i 127.0.0.1 -mi 127.0.0.1 -mp "$MP_UAC" \
      -timeout $((DURATION + 60))s -timeout_error -nostdin -trace_err -error_file "uac-$rate.errors" \
      -trace_stat -stf "$stat" -fd 1 "127.0.0.1:$SERVER_PORT" >"uac-$rate.out" 2>&1 || rc=$?
    after=$(server_ticks)
    mem=$(server_memory)
    # The UAC has seen every call end (or time out): the UAS has nothing left to do.
    kill "$uas" 2>/dev/null || true
    wait "$uas" 2>/dev/null || true
    line=$(python3 - "$stat" "$rate" "$calls" "$((after - before))" "$TCK" "$rc" $mem <<'PY'
import csv, sys
path, rate, calls, ticks, tck, rc = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
rss, pss = float(sys.argv[7]), float(sys.argv[8])
try:
    rows = list(csv.DictReader(open(path), delimiter=";"))
except OSError:
    rows = []
if not rows:
    print(f"{rate:8d} {calls:8d}  no statistics (sipp exit {rc})|FAIL|-"); sys.exit(0)
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
sent = 2 * (ok + failed)  # INVITE and BYE, the requests SIPp retransmits
rpct = 100.0 * retrans / sent if sent else 100.0
passed = (ok + failed > 0 and failed / (ok + failed) < 0.001 and achieved >= 0.97 * rate
          and rpct <= 5.0 and rc in ("0", "1"))  # 1: some call failed, judged by the rate above
print(f"{rate:8d} {calls:8d} {achieved:9.0f} {ok:8.0f} {failed:8.0f} {retrans:8.0f} {rpct:8.2f}% {cpu_us:12.1f} {rss:8.1f} {pss:8.1f}"
      + ("  pass" if passed else "  FAIL") + ("" if rc in ("0", "1") else f" (sipp exit {rc})")
      + f"|{'PASS' if passed else 'FAIL'}|{cpu_us:.1f}")
PY
)
    printf '%s\n' "${line%%|*}"
    verdict=${line#*|}; verdict=${verdict%%|*}
    if [ "$verdict" = PASS ]; then BEST=$rate BEST_CPU=${line##*|}; else
      if [ -s "uac-$rate.errors" ]; then
        echo "  failed calls by cause (UAC's error log):"
        grep -ao "while expecting '[^']*' ([^)]*), received '[^ ]* [^ ]* [^']\{0,20\}\|receive timeout\|Aborting call[^:]*" "uac-$rate.errors" |
          cut -c1-90 | sort | uniq -c | sort -rn | head -5 | sed 's/^/    /' || true
      fi
      break
    fi
  done
  echo
  echo "cpu_us/call: the server's utime+stime (all its processes, ${TCK} Hz ticks) over the step / successful calls;"
  echo "retrans%: SIPp UAC's retransmissions / (2 x calls), INVITE and BYE being the requests it retransmits."
  echo "rss_mb / pss_mb: the server's memory at the end of the step (VmRSS and Pss summed over its processes)."
  echo
  echo "summary ($TARGET, $TRANSPORT, server on cpu $SERVER_CPU, sipp on cpu $SIPP_CPU)"
  printf '  %-40s %s\n' "highest passing rate" "$BEST calls/s"
  printf '  %-40s %s\n' "server CPU per call at that rate" "$BEST_CPU us"
  exit 0
fi

# ---- both servers in one run, and the ratio ----
if [ "$TARGET" = both ]; then
  OUT=$(mktemp -d /tmp/call-load-both.XXXXXX)
  trap 'rm -rf "$OUT"' EXIT
  # ORDER: which server ramps first (the second one may meet what the first left: page
  # cache writeback of the switch's fsynced CDRs, allocator and socket state). ROUNDS:
  # how many ramps of each, in ABBA order (round 2 reverses ORDER, round 3 restores it,
  # ...): this VM's speed drifts by tens of per cent within minutes, so one ramp of each
  # can give a ratio that says more about the minute than the servers. Each round's
  # ratio is of two ramps run back to back; the summary is the ratio of the medians.
  ROUNDS=${ROUNDS:-1}
  order=(${ORDER:-softswitch kamailio})
  [ ${#order[@]} = 2 ] || die "ORDER: softswitch and kamailio, in some order"
  for ((r = 1; r <= ROUNDS; r++)); do
    this=("${order[@]}"); [ $((r % 2)) = 0 ] && this=("${order[1]}" "${order[0]}")
    for server in "${this[@]}"; do
      echo "===== round $r: $server"
      case $server in
        softswitch) TARGET=softswitch RATES=${RATES_SOFTSWITCH:-$RATES} "$0" | tee "$OUT/softswitch.$r" ;;
        # One Kamailio worker: with several, its UDP workers reorder back-to-back
        # messages and calls fail on an unexpected message (bench/README.md); with
        # auth, like the switch.
        kamailio) TARGET=kamailio AUTH=1 CHILDREN=${CHILDREN_BOTH:-1} RATES=${RATES_KAMAILIO:-$RATES} "$0" | tee "$OUT/kamailio.$r" ;;
        *) die "ORDER: softswitch and kamailio, in some order" ;;
      esac
      echo
    done
  done
  echo
  python3 - "$OUT" "$ROUNDS" <<'PY'
import re, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
def figure(path, name):
    try:
        for line in open(path):
            m = re.match(r"^  " + re.escape(name) + r" *([0-9.]+)", line)
            if m:
                return float(m.group(1))
    except OSError:
        pass
    return 0.0
rows = []
for r in range(1, rounds + 1):
    sw = figure(f"{out}/softswitch.{r}", "highest passing rate")
    ka = figure(f"{out}/kamailio.{r}", "highest passing rate")
    swc = figure(f"{out}/softswitch.{r}", "server CPU per call at that rate")
    kac = figure(f"{out}/kamailio.{r}", "server CPU per call at that rate")
    rows.append((sw, ka, swc, kac))
    ratio = f"{sw / ka:.2f}x" if ka else "-"
    cpu = f"{swc / kac:.2f}x" if kac and swc else "-"
    print(f"round {r}: softswitch {sw:.0f} calls/s at {swc} us/call; kamailio {ka:.0f} calls/s at {kac} us/call; ratio {ratio} CPS, {cpu} CPU per call")
msw = statistics.median(r[0] for r in rows)
mka = statistics.median(r[1] for r in rows)
print(f"both, {rounds} round(s): median highest passing rate softswitch {msw:.0f}, kamailio {mka:.0f}")
print(f"  ratio of highest passing CPS (softswitch / kamailio): {msw / mka:.2f}x" if mka else "  ratio: -")
if rounds > 1:
    ratios = [sw / ka for sw, ka, _, _ in rows if ka]
    if ratios:
        print(f"  per-round ratios: min {min(ratios):.2f}x, max {max(ratios):.2f}x")
PY
  exit 0
fi

# ---- driver ----
command -v sipp >/dev/null || die "sipp missing (apt-get install sip-tester)"
command -v python3 >/dev/null || die "python3 missing"
[ "$DURATION" -ge 1 ] && [ "$DURATION" -le 300 ] || die "DURATION must be 1..300 seconds"
[ "$DURATION" -gt 32 ] || echo "call-load: note: ${DURATION}s steps are shorter than 64*T1 = 32 s: not a steady-state figure" >&2
PIN_SERVER=()
if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then PIN_SERVER=(-c "$SERVER_CPU"); fi

WORK=$(mktemp -d /tmp/call-load.XXXXXX)
[ "${KEEP_LOGS:-0}" = 1 ] || trap 'rm -rf "$WORK"' EXIT
echo "call-load: target $TARGET, transport $TRANSPORT, ${DURATION}s a step, rates: $RATES"

case $TARGET in
  kamailio)
    # The hook: start the server, export SERVER_PORT and SERVER_PGID (the process group
    # holding all its processes), run the ramp, stop it.
    command -v kamailio >/dev/null || die "kamailio missing (apt-get install -y kamailio)"
    KAUTH=(); [ "$AUTH" = 1 ] && KAUTH=(-a)
    bench/kamailio.sh "${PIN_SERVER[@]}" "${KAUTH[@]}" -A "CHILDREN=$CHILDREN" -- \
      bash -c 'SERVER_PORT=$KAMAILIO_PORT SERVER_PGID=$KAMAILIO_PID exec "$0" --ramp "$1"' \
      "$PWD/bench/call-load.sh" "$WORK"
    ;;
  softswitch)
    # The switch on a free port, pinned like Kamailio, in its own process group, with
    # the two users configured (MD5: SIPp answers nothing else).
    if [ -z "${SOFTSWITCH_BIN:-}" ]; then
      cargo build --release --locked --bin softswitch >&2
      SOFTSWITCH_BIN=${CARGO_TARGET_DIR:-target}/release/softswitch
    fi
    read -r PORT HPORT < <(python3 "$BENCH/free-ports.py" 10000 20000 0,1 0,1)
    [ -n "$HPORT" ] || die "no free port for the switch"
    # max_transactions: the default (derived from memory), as a user runs it.
    "$BENCH/softswitch-toml.sh" "$WORK" "$PORT" "$HPORT" >"$WORK/softswitch.toml"
    PIN_SW=(); [ ${#PIN_SERVER[@]} -gt 0 ] && PIN_SW=(taskset -c "$SERVER_CPU")
    setsid env -i PATH="$PATH" "${PIN_SW[@]}" "$SOFTSWITCH_BIN" --config "$WORK/softswitch.toml" >"$WORK/switch.out" 2>"$WORK/switch.err" &
    SW=$!
    deadline=$((SECONDS + 30))
    until grep -q '^ready' "$WORK/switch.out" 2>/dev/null; do
      kill -0 $SW 2>/dev/null || { tail -5 "$WORK/switch.err" >&2; die "the switch exited"; }
      [ $SECONDS -lt $deadline ] || die "the switch not ready in 30 s"
      sleep 0.1
    done
    rc=0
    SERVER_PORT=$PORT SERVER_PGID=$SW "$0" --ramp "$WORK" || rc=$?
    echo "CDRs written: $(wc -l <"$WORK/cdr.jsonl" 2>/dev/null || echo 0)"
    kill -KILL $SW 2>/dev/null || true
    wait $SW 2>/dev/null || true
    exit $rc
    ;;
  *) die "TARGET is kamailio, softswitch or both" ;;
esac
