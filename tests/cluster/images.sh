#!/usr/bin/env bash
# Builds OCI images without Docker and imports them into the test cluster's
# containerd (namespace k8s.io), where pods can use them with imagePullPolicy
# IfNotPresent or Never. The containerd of `cluster.sh up` must be running.
#
#   tests/cluster/images.sh                 bookstore + bookstore-operator from target/release
#   tests/cluster/images.sh bookstore [BIN] $BOOKSTORE_IMAGE  (default BIN target/release/bookstore)
#   tests/cluster/images.sh operator [BIN]  $OPERATOR_IMAGE   (default BIN target/release/bookstore-operator)
#   tests/cluster/images.sh pause           $SANDBOX_IMAGE from Debian's static catatonit
#   tests/cluster/images.sh smoke           $SMOKE_IMAGE from Debian's busybox-static
#   tests/cluster/images.sh prometheus      $PROMETHEUS_IMAGE from the cluster's Prometheus build (cluster.sh build)
#   tests/cluster/images.sh pack NAME ENTRYPOINT BINARY...   any binaries (mkrootfs.sh layout)
#
# Image names are in tests/cluster/cluster.env. The OCI archives are kept in
# target/cluster/images/ (usable with other tools, e.g. `kind load image-archive`).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
# shellcheck source=cluster.env
source "$HERE/cluster.env"
TARGET="${BOOKSTORE_TARGET_DIR:-$REPO/target}"
OUT="$TARGET/cluster/images"

log() { printf '[images %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { printf '[images] ERROR: %s\n' "$*" >&2; exit 1; }

sha() { sha256sum "$1" | cut -d' ' -f1; }

# oci_archive NAME ROOTFS ARCHIVE ENTRYPOINT_JSON CMD_JSON USER
# Writes an OCI image layout (one uncompressed layer) as a tar archive.
oci_archive() {
  local name=$1 rootfs=$2 archive=$3 entry=$4 cmd=$5 user=$6
  local lay; lay=$(mktemp -d)
  mkdir -p "$lay/blobs/sha256"
  tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 --format=posix \
    --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
    -C "$rootfs" -cf "$lay/layer.tar" .
  local ld lsz; ld=$(sha "$lay/layer.tar"); lsz=$(stat -c %s "$lay/layer.tar")
  mv "$lay/layer.tar" "$lay/blobs/sha256/$ld"
  cat > "$lay/config.json" <<EOF
{"architecture":"amd64","os":"linux","created":"1970-01-01T00:00:00Z","config":{"User":"$user","Env":["PATH=/usr/local/bin:/usr/bin:/bin"],"Entrypoint":$entry,"Cmd":$cmd,"WorkingDir":"/"},"rootfs":{"type":"layers","diff_ids":["sha256:$ld"]},"history":[{"created":"1970-01-01T00:00:00Z","created_by":"tests/cluster/images.sh"}]}
EOF
  local cd csz; cd=$(sha "$lay/config.json"); csz=$(stat -c %s "$lay/config.json")
  mv "$lay/config.json" "$lay/blobs/sha256/$cd"
  cat > "$lay/manifest.json" <<EOF
{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:$cd","size":$csz},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:$ld","size":$lsz}]}
EOF
  local md msz; md=$(sha "$lay/manifest.json"); msz=$(stat -c %s "$lay/manifest.json")
  mv "$lay/manifest.json" "$lay/blobs/sha256/$md"
  cat > "$lay/index.json" <<EOF
{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:$md","size":$msz,"platform":{"architecture":"amd64","os":"linux"},"annotations":{"io.containerd.image.name":"$name","org.opencontainers.image.ref.name":"${name##*:}"}}]}
EOF
  printf '{"imageLayoutVersion":"1.0.0"}\n' > "$lay/oci-layout"
  mkdir -p "$(dirname "$archive")"
  tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -C "$lay" -cf "$archive" oci-layout index.json blobs
  rm -rf "$lay"
  log "$name: $archive (manifest sha256:$md)"
}

import() { # import ARCHIVE NAME
  local archive=$1 name=$2
  [ -S "$CONTAINERD_SOCK" ] || die "containerd socket $CONTAINERD_SOCK not found: start the cluster first (tests/cluster/cluster.sh up)"
  local ctr=(ctr --address "$CONTAINERD_SOCK" -n k8s.io)
  timeout 120 "${ctr[@]}" images import "$archive" >&2 || die "ctr images import $archive failed"
  # grep reads the whole list (not -q): under pipefail, an early exit would
  # kill ctr with SIGPIPE and fail the check exactly when the image is there.
  timeout 30 "${ctr[@]}" images ls -q | grep -x "$name" >/dev/null || die "image $name not in containerd after import"
  log "$name: imported into containerd (k8s.io)"
}

# build NAME ENTRYPOINT_JSON CMD_JSON USER ROOTFS
build_import() {
  local name=$1 entry=$2 cmd=$3 user=$4 rootfs=$5
  local base; base=$(echo "${name#*/}" | tr '/:' '__')
  oci_archive "$name" "$rootfs" "$OUT/$base.tar" "$entry" "$cmd" "$user"
  if [ "${IMAGES_NO_IMPORT:-0}" = 1 ]; then log "$name: not imported (IMAGES_NO_IMPORT=1)"; return 0; fi
  import "$OUT/$base.tar" "$name"
}

binary_image() { # binary_image NAME BINARY
  local name=$1 bin=$2
  [ -x "$bin" ] || die "$bin not found or not executable (build it first: cargo build --release)"
  local r; r=$(mktemp -d)
  "$HERE/mkrootfs.sh" "$r" "$bin"
  build_import "$name" "[\"/usr/local/bin/$(basename "$bin")\"]" null "65532:65532" "$r"
  rm -rf "$r"
}

pause_image() {
  local cat=/usr/bin/catatonit
  [ -x "$cat" ] || die "$cat missing: apt-get install catatonit"
  case $(ldd "$cat" 2>&1 || true) in *"not a dynamic"*) ;; *) die "$cat is not statically linked" ;; esac
  local r; r=$(mktemp -d)
  install -D -m 0755 "$cat" "$r/catatonit"
  # -P: pause mode, the sandbox's only job is to hold the namespaces.
  build_import "$SANDBOX_IMAGE" '["/catatonit","-P"]' null "65535:65535" "$r"
  rm -rf "$r"
}

smoke_image() {
  local bb=/bin/busybox
  [ -x "$bb" ] || die "$bb missing: apt-get install busybox-static"
  case $(ldd "$bb" 2>&1 || true) in *"not a dynamic"*) ;; *) die "$bb is not static (install busybox-static, not busybox)" ;; esac
  local r; r=$(mktemp -d)
  install -D -m 0755 "$bb" "$r/bin/busybox"
  local a
  for a in $("$bb" --list); do [ "$a" = busybox ] || ln -s busybox "$r/bin/$a"; done
  mkdir -p "$r/etc" "$r/tmp"; chmod 1777 "$r/tmp"
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/sh\n' > "$r/etc/passwd"
  printf 'root:x:0:\nnobody:x:65534:\n' > "$r/etc/group"
  build_import "$SMOKE_IMAGE" '["/bin/sh","-c"]' '["sleep 3600"]' "65534:65534" "$r"
  rm -rf "$r"
}

main() {
  local what=${1:-all}
  [ $# -gt 0 ] && shift
  case $what in
    all)
      binary_image "$BOOKSTORE_IMAGE" "$TARGET/release/bookstore"
      binary_image "$OPERATOR_IMAGE" "$TARGET/release/bookstore-operator" ;;
    bookstore) binary_image "$BOOKSTORE_IMAGE" "${1:-$TARGET/release/bookstore}" ;;
    operator) binary_image "$OPERATOR_IMAGE" "${1:-$TARGET/release/bookstore-operator}" ;;
    pause) pause_image ;;
    smoke) smoke_image ;;
    prometheus) binary_image "$PROMETHEUS_IMAGE" "$TARGET/cluster/bin/prometheus" ;;
    pack)
      [ $# -ge 3 ] || die "usage: images.sh pack NAME ENTRYPOINT BINARY..."
      local name=$1 entry=$2; shift 2
      local r; r=$(mktemp -d)
      "$HERE/mkrootfs.sh" "$r" "$@"
      build_import "$name" "[\"$entry\"]" null "65532:65532" "$r"
      rm -rf "$r" ;;
    -h|--help|help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//' ;;
    *) die "unknown image '$what' (all|bookstore|operator|pause|smoke|prometheus|pack)" ;;
  esac
}

main "$@"
