#!/usr/bin/env python3
"""System calls and server CPU per create, stat and unlink through one Ferry mount.

    sudo benchmarks/metacost.py [--binary PATH] [--files N] [--tmpfs] [--no-perf]
                                [--profile PHASE] [-- FERRY-ARGS...]

Creates N files in one directory through the mount (open O_CREAT + close), stats them, and
unlinks them, one at a time from one client process. For each phase it prints ops/s, the
serving process's system calls per operation (perf stat on raw_syscalls:sys_enter; the
tracepoint itself costs some CPU, so --no-perf measures CPU and ops/s without it) and its CPU
per operation, then that CPU by thread (reader threads `ferry-fuse-N` together, the change
watcher `ferry-watch`, ...; threads under 0.5 µs/op left out). --tmpfs puts SOURCE on a fresh tmpfs, so that the host file system's own work
(ext4's inode allocation after many deletions, for one) stays out of the figures.
--profile PHASE records `perf record -g` for that phase into benchmarks/metacost-PHASE.data.
Compare builds interleaved, several rounds: the 2-core machine is noisy.
"""
import argparse, collections, os, re, signal, subprocess, sys, time

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, here)
from bench import cpu_seconds, serving_pid  # noqa: E402  (the same measures as bench.py's)
parser = argparse.ArgumentParser()
parser.add_argument("--binary", default=os.path.join(here, "..", ".build", "release", "ferry"))
parser.add_argument("--files", type=int, default=5000)
parser.add_argument("--tmpfs", action="store_true")
parser.add_argument("--no-perf", action="store_true")
parser.add_argument("--profile")
parser.add_argument("ferry_args", nargs="*")
args = parser.parse_args()

base = "/var/tmp/ferry-metacost"
src, mnt = base + "/src", base + "/mnt"
for path in (mnt, src):
    subprocess.run(["umount", "-l", path], stderr=subprocess.DEVNULL)
subprocess.run(["rm", "-rf", base], check=True)
os.makedirs(src)
os.makedirs(mnt)
if args.tmpfs:
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1g", "tmpfs", src], check=True)

server = subprocess.Popen([args.binary, "serve", src, mnt] + args.ferry_args,
                          stdout=open(base + "/ferry.log", "w"), stderr=subprocess.STDOUT)
for _ in range(200):
    if os.path.ismount(mnt):
        break
    time.sleep(0.05)
else:
    sys.exit("the mount did not appear; see " + base + "/ferry.log")


pid = serving_pid(server.pid)
time.sleep(0.3)
os.makedirs(mnt + "/d")
names = [f"{mnt}/d/f{i}" for i in range(args.files)]


def thread_cpu(pid):
    """CPU seconds per thread name (digits dropped: ferry-fuse-0..N count together)."""
    by_name = collections.Counter()
    tick = os.sysconf("SC_CLK_TCK")
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            name = re.sub(r"-?\d+$", "", open(f"/proc/{pid}/task/{tid}/comm").read().strip())
            fields = open(f"/proc/{pid}/task/{tid}/stat").read().rsplit(")", 1)[1].split()
            by_name[name] += (int(fields[11]) + int(fields[12])) / tick
        except OSError:
            continue   # a thread that ended meanwhile
    return by_name


def phase(label, work):
    if args.profile == label:
        perf = subprocess.Popen(["perf", "record", "-g", "-o", os.path.join(here, f"metacost-{label}.data"),
                                 "-p", str(pid)], stderr=subprocess.DEVNULL)
    elif not args.no_perf:
        perf = subprocess.Popen(["perf", "stat", "-x,", "-e", "raw_syscalls:sys_enter", "-p", str(pid)],
                                stderr=subprocess.PIPE, text=True)
    else:
        perf = None
    time.sleep(0.5)
    c0, threads0, t0 = cpu_seconds(pid), thread_cpu(pid), time.perf_counter()
    work()
    seconds, cpu = time.perf_counter() - t0, cpu_seconds(pid) - c0
    threads = thread_cpu(pid)
    threads.subtract(threads0)
    calls = ""
    if perf:
        time.sleep(0.2)
        perf.send_signal(signal.SIGINT)
        _, err = perf.communicate()
        if err:
            count = err.strip().splitlines()[-1].split(",")[0]
            if count.isdigit():
                calls = f"{int(count) / args.files:5.1f} syscalls/op  "
    split = ", ".join(f"{name} {used / args.files * 1e6:.1f}" for name, used in threads.most_common()
                      if used / args.files * 1e6 >= 0.5)
    print(f"{label:7s} {args.files / seconds:8.0f} ops/s  {calls}{cpu / args.files * 1e6:6.1f} us CPU/op"
          f"  ({split})", flush=True)


phase("create", lambda: [os.close(os.open(name, os.O_CREAT | os.O_WRONLY, 0o644)) for name in names])
phase("stat", lambda: [os.stat(name) for name in names])
phase("unlink", lambda: [os.unlink(name) for name in names])
server.send_signal(signal.SIGTERM)
server.wait()
if args.tmpfs:
    subprocess.run(["umount", "-l", src])
