#!/usr/bin/env bash
# System calls and server CPU per FUSE request, for one fio job through one Ferry mount:
# counts from perf's syscall tracepoints on the ferry process while fio runs. Less noisy than
# throughput on a busy machine: use it to compare engines or builds, interleaved.
#
#   sudo benchmarks/syscalls.sh [--binary PATH] [--ferry-arg ARG]... [--cold] -- FIO-ARGS...
#   e.g. benchmarks/syscalls.sh --ferry-arg=--passthrough=never --ferry-arg=--io-engine=uring \
#            -- --rw=randwrite --bs=4k --direct=1 --ioengine=psync
#
# Prints one line: MiB/s, then per request (one reply written to /dev/fuse per request):
# read(2) calls (requests read, EAGAINs, eventfd reads), epoll_wait, fcntl, io_uring_enter, pread64,
# pwrite64, and the server's CPU in microseconds. The file: 1 GiB under /var/tmp/ferry-syscalls.
set -euo pipefail
binary="$(cd "$(dirname "$0")/.." && pwd)/.build/release/ferry"
ferry_args=() cold=0 seconds=${SECONDS_PER_RUN:-5}
while [ $# -gt 0 ]; do
    case "$1" in
        --binary) binary=$2; shift 2 ;;
        --binary=*) binary=${1#*=}; shift ;;
        --ferry-arg) ferry_args+=("$2"); shift 2 ;;
        --ferry-arg=*) ferry_args+=("${1#*=}"); shift ;;
        --cold) cold=1; shift ;;
        --) shift; break ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done
base=/var/tmp/ferry-syscalls
mkdir -p "$base/src" "$base/mnt"
[ -f "$base/src/big" ] || fio --name=layout --filename="$base/src/big" --size=1g --rw=write --bs=1m --output=/dev/null
"$binary" serve "$base/src" "$base/mnt" "${ferry_args[@]}" > "$base/ferry.log" 2>&1 &
server=$!
cleanup() {
    # fio's last close may still be in flight: retry, then detach lazily so the server exits.
    for _ in 1 2 3 4 5; do umount "$base/mnt" 2>/dev/null && break; sleep 0.2; done
    mountpoint -q "$base/mnt" && umount -l "$base/mnt"
    wait "$server" 2>/dev/null || true
}
trap cleanup EXIT
for _ in $(seq 100); do mountpoint -q "$base/mnt" && break; sleep 0.1; done
mountpoint -q "$base/mnt" || { cat "$base/ferry.log"; exit 1; }
if [ "$cold" = 1 ]; then echo 3 > /proc/sys/vm/drop_caches; else cat "$base/mnt/big" > /dev/null; fi
# Under the default sandbox the started process only supervises: count its child in the new
# pid namespace, which serves.
serving=$server
for child in $(cat "/proc/$server/task/$server/children" 2>/dev/null); do
    [ "$(readlink "/proc/$child/ns/pid")" != "$(readlink "/proc/$server/ns/pid")" ] && serving=$child
done
events=syscalls:sys_enter_read,syscalls:sys_enter_write,syscalls:sys_enter_fcntl,syscalls:sys_enter_io_uring_enter,syscalls:sys_enter_epoll_wait,syscalls:sys_enter_pread64,syscalls:sys_enter_pwrite64,task-clock
perf stat -x, -e "$events" -p "$serving" -o "$base/perf.txt" &
perf=$!
sleep 0.5
mibs=$(fio --name=job --filename="$base/mnt/big" --size=1g --time_based --runtime="$seconds" --group_reporting \
    --output-format=terse "$@" | awk -F';' '{printf "%.1f", ($7 + $48) / 1024}')
kill -INT $perf; wait $perf || true
awk -F, -v mibs="$mibs" '{v[$3]=$1} END {
    w = v["syscalls:sys_enter_write"]; if (w == 0) { print "no requests seen"; exit 1 }
    printf "%s MiB/s; per request: read %.2f, epoll_wait %.2f, fcntl %.2f, io_uring_enter %.2f, pread64 %.2f, pwrite64 %.2f; server CPU %.1f us (%d requests)\n",
        mibs, v["syscalls:sys_enter_read"]/w, v["syscalls:sys_enter_epoll_wait"]/w, v["syscalls:sys_enter_fcntl"]/w, v["syscalls:sys_enter_io_uring_enter"]/w,
        v["syscalls:sys_enter_pread64"]/w, v["syscalls:sys_enter_pwrite64"]/w, v["task-clock"]*1000/w, w }' "$base/perf.txt"
