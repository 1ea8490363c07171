#!/bin/bash
# Guest workloads through Ferry and through QEMU's virtiofsd, in one run, one fresh backend and
# one guest boot per backend and round (interleaved), same settings (cache auto, --direct=1 for
# data). Backends: `ferry`; `virtiofsd` as it runs by default, which drops the guest's O_DIRECT
# (host reads and writes then go through the host page cache); `virtiofsd-dio` with
# `-o allow_direct_io`, which keeps O_DIRECT as Ferry does (the fair comparison for the data rows). Prints a markdown table with each workload's result per backend, the ratio
# Ferry/virtiofsd, each backend's CPU seconds per workload (user+system, read from
# /proc/PID/stat whenever the guest starts the next workload: it prints a "MARK name" line on its
# streamed stdout first) and per request or file where that is defined, and each backend's CPU
# for its whole run (/usr/bin/time). Under TCG the guest's CPU dominates: compare within one run only.
#
# Backend `ferry-baseline` runs another Ferry binary (`--ferry-baseline BIN`, e.g. a release
# build of an earlier commit) the same way, for before/after in one run.
#
# Usage: benchmarks/vm/vmbench.sh [--rounds N] [--ferry BIN] [--virtiofsd BIN] [--file-mb N] [--seconds N]
#                                 [--ferry-baseline BIN] [--backends "ferry virtiofsd virtiofsd-dio"]
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
GUEST=$ROOT/Tests/FerryIntegrationTests/scripts/guest
FERRY=$ROOT/.build/release/ferry
VIRTIOFSD=/usr/lib/qemu/virtiofsd
FERRY_BASELINE=
ROUNDS=1 FILE_MB=256 SECONDS_PER_JOB=8 BACKENDS="ferry virtiofsd virtiofsd-dio"
while (($#)); do
	case $1 in
	--rounds) ROUNDS=$2; shift ;;
	--ferry) FERRY=$2; shift ;;
	--virtiofsd) VIRTIOFSD=$2; shift ;;
	--ferry-baseline) FERRY_BASELINE=$2; shift ;;
	--file-mb) FILE_MB=$2; shift ;;
	--seconds) SECONDS_PER_JOB=$2; shift ;;
	--backends) BACKENDS=$2; shift ;;
	*) echo "unknown option $1" >&2; exit 2 ;;
	esac
	shift
done
export GUEST_ACCEL=${GUEST_ACCEL:-tcg}
WORK=$(mktemp -d /var/tmp/vmbench.XXXXXX)
KEEP_WORK=   # set when a guest fails: its output and the backend's log stay for a look
trap '[ -n "$KEEP_WORK" ] && echo "kept $WORK" >&2 || rm -rf "$WORK"' EXIT
mkdir "$WORK/src"
head -c "${FILE_MB}M" /dev/urandom > "$WORK/src/data.bin"
# untar: /usr/include/linux (about 800 entries) unpacked by the guest into the share.
tar -C /usr/include -cf "$WORK/src/untar.tar" linux
UNTAR_ENTRIES=$(tar -tf "$WORK/src/untar.tar" | wc -l)
"$GUEST/build-image.sh" >/dev/null

# The guest side: fio jobs (results as "RESULT name value unit") and a metadata loop.
cat > "$WORK/workload.sh" <<GUEST
#!/bin/sh
S=$SECONDS_PER_JOB
f="--filename=/mnt/data.bin --direct=1 --group_reporting --output-format=terse --terse-version=3"
job() { name=\$1; shift; echo "MARK \$name"; /usr/bin/fio --name=\$name \$f "\$@" > /tmp/\$name.out || { echo "FAIL \$name"; return; }; }
job seqread-1M --rw=read --bs=1M --ioengine=psync --size=${FILE_MB}M
job seqwrite-1M --rw=write --bs=1M --ioengine=psync --size=${FILE_MB}M
job randread-4k-qd1 --rw=randread --bs=4k --ioengine=psync --runtime=\$S --time_based
job randread-4k-qd16 --rw=randread --bs=4k --ioengine=libaio --iodepth=16 --runtime=\$S --time_based
job randwrite-4k-qd1 --rw=randwrite --bs=4k --ioengine=psync --runtime=\$S --time_based
job randwrite-4k-qd16 --rw=randwrite --bs=4k --ioengine=libaio --iodepth=16 --runtime=\$S --time_based
# terse v3: field 7 read bandwidth KiB/s, 8 read IOPS, 48 write bandwidth, 49 write IOPS
for n in seqread-1M seqwrite-1M; do awk -F';' -v n=\$n '{ printf "RESULT %s %.1f MiB/s\n", n, (\$7 + \$48) / 1024 }' /tmp/\$n.out; done
for n in randread-4k-qd1 randread-4k-qd16 randwrite-4k-qd1 randwrite-4k-qd16; do awk -F';' -v n=\$n '{ printf "RESULT %s %d IOPS\n", n, \$8 + \$49 }' /tmp/\$n.out; done
mkdir /mnt/meta
echo "MARK create"
t0=\$(cut -d' ' -f1 /proc/uptime)
i=0; while [ \$i -lt 500 ]; do : > /mnt/meta/f\$i; i=\$((i+1)); done
t1=\$(cut -d' ' -f1 /proc/uptime)
echo "MARK stat"
i=0; while [ \$i -lt 500 ]; do stat /mnt/meta/f\$i > /dev/null; i=\$((i+1)); done
t2=\$(cut -d' ' -f1 /proc/uptime)
echo "MARK unlink"
rm -r /mnt/meta
t3=\$(cut -d' ' -f1 /proc/uptime)
awk -v a=\$t0 -v b=\$t1 -v c=\$t2 -v d=\$t3 'BEGIN { printf "RESULT create %d ops/s\nRESULT stat %d ops/s\nRESULT unlink %d ops/s\n", 500/(b-a), 500/(c-b), 500/(d-c) }'
mkdir /mnt/untar
echo "MARK untar"
t0=\$(cut -d' ' -f1 /proc/uptime)
tar -xf /mnt/untar.tar -C /mnt/untar || echo "FAIL untar"
t1=\$(cut -d' ' -f1 /proc/uptime)
echo "MARK end"
awk -v a=\$t0 -v b=\$t1 'BEGIN { printf "RESULT untar %d entries/s\n", $UNTAR_ENTRIES/(b-a) }'
rm -r /mnt/untar
GUEST
chmod +x "$WORK/workload.sh"

run() { # backend round
	local b=$1 r=$2 sock=$WORK/$1.sock log=$WORK/$1.$2.log
	rm -f "$sock" "$WORK/src"/fio-*
	case $b in
	ferry) /usr/bin/time -f "CPU %U %S" -o "$WORK/$b.$r.cpu" "$FERRY" serve "$WORK/src" --socket-path "$sock" >"$log" 2>&1 & ;;
	ferry-baseline) /usr/bin/time -f "CPU %U %S" -o "$WORK/$b.$r.cpu" "${FERRY_BASELINE:?--ferry-baseline BIN}" serve "$WORK/src" --socket-path "$sock" >"$log" 2>&1 & ;;
	virtiofsd) /usr/bin/time -f "CPU %U %S" -o "$WORK/$b.$r.cpu" "$VIRTIOFSD" --socket-path="$sock" -o source="$WORK/src" -o cache=auto >"$log" 2>&1 & ;;
	virtiofsd-dio) /usr/bin/time -f "CPU %U %S" -o "$WORK/$b.$r.cpu" "$VIRTIOFSD" --socket-path="$sock" -o source="$WORK/src" -o cache=auto -o allow_direct_io >"$log" 2>&1 & ;;
	esac
	local pid=$!
	for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.1; done
	# The backend itself (a child of /usr/bin/time): its CPU at each MARK the guest prints.
	local backend
	backend=$(cat /proc/$pid/task/*/children 2>/dev/null | awk '{print $1}')
	: > "$WORK/$b.$r.out"
	python3 "$HERE/markcpu.py" "$backend" "$WORK/$b.$r.out" > "$WORK/$b.$r.marks" &
	local sampler=$!
	"$GUEST/run-guest.sh" -q --socket "$sock" --tag bench --timeout 900 --copy "$WORK/workload.sh:/harness/workload.sh" \
		-- 'sh /harness/workload.sh' > "$WORK/$b.$r.out" 2>&1 || {
		echo "guest on $b failed (round $r); see $WORK/$b.$r.out and $log" >&2
		KEEP_WORK=1
	}
	kill $sampler 2>/dev/null || true; wait $sampler 2>/dev/null || true
	for _ in $(seq 100); do kill -0 $pid 2>/dev/null || break; sleep 0.1; done
	# $pid is /usr/bin/time's: end the backend under it too (it waits for a guest that failed).
	kill $(cat /proc/$pid/task/*/children 2>/dev/null) $pid 2>/dev/null || true
	wait $pid 2>/dev/null || true
}
for r in $(seq "$ROUNDS"); do
	for b in $BACKENDS; do run $b $r; done
done
python3 - "$WORK" "$ROUNDS" "$FILE_MB" "$SECONDS_PER_JOB" "$UNTAR_ENTRIES" $BACKENDS <<'PY'
import sys, statistics, glob, re
work, rounds, backends = sys.argv[1], int(sys.argv[2]), sys.argv[6:]
file_mb, seconds, untar_entries = int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
res, cpu, wcpu = {}, {}, {}
for b in backends:
    for r in range(1, rounds + 1):
        marks = []
        try:
            for line in open(f"{work}/{b}.{r}.marks"):
                name, at = line.split()
                marks.append((name, float(at)))
        except (OSError, ValueError): pass
        for (name, t0), (_, t1) in zip(marks, marks[1:]):
            wcpu.setdefault((b, name), []).append(t1 - t0)
        for line in open(f"{work}/{b}.{r}.out", errors="replace"):
            m = re.match(r"RESULT (\S+) ([\d.]+) (.+)", line)
            if m: res.setdefault((b, m[1]), []).append(float(m[2])); res.setdefault(("unit", m[1]), m[3])
        try:
            u, s = open(f"{work}/{b}.{r}.cpu").read().split("CPU ")[1].split()
            cpu.setdefault(b, []).append(float(u) + float(s))
        except Exception: pass
names = []
for (b, n) in res:
    if b != "unit" and n not in names: names.append(n)
others = [b for b in backends if b != "ferry"]
print("| workload | " + " | ".join(backends) + "".join(f" | ferry / {o}" for o in others) + " |")
print("|---" * (len(backends) + len(others) + 1) + "|")
med = lambda b, n: statistics.median(res[(b, n)]) if (b, n) in res else None
for n in names:
    unit = res[("unit", n)]
    cells = [f"{med(b, n):.0f} {unit}" if med(b, n) is not None else "-" for b in backends]
    f = med("ferry", n)
    ratios = [f"{f / med(o, n):.2f}" if f and med(o, n) else "-" for o in others]
    print(f"| {n} | " + " | ".join(cells + ratios) + " |")
print(f"\nmedian of {rounds} round(s), interleaved")
print("\nBackend CPU per workload (user+system between the guest's marks; in brackets per request:")
print("per 1 MiB for seq rows, per I/O for random rows, per file for metadata, per entry for untar):\n")
print("| workload | " + " | ".join(backends) + "".join(f" | ferry / {o} (per request)" for o in others) + " |")
print("|---" * (len(backends) + len(others) + 1) + "|")
cmed = lambda b, n: statistics.median(wcpu[(b, n)]) if (b, n) in wcpu else None
def requests(b, n):
    """How many requests workload n made on backend b (median result x its length)."""
    if n.startswith("seq"): return file_mb
    if n == "untar": return untar_entries
    if n in ("create", "stat", "unlink"): return 500
    return med(b, n) * seconds if med(b, n) else None
def per_request(b, n):
    c, k = cmed(b, n), requests(b, n)
    return c / k * 1e6 if c is not None and k else None
for n in names:
    cells = [f"{cmed(b, n):.2f} s ({per_request(b, n):.0f} µs)" if cmed(b, n) is not None else "-" for b in backends]
    f = per_request("ferry", n)
    ratios = [f"{f / per_request(o, n):.2f}" if f and per_request(o, n) else "-" for o in others]
    print(f"| {n} | " + " | ".join(cells + ratios) + " |")
for b in backends:
    if b in cpu: print(f"\n{b}: backend CPU {statistics.median(cpu[b]):.2f} s (user+system, whole run, median of {len(cpu[b])})")
PY
