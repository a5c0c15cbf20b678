#!/usr/bin/env bash
# Every test of BookStore, from a fresh clone: `tests/run-all.sh`.
#
# It installs what it needs (crates through cargo; the Kubernetes test
# cluster's Go builds and Debian packages through tests/cluster), runs each
# step, stops at the first failure, and ends with a summary line.
# Expensive builds are cached outside the work tree (~/.cache/bookstore).
set -euo pipefail
cd "$(dirname "$0")/.."

passed=0
step() {
  local name=$1
  shift
  printf '\n=== %s\n' "$name"
  local started=$SECONDS
  if ! "$@"; then
    printf '\n=== FAILED: %s\n' "$name"
    printf '%d passed, 1 failed\n' "$passed"
    exit 1
  fi
  printf '=== ok: %s (%ds)\n' "$name" "$((SECONDS - started))"
  passed=$((passed + 1))
}

need_rust() {
  command -v cargo >/dev/null || { echo "cargo is missing: install Rust (rustup) first" >&2; return 1; }
  rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy rustfmt
}

# The console's browser test drives Debian's Chromium through chromedriver.
need_browser() {
  if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then return 0; fi
  command -v apt-get >/dev/null || { echo "chromium and chromedriver are missing and there is no apt-get to install them" >&2; return 1; }
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver >/dev/null \
    || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver; }
}

step "toolchain" need_rust
step "browser for the console test (Debian chromium, chromium-driver)" need_browser
step "format (cargo fmt --check)" cargo fmt --all -- --check
step "lint (cargo clippy -D warnings)" cargo clippy --workspace --all-targets --locked -- -D warnings
# The release binaries first: the end-to-end test packs them into images.
step "release build" cargo build --release --locked --bin bookstore --bin bookstore-operator
# The Dockerfile's build stage from exactly its COPY set; reuses that build.
step "Dockerfile: the build stage's COPY set and RUN, without Docker (tests/dockerfile/check.sh)" tests/dockerfile/check.sh
step "unit, service, system, chaos, operator (API server) and end-to-end (Kubernetes) tests (cargo test)" cargo test --workspace --locked
step "alert rules: promtool check and unit tests, runbooks (tests/alerts/check.sh)" tests/alerts/check.sh
step "real single-node Kubernetes cluster (tests/cluster/smoke.sh)" tests/cluster/smoke.sh
step "Helm chart: lint, template, schema, dashboard, server dry run, RBAC (tests/chart/check.sh)" tests/chart/check.sh

printf '\nAll steps passed.\n%d passed, 0 failed\n' "$passed"
