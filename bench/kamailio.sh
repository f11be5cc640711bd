#!/usr/bin/env bash
# Run a command against a Kamailio started from bench/kamailio.cfg on loopback, then
# stop Kamailio. The reference proxy + registrar of bench/README.md.
#
#   bench/kamailio.sh [-p PORT] [-a] [-A DEFINE[=VALUE]]... [-c CPU] [--] COMMAND [ARG]...
#
#   -p PORT   SIP port on 127.0.0.1, UDP and TCP (default: a port free for both now)
#   -a        digest auth on (-A WITH_AUTH): 401 for REGISTER, 407 for local INVITEs
#   -A D[=V]  any other define of kamailio.cfg (FR_INV_TIMER=3000, CHILDREN=2, ...)
#   -c CPU    pin Kamailio (and every process it forks) to CPU with taskset
#
# COMMAND runs with KAMAILIO_PORT, KAMAILIO_PID (the main process; its children are in
# its process group), KAMAILIO_DIR (temp dir: kamailio.log, ctl.sock for kamcmd) and
# KAMAILIO_CTL (unix:... for `kamcmd -s`) in its environment; the script exits with
# COMMAND's status. Kamailio runs in the foreground (-DD -E) from the temp dir, never
# as the system service. Bounded: ready within READY_TIMEOUT seconds (default 10),
# stopped with SIGTERM and, after STOP_TIMEOUT seconds (default 5), SIGKILL to its
# process group. KEEP_DIR=1 keeps the temp dir (its path is printed).
set -euo pipefail
BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

HERE=$(cd "$(dirname "$0")" && pwd)
CFG=$HERE/kamailio.cfg
READY_TIMEOUT=${READY_TIMEOUT:-10}
STOP_TIMEOUT=${STOP_TIMEOUT:-5}
KAMAILIO=${KAMAILIO:-kamailio}

die() { printf 'kamailio.sh: %s\n' "$*" >&2; exit 2; }
command -v "$KAMAILIO" >/dev/null || die "kamailio missing (apt-get install -y kamailio)"
command -v python3 >/dev/null || die "python3 missing"
command -v setsid >/dev/null || die "setsid missing (util-linux)"

PORT= CPU= DEFINES=()
while [ $# -gt 0 ]; do
  case $1 in
    -p) PORT=$2; shift 2 ;;
    -a) DEFINES+=(-A WITH_AUTH); shift ;;
    -A) DEFINES+=(-A "$2"); shift 2 ;;
    -c) CPU=$2; shift 2 ;;
    --) shift; break ;;
    -*) die "unknown option $1" ;;
    *) break ;;
  esac
done
[ $# -gt 0 ] || die "no command given"

if [ -z "$PORT" ]; then
  # A port free for UDP and TCP at once on 127.0.0.1, below the ephemeral range
  # (32768+) so that no outgoing connection takes it before Kamailio binds it.
  PORT=$(python3 "$BENCH/free-ports.py" 10000 20000 0 0)
  [ -n "$PORT" ] || die "no free port found"
fi

DIR=$(mktemp -d /tmp/kamailio-bench.XXXXXX)
PID=
stop() {
  if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then
    kill -TERM "$PID" 2>/dev/null || true
    local deadline=$((SECONDS + STOP_TIMEOUT))
    while kill -0 "$PID" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.1; done
    # Whatever is left of its group (children that did not exit) is ours to end.
    kill -KILL -- "-$PID" 2>/dev/null || true
    wait "$PID" 2>/dev/null || true
  fi
  PID=
  if [ "${KEEP_DIR:-0}" = 1 ]; then echo "kamailio.sh: kept $DIR" >&2; else rm -rf "$DIR"; fi
}
trap stop EXIT
trap 'exit 130' INT TERM

PIN=()
[ -z "$CPU" ] || PIN=(taskset -c "$CPU")
CTL="unix:$DIR/ctl.sock"
# setsid: Kamailio and the children it forks get their own process group (= PID), so
# stop() can end them all without touching anything else.
setsid "${PIN[@]}" "$KAMAILIO" -f "$CFG" -DD -E -w "$DIR" -Y "$DIR" -P "$DIR/kamailio.pid" \
  -m "${SHM_MB:-512}" -M "${PKG_MB:-16}" \
  -l "udp:127.0.0.1:$PORT" -l "tcp:127.0.0.1:$PORT" \
  -A "CTL_SOCK=\"$CTL\"" "${DEFINES[@]}" >"$DIR/kamailio.log" 2>&1 &
PID=$!

# Ready = it answers an OPTIONS to itself over UDP (one attempt every 0.2 s at most).
python3 - "$PORT" "$READY_TIMEOUT" "$PID" <<'PY' || { tail -30 "$DIR/kamailio.log" >&2; die "not ready on 127.0.0.1:$PORT within ${READY_TIMEOUT}s"; }
import os, socket, sys, time
port, limit, pid = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 0))
me = s.getsockname()[1]
s.settimeout(0.2)
deadline = time.monotonic() + limit
n = 0
while time.monotonic() < deadline:
    try:
        os.kill(pid, 0)
    except OSError:
        sys.exit("kamailio exited")
    n += 1
    msg = (f"OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\n"
           f"Via: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bK-ready-{n};rport\r\n"
           "Max-Forwards: 70\r\n"
           f"From: <sip:ready@127.0.0.1:{me}>;tag=ready\r\n"
           f"To: <sip:127.0.0.1:{port}>\r\n"
           f"Call-ID: ready-{os.getpid()}-{n}@127.0.0.1\r\n"
           "CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n")
    s.sendto(msg.encode(), ("127.0.0.1", port))
    try:
        data, _ = s.recvfrom(65535)
    except (socket.timeout, ConnectionRefusedError):
        continue
    if data.startswith(b"SIP/2.0 200"):
        sys.exit(0)
sys.exit("no 200 to OPTIONS")
PY

export KAMAILIO_PORT=$PORT KAMAILIO_PID=$PID KAMAILIO_DIR=$DIR KAMAILIO_CTL=$CTL
rc=0
"$@" || rc=$?
exit $rc
