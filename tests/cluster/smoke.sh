#!/usr/bin/env bash
# Smoke test of the test cluster itself (needs no Rust binaries):
#   build, up, import a busybox image, run a Deployment + Service (busybox httpd),
#   check from a client pod that CoreDNS resolves kubernetes.default and the Service,
#   that the API Service answers with the pod's ServiceAccount token and that the
#   web Service answers by DNS name; check the ClusterIP from the machine; delete the
#   web pod and see it recreated and Ready; then down. Exits non-zero on any failure.
#
#   tests/cluster/smoke.sh            (SMOKE_KEEP=1 leaves the cluster up afterwards)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
source "$HERE/versions.env"
source "$HERE/cluster.env"
TARGET="${BOOKSTORE_TARGET_DIR:-$REPO/target}"
KCFG="$TARGET/cluster/kubeconfig"
NS=bookstore-smoke

log() { printf '[smoke %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
fail() { printf '[smoke] FAIL: %s\n' "$*" >&2; exit 1; }
kc() { "$TARGET/cluster/bin/kubectl" --kubeconfig "$KCFG" "$@"; }

t0=$SECONDS
cleanup() {
  local rc=$?
  if [ $rc -ne 0 ]; then
    log "failed (rc=$rc); state for debugging:"
    kc get pods -A -o wide 2>&1 | sed 's/^/  /' >&2 || true
    kc -n "$NS" describe pods 2>&1 | tail -40 | sed 's/^/  /' >&2 || true
    kc get events -A --sort-by=.lastTimestamp 2>&1 | tail -20 | sed 's/^/  /' >&2 || true
  fi
  if [ "${SMOKE_KEEP:-0}" = 1 ]; then
    log "SMOKE_KEEP=1: leaving the cluster up (tests/cluster/cluster.sh down to stop it)"
  else
    "$HERE/cluster.sh" down || { log "cluster.sh down failed"; rc=1; }
  fi
  if [ $rc -eq 0 ]; then log "PASS in $((SECONDS - t0))s"; else log "FAIL after $((SECONDS - t0))s"; fi
  exit $rc
}

"$HERE/cluster.sh" build
tb=$SECONDS
trap cleanup EXIT
"$HERE/cluster.sh" up
log "cluster up in $((SECONDS - tb))s"
"$HERE/images.sh" smoke

kc create namespace "$NS" >/dev/null
# The default ServiceAccount of a new namespace appears asynchronously.
end=$((SECONDS + 60))
until kc -n "$NS" get serviceaccount default >/dev/null 2>&1; do
  [ $SECONDS -lt $end ] || fail "no default ServiceAccount in $NS after 60s"
  sleep 1
done

kc -n "$NS" apply -f - >/dev/null <<EOF
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      terminationGracePeriodSeconds: 2
      securityContext: {runAsUser: 65534, runAsGroup: 65534, runAsNonRoot: true}
      containers:
      - name: web
        image: $SMOKE_IMAGE
        imagePullPolicy: Never
        args: ["mkdir -p /tmp/www && echo bookstore-smoke-ok > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www"]
        ports: [{containerPort: 8080, name: http}]
        readinessProbe:
          httpGet: {path: /index.html, port: http}
          periodSeconds: 2
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http}]
EOF

log "waiting for the web Deployment"
kc -n "$NS" rollout status deployment/web --timeout=120s || fail "web Deployment not available"

# The client pod: DNS through CoreDNS, the API Service with its ServiceAccount token, the web Service by name.
kc -n "$NS" apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Pod
metadata: {name: client}
spec:
  restartPolicy: Never
  securityContext: {runAsUser: 65534, runAsGroup: 65534, runAsNonRoot: true}
  containers:
  - name: client
    image: $SMOKE_IMAGE
    imagePullPolicy: Never
    args:
    - |
      set -e
      echo "--- resolv.conf"; cat /etc/resolv.conf
      echo "--- nslookup kubernetes.default.svc.$CLUSTER_DOMAIN"
      nslookup kubernetes.default.svc.$CLUSTER_DOMAIN | tee /tmp/ns
      grep -q "$API_SERVICE_IP" /tmp/ns
      echo "--- nslookup web.$NS.svc.$CLUSTER_DOMAIN"
      nslookup web.$NS.svc.$CLUSTER_DOMAIN
      echo "--- an outside name must not resolve (CoreDNS forwards nothing)"
      nslookup example.com >/tmp/ext 2>&1 || true
      cat /tmp/ext
      if grep -q '^Name:' /tmp/ext; then echo "outside name resolved"; exit 1; fi
      echo "--- other ports of the machine are closed to pods (kubelet $NODE_IP:10250)"
      if timeout 3 nc -w 2 $NODE_IP 10250 </dev/null; then echo "kubelet port reachable from a pod"; exit 1; fi
      echo "--- API Service by short name kubernetes.default (search path), ServiceAccount token"
      # (Debian's busybox 1.35 wget crashes with -T; the timeout applet bounds it instead.)
      TOKEN=\$(cat /var/run/secrets/kubernetes.io/serviceaccount/token)
      timeout 10 wget -q -O - --no-check-certificate --header "Authorization: Bearer \$TOKEN" https://kubernetes.default/version | tee /tmp/v
      grep -q '"gitVersion": "$K8S_VERSION"' /tmp/v
      echo; echo "--- web Service by name"
      timeout 10 wget -q -O - http://web/index.html | tee /tmp/w
      grep -q bookstore-smoke-ok /tmp/w
      echo CLIENT-OK
EOF

end=$((SECONDS + 120))
while :; do
  phase=$(kc -n "$NS" get pod client -o 'jsonpath={.status.phase}' 2>/dev/null || true)
  case $phase in Succeeded|Failed) break ;; esac
  [ $SECONDS -lt $end ] || fail "client pod still '$phase' after 120s"
  sleep 1
done
kc -n "$NS" logs client | sed 's/^/  client| /' >&2
[ "$phase" = Succeeded ] || fail "client pod $phase"
kc -n "$NS" logs client | grep CLIENT-OK >/dev/null || fail "client pod did not print CLIENT-OK"
log "client pod: DNS, API Service and web Service OK"

ip=$(kc -n "$NS" get service web -o 'jsonpath={.spec.clusterIP}')
out=$(curl -fsS --max-time 10 "http://$ip/index.html") || fail "curl http://$ip/ (web ClusterIP) from the machine failed"
[ "$out" = bookstore-smoke-ok ] || fail "unexpected answer from the ClusterIP: $out"
log "machine -> ClusterIP $ip: OK"

old=$(kc -n "$NS" get pods -l app=web -o 'jsonpath={.items[0].metadata.name}')
kc -n "$NS" delete pod "$old" --wait=false >/dev/null
end=$((SECONDS + 120))
while :; do
  new=$(kc -n "$NS" get pods -l app=web -o 'jsonpath={range .items[*]}{.metadata.name}{" "}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' 2>/dev/null \
    | awk -v old="$old" '$1 != old && $2 == "True" {print $1; exit}' || true)
  [ -n "$new" ] && break
  [ $SECONDS -lt $end ] || fail "the deleted web pod $old was not replaced by a Ready pod within 120s"
  sleep 1
done
log "deleted pod $old, replaced by Ready pod $new"
# kube-proxy follows the EndpointSlice a moment after the pod turns Ready: retry, bounded.
end=$((SECONDS + 60))
until out=$(curl -fsS --max-time 3 "http://$ip/index.html" 2>&1) && [ "$out" = bookstore-smoke-ok ]; do
  [ $SECONDS -lt $end ] || fail "ClusterIP does not answer within 60s after the pod was replaced (last: $out)"
  sleep 1
done
log "ClusterIP answers from the new pod"

# A claim of the default StorageClass gets a volume from the local-path provisioner
# (as on kind): a non-root pod writes to it, the file is on the node under
# target/cluster/local-path, and deleting the claim deletes the volume and its directory.
kc -n "$NS" apply -f - >/dev/null <<EOF
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: data}
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 16Mi}}
---
apiVersion: v1
kind: Pod
metadata: {name: writer}
spec:
  restartPolicy: Never
  securityContext: {runAsUser: 65534, runAsGroup: 65534, runAsNonRoot: true}
  containers:
  - name: writer
    image: $SMOKE_IMAGE
    imagePullPolicy: Never
    args: ["echo bookstore-volume-ok > /data/proof"]
    volumeMounts: [{name: data, mountPath: /data}]
  volumes:
  - {name: data, persistentVolumeClaim: {claimName: data}}
EOF
end=$((SECONDS + 120))
until [ "$(kc -n "$NS" get pod writer -o 'jsonpath={.status.phase}' 2>/dev/null)" = Succeeded ]; do
  [ $SECONDS -lt $end ] || { kc -n "$NS" describe pvc data >&2; fail "the writer pod did not succeed within 120s"; }
  sleep 1
done
pv=$(kc -n "$NS" get pvc data -o 'jsonpath={.spec.volumeName}')
[ "$(kc get storageclass standard -o 'jsonpath={.metadata.annotations.storageclass\.kubernetes\.io/is-default-class}')" = true ] \
  || fail "the StorageClass standard is not the default"
dir=$(kc get pv "$pv" -o 'jsonpath={.spec.hostPath.path}')
case $dir in "$TARGET/cluster/local-path/"*) ;; *) fail "volume $pv is at '$dir', not under $TARGET/cluster/local-path" ;; esac
[ "$(cat "$dir/proof")" = bookstore-volume-ok ] || fail "the pod's file is not in $dir"
kc -n "$NS" delete pod writer --wait=true >/dev/null
kc -n "$NS" delete pvc data --wait=true >/dev/null
end=$((SECONDS + 120))
while kc get pv "$pv" >/dev/null 2>&1 || [ -e "$dir" ]; do
  [ $SECONDS -lt $end ] || fail "volume $pv or its directory $dir still there 120s after its claim was deleted"
  sleep 1
done
log "local-path provisioner: claim bound, pod wrote $dir, volume and directory deleted with the claim"
