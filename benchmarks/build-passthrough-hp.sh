#!/usr/bin/env bash
# Builds libfuse's example/passthrough_hp (the "high-performance" passthrough server: FUSE
# passthrough, FUSE-over-io_uring, clone_fd, splice) from a libfuse source directory, for
# `bench.py --passthrough-hp PATH`.
#
#   benchmarks/build-passthrough-hp.sh LIBFUSE_SOURCE_DIR [BUILD_DIR]
#
# LIBFUSE_SOURCE_DIR is an unpacked libfuse release (3.18 or later for io_uring; e.g. the
# fuse-3.18.2 release tarball from libfuse's GitHub releases page) or a git checkout: obtain it
# yourself, this script downloads nothing. BUILD_DIR defaults to /var/tmp/ferry-bench/libfuse-build.
# Prints the path of the built binary on its last line. The binary is linked with rpath to the
# libfuse3.so it was built with, so it needs no installation (and does not replace Debian's).
#
# Needs (Debian): meson ninja-build g++ pkg-config, and liburing-dev libnuma-dev for the
# io_uring mode (without them libfuse builds without FUSE-over-io_uring; the script says so).
set -euo pipefail

src=${1:?usage: $0 LIBFUSE_SOURCE_DIR [BUILD_DIR]}
build=${2:-/var/tmp/ferry-bench/libfuse-build}
src=$(cd "$src" && pwd)
[ -f "$src/example/passthrough_hp.cc" ] || { echo "$src has no example/passthrough_hp.cc: not a libfuse 3 source tree" >&2; exit 1; }

missing=()
for p in meson ninja-build g++ pkg-config liburing-dev libnuma-dev; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "build-passthrough-hp: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "build-passthrough-hp: missing packages (install them as root): ${missing[*]}" >&2
    exit 1
  fi
fi

if [ ! -f "$build/build.ninja" ]; then
  # No utils (fusermount3, mount.fuse3: Debian's stay in use), no tests; examples include passthrough_hp.
  meson setup "$build" "$src" --buildtype=release -Dexamples=true -Dutils=false -Dtests=false \
    -Dudevrulesdir=/tmp/libfuse-udev-unused -Dinitscriptdir= >&2
fi
ninja -C "$build" example/passthrough_hp >&2

if grep -q "HAVE_URING" "$build/config.h" 2>/dev/null || grep -q "HAVE_URING" "$build"/*.h 2>/dev/null; then
  echo "build-passthrough-hp: built with FUSE-over-io_uring (-o io_uring)" >&2
else
  echo "build-passthrough-hp: built WITHOUT FUSE-over-io_uring (liburing with SQE128 or libnuma missing)" >&2
fi
version=$(sed -n "s/^ *version: *'\([^']*\)'.*/\1/p" "$src/meson.build" | head -1)
echo "build-passthrough-hp: libfuse ${version:-?}" >&2
echo "$build/example/passthrough_hp"
