#!/usr/bin/env bash
# Checks that the root Dockerfile builds, without a Docker engine or registry:
#
#   tests/dockerfile/check.sh [DOCKERFILE]
#
# It reads the Dockerfile itself and runs its build stage's own steps:
#  1. a clean directory (the build stage's WORKDIR) gets exactly the files of
#     the stage's COPY instructions, with Docker's COPY rules (a directory's
#     contents, a file to a path or into a directory);
#  2. `cargo metadata --locked --offline` there (for the host's platform): every workspace member's and
#     path dependency's manifest is in that set, and Cargo.lock is complete;
#  3. the stage's RUN command as it stands (`/bin/sh -c`, its --mount flags
#     dropped). Its cache mount of WORKDIR/target is a symlink to this checkout's
#     cargo target directory (${CARGO_TARGET_DIR:-target}), so after run-all's
#     release build cargo finds the binaries fresh instead of building them a
#     second time (fat LTO takes minutes);
#  4. every source file the built binaries were compiled from (cargo's dep-info,
#     target/release/<bin>.d, rewritten by that RUN) is in the clean directory or
#     outside this checkout (crates, the toolchain); a file cargo still knows from
#     the checkout (one outside a package, e.g. an include_str!) must be in the
#     COPY set, identical;
#  5. each later stage: `FROM scratch`, its `COPY --from=<build stage>` source
#     exists, and its ENTRYPOINT runs `--version` inside that root file system
#     (chroot), so the libraries mkrootfs.sh copied are enough.
#
# What it does not cover: the base image (rust:1-bookworm: its Rust release and
# Debian's libraries; here the host's toolchain and libraries are used), fetching
# crates inside the image (here they come from cargo's local registry cache),
# BuildKit's parsing of the file (the syntax directive, heredocs, ARG/ENV: an
# instruction this script does not know fails the check, so it is taught first),
# and USER (not checked). Any failure exits non-zero.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
DOCKERFILE="$(realpath "${1:-$REPO/Dockerfile}")"
CONTEXT="$(dirname "$DOCKERFILE")"
TARGET="$(realpath -m "${CARGO_TARGET_DIR:-$REPO/target}")"

log() { printf '[dockerfile %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
fail() { printf '[dockerfile] FAIL: %s\n' "$*" >&2; exit 1; }
checks=0
ok() { checks=$((checks + 1)); log "ok: $*"; }

WORK="$(mktemp -d /tmp/bookstore-dockerfile.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT

# The Dockerfile's instructions, one a line: continuations joined, comments
# (and the syntax directive) and blank lines dropped.
awk '
  !cont && /^[[:space:]]*#/ { next }
  { sub(/^[[:space:]]+/, ""); line = cont ? line " " $0 : $0 }
  /\\[[:space:]]*$/ { sub(/\\[[:space:]]*$/, "", line); cont = 1; next }
  { cont = 0; if (line ~ /[^[:space:]]/) print line; line = "" }
' "$DOCKERFILE" >"$WORK/instructions"

build_stage="" stage="" workdir="/" run_command="" ctx=""
declare -A stage_source=() stage_entrypoint=()
later_stages=()

copy_into_context() { # copy_into_context SRC... DEST: Docker's COPY, into $ctx
  local args=("$@") dest src
  dest=${args[-1]}
  unset 'args[-1]'
  [ ${#args[@]} -ge 1 ] || fail "COPY without a source: $*"
  case $dest in /*) ;; *) dest="$workdir/$dest" ;; esac
  local into_dir=0
  { [ ${#args[@]} -gt 1 ] || [[ $dest == */ ]]; } && into_dir=1
  dest="$ctx$(realpath -m "$dest")"
  for src in "${args[@]}"; do
    [[ $src == *[*?[]* ]] && fail "COPY $src: wildcards are not emulated; teach $0 first"
    local from="$CONTEXT/$src"
    [ -e "$from" ] || fail "COPY $src: not in the build context $CONTEXT"
    if [ -d "$from" ]; then
      mkdir -p "$dest" && cp -a "$from/." "$dest/"
    elif [ $into_dir = 1 ]; then
      mkdir -p "$dest" && cp -a "$from" "$dest/"
    else
      mkdir -p "$(dirname "$dest")" && cp -a "$from" "$dest"
    fi
  done
}

while read -r instruction rest; do
  instruction=${instruction^^}
  if [ "$instruction" = FROM ]; then
    read -r image as name <<<"$rest"
    [ "${as^^}" = AS ] && [ -n "$name" ] || fail "FROM $rest: every stage needs a name (AS ...)"
    stage=$name
    if [ -z "$build_stage" ]; then
      build_stage=$stage
      ctx="$WORK/root"
      mkdir -p "$ctx"
      log "build stage '$stage' (FROM $image), emulated in $ctx"
    else
      [ "$image" = scratch ] || fail "stage $stage is FROM $image; only FROM scratch is emulated"
      later_stages+=("$stage")
    fi
    continue
  fi
  [ -n "$stage" ] || fail "$instruction before the first FROM"
  if [ "$stage" = "$build_stage" ]; then
    case $instruction in
      WORKDIR)
        case $rest in /*) workdir=$(realpath -m "$rest") ;; *) workdir=$(realpath -m "$workdir/$rest") ;; esac
        mkdir -p "$ctx$workdir" ;;
      COPY)
        [[ $rest == --* ]] && fail "COPY $rest: flags are not emulated in the build stage"
        read -r -a words <<<"$rest"
        copy_into_context "${words[@]}" ;;
      RUN)
        [ -z "$run_command" ] || fail "a second RUN in the build stage; teach $0 to run both"
        run_command=$rest
        while [[ $run_command == --mount=* ]]; do
          run_command=${run_command#* }
          run_command=${run_command#"${run_command%%[![:space:]]*}"}
        done
        [[ $run_command == --* ]] && fail "RUN flag not emulated: $run_command" ;;
      *) fail "the build stage's $instruction is not emulated; teach $0 first" ;;
    esac
  else
    case $instruction in
      COPY)
        read -r -a words <<<"$rest"
        [ "${words[0]}" = "--from=$build_stage" ] && [ ${#words[@]} = 3 ] \
          || fail "stage $stage: COPY $rest (only COPY --from=$build_stage SRC DEST is emulated)"
        stage_source[$stage]=${words[1]} ;;
      ENTRYPOINT)
        stage_entrypoint[$stage]=$(jq -r '.[0]' <<<"$rest") \
          || fail "stage $stage: ENTRYPOINT must be in exec form (a JSON list)" ;;
      USER) ;;
      *) fail "stage $stage: $instruction is not emulated; teach $0 first" ;;
    esac
  fi
done <"$WORK/instructions"
[ -n "$run_command" ] || fail "the build stage has no RUN"
[ ${#later_stages[@]} -ge 1 ] || fail "no image stage after the build stage"
src="$ctx$workdir"
ok "parsed $DOCKERFILE: build stage '$build_stage' (WORKDIR $workdir), images ${later_stages[*]}"

# 2. The workspace loads from exactly the copied files.
# (For the host's platform: crates of other platforms are never downloaded here.)
host=$(rustc -vV | awk '/^host:/ {print $2}')
(cd "$src" && env -u CARGO_TARGET_DIR cargo metadata --locked --offline --format-version 1 --filter-platform "$host" \
   >/dev/null 2>"$WORK/metadata.log") \
  || { cat "$WORK/metadata.log" >&2; fail "cargo metadata --locked --offline fails on the COPY set"; }
ok "cargo metadata --locked --offline loads the workspace from the COPY set"

# 3. The RUN command, with WORKDIR/target the cached target directory.
mkdir -p "$TARGET"
ln -s "$TARGET" "$src/target"
log "RUN $run_command"
(cd "$src" && env -u CARGO_TARGET_DIR /bin/sh -c "$run_command") >"$WORK/run.log" 2>&1 \
  || { tail -40 "$WORK/run.log" >&2; fail "the build stage's RUN failed"; }
ok "the build stage's RUN succeeds in the clean directory"

# 4. Every compiled source came from the COPY set.
bins=$(grep -oE -- '--bin[ =][A-Za-z0-9_-]+' <<<"$run_command" | awk '{sub(/^--bin[ =]/, ""); print}')
[ -n "$bins" ] || fail "the RUN command builds no --bin; cannot tell which dep-info to read"
cargo_home=$(realpath -m "${CARGO_HOME:-$HOME/.cargo}")
sysroot=$(rustc --print sysroot)
for bin in $bins; do
  depinfo="$TARGET/release/$bin.d"
  [ -s "$depinfo" ] || fail "no dep-info $depinfo after the RUN"
  n=0 copied_sources=0
  while read -r path; do
    n=$((n + 1))
    case $path in
      "$src"/*)
        [ -e "$path" ] || fail "$bin was compiled from $path, which is not in the COPY set"
        copied_sources=$((copied_sources + 1)) ;;
      "$REPO"/*)
        copied="$src/${path#"$REPO"/}"
        [ -e "$copied" ] || fail "$bin was compiled from ${path#"$REPO"/}, which the Dockerfile does not COPY"
        cmp -s "$path" "$copied" || fail "${path#"$REPO"/} differs from its copy" ;;
      "$TARGET"/* | "$cargo_home"/* | "$sysroot"/*) ;; # build scripts' output, crates, the standard library
      *) fail "$bin was compiled from $path, outside the COPY set (another checkout sharing $TARGET?)" ;;
    esac
  done < <(sed 's/^[^:]*: //' "$depinfo" | tr ' ' '\n' | grep -v '^$')
  [ "$copied_sources" -gt 0 ] || fail "$depinfo names no file of the clean directory"
  ok "$bin: all $n sources it was compiled from are in the COPY set ($copied_sources from the clean directory)"
done

# 5. The images: each stage's root file system and entrypoint.
for stage in "${later_stages[@]}"; do
  from=${stage_source[$stage]:-}
  entrypoint=${stage_entrypoint[$stage]:-}
  [ -n "$from" ] && [ -n "$entrypoint" ] || fail "stage $stage needs COPY --from=$build_stage and an ENTRYPOINT"
  case $from in /*) ;; *) from="$workdir/$from" ;; esac
  rootfs="$ctx$(realpath -m "$from")"
  [ -d "$rootfs" ] || fail "stage $stage copies $from, which the RUN did not make"
  [ -x "$rootfs$entrypoint" ] || fail "stage $stage: ENTRYPOINT $entrypoint is not an executable in $from"
  chroot "$rootfs" "$entrypoint" --version >"$WORK/version.log" 2>&1 \
    || { cat "$WORK/version.log" >&2; fail "stage $stage: $entrypoint --version fails inside its root file system"; }
  ok "image $stage: $entrypoint runs in its root file system ($(head -1 "$WORK/version.log"))"
done
log "PASS: $checks checks"
