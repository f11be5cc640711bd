#!/usr/bin/env bash
# The switch's configuration for the bench scripts, on standard output:
#
#   bench/softswitch-toml.sh WORK PORT HPORT [MAX_TRANSACTIONS] > WORK/softswitch.toml
#
# Without MAX_TRANSACTIONS the switch's default bound applies (derived from memory).
# SIP on udp+tcp 127.0.0.1:PORT, HTTP on 127.0.0.1:HPORT, CDRs and bindings under WORK,
# domain example.test, MD5 only (SIPp answers nothing else), the callers u0001 and u0002
# of the SIPp injection files (password p<digits>; u0002, the callee of every call, with
# call waiting, else its concurrent calls would get 486), warnings only in the log.
set -euo pipefail
[ $# -eq 3 ] || [ $# -eq 4 ] || { echo "usage: $0 WORK PORT HPORT [MAX_TRANSACTIONS]" >&2; exit 2; }
LIMITS=""
[ $# -eq 4 ] && LIMITS="[limits]
max_transactions = $4"
cat <<TOML
[sip]
listen = ["udp:127.0.0.1:$2", "tcp:127.0.0.1:$2"]
domain = "example.test"
[http]
listen = "127.0.0.1:$3"
[billing]
cdr_path = "$1/cdr.jsonl"
[registrar]
store_path = "$1/registrations.journal"
[auth]
algorithms = ["MD5"]
$LIMITS
[log]
level = "warn"
[[users]]
user = "u0001"
password = "p0001"
[[users]]
user = "u0002"
password = "p0002"
call_waiting = true
TOML
