#!/usr/bin/env bash
# Checks of the Helm chart charts/bookstore, from a fresh clone:
#
#   tests/chart/check.sh
#
#  1. the chart's CRD is the top-level crds/bookstore.yaml (also inside `helm package`);
#  2. `helm lint --strict` with the default values and with tests/chart/all-options.yaml;
#  3. `helm template` with both, and what the renders must hold (security settings,
#     probes, the downward API, the coordinator URL naming the chart's own Service,
#     the optional objects, the dashboard ConfigMap = dashboards/bookstore.json, the
#     PrometheusRule = rules/bookstore.rules.yaml; watchNamespaces: a Role per
#     namespace with the ClusterRole's rules, none cluster-wide, and the
#     operator told which namespaces to watch);
#  4. values.schema.json rejects wrong types and unknown keys;
#  5. the Grafana dashboard: every query parses (promtool, from the test cluster's
#     pinned Prometheus build) and names metrics and label values
#     that the code exports;
#  6. k8s/kind-config.yaml decodes strictly into kind's own config types
#     (sigs.k8s.io/kind, pinned in tests/chart/kindconfig/go.mod);
#  7. the real API server (tests/cluster) accepts both renders and the sample
#     k8s/bookstore.yaml with `kubectl apply --dry-run=server` (prometheus-operator's
#     CRDs come from the Go module proxy, pinned below, cached under
#     ~/.cache/bookstore), as does `helm install --dry-run=server`, without a Pod
#     Security "restricted" warning; and it rejects a broken render;
#  8. the RBAC, applied for real, lets the operator's ServiceAccount make every call
#     operator/src makes (through impersonation, or with its own token) and no more;
#     with watchNamespaces, only in those namespaces.
#
# It uses a running test cluster as it is (never stops it); if none runs it starts
# `tests/cluster/cluster.sh up api-only` and stops it afterwards. Everything it
# creates lives in the namespaces bookstore-chart-check{,-stores} and the cluster
# objects named bscheck-operator, removed at the end. Any failure exits non-zero.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
TARGET="${BOOKSTORE_TARGET_DIR:-$REPO/target}"
BIN="$TARGET/cluster/bin"
KCFG="$TARGET/cluster/kubeconfig"
OUT="$TARGET/chart-check"
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/bookstore"
CHART="$REPO/charts/bookstore"
ALL_OPTIONS="$HERE/all-options.yaml"
DASHBOARD="$CHART/dashboards/bookstore.json"

# prometheus-operator release whose CRDs (ServiceMonitor, PodMonitor, PrometheusRule) the dry run
# installs; a Go module, so the Go module proxy serves it.
PROM_OPERATOR_MODULE=github.com/prometheus-operator/prometheus-operator
PROM_OPERATOR_VERSION=v0.85.0

RELEASE=bscheck          # fullname bscheck-operator: never the name of a real install
NS=bookstore-chart-check
NS_STORES=bookstore-chart-check-stores
SA="system:serviceaccount:$NS:$RELEASE-operator"

log() { printf '[chart %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
fail() { printf '[chart] FAIL: %s\n' "$*" >&2; exit 1; }
checks=0
ok() { checks=$((checks + 1)); log "ok: $*"; }

# ---------------------------------------------------------------- tools

need_packages() { # need_packages PACKAGE...: apt-get install the missing ones
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing ${missing[*]}"
  timeout 900 apt-get install -y -q --no-install-recommends "${missing[@]}" >"$OUT/apt.log" 2>&1 \
    || { timeout 600 apt-get update -q >>"$OUT/apt.log" 2>&1 || true
         timeout 900 apt-get install -y -q --no-install-recommends "${missing[@]}" >>"$OUT/apt.log" 2>&1; } \
    || { tail -20 "$OUT/apt.log" >&2; fail "apt-get install ${missing[*]} failed"; }
}

# promtool from the test cluster's Prometheus build (tests/cluster/versions.env,
# cached like the other components). Prints its path.
promtool_path() {
  "$REPO/tests/cluster/cluster.sh" build prometheus >"$OUT/promtool-build.log" 2>&1 \
    || { cat "$OUT/promtool-build.log" >&2; fail "building promtool (tests/cluster/cluster.sh build prometheus) failed"; }
  "$BIN/promtool" --version >/dev/null 2>&1 || fail "$BIN/promtool does not run"
  echo "$BIN/promtool"
}

# The CRD directory of the pinned prometheus-operator module. Prints its path.
prometheus_operator_crds() {
  local modcache="$CACHE/gomod-prometheus-operator" dir
  command -v go >/dev/null || fail "go is missing (needed for the prometheus-operator CRDs)"
  dir=$(cd "$OUT" && GOMODCACHE="$modcache" GOFLAGS=-modcacherw GO111MODULE=on \
          timeout 600 go mod download -json "$PROM_OPERATOR_MODULE@$PROM_OPERATOR_VERSION" | jq -r '.Dir // empty') \
    || fail "go mod download $PROM_OPERATOR_MODULE@$PROM_OPERATOR_VERSION failed"
  [ -n "$dir" ] || fail "go mod download gave no module directory"
  dir="$dir/example/prometheus-operator-crd"
  for f in servicemonitors podmonitors prometheusrules; do
    [ -s "$dir/monitoring.coreos.com_$f.yaml" ] || fail "no $f CRD in $dir"
  done
  echo "$dir"
}

mkdir -p "$OUT"
need_packages jq yq curl
if [ ! -x "$BIN/helm" ] || [ ! -x "$BIN/kubectl" ]; then
  log "helm/kubectl not built yet: tests/cluster/cluster.sh build"
  "$REPO/tests/cluster/cluster.sh" build
fi
helm() { "$BIN/helm" "$@"; }
kc() { "$BIN/kubectl" --kubeconfig "$KCFG" "$@"; }
log "$(helm version --short), kubectl $("$BIN/kubectl" version --client -o json | jq -r .clientVersion.gitVersion)"

# yq over every document of a render: `docs FILE FILTER` (the documents as an array).
docs() { yq -s "[.[] | select(. != null)] | $2" "$1"; }
# `expect WHAT JQ-BOOLEAN FILE`: fails unless the filter is true on the documents.
expect() {
  local what=$1 filter=$2 file=$3
  [ "$(docs "$file" "$filter")" = true ] || fail "$what (filter: $filter, render: $file)"
  ok "$what"
}

# ---------------------------------------------------------------- 1. the CRD

crd_link="$CHART/crds/bookstore.yaml"
[ -e "$crd_link" ] || fail "$crd_link is missing"
cmp -s "$crd_link" "$REPO/crds/bookstore.yaml" || fail "$crd_link differs from crds/bookstore.yaml"
ok "the chart's CRD is crds/bookstore.yaml"
rm -rf "$OUT/package"; mkdir -p "$OUT/package"
helm package "$CHART" -d "$OUT/package" >/dev/null || fail "helm package failed"
tar -xzf "$OUT"/package/bookstore-*.tgz -C "$OUT/package" bookstore/crds/bookstore.yaml \
  || fail "the packaged chart has no crds/bookstore.yaml"
[ ! -L "$OUT/package/bookstore/crds/bookstore.yaml" ] || fail "the packaged CRD is a symlink"
cmp -s "$OUT/package/bookstore/crds/bookstore.yaml" "$REPO/crds/bookstore.yaml" \
  || fail "the packaged CRD differs from crds/bookstore.yaml"
ok "helm package holds crds/bookstore.yaml itself"

# ---------------------------------------------------------------- 2. lint

helm lint --strict "$CHART" >"$OUT/lint-default.log" 2>&1 || { cat "$OUT/lint-default.log" >&2; fail "helm lint --strict (defaults)"; }
ok "helm lint --strict (defaults)"
helm lint --strict "$CHART" -f "$ALL_OPTIONS" >"$OUT/lint-all.log" 2>&1 || { cat "$OUT/lint-all.log" >&2; fail "helm lint --strict (all options)"; }
ok "helm lint --strict (all options)"

# ---------------------------------------------------------------- 3. template

DEFAULT="$OUT/default.yaml" ALL="$OUT/all-options.yaml"
helm template "$RELEASE" "$CHART" -n "$NS" --include-crds >"$DEFAULT" || fail "helm template (defaults)"
helm template "$RELEASE" "$CHART" -n "$NS" --include-crds -f "$ALL_OPTIONS" >"$ALL" || fail "helm template (all options)"
ok "helm template (defaults, all options): $DEFAULT, $ALL"

expect "default render: exactly the operator's objects" \
  '[.[].kind] | sort == ["ClusterRole","ClusterRoleBinding","CustomResourceDefinition","Deployment","Role","RoleBinding","Service","ServiceAccount"]' "$DEFAULT"
expect "all options: ServiceMonitor, PodMonitor, PrometheusRule, dashboard ConfigMap, 3 NetworkPolicies" \
  '[.[].kind] | (map(select(. == "NetworkPolicy")) | length == 3) and (index("ServiceMonitor") != null) and (index("PodMonitor") != null) and (index("PrometheusRule") != null) and (index("ConfigMap") != null)' "$ALL"

for render in "$DEFAULT" "$ALL"; do
  name=$(basename "$render" .yaml)
  dep='(.[] | select(.kind == "Deployment"))'
  c="$dep.spec.template.spec.containers[0]"
  expect "$name: the operator runs non-root with a read-only root filesystem, no capabilities, RuntimeDefault seccomp" \
    "($dep.spec.template.spec.securityContext | .runAsNonRoot == true and .seccompProfile.type == \"RuntimeDefault\")
     and ($c.securityContext | .runAsNonRoot == true and .readOnlyRootFilesystem == true
          and .allowPrivilegeEscalation == false and .capabilities.drop == [\"ALL\"] and .seccompProfile.type == \"RuntimeDefault\")" "$render"
  expect "$name: resource requests; liveness and readiness /healthz on the metrics port (8080): a standby is Ready too" \
    "($c.resources.requests | has(\"cpu\") and has(\"memory\"))
     and $c.livenessProbe.httpGet.path == \"/healthz\" and $c.readinessProbe.httpGet.path == \"/healthz\"
     and $c.livenessProbe.httpGet.port == \"metrics\" and $c.readinessProbe.httpGet.port == \"metrics\"
     and ($c.ports | map({(.name): .containerPort}) | add) == {\"metrics\": 8080, \"coordinator\": 9100}" "$render"
  expect "$name: POD_NAMESPACE and POD_NAME from the downward API" \
    "($c.env | map({(.name): .valueFrom.fieldRef.fieldPath}) | add) as \$e
     | \$e.POD_NAMESPACE == \"metadata.namespace\" and \$e.POD_NAME == \"metadata.name\"
       and \$e.BOOKSTORE_OPERATOR_OWN_POD == \"metadata.name\"" "$render"
  expect "$name: BOOKSTORE_OPERATOR_URL is the chart's Service, coordinator port" \
    "(.[] | select(.kind == \"Service\")) as \$s
     | ($c.env | map(select(.name == \"BOOKSTORE_OPERATOR_URL\"))[0].value)
       == \"http://\(\$s.metadata.name).\(\$s.metadata.namespace).svc:\(\$s.spec.ports[] | select(.name == \"coordinator\") | .port)\"" "$render"
  expect "$name: the Service selects the operator pod the leader labelled, targets its named ports, and the ServiceAccount is theirs" \
    "(.[] | select(.kind == \"Service\")) as \$s | ($dep.spec.template.metadata.labels) as \$l
     | (\$s.spec.selector[\"mybookstore.dev/operator-leader\"] == \"true\")
     and (\$s.spec.selector | del(.[\"mybookstore.dev/operator-leader\"]) | to_entries | length > 0 and all(\$l[.key] == .value))
     and ([\$s.spec.ports[].targetPort] | sort == [\"coordinator\", \"metrics\"])
     and $dep.spec.template.spec.serviceAccountName == (.[] | select(.kind == \"ServiceAccount\") | .metadata.name)
     and (\$l[\"app.kubernetes.io/name\"] != \"bookstore\")" "$render"
done
expect "defaults: image localhost/bookstore-operator:dev, IfNotPresent, 2 replicas, RollingUpdate one pod at a time" \
  '(.[] | select(.kind == "Deployment")) | .spec.replicas == 2 and .spec.strategy.type == "RollingUpdate"
   and .spec.strategy.rollingUpdate.maxUnavailable == 0
   and .spec.template.spec.containers[0].image == "localhost/bookstore-operator:dev"
   and .spec.template.spec.containers[0].imagePullPolicy == "IfNotPresent"' "$DEFAULT"
# With the release name of the README, the Service has the name the operator
# assumes when BOOKSTORE_OPERATOR_URL is unset.
helm template bookstore "$CHART" -n default >"$OUT/release-bookstore.yaml" || fail "helm template bookstore"
expect "release 'bookstore': the Service is bookstore-operator (the operator's default URL)" \
  '(.[] | select(.kind == "Deployment") | .spec.template.spec.containers[0].env[] | select(.name == "BOOKSTORE_OPERATOR_URL") | .value)
   == "http://bookstore-operator.default.svc:9100"' "$OUT/release-bookstore.yaml"
docs "$ALL" '.[] | select(.kind == "ConfigMap" and .metadata.labels.grafana_dashboard == "1") | .data["bookstore.json"]' \
  | jq -r . >"$OUT/dashboard-configmap.json"
jq -e --slurpfile want "$DASHBOARD" '. == $want[0]' "$OUT/dashboard-configmap.json" >/dev/null \
  || fail "the dashboard ConfigMap (labelled grafana_dashboard=1) does not hold dashboards/bookstore.json"
ok "all options: the dashboard ConfigMap, labelled for the sidecar, holds dashboards/bookstore.json"
expect "all options: the monitors carry the extra labels and scrape /metrics on the named ports" \
  '[.[] | select(.kind == "ServiceMonitor" or .kind == "PodMonitor")] | length == 2 and all(.metadata.labels.release == "kube-prometheus-stack")
   and (.[] | select(.kind == "ServiceMonitor") | .spec.endpoints[0].port == "metrics")
   and (.[] | select(.kind == "PodMonitor") | .spec.podMetricsEndpoints[0].port == "http" and .spec.selector.matchLabels["app.kubernetes.io/name"] == "bookstore")' "$ALL"
docs "$ALL" '.[] | select(.kind == "PrometheusRule") | .spec' >"$OUT/prometheusrule-spec.yaml"
yq -s '.[0]' "$CHART/rules/bookstore.rules.yaml" \
  | sed 's|docs/runbooks.md#|https://runbooks.example.com/bookstore#|' >"$OUT/prometheusrule-want.yaml"
[ "$(yq -S . "$OUT/prometheusrule-spec.yaml")" = "$(yq -S . "$OUT/prometheusrule-want.yaml")" ] \
  || fail "the PrometheusRule's spec is not rules/bookstore.rules.yaml (with runbookBaseUrl)"
expect "all options: the PrometheusRule carries the extra labels" \
  '.[] | select(.kind == "PrometheusRule") | .metadata.labels.release == "kube-prometheus-stack"' "$ALL"
ok "all options: the PrometheusRule holds rules/bookstore.rules.yaml, runbook URLs under runbookBaseUrl"
# shellcheck disable=SC2016 # $p is a jq variable
expect "all options: peer port 9000 only from store pods and the operator; 8000 open; 9100 only from store pods" \
  '[.[] | select(.kind == "NetworkPolicy")] as $p
   | ($p | map(select(.metadata.name | endswith("-store-peer"))) | length == 2 and all(
       .spec.podSelector.matchLabels["app.kubernetes.io/name"] == "bookstore"
       and (.spec.ingress | map(select(.ports[0].port == 8000)) | length == 1 and (.[0].from == null))
       and (.spec.ingress | map(select(.ports[0].port == 9000)) | length == 1 and (.[0].from | length == 2))))
   and ($p | map(select(.metadata.name | endswith("-store-peer") | not))[0].spec.ingress
        | map(select(.ports[0].port == 9100))[0].from[0].podSelector.matchLabels["app.kubernetes.io/name"] == "bookstore")' "$ALL"

# Every ClusterRole/Role rule says why, in a comment right above it.
awk '/^[[:space:]]*- apiGroups:/ { if (prev !~ /^[[:space:]]*#/) { print FILENAME ":" NR ": rule without a comment"; bad = 1 } }
     NF { prev = $0 } END { exit bad }' "$CHART/templates/rbac.yaml" || fail "every RBAC rule needs a comment saying why"
ok "every RBAC rule has a comment"

# The namespace-scoped install: Roles in the watched namespaces, nothing cluster-wide.
NAMESPACED="$OUT/namespaced.yaml"
helm template "$RELEASE" "$CHART" -n "$NS" --set "watchNamespaces={$NS_STORES}" >"$NAMESPACED" || fail "helm template (watchNamespaces)"
expect "watchNamespaces: no ClusterRole or ClusterRoleBinding; a Role and RoleBinding in the watched namespace" \
  "([.[].kind] | index(\"ClusterRole\") == null and index(\"ClusterRoleBinding\") == null)
   and ([.[] | select(.kind == \"Role\" and .metadata.namespace == \"$NS_STORES\")] | length == 1)
   and ([.[] | select(.kind == \"RoleBinding\" and .metadata.namespace == \"$NS_STORES\")][0]
        | .roleRef.kind == \"Role\" and .subjects[0].namespace == \"$NS\" and .subjects[0].name == \"$RELEASE-operator\")" "$NAMESPACED"
docs "$DEFAULT" '.[] | select(.kind == "ClusterRole") | .rules' >"$OUT/cluster-rules.json"
docs "$NAMESPACED" ".[] | select(.kind == \"Role\" and .metadata.namespace == \"$NS_STORES\") | .rules" >"$OUT/namespace-rules.json"
jq -e --slurpfile want "$OUT/cluster-rules.json" '. == $want[0] and length > 5' "$OUT/namespace-rules.json" >/dev/null \
  || fail "the watched namespace's Role does not hold the ClusterRole's rules"
ok "watchNamespaces: the Role holds exactly the ClusterRole's rules"
expect "watchNamespaces: the operator gets BOOKSTORE_WATCH_NAMESPACES; by default it does not" \
  "(.[] | select(.kind == \"Deployment\") | .spec.template.spec.containers[0].env | map(select(.name == \"BOOKSTORE_WATCH_NAMESPACES\"))[0].value) == \"$NS_STORES\"" "$NAMESPACED"
expect "defaults: no BOOKSTORE_WATCH_NAMESPACES (every namespace)" \
  '(.[] | select(.kind == "Deployment") | .spec.template.spec.containers[0].env | map(select(.name == "BOOKSTORE_WATCH_NAMESPACES")) | length) == 0' "$DEFAULT"

# ---------------------------------------------------------------- 4. the schema

reject() { # reject WHAT KEY HELM-ARGS...: the schema must refuse these values
  local what=$1 key=$2; shift 2
  local log="$OUT/reject.log"
  if helm template "$RELEASE" "$CHART" "$@" >"$log" 2>&1; then
    fail "the schema accepted $what ($*)"
  fi
  if ! grep -qi "schema" "$log" || ! grep -q "$key" "$log"; then
    cat "$log" >&2; fail "rejecting $what failed for another reason than the schema"
  fi
  ok "the schema rejects $what"
}
reject "replicaCount=abc" replicaCount --set replicaCount=abc
reject "replicaCount=-1" replicaCount --set replicaCount=-1
reject "image.pullPolicy=Sometimes" pullPolicy --set image.pullPolicy=Sometimes
reject "service.coordinatorPort=high" coordinatorPort --set service.coordinatorPort=high
reject "serviceMonitor.enabled=maybe" enabled --set serviceMonitor.enabled=maybe
reject "resources.requests.cpu=lots" cpu --set resources.requests.cpu=lots
reject "an unknown key (replicas)" replicas --set replicas=2
reject "logFormat=xml" logFormat --set logFormat=xml
reject "watchNamespaces={Not_A_Namespace}" watchNamespaces --set 'watchNamespaces={Not_A_Namespace}'

# ---------------------------------------------------------------- 5. the dashboard

jq -e '.uid == "bookstore" and ([.panels[] | select(.type != "row") | (.targets | length > 0) and all(.targets[]; (.expr | length) > 0)] | all)' \
  "$DASHBOARD" >/dev/null || fail "the dashboard needs a uid and a query in every panel"
"$HERE/dashboard-queries.sh" >"$OUT/queries.txt"
nq=$(wc -l <"$OUT/queries.txt")
[ "$nq" -ge 20 ] || fail "only $nq dashboard queries"
PROMTOOL=$(promtool_path)
as_rules() { # the queries of stdin as recording rules, for promtool
  printf 'groups:\n  - name: dashboard\n    rules:\n'
  jq -R -r '"    - record: bookstore:dashboard_query\n      expr: \(@json)"'
}
as_rules <"$OUT/queries.txt" >"$OUT/queries.rules.yaml"
"$PROMTOOL" check rules "$OUT/queries.rules.yaml" >"$OUT/promtool.log" 2>&1 \
  || { cat "$OUT/promtool.log" >&2; fail "a dashboard query does not parse"; }
echo 'sum by (le (rate(bookstore_http_request_duration_seconds_bucket[1m]))' | as_rules >"$OUT/broken.rules.yaml"
if "$PROMTOOL" check rules "$OUT/broken.rules.yaml" >/dev/null 2>&1; then fail "promtool accepted a broken query"; fi
ok "all $nq dashboard queries parse (promtool; it rejects a broken one)"
# Metric names and exact label values must be ones the code exports.
sources=("$REPO/services" "$REPO/operator/src")
unknown=""
while read -r metric; do
  base=$metric
  case $metric in *_bucket|*_count|*_sum) base=${metric%_*} ;; esac
  grep -rqF --include='*.rs' "\"$base\"" "${sources[@]}" || unknown+=" $metric"
done < <(grep -o 'bookstore_[a-z_]*' "$OUT/queries.txt" | sort -u)
[ -z "$unknown" ] || fail "the dashboard queries metrics no code exports:$unknown"
while read -r value; do
  grep -rqF --include='*.rs' "$value" "${sources[@]}" || unknown+=" $value"
done < <(grep -oE '\b(service|route|operation|from|to|kind|result)="[^"]*"' "$OUT/queries.txt" | cut -d= -f2- | sort -u)
[ -z "$unknown" ] || fail "the dashboard matches label values no code sets:$unknown"
ok "every metric and label value the dashboard queries is exported by the code"

# ---------------------------------------------------------------- 6. the kind config

kindconfig() { (cd "$HERE/kindconfig" && GOTOOLCHAIN=local GOFLAGS=-mod=readonly timeout 600 go run . "$@"); }
kindconfig "$REPO/k8s/kind-config.yaml" >"$OUT/kindconfig.log" 2>&1 \
  || { cat "$OUT/kindconfig.log" >&2; fail "k8s/kind-config.yaml is not a kind v1alpha4 Cluster"; }
printf 'kind: Cluster\napiVersion: kind.x-k8s.io/v1alpha4\nnodes:\n  - rol: worker\n' >"$OUT/bad-kind-config.yaml"
if kindconfig "$OUT/bad-kind-config.yaml" >/dev/null 2>&1; then fail "the kind config check accepted a misspelt field"; fi
ok "k8s/kind-config.yaml is a kind v1alpha4 Cluster (kind's own types, strict; a misspelt field fails)"

# ---------------------------------------------------------------- 7. the real API server

started_cluster=0
cleanup() {
  local rc=$?
  if [ -f "$KCFG" ] && kc get --raw /readyz >/dev/null 2>&1; then
    kc delete namespace "$NS" "$NS_STORES" --ignore-not-found --wait=false >/dev/null 2>&1 || true
    kc delete clusterrolebinding,clusterrole "$RELEASE-operator" --ignore-not-found >/dev/null 2>&1 || true
  fi
  if [ $started_cluster = 1 ]; then
    log "stopping the api-only cluster this check started"
    "$REPO/tests/cluster/cluster.sh" down >"$OUT/cluster-down.log" 2>&1 || { tail -20 "$OUT/cluster-down.log" >&2; log "cluster.sh down failed"; rc=1; }
  fi
  if [ $rc -eq 0 ]; then log "PASS: $checks checks"; else log "FAIL (rc=$rc) after $checks checks"; fi
  exit $rc
}
trap cleanup EXIT

mode=$("$REPO/tests/cluster/cluster.sh" status 2>/dev/null | awk '/^mode:/ {print $2}')
if [ "${mode:-down}" = down ]; then
  log "no test cluster runs: starting one (tests/cluster/cluster.sh up api-only)"
  started_cluster=1
  "$REPO/tests/cluster/cluster.sh" up api-only >"$OUT/cluster-up.log" 2>&1 \
    || { tail -30 "$OUT/cluster-up.log" >&2; fail "cluster.sh up api-only failed (log: $OUT/cluster-up.log)"; }
else
  log "using the running test cluster ($mode) as it is"
fi
kc get --raw /readyz >/dev/null || fail "the API server at $KCFG is not ready"

for n in "$NS" "$NS_STORES"; do
  # A namespace left terminating by an earlier run must be gone first.
  if [ "$(kc get namespace "$n" -o jsonpath='{.status.phase}' 2>/dev/null)" = Terminating ]; then
    kc wait --for=delete "namespace/$n" --timeout=180s >/dev/null || fail "namespace $n is still terminating"
  fi
  kc get namespace "$n" >/dev/null 2>&1 || kc create namespace "$n" >/dev/null || fail "cannot create namespace $n"
  # Pod Security admission warns about any pod template short of "restricted".
  kc label --overwrite namespace "$n" pod-security.kubernetes.io/warn=restricted >/dev/null || fail "cannot label namespace $n"
done
CRDS=$(prometheus_operator_crds)
# The kinds a dry run is asked to create must exist: install the CRDs for real,
# those that are missing (a shared cluster's own versions are left alone).
for crd in "$CRDS/monitoring.coreos.com_servicemonitors.yaml" "$CRDS/monitoring.coreos.com_podmonitors.yaml" \
           "$CRDS/monitoring.coreos.com_prometheusrules.yaml" "$REPO/crds/bookstore.yaml"; do
  name=$(yq -r '.metadata.name' "$crd")
  kc get crd "$name" >/dev/null 2>&1 && continue
  kc apply --server-side --field-manager=bookstore-chart-check -f "$crd" >/dev/null || fail "installing the CRD $name failed"
done
kc wait --for=condition=Established --timeout=60s \
  crd/servicemonitors.monitoring.coreos.com crd/podmonitors.monitoring.coreos.com \
  crd/prometheusrules.monitoring.coreos.com crd/bookstores.mybookstore.dev >/dev/null \
  || fail "the CRDs did not become Established"
ok "CRDs present: ServiceMonitor, PodMonitor, PrometheusRule ($PROM_OPERATOR_MODULE@$PROM_OPERATOR_VERSION), BookStore"

for render in "$DEFAULT" "$ALL"; do
  kc apply --dry-run=server -f "$render" >"$OUT/dry-run.log" 2>&1 \
    || { cat "$OUT/dry-run.log" >&2; fail "the API server refused $render"; }
  n=$(grep -c '(server dry run)' "$OUT/dry-run.log" || true)
  want=$(docs "$render" 'length')
  [ "$n" = "$want" ] || { cat "$OUT/dry-run.log" >&2; fail "dry run of $render: $n of $want objects"; }
  ok "the API server accepts all $n objects of $(basename "$render") (--dry-run=server)"
  if grep -i 'PodSecurity' "$OUT/dry-run.log" >&2; then fail "the operator's pod is not Pod Security 'restricted' ($render)"; fi
  ok "the operator's pod meets Pod Security 'restricted' ($(basename "$render"))"
done
helm template "$RELEASE" "$CHART" -n "$NS" --set securityContext=null --set podSecurityContext=null >"$OUT/insecure.yaml" \
  || fail "helm template without security contexts"
kc apply --dry-run=server -f "$OUT/insecure.yaml" >"$OUT/dry-run-insecure.log" 2>&1 || { cat "$OUT/dry-run-insecure.log" >&2; fail "dry run without security contexts"; }
grep -q 'would violate PodSecurity "restricted' "$OUT/dry-run-insecure.log" \
  || { cat "$OUT/dry-run-insecure.log" >&2; fail "no Pod Security warning for a pod without security contexts"; }
ok "without the security contexts the same dry run warns (the check can fail)"
kc -n "$NS_STORES" apply --dry-run=server --validate=strict -f "$REPO/k8s/bookstore.yaml" >"$OUT/dry-run.log" 2>&1 \
  || { cat "$OUT/dry-run.log" >&2; fail "the API server refused k8s/bookstore.yaml"; }
ok "the API server accepts the sample k8s/bookstore.yaml (strict field validation)"
# Helm's own server-side dry run of an install, and the NOTES it prints.
KUBECONFIG="$KCFG" helm install "$RELEASE" "$CHART" -n "$NS" -f "$ALL_OPTIONS" --dry-run=server >"$OUT/install-dry-run.txt" 2>"$OUT/install-dry-run.log" \
  || { cat "$OUT/install-dry-run.log" >&2; fail "helm install --dry-run=server (all options)"; }
for line in "kubectl apply -f k8s/bookstore.yaml" "kubectl get bs" "kubectl port-forward svc/mystore-frontend 8000:8000" \
            "bookstore client --frontend" "rollout status deployment/$RELEASE-operator" "ServiceMonitor" "grafana_dashboard\|Grafana sidecar"; do
  sed -n '/^NOTES:/,$p' "$OUT/install-dry-run.txt" | grep -- "$line" >/dev/null || fail "NOTES.txt does not say: $line"
done
ok "helm install --dry-run=server passes, and NOTES.txt tells what to do next"
# The same check refuses what the API server refuses: a label the schema cannot judge.
helm template "$RELEASE" "$CHART" -n "$NS" --set-json 'podLabels={"not a label!":"x"}' >"$OUT/broken.yaml" \
  || fail "helm template with a bad pod label"
if kc apply --dry-run=server -f "$OUT/broken.yaml" >"$OUT/dry-run-broken.log" 2>&1; then
  fail "the API server accepted an invalid pod label"
fi
grep -q 'Invalid value' "$OUT/dry-run-broken.log" || { cat "$OUT/dry-run-broken.log" >&2; fail "the broken render failed for another reason"; }
ok "the API server rejects a render with an invalid label (the dry run can fail)"

# ---------------------------------------------------------------- 8. the RBAC, for real

docs "$DEFAULT" '.[] | select(.kind | test("^(ServiceAccount|ClusterRole|ClusterRoleBinding|Role|RoleBinding)$"))' \
  | kc apply -f - >/dev/null || fail "applying the chart's RBAC failed"
as() { kc --as="$SA" "$@"; }
can() { # can VERB RESOURCE [NAMESPACE-ARGS...]: the ServiceAccount may
  [ "$(as auth can-i "$@" 2>/dev/null)" = yes ] || fail "the operator may not: $*"
}
cannot() {
  [ "$(as auth can-i "$@" 2>/dev/null)" = no ] || fail "the operator may, but should not: $*"
}
# The cluster-wide watches of the controller.
for r in bookstores.mybookstore.dev statefulsets.apps deployments.apps services configmaps pods; do
  can list "$r" -A; can watch "$r" -A
done
can patch bookstores.mybookstore.dev --subresource=status -n "$NS_STORES"
can update bookstores.mybookstore.dev --subresource=finalizers -n "$NS_STORES"
can get secrets -n "$NS_STORES"; can create secrets -n "$NS_STORES"
can create events.events.k8s.io -n "$NS_STORES"; can patch events.events.k8s.io -n "$NS_STORES"
# Least privilege: what it must not do.
cannot list secrets -A; cannot watch secrets -A; cannot delete secrets -n "$NS_STORES"
# The rolling upgrade deletes one outdated member pod at a time (OnDelete).
can delete pods -n "$NS_STORES"; cannot create pods -n "$NS_STORES"
cannot patch bookstores.mybookstore.dev -n "$NS_STORES"; cannot delete bookstores.mybookstore.dev -n "$NS_STORES"
cannot delete statefulsets.apps -n "$NS_STORES"; cannot delete persistentvolumeclaims -n "$NS_STORES"
cannot get leases.coordination.k8s.io/other-lease -n "$NS"
cannot update leases.coordination.k8s.io/bookstore-operator-leader -n "$NS_STORES"
cannot create clusterroles.rbac.authorization.k8s.io; cannot get nodes
# The coordinator's durable state (issue 10): a ConfigMap it replaces.
can get configmaps -n "$NS_STORES"; can create configmaps -n "$NS_STORES"; can update configmaps -n "$NS_STORES"
ok "the ServiceAccount may watch what the controller watches and delete pods, and may not read every Secret, delete anything else, or touch other Leases"

# The namespace-scoped install (another release, same namespaces): the same calls
# in the watched namespace only, nothing cluster-wide.
helm template "${RELEASE}ns" "$CHART" -n "$NS" --set "watchNamespaces={$NS_STORES}" >"$OUT/namespaced-rbac.yaml" \
  || fail "helm template ${RELEASE}ns (watchNamespaces)"
docs "$OUT/namespaced-rbac.yaml" '.[] | select(.kind | test("^(ServiceAccount|Role|RoleBinding)$"))' \
  | kc apply -f - >/dev/null || fail "applying the namespace-scoped RBAC failed"
as_ns() { kc --as="system:serviceaccount:$NS:${RELEASE}ns-operator" auth can-i "$@" 2>/dev/null; }
for r in bookstores.mybookstore.dev statefulsets.apps deployments.apps services configmaps pods; do
  [ "$(as_ns list "$r" -n "$NS_STORES")" = yes ] && [ "$(as_ns watch "$r" -n "$NS_STORES")" = yes ] \
    || fail "namespace-scoped: the operator may not list/watch $r in $NS_STORES"
  [ "$(as_ns list "$r" -A)" = no ] || fail "namespace-scoped: the operator may list $r in every namespace"
  # Its own pods in the release namespace it lists and labels (the leader's label).
  [ "$r" = pods ] || [ "$(as_ns list "$r" -n "$NS")" = no ] || fail "namespace-scoped: the operator may list $r in $NS, which it does not watch"
done
[ "$(as_ns patch pods -n "$NS")" = yes ] && [ "$(as_ns list pods -n "$NS")" = yes ] \
  || fail "namespace-scoped: the leader may not label its own pod in $NS"
[ "$(as_ns delete pods -n "$NS")" = no ] && [ "$(as_ns watch pods -n "$NS")" = no ] \
  || fail "namespace-scoped: the operator may delete or watch pods in $NS"
for check in "patch bookstores.mybookstore.dev --subresource=status" "create secrets" "patch pods" "delete pods" "update configmaps" "create events.events.k8s.io"; do
  # shellcheck disable=SC2086 # the verb and resource are two words
  [ "$(as_ns $check -n "$NS_STORES")" = yes ] || fail "namespace-scoped: the operator may not $check in $NS_STORES"
done
[ "$(as_ns get leases.coordination.k8s.io/bookstore-operator-leader -n "$NS")" = yes ] || fail "namespace-scoped: no leader Lease"
ok "watchNamespaces: the ServiceAccount makes the operator's calls in the watched namespace only, with no cluster-wide permission"

# The real calls, as the operator's ServiceAccount.
# Labels no operator watches: on a shared cluster, a running operator leaves these alone.
labels='{"app.kubernetes.io/name": "bookstore-chart-check", "app.kubernetes.io/instance": "rbac"}'
as -n "$NS_STORES" apply --server-side --field-manager=bookstore-operator -f - >"$OUT/rbac-apply.log" 2>&1 <<EOF || { cat "$OUT/rbac-apply.log" >&2; fail "server-side apply (create) as the operator"; }
{"apiVersion": "v1", "kind": "List", "items": [
 {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "rbac-config", "labels": $labels}, "data": {"a": "b"}},
 {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "rbac-catalog", "labels": $labels},
  "spec": {"clusterIP": "None", "selector": $labels, "ports": [{"name": "http", "port": 8000}]}},
 {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "rbac-catalog", "labels": $labels},
  "spec": {"replicas": 0, "serviceName": "rbac-catalog", "selector": {"matchLabels": $labels},
   "template": {"metadata": {"labels": $labels}, "spec": {"containers": [{"name": "c", "image": "localhost/bookstore:dev"}]}}}},
 {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "rbac-frontend", "labels": $labels},
  "spec": {"replicas": 0, "selector": {"matchLabels": $labels},
   "template": {"metadata": {"labels": $labels}, "spec": {"containers": [{"name": "c", "image": "localhost/bookstore:dev"}]}}}},
 {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "rbac-catalog", "labels": $labels},
  "spec": {"maxUnavailable": 1, "selector": {"matchLabels": $labels}}}
]}
EOF
ok "server-side apply creates a ConfigMap, Service, StatefulSet, Deployment and PDB (as the operator)"
as -n "$NS_STORES" get deployment rbac-frontend -o name >/dev/null || fail "get deployment as the operator"
as -n "$NS_STORES" create secret generic rbac-peer-token --from-literal=peer-token=x >/dev/null || fail "create secret as the operator"
as -n "$NS_STORES" get secret rbac-peer-token -o name >/dev/null || fail "get secret as the operator"
ok "the operator reads a Deployment, creates and reads its peer-token Secret"

# A BookStore (created by the admin) whose status the operator patches. It names
# an inventory ConfigMap that does not exist (the CRD's rules cannot know), so
# an operator running in a shared cluster only reports it.
kc -n "$NS_STORES" apply -f - >/dev/null <<'EOF' || fail "creating a BookStore"
{"apiVersion": "mybookstore.dev/v1alpha1", "kind": "BookStore", "metadata": {"name": "rbac"}, "spec": {"inventory": {"configMap": {"name": "rbac-no-such-inventory"}}}}
EOF
# kubectl patch reads before it writes, which the operator never does (nor may):
# these patches are the operator's own requests, with its ServiceAccount's token.
SERVER=$(kc config view --raw --minify -o jsonpath='{.clusters[0].cluster.server}')
kc config view --raw --minify -o jsonpath='{.clusters[0].cluster.certificate-authority-data}' | base64 -d >"$OUT/ca.crt"
TOKEN=$(kc -n "$NS" create token "$RELEASE-operator" --duration=10m) || fail "cannot get a token of the operator's ServiceAccount"
merge_patch() { # merge_patch WHAT API-PATH BODY: as the operator
  local code
  code=$(curl -sS -o "$OUT/patch.json" -w '%{http_code}' --cacert "$OUT/ca.crt" -H "Authorization: Bearer $TOKEN" \
           -X PATCH -H 'Content-Type: application/merge-patch+json' --data-binary "$3" "$SERVER$2") \
    || fail "$1: request failed"
  [ "$code" = 200 ] || { cat "$OUT/patch.json" >&2; fail "$1 as the operator: HTTP $code"; }
}
merge_patch "patch bookstores/status" "/apis/mybookstore.dev/v1alpha1/namespaces/$NS_STORES/bookstores/rbac/status" \
  '{"status": {"phase": "RBAC check"}}'
jq -e '.status.phase == "RBAC check"' "$OUT/patch.json" >/dev/null || fail "the status patch did not land"
uid=$(kc -n "$NS_STORES" get bookstore rbac -o jsonpath='{.metadata.uid}')
as -n "$NS_STORES" create -f - >/dev/null <<EOF || fail "create an events.k8s.io/v1 Event as the operator"
{"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "rbac.check"},
 "eventTime": "$(date -u +%Y-%m-%dT%H:%M:%S.000000Z)", "reportingController": "bookstore-operator.mybookstore.dev",
 "reportingInstance": "chart-check", "action": "Check", "reason": "Checked", "type": "Normal", "note": "RBAC check",
 "regarding": {"apiVersion": "mybookstore.dev/v1alpha1", "kind": "BookStore", "name": "rbac", "namespace": "$NS_STORES", "uid": "$uid"}}
EOF
# A repeated Event: kube-runtime's Recorder patches its series.
merge_patch "patch an Event" "/apis/events.k8s.io/v1/namespaces/$NS_STORES/events/rbac.check" \
  "{\"series\": {\"count\": 2, \"lastObservedTime\": \"$(date -u +%Y-%m-%dT%H:%M:%S.000000Z)\"}}"
ok "the operator patches a BookStore's status, creates and patches an Event"

# A pod that never runs (scheduling gate), not matched by the StatefulSet above
# (which would adopt and delete it): the operator labels it.
kc -n "$NS_STORES" apply -f - >/dev/null <<EOF || fail "creating a gated pod"
{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "rbac2-catalog-0", "labels": ${labels//\"rbac\"/\"rbac2\"}},
 "spec": {"schedulingGates": [{"name": "mybookstore.dev/never"}], "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
  "containers": [{"name": "c", "image": "localhost/bookstore:dev",
   "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}}]}}
EOF
as -n "$NS_STORES" get pod rbac2-catalog-0 -o name >/dev/null || fail "get pod as the operator"
as -n "$NS_STORES" patch pod rbac2-catalog-0 --type=merge -p '{"metadata": {"labels": {"mybookstore.dev/role": "primary"}}}' >/dev/null \
  || fail "label a pod as the operator"
ok "the operator reads a pod and labels it primary"

# Leader election in the release namespace: create, read, renew the Lease.
as -n "$NS" create -f - >/dev/null <<'EOF' || fail "create the leader Lease as the operator"
{"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "bookstore-operator-leader"},
 "spec": {"holderIdentity": "chart-check", "leaseDurationSeconds": 15}}
EOF
as -n "$NS" get lease bookstore-operator-leader -o json | jq '.spec.holderIdentity = "chart-check-2"' \
  | as -n "$NS" replace -f - >/dev/null || fail "renew (update) the leader Lease as the operator"
# Create cannot be limited to a name: any Lease can be made, none but its own read.
as -n "$NS" create -f - >/dev/null <<'EOF' || fail "create a Lease as the operator"
{"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "another-lease"}, "spec": {"holderIdentity": "x"}}
EOF
if as -n "$NS" get lease another-lease >/dev/null 2>&1; then fail "the operator could read a Lease not its own"; fi
if as get secrets -A >/dev/null 2>&1; then fail "the operator could list every Secret"; fi
ok "the operator creates and renews its Lease, and cannot read other Leases or list Secrets"
