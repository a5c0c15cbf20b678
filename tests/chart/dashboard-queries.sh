#!/usr/bin/env bash
# Prints every PromQL query of the Grafana dashboard
# (charts/bookstore/dashboards/bookstore.json, the one place they are written),
# one a line, with the dashboard's variables replaced:
#
#   tests/chart/dashboard-queries.sh [--namespace REGEX] [--store REGEX] [--rate-interval DURATION] [--titles]
#
# --namespace and --store default to `.*` (every namespace and store),
# --rate-interval (Grafana's $__rate_interval) to 1m. --titles prefixes each
# query with its panel's title and a tab. The queries expect the `namespace`
# and `pod` target labels that prometheus-operator's PodMonitor adds (a plain
# Prometheus must relabel __meta_kubernetes_namespace and
# __meta_kubernetes_pod_name to them).
set -euo pipefail
DASHBOARD="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/charts/bookstore/dashboards/bookstore.json"

namespace='.*' store='.*' interval=1m titles=false
while [ $# -gt 0 ]; do
  case $1 in
    --namespace) namespace=$2; shift 2 ;;
    --store) store=$2; shift 2 ;;
    --rate-interval) interval=$2; shift 2 ;;
    --titles) titles=true; shift ;;
    *) echo "usage: $0 [--namespace REGEX] [--store REGEX] [--rate-interval DURATION] [--titles]" >&2; exit 2 ;;
  esac
done
command -v jq >/dev/null || { echo "dashboard-queries: jq is missing" >&2; exit 1; }

jq -r --arg ns "$namespace" --arg store "$store" --arg ri "$interval" --argjson titles "$titles" '
  [.panels[] | select(.type != "row") | .title as $t | .targets[] | {title: $t, expr}]
  | if length == 0 then error("the dashboard has no queries") else .[] end
  | (.expr
     | gsub("\\$__rate_interval"; $ri)
     | gsub("\\$namespace"; $ns)
     | gsub("\\$store"; $store)) as $q
  | if $titles then "\(.title)\t\($q)" else $q end
' "$DASHBOARD"
