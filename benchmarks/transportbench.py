#!/usr/bin/env python3
"""/dev/fuse vs FUSE-over-io_uring, interleaved A/B (issue 9, part 4).

Starts two release `ferry serve` processes, one with --transport dev and one with --transport
uring (enable_uring is turned on for the start and put back once the queues registered: a
connection keeps the rings it negotiated, but each REGISTER checks the parameter), then alternates the workloads between them round by round:
  meta: create / stat / unlink N files (tmpfs source, default cache), ops/s
  randread: fio 4k (--bs) random read, 1 job (--jobs), psync, through Ferry (--passthrough never --cache never,
            so every read is a round trip), IOPS
and prints medians, ratios uring/dev and the server CPU per operation. With --syscalls, the
random read also counts the server's system calls per read (perf's syscall tracepoints:
io_uring_enter, read, write, pread64) while fio runs.
--only-uring skips the /dev/fuse servers (to compare two builds' rings, run it once per binary).
Usage: transportbench.py FERRY_BINARY [--rounds 3] [--files 5000] [--runtime 10] [--jobs 1]
                         [--syscalls] [--only-uring] [--io-engine uring|sync]
"""
import argparse, json, os, statistics, subprocess, sys, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import serving_pid  # noqa: E402  (the server behind Ferry's pid-namespace supervisor)

PARAM = "/sys/module/fuse/parameters/enable_uring"


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def is_mounted(path):
    with open("/proc/self/mounts") as f:
        return any(line.split()[1] == path for line in f)


class Server:
    def __init__(self, binary, name, source, mountpoint, args, wait_for=None):
        self.mountpoint = mountpoint
        os.makedirs(source, exist_ok=True)
        os.makedirs(mountpoint, exist_ok=True)
        if is_mounted(mountpoint):   # left over from an earlier run whose server did not unmount
            print(f"{name}: detaching a leftover mount at {mountpoint}", flush=True)
            subprocess.run(["umount", "-l", mountpoint], check=False)
        self.log = open(f"/tmp/transportbench-{name}.log", "w")
        self.proc = subprocess.Popen([binary, "serve", source, mountpoint] + args, stdout=self.log, stderr=self.log)
        for _ in range(500):
            if self.proc.poll() is not None:
                raise SystemExit(f"{name} exited at start ({self.proc.returncode}); see /tmp/transportbench-{name}.log")
            if is_mounted(mountpoint) and (not wait_for or wait_for in open(f"/tmp/transportbench-{name}.log").read()):
                return
            time.sleep(0.02)
        raise SystemExit(f"{name} did not mount; see /tmp/transportbench-{name}.log")

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)


def meta(path, pid, n):
    d = os.path.join(path, "meta")
    os.makedirs(d, exist_ok=True)
    names = [os.path.join(d, f"f{i}") for i in range(n)]
    out = {}
    c0 = cpu_seconds(pid)
    t = time.perf_counter()
    for p in names:
        os.close(os.open(p, os.O_CREAT | os.O_WRONLY, 0o644))
    out["create"] = n / (time.perf_counter() - t)
    t = time.perf_counter()
    for p in names:
        os.stat(p)
    out["stat"] = n / (time.perf_counter() - t)
    t = time.perf_counter()
    for p in names:
        os.unlink(p)
    out["unlink"] = n / (time.perf_counter() - t)
    out["cpu_us_per_op"] = (cpu_seconds(pid) - c0) * 1e6 / (3 * n)
    return out


SYSCALLS = ("io_uring_enter", "read", "write", "pread64")


def randread(path, pid, runtime, jobs=1, syscalls=False, bs="4k"):
    perf = None
    if syscalls:
        events = ",".join(f"syscalls:sys_enter_{n}" for n in SYSCALLS)
        perf = subprocess.Popen(["perf", "stat", "-x,", "-e", events, "-p", str(pid), "-o", "/tmp/transportbench-perf.txt"])
        time.sleep(0.5)
    c0 = cpu_seconds(pid)
    r = subprocess.run(["fio", "--name=rr", f"--directory={path}", "--filename=rr.dat", "--size=256m", f"--bs={bs}",
                        "--rw=randread", "--ioengine=psync", "--iodepth=1", f"--numjobs={jobs}", "--group_reporting", "--time_based",
                        f"--runtime={runtime}", "--output-format=json"], capture_output=True, text=True, check=True)
    job = json.loads(r.stdout)["jobs"][0]["read"]
    ios = job["total_ios"]
    out = {"iops": job["iops"], "cpu_us_per_op": (cpu_seconds(pid) - c0) * 1e6 / max(1, ios)}
    if perf:
        perf.send_signal(2)
        perf.wait()
        with open("/tmp/transportbench-perf.txt") as f:
            for line in f:
                fields = line.strip().split(",")
                if len(fields) > 2 and fields[2].startswith("syscalls:sys_enter_"):
                    out[fields[2][len("syscalls:sys_enter_"):] + "_per_op"] = int(fields[0]) / max(1, ios)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--files", type=int, default=5000)
    ap.add_argument("--runtime", type=int, default=10)
    ap.add_argument("--work", default="/var/tmp/transportbench")
    ap.add_argument("--meta-cache", default="auto", help="--cache of the metadata servers (never: every stat is a round trip)")
    ap.add_argument("--jobs", type=int, default=1, help="fio jobs (processes) for the random read")
    ap.add_argument("--syscalls", action="store_true", help="count the server's system calls per random read (perf)")
    ap.add_argument("--only-uring", action="store_true", help="no /dev/fuse servers")
    ap.add_argument("--io-engine", default="uring", help="--io-engine of the random-read servers")
    ap.add_argument("--bs", default="4k", help="fio block size of the random read (4k: the table says 4k whatever it is)")
    a = ap.parse_args()
    with open(PARAM) as f:
        old = f.read().strip()
    servers = {}
    try:
        with open(PARAM, "w") as f:
            f.write("1")
        transports = ("uring",) if a.only_uring else ("dev", "uring")
        for transport in transports:
            # The kernel checks enable_uring at each queue's REGISTER (after INIT), not only at
            # INIT: wait for the queues before the parameter is put back.
            ready = "transport io_uring:" if transport == "uring" else None
            servers[f"meta-{transport}"] = Server(a.binary, f"meta-{transport}", f"/dev/shm/transportbench-{transport}",
                                                  f"{a.work}/meta-{transport}",
                                                  ["--transport", transport, "--cache", a.meta_cache], ready)
            servers[f"rr-{transport}"] = Server(a.binary, f"rr-{transport}", f"{a.work}/src-{transport}",
                                                f"{a.work}/rr-{transport}",
                                                ["--transport", transport, "--passthrough", "never", "--cache", "never",
                                                 "--io-engine", a.io_engine], ready)
    finally:
        with open(PARAM, "w") as f:
            f.write("1" if old in ("Y", "1") else "0")
    results = {k: [] for k in servers}
    try:
        for rnd in range(a.rounds):
            order = transports if rnd % 2 == 0 else tuple(reversed(transports))
            for transport in order:
                for name in (f"meta-{transport}", f"rr-{transport}"):
                    # Another user of this machine may unmount or end it: then fio would measure
                    # the bare directory (0 server CPU).
                    if servers[name].proc.poll() is not None or not is_mounted(servers[name].mountpoint):
                        with open(f"/tmp/transportbench-{name}.log") as f:
                            tail = "".join(f.readlines()[-5:])
                        raise SystemExit(f"{name} is no longer serving (exit status {servers[name].proc.poll()}, "
                                         f"mounted: {is_mounted(servers[name].mountpoint)}); its log ends:\n{tail}")
                s = servers[f"meta-{transport}"]
                results[f"meta-{transport}"].append(meta(s.mountpoint, serving_pid(s.proc.pid), a.files))
                s = servers[f"rr-{transport}"]
                results[f"rr-{transport}"].append(randread(s.mountpoint, serving_pid(s.proc.pid), a.runtime, a.jobs, a.syscalls, a.bs))
            print(f"round {rnd + 1}: " + json.dumps({k: v[-1] for k, v in results.items()}), flush=True)
    finally:
        for s in servers.values():
            s.stop()
    # (a round whose perf output came back empty has no syscall counts: left out of their median)
    med = lambda k, f: statistics.median([r[f] for r in results[k] if f in r] or [0])
    print(f"\nmedians of {a.rounds} interleaved rounds ({a.files} files, --cache {a.meta_cache}; fio {a.runtime} s, {a.jobs} job(s)):")
    rr_fields = ("iops", "cpu_us_per_op") + tuple(f"{n}_per_op" for n in SYSCALLS if a.syscalls)
    if a.only_uring:
        print("| workload | io_uring |")
        print("|---|---|")
        for f in ("create", "stat", "unlink", "cpu_us_per_op"):
            print(f"| meta {f} | {med('meta-uring', f):,.1f} |")
        for f in rr_fields:
            print(f"| {a.bs} randread {f} | {med('rr-uring', f):,.2f} |")
    else:
        print("| workload | /dev/fuse | io_uring | uring/dev |")
        print("|---|---|---|---|")
        for f in ("create", "stat", "unlink", "cpu_us_per_op"):
            d, u = med("meta-dev", f), med("meta-uring", f)
            print(f"| meta {f} | {d:,.1f} | {u:,.1f} | {u / d:.2f} |")
        for f in rr_fields:
            d, u = med("rr-dev", f), med("rr-uring", f)
            print(f"| {a.bs} randread {f} | {d:,.2f} | {u:,.2f} | {u / d if d else 0:.2f} |")
    for name in servers:
        with open(f"/tmp/transportbench-{name}.log") as f:
            totals = [l.strip() for l in f if "transport totals" in l or "transport io_uring" in l]
        print(f"{name}: {' / '.join(t.split('] ', 1)[-1] for t in totals)}")


if __name__ == "__main__":
    main()
