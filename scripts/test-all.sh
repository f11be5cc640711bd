#!/usr/bin/env bash
# The one command that tests everything, on a fresh Debian machine of the project's kind
# (root, apt reachable): installs what the tests need, then lint, build, tests, and a
# bounded fuzz run. `.ci/run` calls exactly this. Expect about 8-12 minutes on 2 cores
# from a cold cache (build ~2-3 min, tests, fuzz ~3.5 min); the budget is 30.
#
# Knobs: FUZZ_SECONDS=60 (the wire target; 0 skips both fuzz steps), SDP_FUZZ_SECONDS=25
# (the sdp target), CARGO_TARGET_DIR as usual.
set -euo pipefail

cd "$(dirname "$0")/.."
FUZZ_SECONDS=${FUZZ_SECONDS:-60}
SDP_FUZZ_SECONDS=${SDP_FUZZ_SECONDS:-25}
CARGO_FUZZ_VERSION=0.13.2
T0=$SECONDS

section() { printf '\n===== %s  [%ds elapsed] =====\n' "$*" "$((SECONDS - T0))"; }
die() { printf 'test-all: FAIL: %s\n' "$*" >&2; exit 1; }

section "prerequisites"
if ! command -v sipp >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    echo "sipp missing: apt-get install sip-tester"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq sip-tester >/dev/null
  fi
fi
command -v sipp >/dev/null 2>&1 || die "sipp (Debian package sip-tester) is required and could not be installed"
echo "sipp: $(sipp -v 2>&1 | grep -m1 -o 'SIPp v[^ ,]*' || echo present)"
# tests/phone_baresip.rs drives a real phone (baresip, Debian package baresip-core) and
# fails without it, so install it here the same way.
if ! command -v baresip >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    echo "baresip missing: apt-get install baresip-core"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq baresip-core >/dev/null
  fi
fi
command -v baresip >/dev/null 2>&1 || die "baresip (Debian package baresip-core) is required and could not be installed"
echo "baresip: $(dpkg-query -W -f='${Version}' baresip-core 2>/dev/null || echo present)"
# tests/e2e_cdr.rs and actors/tests/billing.rs make CDR writes fail for real (EFBIG) by
# setting and lifting a running process's file size limit with prlimit (util-linux).
if ! command -v prlimit >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    echo "prlimit missing: apt-get install util-linux"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq util-linux >/dev/null
  fi
fi
command -v prlimit >/dev/null 2>&1 || die "prlimit (Debian package util-linux) is required and could not be installed"
# tests/phone_pjsua2.rs drives PJSIP 2.15 through its Python binding (PyPI
# pjsua2-python, a manylinux wheel; the PyPI name "pjsua2" is an old sdist that does not
# build), so install that pinned version here.
PJSUA2_VERSION=2.15.1.post1
command -v python3 >/dev/null 2>&1 || die "python3 is required (tests/pjsua2_register.py)"
if ! python3 -c 'import pjsua2' >/dev/null 2>&1; then
  echo "pjsua2 missing: pip install pjsua2-python==$PJSUA2_VERSION"
  if ! python3 -m pip --version >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-pip >/dev/null
  fi
  # Debian's system Python is "externally managed" (PEP 668); the wheel has no
  # dependencies, so installing it beside apt's packages is safe.
  python3 -m pip install -q "pjsua2-python==$PJSUA2_VERSION" ||
    python3 -m pip install -q --break-system-packages "pjsua2-python==$PJSUA2_VERSION" ||
    die "pip install pjsua2-python==$PJSUA2_VERSION failed"
fi
python3 -c 'import pjsua2' >/dev/null 2>&1 || die "pjsua2 (PyPI pjsua2-python) is required and could not be installed"
echo "pjsua2: $(python3 -c 'import importlib.metadata as m; print(m.version("pjsua2-python"))' 2>/dev/null || echo present)"
cargo --version
cargo fmt --version >/dev/null || die "rustfmt missing"
cargo clippy --version >/dev/null || die "clippy missing"

section "cargo fmt --check"
cargo fmt --all -- --check

section "cargo clippy -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

# Tests run on the release profile: the loopback load, torture and SIPp tests drive the
# real binary (CARGO_BIN_EXE_softswitch) and need realistic speed; a debug build makes
# timer-sensitive tests slow and flaky on 2 cores. Overflow checks and debug assertions
# stay on for both steps (the same flags, so the build is reused), so arithmetic bugs
# still panic in tests instead of wrapping silently.
export CARGO_PROFILE_RELEASE_OVERFLOW_CHECKS=true
export CARGO_PROFILE_RELEASE_DEBUG_ASSERTIONS=true

section "cargo build --release"
cargo build --workspace --release --locked

section "cargo test --workspace --release"
cargo test --workspace --release --locked

unset CARGO_PROFILE_RELEASE_OVERFLOW_CHECKS CARGO_PROFILE_RELEASE_DEBUG_ASSERTIONS

section "fuzz: wire (${FUZZ_SECONDS}s)"
if [ "$FUZZ_SECONDS" = 0 ]; then
  echo "skipped (FUZZ_SECONDS=0)"
else
  if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz $CARGO_FUZZ_VERSION (about 70 s)"
    cargo install --locked --quiet cargo-fuzz --version "$CARGO_FUZZ_VERSION"
  fi
  # --sanitizer none works on the stable toolchain (no -Z flags); our crates forbid
  # unsafe, and cargo-fuzz still builds with debug assertions and overflow checks.
  # fuzz/corpus/wire (ignored by git) keeps what libFuzzer learns; the torture corpus
  # is a read-only seed.
  mkdir -p fuzz/corpus/wire
  seeds=()
  [ -d tests/data/torture ] && seeds+=(tests/data/torture)
  cargo fuzz run --sanitizer none wire fuzz/corpus/wire "${seeds[@]}" -- \
    -max_total_time="$FUZZ_SECONDS" -max_len=65536 -timeout=10 -print_final_stats=1
fi

section "fuzz: sdp (${SDP_FUZZ_SECONDS}s)"
if [ "$FUZZ_SECONDS" = 0 ] || [ "$SDP_FUZZ_SECONDS" = 0 ]; then
  echo "skipped (FUZZ_SECONDS=0 or SDP_FUZZ_SECONDS=0)"
else
  # The same crate as the wire target, so its dependencies are already built. The SDP
  # seeds (tests/data/sdp, the unit tests' bodies) are read-only; fuzz/corpus/sdp learns.
  mkdir -p fuzz/corpus/sdp
  cargo fuzz run --sanitizer none sdp fuzz/corpus/sdp tests/data/sdp -- \
    -max_total_time="$SDP_FUZZ_SECONDS" -max_len=65536 -timeout=10 -print_final_stats=1
fi

section "all passed in $((SECONDS - T0))s"
