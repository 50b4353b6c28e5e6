#!/usr/bin/env bash
# Real-client compatibility suites for an AMQP 0-9-1 broker (eventbus-broker or RabbitMQ).
#
#   AMQP_URL=amqp://guest:guest@127.0.0.1:5672/ compat/run.sh [all|python|node]
#
# python: pika + pytest, installed from PyPI into compat/python/.venv (pinned in
#         compat/python/requirements.txt).
# node:   amqplib, installed with `npm ci` from compat/node/package-lock.json,
#         run with node's built-in test runner.
#
# Installs are redone only when the pinned files change (a stamp file holds their
# hash). Every suite bounds its own waits; this script additionally bounds each
# suite with `timeout` when it is available. Exits non-zero if anything fails,
# including a missing python3/node/npm: nothing is skipped silently.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
which_suites="${1:-all}"
suite_timeout="${COMPAT_SUITE_TIMEOUT:-300}"

die() {
  echo "compat/run.sh: error: $*" >&2
  exit 2
}

[[ -n "${AMQP_URL:-}" ]] || die "AMQP_URL is not set (e.g. amqp://guest:guest@127.0.0.1:5672/)"
case "$which_suites" in
  all | python | node) ;;
  *) die "unknown suite '$which_suites' (expected all, python or node)" ;;
esac

# Redact the password when echoing the URL.
shown_url="$(printf '%s' "$AMQP_URL" | sed -E 's#(//[^:/@]*):[^@]*@#\1:***@#')"

bounded() {
  if command -v timeout >/dev/null 2>&1; then
    timeout --kill-after=10 "$suite_timeout" "$@"
  else
    "$@"
  fi
}

# Serialise installs into the same directory (two runs at once must not race).
with_lock() {
  local lock="$1"
  shift
  if command -v flock >/dev/null 2>&1; then
    (
      flock -w 600 9 || die "could not lock $lock"
      "$@"
    ) 9>"$lock"
  else
    "$@"
  fi
}

hash_of() {
  sha256sum "$@" | sha256sum | cut -d' ' -f1
}

setup_python() {
  local dir="$here/python"
  local venv="$dir/.venv"
  local stamp="$venv/.compat-stamp"
  local want
  want="$(hash_of "$dir/requirements.txt")-$(python3 --version 2>&1)"
  if [[ -x "$venv/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    return 0
  fi
  echo "compat: creating $venv from requirements.txt"
  rm -rf "$venv"
  python3 -m venv "$venv" || die "python3 -m venv failed (on Debian: apt-get install python3-venv)"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
    -r "$dir/requirements.txt" || die "pip install -r requirements.txt failed"
  printf '%s' "$want" >"$stamp"
}

setup_node() {
  local dir="$here/node"
  local stamp="$dir/node_modules/.compat-stamp"
  local want
  want="$(hash_of "$dir/package-lock.json" "$dir/package.json")-$(node --version)"
  if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    return 0
  fi
  echo "compat: npm ci in $dir"
  (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error) || die "npm ci failed"
  printf '%s' "$want" >"$stamp"
}

run_python() {
  command -v python3 >/dev/null 2>&1 || die "python3 not found on PATH: the pika suite cannot run"
  echo "=== compat python (pika) against $shown_url ==="
  with_lock "$here/python/.setup.lock" setup_python || return $?
  (
    cd "$here/python"
    PYTHONDONTWRITEBYTECODE=1 bounded "$here/python/.venv/bin/python" -m pytest -v --color=no
  )
}

run_node() {
  command -v node >/dev/null 2>&1 || die "node not found on PATH: the amqplib suite cannot run"
  command -v npm >/dev/null 2>&1 || die "npm not found on PATH: the amqplib suite cannot run"
  echo "=== compat node (amqplib) against $shown_url ==="
  with_lock "$here/node/.setup.lock" setup_node || return $?
  (
    cd "$here/node"
    bounded node --test --test-reporter=spec --test-concurrency=1 --test-timeout=15000 test/*.test.js
  )
}

status=0
results=()
for suite in python node; do
  [[ "$which_suites" == all || "$which_suites" == "$suite" ]] || continue
  if "run_$suite"; then
    results+=("$suite: ok")
  else
    rc=$?
    results+=("$suite: FAILED (exit $rc)")
    status=1
  fi
done

echo "=== compat summary ==="
printf '  %s\n' "${results[@]}"
exit "$status"
