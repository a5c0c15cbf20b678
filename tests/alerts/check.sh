#!/usr/bin/env bash
# Checks of BookStore's Prometheus rules (charts/bookstore/rules/bookstore.rules.yaml):
#
#   tests/alerts/check.sh
#
#  1. `promtool check rules`: every rule parses;
#  2. `promtool test rules tests/alerts/bookstore.test.yaml`: the unit tests pass;
#  3. every alert has a summary, a description, a runbook_url naming a section of
#     docs/runbooks.md, a test where it fires and one where it does not;
#  4. the tests can fail: with a rule's threshold changed they do.
# promtool is the one of the test cluster's pinned Prometheus build
# (tests/cluster/cluster.sh build prometheus, cached). Any failure exits non-zero.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
TARGET="${BOOKSTORE_TARGET_DIR:-$REPO/target}"
OUT="$TARGET/alerts-check"
RULES="$REPO/charts/bookstore/rules/bookstore.rules.yaml"
TESTS="$HERE/bookstore.test.yaml"
RUNBOOKS="$REPO/docs/runbooks.md"

log() { printf '[alerts %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
fail() { printf '[alerts] FAIL: %s\n' "$*" >&2; exit 1; }
checks=0
ok() { checks=$((checks + 1)); log "ok: $*"; }

mkdir -p "$OUT"
command -v yq >/dev/null || fail "yq is missing (apt-get install yq)"
"$REPO/tests/cluster/cluster.sh" build prometheus >"$OUT/build.log" 2>&1 \
  || { cat "$OUT/build.log" >&2; fail "building promtool failed"; }
PROMTOOL="$TARGET/cluster/bin/promtool"

"$PROMTOOL" check rules "$RULES" >"$OUT/check.log" 2>&1 || { cat "$OUT/check.log" >&2; fail "promtool check rules"; }
ok "promtool check rules: $(grep -o '[0-9]* rules found' "$OUT/check.log")"

"$PROMTOOL" test rules "$TESTS" >"$OUT/test.log" 2>&1 || { cat "$OUT/test.log" >&2; fail "promtool test rules"; }
ok "promtool test rules $(basename "$TESTS")"

alerts=$(yq -r '.groups[].rules[] | select(.alert) | .alert' "$RULES")
[ "$(echo "$alerts" | wc -l)" -ge 8 ] || fail "only $(echo "$alerts" | wc -l) alerts in $RULES"
for alert in $alerts; do
  a=$(yq -c --arg a "$alert" '.groups[].rules[] | select(.alert == $a)' "$RULES")
  for k in summary description runbook_url; do
    [ -n "$(echo "$a" | jq -r ".annotations.$k // empty")" ] || fail "$alert has no $k"
  done
  anchor=$(echo "$a" | jq -r '.annotations.runbook_url' | sed -n 's|^docs/runbooks.md#||p')
  [ -n "$anchor" ] || fail "$alert: runbook_url is not docs/runbooks.md#<section>"
  # GitHub's anchor of a heading: lower case, spaces to dashes, punctuation dropped.
  grep -E '^#+ ' "$RUNBOOKS" | sed -E 's/^#+ //' | tr 'A-Z ' 'a-z-' | tr -cd 'a-z0-9_\n-' | grep -qx "$anchor" \
    || fail "$alert: docs/runbooks.md has no section #$anchor"
  fires=$(yq --arg a "$alert" '[.tests[].alert_rule_test[]? | select(.alertname == $a and (.exp_alerts | length) > 0)] | length' "$TESTS")
  quiet=$(yq --arg a "$alert" '[.tests[].alert_rule_test[]? | select(.alertname == $a and (.exp_alerts | length) == 0)] | length' "$TESTS")
  [ "$fires" -gt 0 ] || fail "$alert: no test where it fires"
  [ "$quiet" -gt 0 ] || fail "$alert: no test where it does not fire"
done
ok "all $(echo "$alerts" | wc -w) alerts: summary, description, a runbook section, tests firing and not firing"

# The tests can fail: a tier whose primary is -1 no longer counts as without one.
mkdir -p "$OUT/mutant/tests/alerts" "$OUT/mutant/charts/bookstore/rules"
sed 's/bookstore_coordinator_primary < 0/bookstore_coordinator_primary < -1/' "$RULES" >"$OUT/mutant/charts/bookstore/rules/bookstore.rules.yaml"
cmp -s "$RULES" "$OUT/mutant/charts/bookstore/rules/bookstore.rules.yaml" && fail "the mutation changed nothing"
cp "$TESTS" "$OUT/mutant/tests/alerts/"
if "$PROMTOOL" test rules "$OUT/mutant/tests/alerts/$(basename "$TESTS")" >"$OUT/mutant.log" 2>&1; then
  fail "the tests pass with a broken BookStoreTierWithoutPrimary"
fi
grep -q 'BookStoreTierWithoutPrimary' "$OUT/mutant.log" || { cat "$OUT/mutant.log" >&2; fail "the mutant failed for another reason"; }
ok "with a broken rule the tests fail"

log "all $checks checks passed"
