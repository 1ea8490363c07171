#!/usr/bin/env python3
"""Ferry benchmark: the native directory vs Ferry vs libfuse's passthrough_ll, in one run.

Contenders are interleaved round by round (the order rotates each round) and every figure is
the median of the rounds. Data workloads run on the host disk (ext4 here); metadata workloads run
on the disk and on a tmpfs source (the per-operation cost without the disk's noise).

Writes RESULTS_DIR/results.md (a table with ratios to native) and RESULTS_DIR/raw.json.
Run as root (mounting, dropping caches). See benchmarks/README.md.
"""
import argparse, json, os, shutil, statistics, subprocess, sys, tempfile, time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


def drop_caches():
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3")


def cpu_seconds(pid):
    if pid is None:
        return 0.0
    try:
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except OSError:
        return 0.0


def is_mounted(path):
    return any(line.split()[1] == path for line in open("/proc/self/mounts"))


# ------------------------------------------------------------------ contenders

class Native:
    name = "native"
    pid = None

    def __init__(self, source):
        self.source = self.path = source

    def start(self):
        pass

    def stop(self):
        pass


class FuseServer:
    def __init__(self, source, mountpoint):
        self.source, self.path = source, mountpoint
        self.proc = None

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def start(self):
        os.makedirs(self.path, exist_ok=True)
        self.proc = subprocess.Popen(self.command(), stdout=subprocess.DEVNULL, stderr=open(self.path + ".log", "a"),
                                     preexec_fn=self.preexec)
        deadline = time.time() + 20
        while not is_mounted(self.path):
            if self.proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"{self.name} did not mount; see {self.path}.log")
            time.sleep(0.02)

    def preexec(self):
        pass

    def stop(self):
        subprocess.run(["fusermount3", "-u", self.path], check=False)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            subprocess.run(["umount", "-l", self.path], check=False)
        self.proc = None


class Ferry(FuseServer):
    name = "ferry"

    def __init__(self, source, mountpoint, binary, extra, name="ferry"):
        super().__init__(source, mountpoint)
        self.binary, self.extra, self.name = binary, extra, name

    def command(self):
        return [self.binary, "serve", self.source, self.path] + self.extra


class PassthroughLL(FuseServer):
    name = "passthrough_ll"

    def __init__(self, source, mountpoint, binary):
        super().__init__(source, mountpoint)
        self.binary = binary

    def command(self):
        # xattr on: the same features as Ferry (ls -l and every write ask for xattrs).
        return [self.binary, "-f", "-o", f"source={self.source},allow_other,xattr", self.path]

    def preexec(self):
        import resource
        # It keeps an O_PATH descriptor per known inode.
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def build_passthrough_ll(workdir):
    examples = "/usr/share/doc/libfuse3-dev/examples"
    out = os.path.join(workdir, "passthrough_ll")
    if not os.path.exists(out):
        flags = subprocess.run(["pkg-config", "--cflags", "--libs", "fuse3"], check=True, capture_output=True,
                               text=True).stdout.split()
        sh(["gcc", "-O2", "-Wall", "-I", examples, os.path.join(examples, "passthrough_ll.c"), "-o", out] + flags)
    return out


# ------------------------------------------------------------------ workloads

def fio(name, directory, args, side, pid):
    # A file of this run's own: two runs on one machine must not read each other's output.
    handle, out = tempfile.mkstemp(prefix=f"ferry-bench-{name}-", suffix=".json")
    os.close(handle)
    try:
        c0, t0 = cpu_seconds(pid), time.time()
        sh(["fio", "--output-format=json", f"--output={out}", f"--directory={directory}", "--group_reporting",
            "--ioengine=psync", "--iodepth=1", "--fallocate=none", f"--name={name}"] + args,
           stdout=subprocess.DEVNULL)
        wall, cpu = time.time() - t0, cpu_seconds(pid) - c0
        job = json.load(open(out))["jobs"][0][side]
    finally:
        os.unlink(out)
    return {"MiB/s": job["bw_bytes"] / 1048576, "IOPS": job["iops"], "wall_s": wall, "daemon_cpu_s": cpu}


def fio_or_failed(name, directory, args, side, pid):
    """fio(), or zeros marked "failed" when fio exits with an error (a server that refuses
    the job, e.g. O_DIRECT through unaligned buffers), so one contender does not end the run."""
    try:
        return fio(name, directory, args, side, pid)
    except subprocess.CalledProcessError:
        print(f"  {name}: fio failed", flush=True)
        return {"MiB/s": 0.0, "IOPS": 0.0, "wall_s": 0.0, "daemon_cpu_s": 0.0, "failed": 1}


def data_workloads(path, pid, size, runtime):
    work = os.path.join(path, "bench-data")
    os.makedirs(work, exist_ok=True)
    f = ["--filename=seqfile", f"--size={size}"]
    r = {}
    r["seqwrite-1M"] = fio("seqwrite", work, ["--rw=write", "--bs=1m", "--end_fsync=1"] + f, "write", pid)
    drop_caches()
    r["seqread-1M"] = fio("seqread", work, ["--rw=read", "--bs=1m"] + f, "read", pid)
    for jobs in (1, 4):
        r[f"randread-4k-{jobs}job"] = fio("randread", work, ["--rw=randread", "--bs=4k", "--time_based",
                                           f"--runtime={runtime}", f"--numjobs={jobs}", "--invalidate=0"] + f, "read", pid)
        r[f"randwrite-4k-{jobs}job"] = fio("randwrite", work, ["--rw=randwrite", "--bs=4k", "--time_based",
                                            f"--runtime={runtime}", f"--numjobs={jobs}"] + f, "write", pid)
    # O_DIRECT (databases, QEMU cache=none): every 4 KiB request reaches the host file, no page cache.
    for rw, side in (("randread", "read"), ("randwrite", "write")):
        r[f"direct-{rw}-4k"] = fio_or_failed(f"direct-{rw}", work, [f"--rw={rw}", "--bs=4k", "--direct=1",
                                             "--time_based", f"--runtime={runtime}"] + f, side, pid)
    shutil.rmtree(work)
    return r


def timed_command(cmd, pid, cwd=None):
    c0, t0 = cpu_seconds(pid), time.perf_counter()
    sh(cmd, cwd=cwd, stdout=subprocess.DEVNULL)
    return {"seconds": time.perf_counter() - t0, "daemon_cpu_s": cpu_seconds(pid) - c0}


def metadata_workloads(path, pid, nfiles, batch, tarball):
    r = metadata_workloads_without_cleanup(path, pid, nfiles, batch, tarball)
    r["rm-rf"] = timed_command(["rm", "-rf", os.path.join(path, "bench-meta")], pid)
    return r


def metadata_workloads_without_cleanup(path, pid, nfiles, batch, tarball):
    """create/stat/unlink, untar, ls -lR cold and warm; leaves the untarred tree in place."""
    work = os.path.join(path, "bench-meta")
    os.makedirs(work)
    dirs = [os.path.join(work, f"d{i:03d}") for i in range(100)]
    for d in dirs:
        os.mkdir(d)
    totals = {"create": [0.0, 0.0], "stat": [0.0, 0.0], "unlink": [0.0, 0.0]}
    for start in range(0, nfiles, batch):
        names = [os.path.join(dirs[i % 100], f"f{i:06d}") for i in range(start, min(nfiles, start + batch))]
        for phase in ("create", "stat", "unlink"):
            c0, t0 = cpu_seconds(pid), time.perf_counter()
            if phase == "create":
                for n in names:
                    fd = os.open(n, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
                    os.write(fd, b"x" * 100)
                    os.close(fd)
            elif phase == "stat":
                for n in names:
                    os.stat(n)
            else:
                for n in names:
                    os.unlink(n)
            totals[phase][0] += time.perf_counter() - t0
            totals[phase][1] += cpu_seconds(pid) - c0
    r = {p: {"ops/s": nfiles / t, "seconds": t, "daemon_cpu_s": c} for p, (t, c) in totals.items()}

    r["untar"] = timed_command(["tar", "-xf", tarball, "-C", work], pid)
    drop_caches()
    r["ls-lR-cold"] = timed_command(["ls", "-lR", work], pid)
    r["ls-lR-warm"] = timed_command(["ls", "-lR", work], pid)
    return r


# ------------------------------------------------------------------ report

HIGHER = ("MiB/s", "IOPS", "ops/s")


def headline(metrics):
    for key in ("MiB/s", "IOPS", "ops/s", "seconds"):
        if key in metrics:
            return key, metrics[key]


def median_results(rounds):
    """rounds: list of {suite: {contender: {workload: metrics}}} → medians."""
    out = {}
    for suite in rounds[0]:
        out[suite] = {}
        for contender in rounds[0][suite]:
            out[suite][contender] = {}
            for workload, metrics in rounds[0][suite][contender].items():
                out[suite][contender][workload] = {
                    k: statistics.median(r[suite][contender][workload][k] for r in rounds) for k in metrics}
    return out


def table(medians, contenders):
    lines = []
    for suite, by_contender in medians.items():
        lines.append(f"\n### {suite}\n")
        head = "| workload | metric | " + " | ".join(contenders) + " | " + " | ".join(
            f"{c}/native" for c in contenders if c != "native") + " | " + " | ".join(
            f"{c} CPU s" for c in contenders if c != "native") + " |"
        lines.append(head)
        lines.append("|" + "---|" * (head.count("|") - 1))
        for workload in by_contender["native"]:
            key, _ = headline(by_contender["native"][workload])
            values = {c: by_contender[c][workload][key] for c in contenders}
            ratios = []
            for c in contenders:
                if c == "native":
                    continue
                ratio = values[c] / values["native"] if key in HIGHER else values["native"] / values[c]
                ratios.append(f"{ratio:.2f}")
            cpus = [f"{by_contender[c][workload].get('daemon_cpu_s', 0):.2f}" for c in contenders if c != "native"]
            fmt = (lambda v: f"{v:.0f}") if key != "seconds" else (lambda v: f"{v:.3f}")
            lines.append(f"| {workload} | {key} | " + " | ".join(fmt(values[c]) for c in contenders) + " | "
                         + " | ".join(ratios) + " | " + " | ".join(cpus) + " |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--size", default="1g", help="file size for the data workloads")
    ap.add_argument("--runtime", type=int, default=5, help="seconds per random I/O job")
    ap.add_argument("--nfiles", type=int, default=20000)
    ap.add_argument("--batch", type=int, default=5000, help="files existing at once (passthrough_ll holds an fd each)")
    ap.add_argument("--work", default="/var/tmp/ferry-bench", help="scratch directory on the disk")
    ap.add_argument("--results", default=os.path.join(HERE, "results", time.strftime("%Y-%m-%d-%H%M")))
    ap.add_argument("--ferry", default=os.path.join(ROOT, ".build/release/ferry"))
    ap.add_argument("--ferry-arg", action="append", default=[], help="extra argument for ferry serve")
    ap.add_argument("--baseline", help="another ferry binary (e.g. built from the previous commit), measured as "
                                       "'ferry-baseline' in the same run: before and after")
    ap.add_argument("--only", default="data,meta-disk,meta-tmpfs")
    ap.add_argument("--quick", action="store_true", help="256m, 2 s jobs, 2000 files, 1 round")
    a = ap.parse_args()
    if a.quick:
        a.size, a.runtime, a.nfiles, a.batch, a.rounds = "256m", 2, 2000, 1000, 1
    suites = a.only.split(",")
    os.makedirs(a.results, exist_ok=True)
    os.makedirs(a.work, exist_ok=True)
    ll = build_passthrough_ll(a.work)
    tarball = os.path.join(a.work, "usr-include.tar")
    if not os.path.exists(tarball):
        sh(["tar", "-C", "/usr", "-cf", tarball, "include"])

    tmpfs = os.path.join(a.work, "tmpfs")
    mounted_tmpfs = "meta-tmpfs" in suites and not is_mounted(tmpfs)
    if mounted_tmpfs:   # only this run's own tmpfs is unmounted at the end
        os.makedirs(tmpfs, exist_ok=True)
        sh(["mount", "-t", "tmpfs", "-o", "size=4g", "ferry-bench", tmpfs])

    kinds = [("native", Native, ()), ("ferry", Ferry, (a.ferry, a.ferry_arg))]
    if a.baseline:
        kinds.append(("ferry-baseline", Ferry, (a.baseline, a.ferry_arg, "ferry-baseline")))
    kinds.append(("passthrough_ll", PassthroughLL, (ll,)))

    def contenders(base):
        made = []
        for name, cls, args in kinds:
            src = os.path.join(base, name + "-src")
            os.makedirs(src, exist_ok=True)
            made.append(cls(src, *args) if cls is Native else cls(src, os.path.join(a.work, name + "-mnt"), *args))
        return made

    order = [name for name, _, _ in kinds]
    rounds = []
    for rnd in range(a.rounds):
        results = {}
        for suite in suites:
            base = tmpfs if suite == "meta-tmpfs" else os.path.join(a.work, "disk")
            group = contenders(base)
            shift = rnd % len(group)
            results[suite] = {}
            for c in group[shift:] + group[:shift]:
                c.start()
                try:
                    print(f"round {rnd + 1}/{a.rounds} {suite} {c.name}", flush=True)
                    if suite == "data":
                        results[suite][c.name] = data_workloads(c.path, c.pid, a.size, a.runtime)
                    else:
                        results[suite][c.name] = metadata_workloads(c.path, c.pid, a.nfiles, a.batch, tarball)
                finally:
                    c.stop()
        rounds.append(results)
    if mounted_tmpfs:
        sh(["umount", tmpfs])

    medians = median_results(rounds)
    kernel = os.uname().release
    with open(os.path.join(a.results, "raw.json"), "w") as f:
        json.dump({"args": vars(a), "kernel": kernel, "rounds": rounds, "medians": medians}, f, indent=1)
    md = [f"# Ferry benchmark, {time.strftime('%Y-%m-%d %H:%M')}",
          "",
          f"Kernel {kernel}, {os.cpu_count()} CPUs. Medians of {a.rounds} round(s), contenders interleaved.",
          f"Data: {a.size} file, random jobs {a.runtime} s, psync; direct-*: O_DIRECT (0 = fio failed). Metadata: {a.nfiles} files in 100 directories "
          f"(batches of {a.batch}), untar/ls -lR/rm -rf of /usr/include.",
          "Ratios: >1 is faster than native (throughput ratio, or native time / contender time).",
          f"Ferry arguments: {' '.join(a.ferry_arg) or '(defaults)'}; passthrough_ll: cache auto (its default), xattr on (as Ferry).",
          f"ferry-baseline: {a.baseline} (same arguments)." if a.baseline else "",
          "",
          "Repeat: `sudo python3 benchmarks/bench.py` (after `swift build -c release`).",
          table(medians, order)]
    with open(os.path.join(a.results, "results.md"), "w") as f:
        f.write("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
