#!/usr/bin/env bash
# mkrootfs.sh ROOTFS BINARY [BINARY...]
#
# Lays out a minimal container root file system in ROOTFS: each BINARY at
# /usr/local/bin/<name>, the shared libraries `ldd` says it needs (at their own
# paths, with the dynamic loader), /etc/passwd and /etc/group with the user
# nonroot (65532), /etc/nsswitch.conf, the CA bundle if the build machine has one,
# and a world-writable /tmp. Used by images.sh (no Docker) and by the Dockerfile,
# so both produce the same image layout.
set -euo pipefail

die() { printf 'mkrootfs: ERROR: %s\n' "$*" >&2; exit 1; }
[ $# -ge 2 ] || die "usage: mkrootfs.sh ROOTFS BINARY [BINARY...]"
root=$1; shift
mkdir -p "$root/usr/local/bin" "$root/etc" "$root/tmp"
chmod 1777 "$root/tmp"

copy_lib() { # copy a library to the same path inside the rootfs, following symlinks
  local lib=$1
  [ -e "$lib" ] || die "library $lib not found"
  mkdir -p "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
}

for bin in "$@"; do
  [ -f "$bin" ] && [ -x "$bin" ] || die "binary '$bin' does not exist or is not executable"
  cp -L "$bin" "$root/usr/local/bin/$(basename "$bin")"
  chmod 0755 "$root/usr/local/bin/$(basename "$bin")"
  if ldd_out=$(ldd "$bin" 2>&1); then
    # Lines: "libx.so => /path/libx.so (0x...)" and "/lib64/ld-linux-x86-64.so.2 (0x...)".
    while read -r lib; do
      copy_lib "$lib"
    done < <(printf '%s\n' "$ldd_out" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}')
    if printf '%s\n' "$ldd_out" | grep -q 'not found'; then
      die "ldd $bin: missing libraries: $(printf '%s\n' "$ldd_out" | grep 'not found' | tr '\n' ' ')"
    fi
  else
    printf '%s\n' "$ldd_out" | grep -q 'not a dynamic executable' \
      || die "ldd $bin failed: $ldd_out"
  fi
done

cat > "$root/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
EOF
cat > "$root/etc/group" <<'EOF'
root:x:0:
nonroot:x:65532:
nobody:x:65534:
EOF
printf 'hosts: files dns\n' > "$root/etc/nsswitch.conf"
mkdir -p "$root/home/nonroot"
chown 65532:65532 "$root/home/nonroot" 2>/dev/null || true
ca=/etc/ssl/certs/ca-certificates.crt
if [ -f "$ca" ]; then mkdir -p "$root/etc/ssl/certs"; cp -L "$ca" "$root$ca"; fi
