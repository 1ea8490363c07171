#!/usr/bin/env python3
"""Ferry benchmark: the native directory vs Ferry (one or several configurations) vs libfuse's
passthrough_ll and passthrough_hp, in one run.

Contenders are interleaved round by round (the order rotates each round) and every figure is
the median of the rounds. Data workloads run on the host disk (ext4 here); metadata workloads run
on the disk and on a tmpfs source (the per-operation cost without the disk's noise); the tree
suite runs `git status` and `find` over a prepared tree on the disk, shared by all contenders.

Writes RESULTS_DIR/results.md (tables: ratios to native, values, server CPU, peak RSS),
RESULTS_DIR/raw.json and RESULTS_DIR/ratios.png (needs matplotlib; skipped with a message).
Run as root (mounting, dropping caches, the enable_uring switch). See benchmarks/README.md.
"""
import argparse, json, os, shlex, shutil, signal, statistics, subprocess, sys, tempfile, time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
ENABLE_URING = "/sys/module/fuse/parameters/enable_uring"


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


def quiet(cmd, **kw):
    """sh() with stdout dropped and stderr kept for the error (a failing untar prints an error per
    file); raises CalledProcessError with the last lines of stderr in .stderr."""
    return subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **kw)


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


def serving_pid(pid):
    """The process that serves for a server started as `pid`: under Ferry's default sandbox the
    child in a pid namespace of its own (the started process only supervises it), else `pid`."""
    if pid is None:
        return None
    try:
        own = os.readlink(f"/proc/{pid}/ns/pid")
        for child in open(f"/proc/{pid}/task/{pid}/children").read().split():
            if os.readlink(f"/proc/{child}/ns/pid") != own:
                return int(child)
    except OSError:
        pass
    return pid


def is_mounted(path):
    return any(line.split()[1] == path for line in open("/proc/self/mounts"))


# ------------------------------------------------------------------ contenders

class Native:
    name = "native"
    pid = None
    uring = False

    def __init__(self, source):
        self.source = self.path = source

    def describe(self):
        return "the host directory itself"

    def start(self):
        pass

    def stop(self):
        pass

    def server_stats(self):
        return None


class FuseServer:
    uring = False     # needs /sys/module/fuse/parameters/enable_uring = 1 (FUSE-over-io_uring)

    def __init__(self, source, mountpoint):
        self.source, self.path = source, mountpoint
        self.proc = None

    @property
    def pid(self):
        return serving_pid(self.proc.pid) if self.proc else None

    def describe(self):
        return " ".join(shlex.quote(a) for a in self.command())

    def start(self):
        os.makedirs(self.path, exist_ok=True)
        if is_mounted(self.path):      # left over from an interrupted run
            subprocess.run(["umount", "-l", self.path], check=False)
        log = open(self.path + ".log", "a")
        log.write(f"\n=== {time.strftime('%H:%M:%S')} {self.describe()}\n")
        log.flush()
        self.proc = subprocess.Popen(self.command(), stdout=log, stderr=log, preexec_fn=self.preexec)
        deadline = time.time() + 20
        while not is_mounted(self.path):
            if self.proc.poll() is not None or time.time() > deadline:
                self.stop()
                tail = open(self.path + ".log").read().strip().splitlines()[-3:]
                raise RuntimeError(f"{self.name} did not mount (see {self.path}.log): " + " / ".join(tail))
            time.sleep(0.02)

    def preexec(self):
        pass

    def server_stats(self):
        """Peak RSS (VmHWM), threads and io_uring instances of the server, read before it stops."""
        stats = {}
        try:
            for line in open(f"/proc/{self.pid}/status"):
                key, _, value = line.partition(":")
                if key == "VmHWM":
                    stats["peak_rss_MiB"] = int(value.split()[0]) / 1024
                elif key == "VmRSS":
                    stats["rss_MiB"] = int(value.split()[0]) / 1024
                elif key == "Threads":
                    stats["threads"] = int(value)
            fds = os.listdir(f"/proc/{self.pid}/fd")
            stats["uring_fds"] = sum(1 for fd in fds if _readlink(f"/proc/{self.pid}/fd/{fd}") == "anon_inode:[io_uring]")
        except (OSError, ValueError, TypeError):
            pass
        return stats or None

    def stop(self):
        if self.proc is None:
            return
        subprocess.run(["fusermount3", "-u", self.path], check=False, stderr=subprocess.DEVNULL)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if is_mounted(self.path):
            subprocess.run(["umount", "-l", self.path], check=False)
        self.proc = None


def _readlink(path):
    try:
        return os.readlink(path)
    except OSError:
        return ""


def wants_uring(args):
    """Whether Ferry arguments ask for FUSE-over-io_uring (--transport uring, -o transport=uring)."""
    joined = " ".join(args)
    return ("--transport uring" in joined or "--transport=uring" in joined or "transport=uring" in joined)


class Ferry(FuseServer):
    def __init__(self, source, mountpoint, binary, extra, name="ferry"):
        super().__init__(source, mountpoint)
        self.binary, self.extra, self.name = binary, list(extra), name
        self.uring = wants_uring(self.extra)

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


# passthrough_hp modes: name suffix -> (arguments, needs enable_uring)
HP_MODES = {
    "passthrough": ([], False),                        # FUSE passthrough on (its default), /dev/fuse
    "uring": (["-o", "io_uring"], True),               # passthrough + FUSE-over-io_uring
    "nopassthrough": (["--nopassthrough"], False),     # every read and write through the server
    "nopassthrough-uring": (["--nopassthrough", "-o", "io_uring"], True),
}


class PassthroughHP(FuseServer):
    """libfuse's example/passthrough_hp (built by build-passthrough-hp.sh). Its defaults: entry and
    attribute timeouts of a day, FUSE passthrough, splice, default_permissions; it raises its own
    RLIMIT_NOFILE (it keeps an fd per inode) and xattrs are always on."""

    def __init__(self, source, mountpoint, binary, mode):
        super().__init__(source, mountpoint)
        self.binary, self.mode = binary, mode
        self.extra, self.uring = HP_MODES[mode]
        self.name = "passthrough_hp" if mode == "passthrough" else f"passthrough_hp-{mode}"

    def command(self):
        return [self.binary, "--foreground", "-o", "allow_other"] + self.extra + [self.source, self.path]


def build_passthrough_ll(workdir):
    examples = "/usr/share/doc/libfuse3-dev/examples"
    out = os.path.join(workdir, "passthrough_ll")
    if not os.path.exists(out):
        flags = subprocess.run(["pkg-config", "--cflags", "--libs", "fuse3"], check=True, capture_output=True,
                               text=True).stdout.split()
        sh(["gcc", "-O2", "-Wall", "-I", examples, os.path.join(examples, "passthrough_ll.c"), "-o", out] + flags)
    return out


class UringSwitch:
    """/sys/module/fuse/parameters/enable_uring (global, read by the kernel when a connection
    starts): 1 while a contender that needs it runs (every contender with --enable-uring), put
    back to the value it had before for the others and at the end (also after Ctrl-C or
    SIGTERM). The run only undoes its own change: when another program (a test suite) has changed
    the switch meanwhile, that value is left alone."""

    def __init__(self, always):
        self.always = always
        self.original = self._read()
        self.current = self.original
        self.before = None       # the value before our own write, while our 1 is in force

    @staticmethod
    def _read():
        try:
            return open(ENABLE_URING).read().strip()
        except OSError:
            return None

    @staticmethod
    def _on(value):
        return value in ("Y", "1")

    def _set(self, value):
        with open(ENABLE_URING, "w") as f:
            f.write(value)
        self.current = self._read()

    def prepare(self, contender):
        """Sets the switch for contender; returns the value in force."""
        if self.original is None:
            if self.always or contender.uring:
                print(f"  warning: {ENABLE_URING} missing: no FUSE-over-io_uring in this kernel", flush=True)
            return None
        actual = self._read()
        if actual != self.current:
            print(f"  note: {ENABLE_URING} was changed to {actual} by another program", flush=True)
            self.current, self.before = actual, None
        if self.always or contender.uring:
            if not self._on(actual):
                self.before = actual
                self._set("1")
        else:
            self.undo()
        return self.current

    def undo(self):
        """Our 1 back to the value before it, unless someone else has changed the switch since."""
        if self.before is not None and self._read() == self.current:
            self._set(self.before)
        self.before = None

    def restore(self):
        if self.original is not None:
            self.undo()


# ------------------------------------------------------------------ workloads

def fio(name, directory, args, side, pid, engine=("--ioengine=psync", "--iodepth=1")):
    # A file of this run's own: two runs on one machine must not read each other's output.
    handle, out = tempfile.mkstemp(prefix=f"ferry-bench-{name}-", suffix=".json")
    os.close(handle)
    try:
        # The previous job's dirty pages are written back now, not during this job.
        os.sync()
        c0, t0 = cpu_seconds(pid), time.time()
        quiet(["fio", "--output-format=json", f"--output={out}", f"--directory={directory}", "--group_reporting",
               *engine, "--fallocate=none", f"--name={name}"] + args)
        wall, cpu = time.time() - t0, cpu_seconds(pid) - c0
        job = json.load(open(out))["jobs"][0][side]
    finally:
        os.unlink(out)
    gib = job["io_bytes"] / 2 ** 30
    return {"MiB/s": job["bw_bytes"] / 1048576, "IOPS": job["iops"], "wall_s": wall, "daemon_cpu_s": cpu,
            "GiB": gib, "cpu_s_per_GiB": cpu / gib if gib else 0.0}


def attempt(results, workload, fn):
    """results[workload] = fn(), or {"failed": 1} when the workload fails (fio or a command exits
    with an error: a server that refuses O_DIRECT, one that runs out of descriptors), so one
    contender does not end the run."""
    try:
        results[workload] = fn()
    except (subprocess.CalledProcessError, OSError) as e:
        detail = str(e)
        if isinstance(e, subprocess.CalledProcessError):
            lines = (e.stderr or b"").decode(errors="replace").strip().splitlines()
            detail = f"{os.path.basename(e.cmd[0])} exited {e.returncode}" + (
                f": {lines[-1]}" + (f" (+{len(lines) - 1} more lines)" if len(lines) > 1 else "") if lines else "")
        print(f"  {workload}: failed ({detail})", flush=True)
        results[workload] = {"failed": 1, "error": detail[:300]}


def data_workloads(path, pid, size, runtime):
    work = os.path.join(path, "bench-data")
    os.makedirs(work, exist_ok=True)
    f = ["--filename=seqfile", f"--size={size}"]
    rand = ["--bs=4k", "--time_based", f"--runtime={runtime}"]
    r = {}
    attempt(r, "seqwrite-1M", lambda: fio("seqwrite", work, ["--rw=write", "--bs=1m", "--end_fsync=1"] + f, "write", pid))
    drop_caches()
    attempt(r, "seqread-1M", lambda: fio("seqread", work, ["--rw=read", "--bs=1m"] + f, "read", pid))
    for jobs in (1, 4):
        attempt(r, f"randread-4k-{jobs}job", lambda: fio("randread", work, ["--rw=randread", f"--numjobs={jobs}",
                                                         "--invalidate=0"] + rand + f, "read", pid))
        attempt(r, f"randwrite-4k-{jobs}job", lambda: fio("randwrite", work, ["--rw=randwrite", f"--numjobs={jobs}"]
                                                          + rand + f, "write", pid))
    # O_DIRECT (databases, QEMU cache=none): every 4 KiB request reaches the host file, no page cache.
    for rw, side in (("randread", "read"), ("randwrite", "write")):
        attempt(r, f"direct-{rw}-4k", lambda: fio(f"direct-{rw}", work, [f"--rw={rw}", "--direct=1"] + rand + f,
                                                  side, pid))
    # 32 requests in flight from one thread (io_uring): what a server with parallel request
    # handling (threads, an async I/O core, several ring queues) can overlap.
    qd32 = ("--ioengine=io_uring", "--iodepth=32")
    attempt(r, "qd32-direct-randread-4k", lambda: fio("qd32-direct-randread", work, ["--rw=randread", "--direct=1"]
                                                      + rand + f, "read", pid, engine=qd32))
    # fadvise_hint=0: fio's POSIX_FADV_RANDOM turns readahead off on a native file, but through
    # FUSE passthrough it only reaches the FUSE file, not the backing file the kernel reads; without
    # the hint both sides read with the kernel's default readahead. (io_uring still treats them
    # differently: ext4's async buffered reads vs a pool of io-wq workers for a FUSE file.)
    drop_caches()
    attempt(r, "qd32-cold-randread-4k", lambda: fio("qd32-cold-randread", work, ["--rw=randread", "--fadvise_hint=0"]
                                                    + rand + f, "read", pid, engine=qd32))
    shutil.rmtree(work)
    return r


def timed_command(cmd, pid, cwd=None, entries=None):
    c0, t0 = cpu_seconds(pid), time.perf_counter()
    quiet(cmd, cwd=cwd)
    r = {"seconds": time.perf_counter() - t0, "daemon_cpu_s": cpu_seconds(pid) - c0}
    if entries:
        r["cpu_us_per_op"] = r["daemon_cpu_s"] / entries * 1e6
    return r


def metadata_workloads(path, pid, nfiles, batch, tarball, tar_entries):
    work = os.path.join(path, "bench-meta")
    if os.path.exists(work):
        shutil.rmtree(work)
    os.makedirs(work)
    dirs = [os.path.join(work, f"d{i:03d}") for i in range(100)]
    for d in dirs:
        os.mkdir(d)
    totals = {"create": [0.0, 0.0], "stat": [0.0, 0.0], "unlink": [0.0, 0.0]}
    r = {}
    try:
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
        r = {p: {"ops/s": nfiles / t, "seconds": t, "daemon_cpu_s": c, "cpu_us_per_op": c / nfiles * 1e6}
             for p, (t, c) in totals.items()}
    except OSError as e:
        print(f"  create/stat/unlink: failed ({e})", flush=True)
        r = {p: {"failed": 1} for p in totals}

    attempt(r, "untar", lambda: timed_command(["tar", "-xf", tarball, "-C", work], pid, entries=tar_entries))
    drop_caches()
    attempt(r, "ls-lR-cold", lambda: timed_command(["ls", "-lR", work], pid, entries=tar_entries))
    attempt(r, "ls-lR-warm", lambda: timed_command(["ls", "-lR", work], pid, entries=tar_entries))
    attempt(r, "rm-rf", lambda: timed_command(["rm", "-rf", work], pid, entries=tar_entries))
    return r


# -------- tree suite: a git repository and a large tree, prepared once on the host, shared

def _usr_include_entries():
    """(relative directory paths, relative file paths) of /usr/include, sorted; symlinks count as files."""
    dirs, files = [], []
    for top, dnames, fnames in os.walk("/usr/include"):
        dnames.sort()
        rel = os.path.relpath(top, "/usr/include")
        if rel != ".":
            dirs.append(rel)
        for n in sorted(fnames):
            files.append(os.path.normpath(os.path.join(rel, n)))
    return dirs, files


def make_tarball(work, cap):
    """work/usr-include-CAP.tar: /usr/include, or its first CAP entries (sorted walk) where it has
    more. What is installed decides how big /usr/include is (Debian's python3-matplotlib alone
    brings 15,000 boost headers); servers that keep a descriptor per inode (passthrough_ll,
    passthrough_hp) fail past ~19,900 entries under this machine's RLIMIT_NOFILE of 20,000."""
    tarball = os.path.join(work, f"usr-include-{cap}.tar")
    if os.path.exists(tarball):
        return tarball
    dirs, files = _usr_include_entries()
    entries = ["include"] + sorted(["include/" + d for d in dirs] + ["include/" + f for f in files])
    if len(entries) > cap:
        kept = set(entries[:cap])
        for e in list(kept):     # every kept entry's parent directories too
            parent = os.path.dirname(e)
            while parent and parent not in kept:
                kept.add(parent)
                parent = os.path.dirname(parent)
        entries = sorted(kept)
    listing = tarball + ".list"
    with open(listing, "w") as f:
        f.write("\n".join(entries) + "\n")
    sh(["tar", "-C", "/usr", "--no-recursion", "-cf", tarball + ".part", "-T", listing])
    os.rename(tarball + ".part", tarball)
    os.unlink(listing)
    return tarball


def prepare_git_repo(tree, nfiles):
    """tree/git-N: the first N files of /usr/include (real contents), committed and packed."""
    repo = os.path.join(tree, f"git-{nfiles}")
    marker = repo + ".ready"
    if os.path.exists(marker):
        return repo
    print(f"preparing {repo} ({nfiles} files, once)", flush=True)
    if os.path.exists(repo):
        shutil.rmtree(repo)
    os.makedirs(repo)
    _, files = _usr_include_entries()
    copy, n = 0, 0
    while n < nfiles:     # /usr/include again under copyK/ when it has fewer files than asked for
        for rel in files:
            if n >= nfiles:
                break
            src = os.path.join("/usr/include", rel)
            if not os.path.isfile(src):
                continue
            dst = os.path.join(repo, f"copy{copy}", rel)
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            shutil.copyfile(src, dst)
            n += 1
        copy += 1
    # gc.auto=0: the commit would otherwise start a detached `gc --auto`, and the gc below then
    # fails with "gc is already running".
    git = ["git", "-C", repo, "-c", "user.name=ferry-bench", "-c", "user.email=bench@localhost", "-c", "gc.auto=0"]
    sh(git + ["init", "-q"])
    sh(git + ["add", "-A"])
    sh(git + ["commit", "-q", "-m", "bench"])
    sh(git + ["gc", "-q"])        # one pack, not N loose objects
    sh(git + ["status", "--porcelain"], stdout=subprocess.DEVNULL)
    open(marker, "w").close()
    return repo


def prepare_find_tree(tree, entries):
    """tree/find-N: /usr/include's directories and names (empty files), repeated under copyK/ until
    N entries; and tree/find-N.ref, a file newer than all of them, outside the tree."""
    root = os.path.join(tree, f"find-{entries}")
    ref = os.path.join(os.path.dirname(tree), f"find-{entries}.ref")
    marker = root + ".ready"
    if os.path.exists(marker) and os.path.exists(ref):
        return root, ref
    print(f"preparing {root} ({entries} entries, once)", flush=True)
    if os.path.exists(root):
        shutil.rmtree(root)
    os.makedirs(root)
    dirs, files = _usr_include_entries()
    n, copy = 0, 0
    while n < entries:
        base = os.path.join(root, f"copy{copy}")
        os.mkdir(base)
        n += 1
        made = {"."}
        for rel in files:
            if n >= entries:
                break
            d = os.path.dirname(rel) or "."
            if d not in made:
                os.makedirs(os.path.join(base, d), exist_ok=True)
                parts = d.split("/")
                for i in range(len(parts)):
                    p = "/".join(parts[:i + 1])
                    if p not in made:
                        made.add(p)
                        n += 1
            open(os.path.join(base, rel), "w").close()
            n += 1
        copy += 1
    time.sleep(0.05)
    open(ref, "w").close()
    os.sync()
    open(marker, "w").close()
    return root, ref


def count_entries(path):
    return sum(len(d) + len(f) for _, d, f in os.walk(path)) + 1


def tree_workloads(path, pid, git_name, git_entries, find_name, find_entries, ref):
    r = {}
    repo = os.path.join(path, git_name)
    git = ["git", "-C", repo, "status", "--porcelain"]
    # The first status through a mount refreshes the index (the mount's inode numbers and
    # times); the second is the warm one an editor or a prompt sees over and over.
    attempt(r, "git-status-1st", lambda: timed_command(git, pid, entries=git_entries))
    attempt(r, "git-status-warm", lambda: timed_command(git, pid, entries=git_entries))
    tree = os.path.join(path, find_name)
    find = ["find", tree, "-newer", ref]
    drop_caches()
    attempt(r, "find-newer-cold", lambda: timed_command(find, pid, entries=find_entries))
    attempt(r, "find-newer-warm", lambda: timed_command(find, pid, entries=find_entries))
    return r


# ------------------------------------------------------------------ report

HIGHER = ("MiB/s", "IOPS", "ops/s")
SERVER = "_server"     # pseudo-workload: the server's peak RSS etc.


def headline(metrics):
    for key in ("MiB/s", "ops/s", "seconds"):
        if key in metrics:
            return key
    return None


def median_results(rounds):
    """rounds: list of {suite: {contender: {workload: metrics}}} → medians over the rounds where
    the workload did not fail ({"failed": 1} where it failed in every round)."""
    out = {}
    for suite in rounds[0]:
        out[suite] = {}
        names = []
        for r in rounds:
            names += [c for c in r.get(suite, {}) if c not in names]
        for c in names:
            per_round = [r.get(suite, {}).get(c) or {} for r in rounds]
            workloads = []
            for pr in per_round:
                workloads += [w for w in pr if w not in workloads]
            out[suite][c] = {}
            for w in workloads:
                ok = [pr[w] for pr in per_round if pr.get(w) and not pr[w].get("failed")]
                if not ok:
                    out[suite][c][w] = {"failed": 1}
                    continue
                m = {}
                for k in ok[0]:
                    vals = [x[k] for x in ok if k in x]
                    numeric = all(isinstance(v, (int, float)) and v is not None for v in vals)
                    m[k] = statistics.median(vals) if numeric else vals[0]
                if len(ok) < len(rounds):
                    m["failed_rounds"] = len(rounds) - len(ok)
                out[suite][c][w] = m
    return out


def workload_names(by_contender):
    names = []
    for c in by_contender.values():
        names += [w for w in c if w not in names and w != SERVER]
    return names


def ratio(by_contender, contender, workload):
    """contender's speed as a fraction of native's (>1 faster), or None (failed / missing)."""
    native = by_contender.get("native", {}).get(workload, {})
    mine = by_contender.get(contender, {}).get(workload, {"failed": 1})
    key = headline(native)
    if key is None or mine.get("failed") or key not in mine or not native.get(key) or not mine.get(key):
        return None
    return mine[key] / native[key] if key in HIGHER else native[key] / mine[key]


def _fmt(v, key):
    if v is None:
        return "—"
    if key == "seconds":
        return f"{v:.3f}"
    return f"{v:,.0f}" if v >= 100 else f"{v:.1f}"


def _cell(by_contender, contender, workload):
    """(metrics, None) where the workload ran, else (None, why): "not run" (the contender did
    not start in any round), "failed", "—" (no such workload for it)."""
    mine = by_contender.get(contender)
    if not mine:
        return None, "not run"
    m = mine.get(workload)
    if m is None:
        return None, "—"
    if m.get("failed"):
        return None, "failed"
    return m, None


def tables(medians, contenders):
    others = [c for c in contenders if c != "native"]
    lines = []
    for suite, by_contender in medians.items():
        present = [c for c in contenders if c in by_contender]
        rest = [c for c in others if c in by_contender]
        lines.append(f"\n### {suite}: ratio to native (>1 faster; native's own figure in its column)\n")
        head = "| workload | metric | native | " + " | ".join(rest) + " |"
        lines += [head, "|" + "---|" * (head.count("|") - 1)]
        for w in workload_names(by_contender):
            native = by_contender.get("native", {}).get(w, {})
            key = headline(native) or "seconds"
            cells = []
            for c in rest:
                m, why = _cell(by_contender, c, w)
                r = ratio(by_contender, c, w)
                cell = why or ("—" if r is None else f"{r:.2f}")
                if m and m.get("failed_rounds"):
                    cell += f" ({m['failed_rounds']} failed)"
                cells.append(cell)
            nat = "failed" if native.get("failed") else _fmt(native.get(key), key)
            lines.append(f"| {w} | {key} | {nat} | " + " | ".join(cells) + " |")

        lines.append(f"\n{suite}: values\n")
        head = "| workload | metric | " + " | ".join(present) + " |"
        lines += [head, "|" + "---|" * (head.count("|") - 1)]
        for w in workload_names(by_contender):
            key = headline(by_contender.get("native", {}).get(w, {})) or "seconds"
            vals = []
            for c in present:
                m, why = _cell(by_contender, c, w)
                vals.append(why or _fmt(m.get(key), key))
            lines.append(f"| {w} | {key} | " + " | ".join(vals) + " |")

        if rest:
            lines.append(f"\n{suite}: server CPU (data: CPU seconds per GiB moved; metadata and trees: "
                         "µs per operation or per entry; total CPU seconds in brackets)\n")
            head = "| workload | " + " | ".join(rest) + " |"
            lines += [head, "|" + "---|" * (head.count("|") - 1)]
            for w in workload_names(by_contender):
                cells = []
                for c in rest:
                    m, why = _cell(by_contender, c, w)
                    if why:
                        cells.append(why)
                    elif "cpu_s_per_GiB" in m:
                        cells.append(f"{m['cpu_s_per_GiB']:.2f} s/GiB ({m['daemon_cpu_s']:.2f})")
                    elif "cpu_us_per_op" in m:
                        cells.append(f"{m['cpu_us_per_op']:.0f} µs ({m['daemon_cpu_s']:.2f})")
                    else:
                        cells.append(f"({m.get('daemon_cpu_s', 0):.2f})")
                lines.append(f"| {w} | " + " | ".join(cells) + " |")
            lines.append(f"\n{suite}: server process at the end of its turn (peak RSS = VmHWM)\n")
            head = "| | " + " | ".join(rest) + " |"
            lines += [head, "|" + "---|" * (head.count("|") - 1)]
            for key, label, fmt in (("peak_rss_MiB", "peak RSS, MiB", "{:.0f}"), ("threads", "threads", "{:.0f}"),
                                    ("uring_fds", "io_uring instances", "{:.0f}")):
                cells = []
                for c in rest:
                    st = (by_contender.get(c) or {}).get(SERVER) or {}
                    cells.append(fmt.format(st[key]) if key in st else "—")
                lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def readme_table(medians, contenders):
    """One table, every suite, ratios to native only, plus the server's CPU and peak RSS: the form
    for the top-level README."""
    rest = [c for c in contenders if c != "native"]
    head = "| workload (× native, >1 faster) | " + " | ".join(rest) + " |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for suite, by_contender in medians.items():
        for w in workload_names(by_contender):
            cells = []
            for c in rest:
                _, why = _cell(by_contender, c, w)
                r = ratio(by_contender, c, w)
                cells.append(why or ("—" if r is None else f"{r:.2f}"))
            lines.append(f"| {suite}: {w} | " + " | ".join(cells) + " |")

    def summary(label, suite, workloads, key, fmt):
        by = medians.get(suite)
        if not by:
            return
        cells = []
        for c in rest:
            vals = []
            for w in workloads:
                m, why = _cell(by, c, w)
                vals.append(why if why else fmt.format(m.get(key, 0)))
            cells.append(vals[0] if len(set(vals)) == 1 and vals[0] in ("not run", "failed") else " / ".join(vals))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")

    summary("server CPU s per GiB, seq write / seq read", "data", ["seqwrite-1M", "seqread-1M"], "cpu_s_per_GiB",
            "{:.2f}")
    summary("server CPU µs per op, tmpfs create / stat / unlink", "meta-tmpfs", ["create", "stat", "unlink"],
            "cpu_us_per_op", "{:.0f}")
    cells = []
    for c in rest:
        peaks = [by[c][SERVER]["peak_rss_MiB"] for by in medians.values()
                 if (by.get(c) or {}).get(SERVER, {}).get("peak_rss_MiB")]
        cells.append(f"{max(peaks):.0f}" if peaks else "—")
    lines.append("| server peak RSS, MiB | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def chart(medians, contenders, out_png):
    """ratios.png: one panel per suite, a bar per contender and workload, ratio to native (log scale)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    rest = [c for c in contenders if c != "native" and any(by.get(c) for by in medians.values())]
    suites = list(medians)
    widest = max(len(workload_names(medians[s])) for s in suites)
    ratios = [r for s in suites for c in rest for w in workload_names(medians[s])
              if (r := ratio(medians[s], c, w)) is not None]
    low = min([0.5] + [r / 1.5 for r in ratios])
    high = max([2.0] + [r * 1.5 for r in ratios])
    fig, axes = plt.subplots(len(suites), 1, figsize=(max(10, 0.35 * widest * max(1, len(rest)) ** 0.8 + 3),
                                                       4.2 * len(suites)), squeeze=False)
    colors = plt.get_cmap("tab10" if len(rest) <= 10 else "tab20")
    for ax, suite in zip(axes[:, 0], suites):
        by = medians[suite]
        ws = workload_names(by)
        width = 0.8 / max(1, len(rest))
        for i, c in enumerate(rest):
            xs, ys, fails = [], [], []
            for j, w in enumerate(ws):
                r = ratio(by, c, w)
                x = j - 0.4 + width * (i + 0.5)
                if r is None:
                    if (by.get(c, {}).get(w) or {}).get("failed"):
                        fails.append(x)
                else:
                    xs.append(x)
                    ys.append(r)
            ax.bar(xs, ys, width, label=c, color=colors(i))
            if fails:
                ax.plot(fails, [low * 1.15] * len(fails), "x", color=colors(i), markersize=6)
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_yscale("log")
        ax.set_ylim(low, high)
        ax.set_xticks(range(len(ws)))
        ax.set_xticklabels(ws, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel("× native (>1 faster)")
        ax.set_title(f"{suite} (x at the bottom: failed)", fontsize=10)
        ax.grid(axis="y", which="both", alpha=0.3)
    axes[0, 0].legend(fontsize=7, ncol=min(5, len(rest)), loc="upper right")
    missing = [c for c in contenders if c != "native" and c not in rest]
    if missing:
        fig.text(0.01, 0.003, "not run (did not start): " + ", ".join(missing), fontsize=7)
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return True


def write_chart(results_dir, medians, contenders):
    """The chart with this interpreter's matplotlib, else with Debian's /usr/bin/python3 (a python3
    from pyenv or a venv often lacks it), else a message."""
    png = os.path.join(results_dir, "ratios.png")
    if chart(medians, contenders, png):
        print(f"chart: {png}")
        return
    system = "/usr/bin/python3"
    if os.path.exists(system) and os.path.realpath(system) != os.path.realpath(sys.executable):
        if subprocess.run([system, "-c", "import matplotlib"], capture_output=True).returncode == 0:
            if subprocess.run([system, os.path.abspath(__file__), "--report", results_dir, "--chart-only"]).returncode == 0:
                print(f"chart: {png} (drawn by {system})")
                return
    print("chart skipped: matplotlib is missing (apt-get install python3-matplotlib; then "
          f"python3 benchmarks/bench.py --report {results_dir} --chart-only)")


def contender_list(raw):
    """raw["contenders"], or for a raw.json of the older bench.py the names found in the medians."""
    if "contenders" in raw:
        return raw["contenders"]
    names = []
    for by in raw["medians"].values():
        names += [c for c in by if c not in names]
    return [{"name": n, "command": "(not recorded)"} for n in names]


def render(raw, results_dir, write=True):
    raw.setdefault("contenders", contender_list(raw))
    medians, contenders = raw["medians"], [c["name"] for c in raw["contenders"]]
    a = dict(raw["args"])
    for key in ("git_files", "find_entries"):
        a.setdefault(key, "?")
    legend = "\n".join(f"- `{c['name']}`: `{c['command']}`" + (" (enable_uring=1)" if c.get("uring") else "")
                       for c in raw["contenders"])
    md = [f"# Ferry benchmark, {raw.get('date', '')}",
          "",
          f"Kernel {raw['kernel']}, {raw.get('cpus', '?')} CPUs. Medians of {a['rounds']} round(s), contenders "
          f"interleaved (order rotated each round). enable_uring: {raw.get('enable_uring', '?')}.",
          f"Data: {a['size']} file, random jobs {a['runtime']} s, psync 1 job unless named (4job: 4 jobs; direct-*: "
          "O_DIRECT; qd32-*: io_uring, iodepth 32; cold: page cache dropped first). Metadata: "
          f"{a['nfiles']} files in 100 directories (batches of {a['batch']}), untar/ls -lR/rm -rf of /usr/include "
          f"({raw.get('tar_entries', '?')} entries). Tree: `git status` of a {a['git_files']}-file repository "
          f"(first run refreshes the index, the second is timed as warm), `find -newer` over "
          f"{a['find_entries']} entries (cold: caches dropped first).",
          "Ratios: >1 is faster than native (throughput ratio, or native time / contender time). "
          "failed: the workload failed (e.g. EINVAL on O_DIRECT, out of descriptors).",
          "",
          "Contenders:",
          legend,
          "",
          "Repeat: `sudo python3 benchmarks/bench.py " + " ".join(raw.get("argv", [])) + "`.",
          tables(medians, contenders)]
    if raw.get("errors"):
        md += ["", "Errors:", ""] + [f"- {e}" for e in raw["errors"]]
    text = "\n".join(md) + "\n"
    if write:
        with open(os.path.join(results_dir, "results.md"), "w") as f:
            f.write(text)
    return text


# ------------------------------------------------------------------ main

def parse_config(spec):
    """NAME=ARGS or NAME@BINARY=ARGS (ARGS split as by a shell)."""
    name, sep, args = spec.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"--ferry-config wants NAME=ARGS, got {spec!r}")
    name, _, binary = name.partition("@")
    return name, binary or None, shlex.split(args)


ISSUE9 = [
    ("ferry", []),
    ("ferry-nopt-uring", ["--passthrough", "never", "--io-engine", "uring"]),
    ("ferry-nopt-sync", ["--passthrough", "never", "--io-engine", "sync"]),
    ("ferry-tr-uring", ["--transport", "uring"]),
    ("ferry-tr-dev", ["--transport", "dev"]),
    ("ferry-always", ["--cache", "always"]),
]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--size", default="1g", help="file size for the data workloads")
    ap.add_argument("--runtime", type=int, default=5, help="seconds per random I/O job")
    ap.add_argument("--nfiles", type=int, default=20000)
    ap.add_argument("--batch", type=int, default=5000, help="files existing at once (passthrough_ll holds an fd each)")
    ap.add_argument("--tar-entries", type=int, default=10000,
                    help="entries of /usr/include in the untar / ls -lR / rm -rf tarball (at most)")
    ap.add_argument("--git-files", type=int, default=15000, help="files in the git repository of the tree suite")
    ap.add_argument("--find-entries", type=int, default=200000, help="entries in the tree that find walks")
    ap.add_argument("--work", default="/var/tmp/ferry-bench", help="scratch directory on the disk")
    ap.add_argument("--results", help="results directory (default benchmarks/results/DATE)")
    ap.add_argument("--ferry", default=os.path.join(ROOT, ".build/release/ferry"))
    ap.add_argument("--ferry-arg", action="append", default=[], help="extra argument for the default ferry contender "
                                                                     "(and the baseline)")
    ap.add_argument("--ferry-config", action="append", default=[], type=parse_config, metavar="NAME[@BINARY]=ARGS",
                    help="a Ferry contender named NAME running `ferry serve SRC MNT ARGS` (repeatable; replaces the "
                         "default 'ferry' contender). ARGS are split as by a shell and passed through as they are; "
                         "with --transport uring the run sets enable_uring=1 for that contender")
    ap.add_argument("--issue9", action="store_true",
                    help="the contenders of issue 9: " + ", ".join(n for n, _ in ISSUE9) +
                         ", passthrough_ll, and passthrough_hp (+ its io_uring mode) when --passthrough-hp is given")
    ap.add_argument("--baseline", help="another ferry binary (e.g. built from the previous commit), measured as "
                                       "'ferry-baseline' with the --ferry-arg arguments: before and after")
    ap.add_argument("--passthrough-hp", metavar="PATH", help="libfuse's passthrough_hp binary (build-passthrough-hp.sh)")
    ap.add_argument("--hp-modes", default="passthrough,uring",
                    help="passthrough_hp contenders, of: " + ",".join(HP_MODES))
    ap.add_argument("--no-passthrough-ll", action="store_true")
    ap.add_argument("--contenders", help="keep only these contenders (comma-separated names; native is always run)")
    ap.add_argument("--enable-uring", action="store_true",
                    help="set enable_uring=1 for every contender (default: only for those that ask for io_uring)")
    ap.add_argument("--only", default="data,meta-disk,meta-tmpfs,tree")
    ap.add_argument("--quick", action="store_true", help="256m, 2 s jobs, 2000 files, 2000-file repository, "
                                                        "10000-entry tree, 1 round")
    ap.add_argument("--report", metavar="RESULTS_DIR", help="re-render results.md and the chart from RESULTS_DIR/raw.json")
    ap.add_argument("--chart-only", action="store_true", help="with --report: only the chart")
    ap.add_argument("--readme", action="store_true", help="with --report (or after a run): print the one-table form "
                                                          "for the top-level README")
    a = ap.parse_args()

    if a.report:
        raw = json.load(open(os.path.join(a.report, "raw.json")))
        contenders = [c["name"] for c in contender_list(raw)]
        if a.chart_only:
            sys.exit(0 if chart(raw["medians"], contenders, os.path.join(a.report, "ratios.png")) else 1)
        if a.readme:
            print(readme_table(raw["medians"], contenders))
            return
        print(render(raw, a.report))
        write_chart(a.report, raw["medians"], contenders)
        return

    a.ferry = os.path.abspath(a.ferry)
    if a.baseline:
        a.baseline = os.path.abspath(a.baseline)
    if a.quick:
        a.size, a.runtime, a.nfiles, a.batch, a.rounds = "256m", 2, 2000, 1000, 1
        a.git_files, a.find_entries = 2000, 10000
    a.results = a.results or os.path.join(HERE, "results", time.strftime("%Y-%m-%d-%H%M"))
    suites = a.only.split(",")
    os.makedirs(a.results, exist_ok=True)
    os.makedirs(a.work, exist_ok=True)

    # Contenders: (name, factory(source, mountpoint)).
    kinds = [("native", None)]
    configs = list(a.ferry_config)
    if a.issue9:
        configs = [(n, None, args) for n, args in ISSUE9] + configs
    if configs:
        for name, binary, args in configs:
            kinds.append((name, lambda s, m, b=os.path.abspath(binary) if binary else a.ferry, x=args, n=name: Ferry(s, m, b, x, n)))
    else:
        kinds.append(("ferry", lambda s, m: Ferry(s, m, a.ferry, a.ferry_arg)))
    if a.baseline:
        kinds.append(("ferry-baseline", lambda s, m: Ferry(s, m, a.baseline, a.ferry_arg, "ferry-baseline")))
    if not a.no_passthrough_ll:
        ll = build_passthrough_ll(a.work)
        kinds.append(("passthrough_ll", lambda s, m: PassthroughLL(s, m, ll)))
    if a.passthrough_hp:
        hp = os.path.abspath(a.passthrough_hp)
        for mode in a.hp_modes.split(","):
            if mode not in HP_MODES:
                ap.error(f"--hp-modes: unknown mode {mode!r} (known: {', '.join(HP_MODES)})")
            name = "passthrough_hp" if mode == "passthrough" else f"passthrough_hp-{mode}"
            kinds.append((name, lambda s, m, md=mode: PassthroughHP(s, m, hp, md)))
    elif a.issue9:
        print("note: no --passthrough-hp PATH: passthrough_hp is not measured (see benchmarks/README.md)")
    if a.contenders:
        keep = set(a.contenders.split(",")) | {"native"}
        unknown = keep - {n for n, _ in kinds}
        if unknown:
            ap.error(f"--contenders: unknown {', '.join(sorted(unknown))}")
        kinds = [k for k in kinds if k[0] in keep]
    names = [n for n, _ in kinds]
    if len(set(names)) != len(names):
        ap.error("two contenders with one name")

    def contenders(base, shared_source=None):
        made = []
        for name, factory in kinds:
            src = shared_source or os.path.join(base, name + "-src")
            os.makedirs(src, exist_ok=True)
            made.append(Native(src) if factory is None else factory(src, os.path.join(a.work, name + "-mnt")))
        return made

    tarball = make_tarball(a.work, a.tar_entries)
    tar_entries = int(subprocess.run(["tar", "-tf", tarball], check=True, capture_output=True).stdout.count(b"\n"))

    uring = UringSwitch(a.enable_uring)
    tmpfs = os.path.join(a.work, "tmpfs")
    mounted_tmpfs = False
    # SIGTERM/SIGHUP end the run like Ctrl-C: servers stopped, enable_uring and the tmpfs restored.
    def interrupted(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, interrupted)
    rounds, errors, descriptions = [], [], {}
    started = time.time()
    try:
        if "meta-tmpfs" in suites and not is_mounted(tmpfs):   # only this run's own tmpfs is unmounted
            os.makedirs(tmpfs, exist_ok=True)
            sh(["mount", "-t", "tmpfs", "-o", "size=4g", "ferry-bench", tmpfs])
            mounted_tmpfs = True
        tree = os.path.join(a.work, "tree")
        if "tree" in suites:
            os.makedirs(tree, exist_ok=True)
            repo = prepare_git_repo(tree, a.git_files)
            find_root, ref = prepare_find_tree(tree, a.find_entries)
            git_entries, find_entries = count_entries(repo), count_entries(find_root)

        for rnd in range(a.rounds):
            results = {}
            for suite in suites:
                if suite == "tree":
                    group = contenders(None, shared_source=tree)
                    # Warm the host's caches: the first contender must not pay for them alone.
                    quiet(["git", "-C", repo, "status", "--porcelain"])
                    quiet(["find", find_root, "-newer", ref])
                else:
                    group = contenders(tmpfs if suite == "meta-tmpfs" else os.path.join(a.work, "disk"))
                shift = rnd % len(group)
                results[suite] = {}
                for c in group[shift:] + group[:shift]:
                    descriptions.setdefault(c.name, (c.describe(), c.uring))
                    print(f"round {rnd + 1}/{a.rounds} {suite} {c.name}  [{time.time() - started:.0f} s]", flush=True)
                    in_force = uring.prepare(c)
                    try:
                        c.start()
                    except RuntimeError as e:
                        print(f"  {e}", flush=True)
                        errors.append(f"round {rnd + 1} {suite}: {e}")
                        results[suite][c.name] = {}
                        continue
                    try:
                        if suite == "data":
                            r = data_workloads(c.path, c.pid, a.size, a.runtime)
                        elif suite == "tree":
                            r = tree_workloads(c.path, c.pid, os.path.basename(repo), git_entries,
                                               os.path.basename(find_root), find_entries, ref)
                        else:
                            r = metadata_workloads(c.path, c.pid, a.nfiles, a.batch, tarball, tar_entries)
                        stats = c.server_stats()
                        if stats:
                            stats["enable_uring"] = in_force
                            r[SERVER] = stats
                        results[suite][c.name] = r
                    finally:
                        c.stop()
            rounds.append(results)
    finally:
        uring.restore()
        if mounted_tmpfs:
            subprocess.run(["umount", tmpfs], check=False)

    raw = {"args": vars(a), "argv": sys.argv[1:], "date": time.strftime("%Y-%m-%d %H:%M"),
           "kernel": os.uname().release, "cpus": os.cpu_count(), "tar_entries": tar_entries,
           "enable_uring": f"{uring.original} (1 for {', '.join(n for n, (_, u) in descriptions.items() if u or a.enable_uring) or 'none'})",
           "contenders": [{"name": n, "command": descriptions[n][0], "uring": descriptions[n][1] or a.enable_uring}
                          for n in names if n in descriptions],
           "errors": errors, "seconds": time.time() - started, "rounds": rounds,
           "medians": median_results(rounds)}
    with open(os.path.join(a.results, "raw.json"), "w") as f:
        json.dump(raw, f, indent=1)
    print(render(raw, a.results))
    write_chart(a.results, raw["medians"], [c["name"] for c in raw["contenders"]])
    if a.readme:
        print("\nFor the README:\n")
        print(readme_table(raw["medians"], [c["name"] for c in raw["contenders"]]))
    print(f"\n{time.time() - started:.0f} s; results in {a.results}")


if __name__ == "__main__":
    main()
