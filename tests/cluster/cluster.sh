#!/usr/bin/env bash
# Single-node Kubernetes for BookStore's tests, built from upstream Go modules and
# run as plain processes (no Docker, no systemd, no kubeadm).
#
#   tests/cluster/cluster.sh build [NAME...] build/cache the pinned binaries, link into target/cluster/bin
#   tests/cluster/cluster.sh up [api-only]  start the cluster (api-only: etcd + apiserver + controller-manager)
#   tests/cluster/cluster.sh down           stop everything started by `up`, clean network state
#   tests/cluster/cluster.sh status         show processes and node state
#   tests/cluster/cluster.sh gen-modules    regenerate the wrapper go.mod files after a version bump
#
# See tests/cluster/README.md.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
# shellcheck source=versions.env
source "$HERE/versions.env"
# shellcheck source=cluster.env
source "$HERE/cluster.env"

TARGET="${BOOKSTORE_TARGET_DIR:-$REPO/target}"
CL="$TARGET/cluster"
BIN="$CL/bin"
CACHE_ROOT="${BOOKSTORE_CLUSTER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/bookstore/cluster}"
# Bump when the build recipe in this file changes in a way that changes the binaries.
RECIPE=1

log() { printf '[cluster %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { printf '[cluster] ERROR: %s\n' "$*" >&2; exit 1; }

need_root() { [ "$(id -u)" = 0 ] || die "must run as root (it starts kubelet, containerd and edits iptables)"; }

# ---------------------------------------------------------------- build

# key DIR EXTRA...: short hash of a wrapper module's files plus the recipe string.
key() {
  local dir=$1; shift
  { cat "$dir"/go.mod "$dir"/go.sum; [ -f "$dir/main.go" ] && cat "$dir/main.go"; echo "recipe=$RECIPE $*"; } \
    | sha256sum | cut -c1-10
}

# gobuild NAME WRAPPERDIR OUTDIR LDFLAGS PKG...: build into a cache dir atomically
# (build tags from $GO_TAGS, if set).
gobuild() {
  local name=$1 dir=$2 out=$3 ldflags=$4; shift 4
  if [ -f "$out/.complete" ]; then
    log "$name: cached in $out"
    return 0
  fi
  log "$name: building ($*) into $out (nice -n 19; this takes a while on a cold cache)"
  local tmp="$out.tmp.$$"
  rm -rf "$tmp"; mkdir -p "$tmp"
  local t0=$SECONDS
  ( cd "$dir" && CGO_ENABLED=0 GOFLAGS=-mod=readonly GOTOOLCHAIN=local \
      nice -n 19 go build -trimpath ${GO_TAGS:+-tags "$GO_TAGS"} -ldflags "$ldflags" -o "$tmp/" "$@" ) \
    || { rm -rf "$tmp"; die "$name: go build failed (see output above)"; }
  date -u +%FT%TZ > "$tmp/.complete"
  rm -rf "$out"; mv "$tmp" "$out"
  log "$name: built in $((SECONDS - t0))s"
}

k8s_ldflags() {
  local v=$K8S_VERSION minor
  minor=$(echo "$v" | cut -d. -f2)
  local date
  # The release's commit time from the module proxy stands in for the build date (reproducible).
  date=$(cd "$HERE/go/kubernetes" && go list -m -f '{{.Time.UTC.Format "2006-01-02T15:04:05Z"}}' k8s.io/kubernetes) \
    || die "cannot read the k8s.io/kubernetes module time (go list -m)"
  [ -n "$date" ] || die "empty k8s.io/kubernetes module time"
  local f=""
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    f+=" -X $p.gitVersion=$v -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
    # The module proxy does not carry the commit hash: leave it empty rather than invent one.
    f+=" -X $p.gitCommit= -X $p.buildDate=$date"
  done
  echo "-s -w$f"
}

helm_ldflags() {
  local cg major minor
  cg=$(cd "$HERE/go/helm" && go list -m -f '{{.Version}}' k8s.io/client-go)   # v0.34.x
  major=$(( $(echo "$cg" | sed 's/^v//' | cut -d. -f1) + 1 ))
  minor=$(echo "$cg" | cut -d. -f2)
  local f="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
  f+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
  f+=" -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=$major -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$minor"
  f+=" -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=$major -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$minor"
  echo "$f"
}

# The components `build` makes, in order; `build NAME...` makes only those.
COMPONENTS=(kubernetes etcd coredns helm prometheus local-path-provisioner)
# Prometheus with only the discovery the tests use (Kubernetes; file and HTTP are always
# in) instead of every cloud's SDK, and without the `builtinassets` tag: the HTTP API
# and /metrics work, the web UI answers that it was not compiled in.
PROMETHEUS_TAGS=remove_all_sd,enable_kubernetes_sd

build_kubernetes() {
  local lf d b
  lf=$(k8s_ldflags)
  d="$CACHE_ROOT/kubernetes-$K8S_VERSION-$(key "$HERE/go/kubernetes" "$lf")"
  gobuild kubernetes "$HERE/go/kubernetes" "$d" "$lf" \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubelet \
    k8s.io/kubernetes/cmd/kube-proxy k8s.io/kubernetes/cmd/kubectl
  for b in kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl; do
    ln -sfn "$d/$b" "$BIN/$b"
  done
}

build_etcd() {
  local lf="-s -w" d
  d="$CACHE_ROOT/etcd-$ETCD_VERSION-$(key "$HERE/go/etcd" "$lf")"
  gobuild etcd "$HERE/go/etcd" "$d" "$lf" go.etcd.io/etcd/server/v3
  [ -x "$d/etcd" ] || { [ -x "$d/server" ] && mv "$d/server" "$d/etcd"; }
  ln -sfn "$d/etcd" "$BIN/etcd"
}

build_coredns() {
  local lf="-s -w -X github.com/coredns/coredns/coremain.GitCommit=$COREDNS_VERSION" d
  d="$CACHE_ROOT/coredns-$COREDNS_VERSION-$(key "$HERE/go/coredns" "$lf")"
  gobuild coredns "$HERE/go/coredns" "$d" "$lf" .
  [ -x "$d/coredns" ] || { [ -x "$d/coredns-wrapper" ] && mv "$d/coredns-wrapper" "$d/coredns"; }
  ln -sfn "$d/coredns" "$BIN/coredns"
}

build_helm() {
  local lf d
  lf=$(helm_ldflags)
  d="$CACHE_ROOT/helm-$HELM_VERSION-$(key "$HERE/go/helm" "$lf")"
  gobuild helm "$HERE/go/helm" "$d" "$lf" helm.sh/helm/v3/cmd/helm
  ln -sfn "$d/helm" "$BIN/helm"
}

build_prometheus() {
  local v=github.com/prometheus/common/version lf d b n release
  # The Go module v0.MMM.P is Prometheus release M.MM.P (v0.316.0 is 3.16.0).
  n=$(echo "$PROMETHEUS_VERSION" | cut -d. -f2)
  release="$((n / 100)).$((n % 100)).$(echo "$PROMETHEUS_VERSION" | cut -d. -f3)"
  lf="-s -w -X $v.Version=$release -X $v.Branch=HEAD -X $v.BuildUser=bookstore-test-cluster"
  d="$CACHE_ROOT/prometheus-$PROMETHEUS_VERSION-$(key "$HERE/go/prometheus" "$lf tags=$PROMETHEUS_TAGS")"
  GO_TAGS=$PROMETHEUS_TAGS gobuild prometheus "$HERE/go/prometheus" "$d" "$lf" \
    github.com/prometheus/prometheus/cmd/prometheus github.com/prometheus/prometheus/cmd/promtool
  for b in prometheus promtool; do ln -sfn "$d/$b" "$BIN/$b"; done
}

build_local-path-provisioner() {
  local lf="-s -w" d
  d="$CACHE_ROOT/local-path-provisioner-$LOCAL_PATH_PROVISIONER_VERSION-$(key "$HERE/go/local-path-provisioner" "$lf")"
  gobuild local-path-provisioner "$HERE/go/local-path-provisioner" "$d" "$lf" github.com/rancher/local-path-provisioner
  ln -sfn "$d/local-path-provisioner" "$BIN/local-path-provisioner"
}

# The binaries each component leaves in $BIN.
component_binaries() {
  case $1 in
    kubernetes) echo kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl ;;
    prometheus) echo prometheus promtool ;;
    *) echo "$1" ;;
  esac
}

cmd_build() {
  command -v go >/dev/null || die "go is not on PATH"
  export GOTOOLCHAIN=local
  mkdir -p "$BIN" "$CACHE_ROOT"
  local t0=$SECONDS c b wanted=("$@")
  [ ${#wanted[@]} -gt 0 ] || wanted=("${COMPONENTS[@]}")
  for c in "${wanted[@]}"; do
    [[ " ${COMPONENTS[*]} " == *" $c "* ]] || die "build: unknown component '$c' (one of: ${COMPONENTS[*]})"
    "build_$c"
    for b in $(component_binaries "$c"); do
      [ -x "$BIN/$b" ] || die "build: $BIN/$b is missing after build"
    done
  done
  log "build: done in $((SECONDS - t0))s; binaries in $BIN"
}

# gen-modules: rewrite the wrapper go.mod files for the versions in versions.env and
# tidy them (needs the Go module proxy). Run after changing a version; commit the result.
cmd_gen_modules() {
  export GOTOOLCHAIN=local
  local k=$K8S_VERSION staging="v0.${K8S_VERSION#v1.}" mod
  mod=$(go mod download -json "k8s.io/kubernetes@$k" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  [ -f "$mod" ] || die "gen-modules: cannot download k8s.io/kubernetes@$k"
  {
    echo "// Wrapper module: builds the upstream Kubernetes ${k#v} components from the k8s.io/kubernetes"
    echo "// module. k8s.io/kubernetes requires its staging modules at v0.0.0 and replaces them with"
    echo "// ./staging paths, which only work inside its own repository, so every staging module is"
    echo "// replaced here with its matching published $staging release."
    echo "// Regenerate with: tests/cluster/cluster.sh gen-modules"
    echo "module bookstore.test/cluster/kubernetes"
    echo
    grep -E '^go [0-9]' "$mod"
    echo
    grep -E '^godebug ' "$mod" || true
    echo
    echo "require k8s.io/kubernetes $k"
    echo
    echo "replace ("
    grep -E '^\s*k8s.io/[^ ]+ => ./staging' "$mod" | awk -v v="$staging" '{print "\t" $1 " => " $1 " " v}'
    echo ")"
    echo
    echo "tool ("
    for c in kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl; do printf '\tk8s.io/kubernetes/cmd/%s\n' "$c"; done
    echo ")"
  } > "$HERE/go/kubernetes/go.mod"
  sed -i "s|^require go.etcd.io/etcd/server/v3 .*|require go.etcd.io/etcd/server/v3 $ETCD_VERSION|" "$HERE/go/etcd/go.mod"
  sed -i "s|^require helm.sh/helm/v3 .*|require helm.sh/helm/v3 $HELM_VERSION|" "$HERE/go/helm/go.mod"
  sed -i "s|^require github.com/coredns/coredns .*|require github.com/coredns/coredns $COREDNS_VERSION|" "$HERE/go/coredns/go.mod"
  ( cd "$HERE/go/prometheus" && go mod edit -require "github.com/prometheus/prometheus@$PROMETHEUS_VERSION" ) \
    || die "gen-modules: go mod edit in go/prometheus"
  ( cd "$HERE/go/local-path-provisioner" && go mod edit -require "github.com/rancher/local-path-provisioner@$LOCAL_PATH_PROVISIONER_VERSION" ) \
    || die "gen-modules: go mod edit in go/local-path-provisioner"
  local m
  for m in kubernetes etcd helm coredns prometheus local-path-provisioner; do
    log "gen-modules: go mod tidy in go/$m"
    ( cd "$HERE/go/$m" && rm -f go.sum && nice -n 19 go mod tidy ) || die "gen-modules: go mod tidy failed in go/$m"
  done
}

# ---------------------------------------------------------------- helpers for up/down

PKI="$CL/pki"; ETC="$CL/etc"; LOGS="$CL/logs"; PIDS="$CL/pids"; STATE="$CL/state"
KUBECONFIG_ADMIN="$CL/kubeconfig"
APT_PACKAGES=(containerd runc containernetworking-plugins iptables conntrack openssl catatonit busybox-static curl kmod ethtool socat util-linux iproute2)

kc() { "$BIN/kubectl" --kubeconfig "$KUBECONFIG_ADMIN" "$@"; }

# wait_for DESC SECONDS CMD...: poll CMD every second until it succeeds or time runs out.
wait_for() {
  local desc=$1 limit=$2; shift 2
  local end=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    if [ $SECONDS -ge $end ]; then
      log "timed out after ${limit}s waiting for: $desc"
      return 1
    fi
    sleep 1
  done
  log "ready: $desc"
}

APT_PACKAGES_API_ONLY=(iptables openssl curl util-linux iproute2)

install_packages() { # install_packages PACKAGE...: apt-get install what is missing
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  if [ ${#missing[@]} -eq 0 ]; then
    log "packages: all present"
    return 0
  fi
  log "packages: installing ${missing[*]}"
  # Keep Debian's containerd service from starting on its own: we run our own instance.
  local prc=/usr/sbin/policy-rc.d created=0
  if [ ! -e "$prc" ]; then printf '#!/bin/sh\nexit 101\n' > "$prc"; chmod +x "$prc"; created=1; fi
  local rc=0
  timeout 900 apt-get install -y -q --no-install-recommends "${missing[@]}" >"$LOGS/apt.log" 2>&1 || rc=$?
  if [ $rc -ne 0 ]; then
    log "apt-get install failed (rc=$rc); running apt-get update and retrying once"
    timeout 600 apt-get update -q >>"$LOGS/apt.log" 2>&1 || true
    rc=0
    timeout 900 apt-get install -y -q --no-install-recommends "${missing[@]}" >>"$LOGS/apt.log" 2>&1 || rc=$?
  fi
  if [ $created = 1 ]; then rm -f "$prc"; fi
  [ $rc -eq 0 ] || { tail -20 "$LOGS/apt.log" >&2; die "apt-get install ${missing[*]} failed (log: $LOGS/apt.log)"; }
}

# ---- IPv4 CIDR arithmetic, for the overlap checks
ip2int() { local IFS=.; set -- $1; echo $(( ($1 << 24) + ($2 << 16) + ($3 << 8) + $4 )); }
# cidr_range A.B.C.D/N -> "first last"
cidr_range() {
  local ip=${1%/*} n=${1#*/}
  [ "$ip" = "$1" ] && n=32
  local i; i=$(ip2int "$ip")
  local size=$(( 1 << (32 - n) ))
  local first=$(( i & ~(size - 1) & 0xFFFFFFFF ))
  echo "$first $(( first + size - 1 ))"
}
overlaps() { # overlaps CIDR1 CIDR2
  local a b c d
  read -r a b <<<"$(cidr_range "$1")"; read -r c d <<<"$(cidr_range "$2")"
  [ "$a" -le "$d" ] && [ "$c" -le "$b" ]
}

check_ranges() {
  local ours=("$POD_CIDR" "$SERVICE_CIDR" "$NODE_IP/32") theirs=() x
  # Addresses of the machine (except our own node IP, which `up` itself adds to lo).
  while read -r x; do [ "${x%/*}" = "$NODE_IP" ] || theirs+=("$x"); done \
    < <(ip -4 -o addr show | awk '{print $4}' | grep -v '^127\.')
  # Routes (except the default route, our own bridge and routes that `up` created).
  while read -r x; do theirs+=("$x"); done \
    < <(ip -4 route show table main | awk '$1 != "default" && $0 !~ /dev '"$CNI_BRIDGE"'/ {print $1}')
  while read -r x; do theirs+=("$x/32"); done \
    < <(awk '$1 == "nameserver" && $2 ~ /^[0-9.]+$/ {print $2}' /etc/resolv.conf)
  for o in "${ours[@]}"; do
    for t in "${theirs[@]}"; do
      overlaps "$o" "$t" && die "cluster range $o overlaps $t used by this machine (ip addr / ip route / resolv.conf); change tests/cluster/cluster.env"
    done
  done
  log "ranges: pods $POD_CIDR, services $SERVICE_CIDR, node $NODE_IP overlap none of: ${theirs[*]}"
}

outward_interfaces() {
  # Every non-loopback interface with a route out of the machine (normally just eth0).
  ip -4 route show table main | awk '$1 == "default" {for (i=1;i<=NF;i++) if ($i=="dev") print $(i+1)}' | sort -u
}

# Two chains keep pod, Service and node addresses off the outward interfaces:
#  filter $FW_CHAIN-IN  (from INPUT and FORWARD): drop what arrives on them to or from our ranges;
#  mangle $FW_CHAIN-OUT (from POSTROUTING): drop what would leave through them to or from our ranges,
#    judged on the packet's final addresses and on its original (pre-NAT) ones. POSTROUTING is the
#    one place where the outgoing interface is the real one for locally generated packets too (in
#    OUTPUT, `-o` is the interface of the route before kube-proxy's DNAT).
firewall_up() {
  local ifs; ifs=$(outward_interfaces)
  [ -n "$ifs" ] || log "firewall: no default route; adding the rules for no interface (nothing can leave anyway)"
  local in="$FW_CHAIN-IN" out="$FW_CHAIN-OUT" i c m
  iptables -w 5 -t filter -N "$in" 2>/dev/null || iptables -w 5 -t filter -F "$in"
  iptables -w 5 -t mangle -N "$out" 2>/dev/null || iptables -w 5 -t mangle -F "$out"
  for i in $ifs; do
    for c in "$POD_CIDR" "$SERVICE_CIDR" "$NODE_IP/32"; do
      m="bookstore test cluster: $c never crosses $i"
      iptables -w 5 -t filter -A "$in" -i "$i" -s "$c" -j DROP -m comment --comment "$m"
      iptables -w 5 -t filter -A "$in" -i "$i" -d "$c" -j DROP -m comment --comment "$m"
      iptables -w 5 -t mangle -A "$out" -o "$i" -s "$c" -j DROP -m comment --comment "$m"
      iptables -w 5 -t mangle -A "$out" -o "$i" -d "$c" -j DROP -m comment --comment "$m"
      iptables -w 5 -t mangle -A "$out" -o "$i" -m conntrack --ctorigsrc "$c" -j DROP -m comment --comment "$m"
      iptables -w 5 -t mangle -A "$out" -o "$i" -m conntrack --ctorigdst "$c" -j DROP -m comment --comment "$m"
    done
  done
  # Pods may reach the machine itself only on the API server and CoreDNS ports (and answers
  # to connections the machine opened, such as kubelet probes): nothing else listening here.
  local host="$FW_CHAIN-HOST"
  iptables -w 5 -t filter -N "$host" 2>/dev/null || iptables -w 5 -t filter -F "$host"
  iptables -w 5 -t filter -A "$host" -m conntrack --ctstate ESTABLISHED,RELATED -j RETURN
  iptables -w 5 -t filter -A "$host" -p tcp -d "$NODE_IP" --dport "$API_PORT" -j RETURN
  iptables -w 5 -t filter -A "$host" -p udp -d "$NODE_IP" --dport "$COREDNS_PORT" -j RETURN
  iptables -w 5 -t filter -A "$host" -p tcp -d "$NODE_IP" --dport "$COREDNS_PORT" -j RETURN
  iptables -w 5 -t filter -A "$host" -j DROP -m comment --comment "bookstore test cluster: pods reach only the API server and DNS on the machine"
  local chain
  for chain in INPUT FORWARD; do
    iptables -w 5 -t filter -C "$chain" -j "$in" 2>/dev/null || iptables -w 5 -t filter -I "$chain" 1 -j "$in"
  done
  iptables -w 5 -t filter -C INPUT -i "$CNI_BRIDGE" -j "$host" 2>/dev/null || iptables -w 5 -t filter -I INPUT 2 -i "$CNI_BRIDGE" -j "$host"
  iptables -w 5 -t mangle -C POSTROUTING -j "$out" 2>/dev/null || iptables -w 5 -t mangle -I POSTROUTING 1 -j "$out"
  log "firewall: chains $in (filter) and $out (mangle) drop pod/service/node traffic on: ${ifs:-none}; $host limits pods to the API server and DNS on the machine"
}

firewall_present() {
  iptables -w 5 -t filter -n -L "$FW_CHAIN-IN" >/dev/null 2>&1 || iptables -w 5 -t mangle -n -L "$FW_CHAIN-OUT" >/dev/null 2>&1
}

firewall_down() {
  local chain t c
  for chain in INPUT FORWARD; do
    while iptables -w 5 -t filter -C "$chain" -j "$FW_CHAIN-IN" 2>/dev/null; do iptables -w 5 -t filter -D "$chain" -j "$FW_CHAIN-IN"; done
  done
  while iptables -w 5 -t filter -C INPUT -i "$CNI_BRIDGE" -j "$FW_CHAIN-HOST" 2>/dev/null; do iptables -w 5 -t filter -D INPUT -i "$CNI_BRIDGE" -j "$FW_CHAIN-HOST"; done
  while iptables -w 5 -t mangle -C POSTROUTING -j "$FW_CHAIN-OUT" 2>/dev/null; do iptables -w 5 -t mangle -D POSTROUTING -j "$FW_CHAIN-OUT"; done
  for t in filter:"$FW_CHAIN-IN" filter:"$FW_CHAIN-HOST" mangle:"$FW_CHAIN-OUT"; do
    c=${t#*:}; t=${t%%:*}
    if iptables -w 5 -t "$t" -n -L "$c" >/dev/null 2>&1; then iptables -w 5 -t "$t" -F "$c"; iptables -w 5 -t "$t" -X "$c"; fi
  done
}

host_network_up() {
  mkdir -p "$STATE"
  [ -f "$STATE/ip_forward.orig" ] || cat /proc/sys/net/ipv4/ip_forward > "$STATE/ip_forward.orig"
  if [ ! -e /proc/sys/net/bridge/bridge-nf-call-iptables ]; then
    modprobe br_netfilter 2>/dev/null || true
  fi
  [ -e /proc/sys/net/bridge/bridge-nf-call-iptables ] || die "br_netfilter is not available (no /proc/sys/net/bridge); kube-proxy needs it"
  [ -f "$STATE/bridge-nf-call-iptables.orig" ] || cat /proc/sys/net/bridge/bridge-nf-call-iptables > "$STATE/bridge-nf-call-iptables.orig"
  echo 1 > /proc/sys/net/bridge/bridge-nf-call-iptables
  echo 1 > /proc/sys/net/ipv4/ip_forward
  if ! ip -4 addr show dev lo | grep -q " $NODE_IP/32 "; then
    ip addr add "$NODE_IP/32" dev lo
    touch "$STATE/node-ip-added"
  fi
  # Mount propagation for kubelet volumes.
  mount --make-rshared /
}

host_network_down() {
  if ip -4 addr show dev lo | grep -q " $NODE_IP/32 "; then ip addr del "$NODE_IP/32" dev lo; fi
  if ip link show "$CNI_BRIDGE" >/dev/null 2>&1; then ip link del "$CNI_BRIDGE"; fi
  if [ -f "$STATE/ip_forward.orig" ]; then
    cat "$STATE/ip_forward.orig" > /proc/sys/net/ipv4/ip_forward; rm -f "$STATE/ip_forward.orig"
  fi
  if [ -f "$STATE/bridge-nf-call-iptables.orig" ]; then
    cat "$STATE/bridge-nf-call-iptables.orig" > /proc/sys/net/bridge/bridge-nf-call-iptables
    rm -f "$STATE/bridge-nf-call-iptables.orig"
  fi
  rm -f "$STATE/node-ip-added"
}

has_cap_sys_resource() { # CAP_SYS_RESOURCE is capability 24
  local eff; eff=$(awk '/^CapEff:/ {print $2}' /proc/self/status)
  [ $(( (16#$eff >> 24) & 1 )) = 1 ]
}

# ---- certificates

# cert NAME CN O SAN(or "") USAGE(client|server|both)
cert() {
  local name=$1 cn=$2 o=$3 san=$4 usage=$5
  [ -f "$PKI/$name.crt" ] && return 0
  local eku
  case $usage in client) eku=clientAuth ;; server) eku=serverAuth ;; both) eku=serverAuth,clientAuth ;; esac
  local subj="/CN=$cn"; [ -n "$o" ] && subj="/O=$o$subj"
  openssl genrsa -out "$PKI/$name.key" 2048 2>/dev/null
  openssl req -new -key "$PKI/$name.key" -subj "$subj" -out "$PKI/$name.csr" 2>/dev/null
  {
    echo "basicConstraints=critical,CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=$eku"
    [ -n "$san" ] && echo "subjectAltName=$san"
  } > "$PKI/$name.ext"
  openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial \
    -days 3650 -sha256 -extfile "$PKI/$name.ext" -out "$PKI/$name.crt" 2>/dev/null \
    || die "openssl failed to sign $name"
  rm -f "$PKI/$name.csr" "$PKI/$name.ext"
}

make_pki() {
  mkdir -p "$PKI"; chmod 700 "$PKI"
  if [ ! -f "$PKI/ca.crt" ]; then
    openssl req -x509 -newkey rsa:2048 -nodes -keyout "$PKI/ca.key" -out "$PKI/ca.crt" -days 3650 \
      -subj "/CN=bookstore-test-cluster-ca" -addext "basicConstraints=critical,CA:TRUE" \
      -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" 2>/dev/null || die "openssl: CA"
  fi
  [ -f "$PKI/sa.key" ] || { openssl genrsa -out "$PKI/sa.key" 2048 2>/dev/null; openssl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null; }
  local d=$CLUSTER_DOMAIN
  cert apiserver kube-apiserver "" \
    "IP:$NODE_IP,IP:$API_SERVICE_IP,IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.$d" server
  cert apiserver-kubelet-client kube-apiserver-kubelet-client system:masters "" client
  cert admin kubernetes-admin system:masters "" client
  cert controller-manager system:kube-controller-manager "" "" client
  cert scheduler system:kube-scheduler "" "" client
  cert kubelet "system:node:$NODE_NAME" system:nodes "IP:$NODE_IP,DNS:$NODE_NAME" both
  cert kube-proxy system:kube-proxy "" "" client
  cert coredns system:coredns "" "" client
  cert local-path-provisioner system:local-path-provisioner "" "" client
}

# kubeconfig FILE CERTNAME
kubeconfig() {
  local f=$1 c=$2
  cat > "$f" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: bookstore-test
  cluster:
    server: https://$NODE_IP:$API_PORT
    certificate-authority-data: $(base64 -w0 < "$PKI/ca.crt")
users:
- name: $c
  user:
    client-certificate-data: $(base64 -w0 < "$PKI/$c.crt")
    client-key-data: $(base64 -w0 < "$PKI/$c.key")
contexts:
- name: bookstore-test
  context: {cluster: bookstore-test, user: $c}
current-context: bookstore-test
EOF
  chmod 600 "$f"
}

write_configs() {
  mkdir -p "$ETC/cni/net.d" "$CL/cni/ipam"
  kubeconfig "$KUBECONFIG_ADMIN" admin
  for c in controller-manager scheduler kubelet kube-proxy coredns local-path-provisioner; do kubeconfig "$ETC/$c.kubeconfig" "$c"; done

  # Pods get no upstream resolver: dnsPolicy Default pods resolve nothing, ClusterFirst pods use CoreDNS.
  printf '# bookstore test cluster: no upstream resolvers for pods\n' > "$ETC/resolv.conf"

  cat > "$ETC/containerd.toml" <<EOF
version = 2
root = "$CL/containerd/root"
state = "$RUN_DIR/containerd"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
[grpc]
  address = "$CONTAINERD_SOCK"
[ttrpc]
  address = "$RUN_DIR/containerd.sock.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "$CL/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$SANDBOX_IMAGE"
  enable_selinux = false
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  max_container_log_line_size = 16384
  # Lowering a process's oom_score_adj needs CAP_SYS_RESOURCE, which this machine's root lacks
  # (runc then fails: "failed to update /proc/self/oom_score_adj: Permission denied").
  # Restricting keeps every container's score at or above containerd's own.
  restrict_oom_score_adj = $(if has_cap_sys_resource; then echo false; else echo true; fi)
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "$(command -v runc)"
        Root = "$RUN_DIR/runc"
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$ETC/cni/net.d"
    max_conf_num = 1
EOF

  cat > "$ETC/cni/net.d/10-bookstore.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "bookstore-test",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$CNI_BRIDGE",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "$CL/cni/ipam",
        "ranges": [[{"subnet": "$POD_CIDR"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    },
    {"type": "loopback"}
  ]
}
EOF

  cat > "$ETC/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $PKI/ca.crt}
authorization: {mode: Webhook}
tlsCertFile: $PKI/kubelet.crt
tlsPrivateKeyFile: $PKI/kubelet.key
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix://$CONTAINERD_SOCK
clusterDNS: [$DNS_SERVICE_IP]
clusterDomain: $CLUSTER_DOMAIN
resolvConf: $ETC/resolv.conf
failSwapOn: false
rotateCertificates: false
serverTLSBootstrap: false
serializeImagePulls: false
# Images are imported locally and can never be pulled again: never garbage-collect them.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: 200Mi, nodefs.available: 2%, imagefs.available: 2%, nodefs.inodesFree: 2%}
maxPods: 110
podPidsLimit: 4096
hairpinMode: hairpin-veth
registerNode: true
syncFrequency: 10s
fileCheckFrequency: 10s
nodeStatusUpdateFrequency: 5s
EOF

  cat > "$ETC/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
hostnameOverride: $NODE_NAME
bindAddress: $NODE_IP
clientConnection: {kubeconfig: $ETC/kube-proxy.kubeconfig}
clusterCIDR: $POD_CIDR
detectLocalMode: ClusterCIDR
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
# NodePorts only on the node IP, never on the machine's outward interface.
nodePortAddresses: [$NODE_IP/32]
iptables:
  masqueradeAll: false
  localhostNodePorts: false
  syncPeriod: 30s
  minSyncPeriod: 1s
# Without CAP_SYS_RESOURCE a process may not lower its oom_score_adj: keep the current one.
oomScoreAdj: $(if has_cap_sys_resource; then echo -999; else cat /proc/self/oom_score_adj; fi)
# Leave the machine's conntrack settings alone.
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
EOF

  cat > "$ETC/Corefile" <<EOF
# Serves only the cluster domain (and reverse lookups of cluster addresses).
# Nothing is forwarded: the forward plugin is not even compiled in.
$CLUSTER_DOMAIN:$COREDNS_PORT in-addr.arpa:$COREDNS_PORT ip6.arpa:$COREDNS_PORT {
    bind $NODE_IP
    errors
    health 127.0.0.1:18080
    ready 127.0.0.1:18181
    kubernetes $CLUSTER_DOMAIN in-addr.arpa ip6.arpa {
        kubeconfig $ETC/coredns.kubeconfig bookstore-test
        pods insecure
        ttl 30
    }
    cache 30
    loadbalance
}
EOF
}

# ---- processes

# start NAME CMD...: start a process in its own session, log to logs/NAME.log, record its PID.
start() {
  local name=$1; shift
  if [ -f "$PIDS/$name.pid" ] && kill -0 "$(cat "$PIDS/$name.pid")" 2>/dev/null; then
    die "$name is already running (pid $(cat "$PIDS/$name.pid")); run '$0 down' first"
  fi
  setsid "$@" >>"$LOGS/$name.log" 2>&1 < /dev/null &
  echo $! > "$PIDS/$name.pid"
  log "started $name (pid $!, log $LOGS/$name.log)"
}

alive() { [ -f "$PIDS/$1.pid" ] && kill -0 "$(cat "$PIDS/$1.pid")" 2>/dev/null; }

# check_alive NAME: fail with the tail of its log if the process died.
check_alive() {
  alive "$1" && return 0
  log "$1 exited; last lines of $LOGS/$1.log:"
  tail -n 30 "$LOGS/$1.log" >&2 || true
  die "$1 is not running"
}

# wait_up NAME SECONDS CMD...: wait for a readiness check, failing early if NAME died.
wait_up() {
  local name=$1 limit=$2; shift 2
  local end=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    check_alive "$name"
    [ $SECONDS -lt $end ] || { tail -n 30 "$LOGS/$name.log" >&2; die "$name not ready after ${limit}s"; }
    sleep 1
  done
  log "ready: $name"
}

stop() {
  local name=$1 pid
  [ -f "$PIDS/$name.pid" ] || return 0
  pid=$(cat "$PIDS/$name.pid")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    local end=$((SECONDS + 20))
    while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $end ]; do sleep 0.2; done
    if kill -0 "$pid" 2>/dev/null; then
      log "$name (pid $pid) did not stop in 20s; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      sleep 0.5
    fi
    log "stopped $name (pid $pid)"
  fi
  rm -f "$PIDS/$name.pid"
}

apiserver_ready() { curl -fsS --max-time 3 --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" --key "$PKI/admin.key" "https://$NODE_IP:$API_PORT/readyz" ; }
node_ready() {
  [ "$(kc get node "$NODE_NAME" -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" = True ]
}
dns_answers() {
  # Through the Service IP, so this also proves kube-proxy's rules.
  busybox nslookup "kubernetes.default.svc.$CLUSTER_DOMAIN" "$DNS_SERVICE_IP" 2>/dev/null | grep -q "$API_SERVICE_IP"
}

coredns_rbac() {
  kc apply -f - >/dev/null <<EOF
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "system:coredns"}
rules:
- apiGroups: [""]
  resources: [endpoints, services, pods, namespaces]
  verbs: [list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "system:coredns"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:coredns"}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: User, name: "system:coredns"}
---
apiVersion: v1
kind: Service
metadata:
  name: kube-dns
  namespace: kube-system
  labels: {k8s-app: kube-dns, kubernetes.io/name: CoreDNS}
spec:
  clusterIP: $DNS_SERVICE_IP
  ports:
  - {name: dns, port: 53, protocol: UDP, targetPort: $COREDNS_PORT}
  - {name: dns-tcp, port: 53, protocol: TCP, targetPort: $COREDNS_PORT}
---
# CoreDNS runs on the host (NODE_IP:$COREDNS_PORT), so the Service has no selector
# and this hand-made EndpointSlice points at it.
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: kube-dns-host
  namespace: kube-system
  labels:
    kubernetes.io/service-name: kube-dns
    endpointslice.kubernetes.io/managed-by: bookstore-test-cluster
addressType: IPv4
endpoints:
- addresses: [$NODE_IP]
  conditions: {ready: true}
  nodeName: $NODE_NAME
ports:
- {name: dns, port: $COREDNS_PORT, protocol: UDP}
- {name: dns-tcp, port: $COREDNS_PORT, protocol: TCP}
EOF
}

# The local-path provisioner kind ships (rancher's), run on the host like CoreDNS:
# a PersistentVolumeClaim of the default StorageClass `standard` (kind's name) gets
# a hostPath volume under $LOCAL_PATH_DIR, made and removed by helper pods
# (the busybox image) that the provisioner starts in its namespace.
LOCAL_PATH_NS=local-path-storage
LOCAL_PATH_DIR="$CL/local-path"
local_path_provisioner_objects() {
  kc apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Namespace
metadata: {name: $LOCAL_PATH_NS}
---
# The helper pods run as this ServiceAccount; they need no API access.
apiVersion: v1
kind: ServiceAccount
metadata: {name: local-path-provisioner, namespace: $LOCAL_PATH_NS}
automountServiceAccountToken: false
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "system:local-path-provisioner"}
rules:
# Claims to provision, the nodes they are bound to, their StorageClasses.
- apiGroups: [""]
  resources: [nodes, persistentvolumeclaims]
  verbs: [get, list, watch]
- apiGroups: [storage.k8s.io]
  resources: [storageclasses]
  verbs: [get, list, watch]
# The volumes it makes and deletes.
- apiGroups: [""]
  resources: [persistentvolumes]
  verbs: [get, list, watch, create, patch, update, delete]
# Events on the claims.
- apiGroups: [""]
  resources: [events]
  verbs: [create, patch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "system:local-path-provisioner"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:local-path-provisioner"}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: User, name: "system:local-path-provisioner"}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: local-path-provisioner, namespace: $LOCAL_PATH_NS}
rules:
# Its configuration, and the helper pods (with their logs) in its own namespace.
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get, list, watch]
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list, watch, create, delete]
- apiGroups: [""]
  resources: [pods/log]
  verbs: [get]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: local-path-provisioner, namespace: $LOCAL_PATH_NS}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: local-path-provisioner}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: User, name: "system:local-path-provisioner"}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: local-path-config, namespace: $LOCAL_PATH_NS}
data:
  config.json: |-
    {"nodePathMap": [{"node": "DEFAULT_PATH_FOR_NON_LISTED_NODES", "paths": ["$LOCAL_PATH_DIR"]}]}
  # World-writable, as kind's: the pods' users differ (the store runs as 65532).
  setup: |-
    #!/bin/sh
    set -eu
    mkdir -m 0777 -p "\$VOL_DIR"
  teardown: |-
    #!/bin/sh
    set -eu
    rm -rf "\$VOL_DIR"
  helperPod.yaml: |-
    apiVersion: v1
    kind: Pod
    metadata:
      name: helper-pod
    spec:
      containers:
      - name: helper-pod
        image: $SMOKE_IMAGE
        imagePullPolicy: Never
        # Root, to make and remove directories in the root-owned $LOCAL_PATH_DIR.
        securityContext: {runAsUser: 0, runAsGroup: 0}
---
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: standard
  annotations: {storageclass.kubernetes.io/is-default-class: "true"}
provisioner: rancher.io/local-path
volumeBindingMode: WaitForFirstConsumer
reclaimPolicy: Delete
EOF
}

start_local_path_provisioner() {
  mkdir -p "$LOCAL_PATH_DIR"
  # The helper pods' image.
  "$HERE/images.sh" smoke >>"$LOGS/images.log" 2>&1 || { tail -20 "$LOGS/images.log" >&2; die "could not import the busybox image"; }
  local_path_provisioner_objects
  start local-path-provisioner "$BIN/local-path-provisioner" start \
    --kubeconfig "$ETC/local-path-provisioner.kubeconfig" --namespace "$LOCAL_PATH_NS" \
    --provisioner-name rancher.io/local-path --configmap-name local-path-config \
    --service-account-name local-path-provisioner --helper-image "$SMOKE_IMAGE"
  # It has no health endpoint: it is up once it has read its configuration and keeps running.
  sleep 2
  check_alive local-path-provisioner
}

# ---------------------------------------------------------------- up / down / status

cmd_up() {
  local mode=${1:-full}
  case $mode in full|api-only) ;; *) die "up: unknown mode '$mode' (use: up [api-only])" ;; esac
  local t0=$SECONDS
  for b in kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl etcd coredns local-path-provisioner; do
    [ -x "$BIN/$b" ] || die "$BIN/$b missing: run '$0 build' first"
  done
  if [ -f "$STATE/mode" ]; then
    die "a cluster is already recorded as up ($(cat "$STATE/mode")); run '$0 down' first"
  fi
  mkdir -p "$LOGS" "$PIDS" "$STATE" "$RUN_DIR"
  # Fresh cluster state on every up; images in containerd's store are kept.
  rm -rf "$CL/etcd" "$CL/kubelet" "$CL/cni/ipam" "$CL/local-path" "$LOGS"/*.log
  mkdir -p "$CL/etcd" "$CL/kubelet"

  if [ "$mode" = full ]; then install_packages "${APT_PACKAGES[@]}"; else install_packages "${APT_PACKAGES_API_ONLY[@]}"; fi
  command -v openssl >/dev/null || die "openssl is required"
  command -v curl >/dev/null || die "curl is required"
  check_ranges
  # The firewall comes first: before any component can send a packet.
  firewall_up
  echo "$mode" > "$STATE/mode"
  host_network_up
  make_pki
  write_configs

  start etcd "$BIN/etcd" --name bookstore-etcd --data-dir "$CL/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_CLIENT_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_CLIENT_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "bookstore-etcd=http://127.0.0.1:$ETCD_PEER_PORT" --listen-metrics-urls "" \
    --quota-backend-bytes 2147483648 --log-level warn
  wait_up etcd 60 curl -fsS --max-time 2 "http://127.0.0.1:$ETCD_CLIENT_PORT/health"

  start kube-apiserver "$BIN/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$ETCD_CLIENT_PORT" \
    --advertise-address "$NODE_IP" --bind-address "$NODE_IP" --secure-port "$API_PORT" \
    --service-cluster-ip-range "$SERVICE_CIDR" \
    --client-ca-file "$PKI/ca.crt" --tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" \
    --kubelet-client-certificate "$PKI/apiserver-kubelet-client.crt" --kubelet-client-key "$PKI/apiserver-kubelet-client.key" \
    --kubelet-certificate-authority "$PKI/ca.crt" --kubelet-preferred-address-types InternalIP \
    --service-account-issuer "https://kubernetes.default.svc.$CLUSTER_DOMAIN" \
    --service-account-key-file "$PKI/sa.pub" --service-account-signing-key-file "$PKI/sa.key" \
    --authorization-mode Node,RBAC --enable-admission-plugins NodeRestriction \
    --allow-privileged=true --profiling=false --v=1
  wait_up kube-apiserver 120 apiserver_ready

  start kube-controller-manager "$BIN/kube-controller-manager" \
    --kubeconfig "$ETC/controller-manager.kubeconfig" \
    --authentication-kubeconfig "$ETC/controller-manager.kubeconfig" --authorization-kubeconfig "$ETC/controller-manager.kubeconfig" \
    --bind-address 127.0.0.1 --leader-elect=false --use-service-account-credentials=true \
    --cluster-signing-cert-file "$PKI/ca.crt" --cluster-signing-key-file "$PKI/ca.key" \
    --root-ca-file "$PKI/ca.crt" --service-account-private-key-file "$PKI/sa.key" \
    --service-cluster-ip-range "$SERVICE_CIDR" --cluster-cidr "$POD_CIDR" --allocate-node-cidrs=false \
    --profiling=false --v=1
  wait_up kube-controller-manager 60 curl -fsSk --max-time 2 https://127.0.0.1:10257/healthz
  wait_for "default ServiceAccount" 60 kc get serviceaccount default -n default

  if [ "$mode" = api-only ]; then
    log "up (api-only): etcd, kube-apiserver, kube-controller-manager in $((SECONDS - t0))s"
    log "kubeconfig: $KUBECONFIG_ADMIN"
    return 0
  fi

  start kube-scheduler "$BIN/kube-scheduler" \
    --kubeconfig "$ETC/scheduler.kubeconfig" \
    --authentication-kubeconfig "$ETC/scheduler.kubeconfig" --authorization-kubeconfig "$ETC/scheduler.kubeconfig" \
    --bind-address 127.0.0.1 --leader-elect=false --profiling=false --v=1
  wait_up kube-scheduler 60 curl -fsSk --max-time 2 https://127.0.0.1:10259/healthz

  start containerd /usr/bin/containerd --config "$ETC/containerd.toml"
  wait_up containerd 60 ctr --address "$CONTAINERD_SOCK" version
  # The sandbox (pause) image must be present before the first pod.
  "$HERE/images.sh" pause >>"$LOGS/images.log" 2>&1 || { tail -20 "$LOGS/images.log" >&2; die "could not import the pause image"; }

  start kubelet "$BIN/kubelet" --config "$ETC/kubelet.yaml" --kubeconfig "$ETC/kubelet.kubeconfig" \
    --hostname-override "$NODE_NAME" --node-ip "$NODE_IP" --root-dir "$CL/kubelet" --v=1
  start kube-proxy "$BIN/kube-proxy" --config "$ETC/kube-proxy.yaml" --v=1
  wait_up kube-proxy 60 curl -fsS --max-time 2 http://127.0.0.1:10256/healthz

  coredns_rbac
  start coredns "$BIN/coredns" -conf "$ETC/Corefile"
  wait_up coredns 60 curl -fsS --max-time 2 http://127.0.0.1:18181/ready

  wait_up kubelet 180 node_ready
  wait_up coredns 60 dns_answers
  start_local_path_provisioner
  log "up: node $NODE_NAME Ready, DNS answers, volumes provisioned, in $((SECONDS - t0))s"
  log "kubeconfig: $KUBECONFIG_ADMIN"
}

# Remove every container (and pod sandbox) of our containerd, and the network namespaces of the sandboxes.
cleanup_containers() {
  [ -S "$CONTAINERD_SOCK" ] || return 0
  local ctr=(ctr --address "$CONTAINERD_SOCK" -n k8s.io) id ns
  timeout 10 "${ctr[@]}" version >/dev/null 2>&1 || { log "containerd not answering; skipping container cleanup"; return 0; }
  local ids; ids=$(timeout 20 "${ctr[@]}" containers ls -q 2>/dev/null || true)
  for id in $ids; do
    ns=$(timeout 10 "${ctr[@]}" containers info "$id" 2>/dev/null | grep -o '"/var/run/netns/cni-[^"]*"' | tr -d '"' | head -1 || true)
    timeout 10 "${ctr[@]}" tasks kill -a -s SIGKILL "$id" >/dev/null 2>&1 || true
    timeout 10 "${ctr[@]}" tasks delete -f "$id" >/dev/null 2>&1 || true
    timeout 10 "${ctr[@]}" containers delete "$id" >/dev/null 2>&1 || true
    if [ -n "$ns" ] && [ -e "$ns" ]; then ip netns delete "$(basename "$ns")" 2>/dev/null || { umount "$ns" 2>/dev/null; rm -f "$ns"; }; fi
  done
  [ -z "$ids" ] || log "removed $(echo "$ids" | wc -w) containers"
}

umount_under() { # umount_under DIR: lazily unmount everything mounted below DIR, deepest first
  local d=$1 m
  [ -d "$d" ] || return 0
  for m in $(awk -v d="$d/" 'index($2, d) == 1 {print $2}' /proc/mounts | sort -r); do
    umount -l "$m" 2>/dev/null || log "could not unmount $m"
  done
}

cmd_down() {
  local t0=$SECONDS
  mkdir -p "$PIDS" "$STATE"
  stop local-path-provisioner
  stop coredns
  stop kube-proxy
  stop kubelet
  cleanup_containers
  stop containerd
  stop kube-scheduler
  stop kube-controller-manager
  stop kube-apiserver
  stop etcd
  # Anything still alive that we recorded (e.g. a second instance)?
  local f
  for f in "$PIDS"/*.pid; do if [ -e "$f" ]; then stop "$(basename "$f" .pid)"; fi; done
  # Shims of containers that survived (should be none): only those started from our containerd.
  local p
  for p in $(pgrep -f "containerd-shim-runc-v2 .*-address $CONTAINERD_SOCK" || true); do
    log "killing leftover shim $p"; kill -KILL "$p" 2>/dev/null || true
  done
  # kube-proxy's and kubelet's iptables chains.
  if [ -x "$BIN/kube-proxy" ]; then
    "$BIN/kube-proxy" --cleanup --v=0 >>"$LOGS/kube-proxy-cleanup.log" 2>&1 || log "kube-proxy --cleanup reported errors (see $LOGS/kube-proxy-cleanup.log)"
  fi
  local t c
  for t in filter nat mangle; do
    for c in KUBE-KUBELET-CANARY KUBE-FIREWALL KUBE-IPTABLES-HINT KUBE-POSTROUTING KUBE-MARK-MASQ KUBE-MARK-DROP; do
      if iptables -w 5 -t "$t" -n -L "$c" >/dev/null 2>&1; then
        iptables -w 5 -t "$t" -S 2>/dev/null | { grep -E -- "-j $c( |\$)" || true; } | sed 's/^-A //' \
          | while read -r rule; do eval "iptables -w 5 -t $t -D $rule" || true; done
        iptables -w 5 -t "$t" -F "$c" 2>/dev/null || true
        iptables -w 5 -t "$t" -X "$c" 2>/dev/null || true
      fi
    done
  done
  host_network_down
  # Any pod-to-pod connection tracking entries.
  if command -v conntrack >/dev/null; then
    conntrack -D -s "$POD_CIDR" >/dev/null 2>&1 || true
    conntrack -D -d "$SERVICE_CIDR" >/dev/null 2>&1 || true
  fi
  # Mounts left under kubelet's root dir and containerd's state dir (sandbox /dev/shm, volumes).
  umount_under "$CL/kubelet"
  umount_under "$RUN_DIR"
  firewall_down
  rm -f "$STATE/mode"
  rm -rf "$RUN_DIR"
  # containerd 1.6 keeps shim sockets in /run/containerd/s whatever its state dir: remove if empty.
  rmdir /run/containerd/s /run/containerd/fifo /run/containerd 2>/dev/null || true
  log "down: done in $((SECONDS - t0))s"
}

cmd_status() {
  local n
  for n in etcd kube-apiserver kube-controller-manager kube-scheduler containerd kubelet kube-proxy coredns local-path-provisioner; do
    if alive "$n"; then printf '%-24s running (pid %s)\n' "$n" "$(cat "$PIDS/$n.pid")"
    elif [ -f "$PIDS/$n.pid" ]; then printf '%-24s DEAD (pid %s recorded)\n' "$n" "$(cat "$PIDS/$n.pid")"
    else printf '%-24s not started\n' "$n"; fi
  done
  [ -f "$STATE/mode" ] && echo "mode: $(cat "$STATE/mode")" || echo "mode: down"
  if [ -f "$KUBECONFIG_ADMIN" ] && alive kube-apiserver; then
    kc get nodes -o wide 2>&1 || true
    kc get pods -A -o wide 2>&1 || true
  fi
  if firewall_present; then echo "firewall chains $FW_CHAIN-IN/-OUT: present"; else echo "firewall chains $FW_CHAIN-IN/-OUT: absent"; fi
}

# ---------------------------------------------------------------- main

usage() { sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; }

main() {
  local cmd=${1:-}
  [ $# -gt 0 ] && shift
  case "$cmd" in
    build) cmd_build "$@" ;;
    gen-modules) cmd_gen_modules "$@" ;;
    up) need_root; cmd_up "$@" ;;
    down) need_root; cmd_down "$@" ;;
    status) cmd_status "$@" ;;
    -h|--help|help) usage ;;
    *) usage >&2; die "unknown command '${cmd}'" ;;
  esac
}

main "$@"
