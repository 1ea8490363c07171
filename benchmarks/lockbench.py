#!/usr/bin/env python3
"""Lock round trips per second: native directory vs Ferry (host OFD locks) vs passthrough_ll
(which forwards flock to flock(2) but keeps POSIX locks inside its mount), in one run.

- uncontended: one process, F_SETLK write lock + unlock, repeated (a pair is one round trip).
- contended: two processes hand one write lock back and forth with F_SETLKW (each handoff
  wakes a blocked waiter).
- flock: one process, flock LOCK_EX + LOCK_UN.

Writes RESULTS_DIR/locks.md and RESULTS_DIR/locks.json. Run as root after `swift build -c release`.
"""
import argparse, fcntl, json, os, statistics, struct, sys, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402


def fl(kind):
    return struct.pack("hhqqi4x", kind, os.SEEK_SET, 0, 0, 0)


def uncontended(path, seconds):
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    n, end = 0, time.monotonic() + seconds
    while time.monotonic() < end:
        for _ in range(100):
            fcntl.fcntl(fd, fcntl.F_SETLK, fl(fcntl.F_WRLCK))
            fcntl.fcntl(fd, fcntl.F_SETLK, fl(fcntl.F_UNLCK))
        n += 100
    os.close(fd)
    return n / seconds


def flock_rate(path, seconds):
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    n, end = 0, time.monotonic() + seconds
    while time.monotonic() < end:
        for _ in range(100):
            fcntl.flock(fd, fcntl.LOCK_EX)
            fcntl.flock(fd, fcntl.LOCK_UN)
        n += 100
    os.close(fd)
    return n / seconds


def contended(path, handoffs):
    """Two processes alternate holding the lock; a pipe pair makes each wait on the other."""
    open(path, "a").close()
    r1, w1 = os.pipe()
    r2, w2 = os.pipe()
    pid = os.fork()
    if pid == 0:
        fd = os.open(path, os.O_RDWR)
        for _ in range(handoffs):
            os.read(r1, 1)                                   # parent holds the lock now
            os.write(w2, b"x")
            fcntl.fcntl(fd, fcntl.F_SETLKW, fl(fcntl.F_WRLCK))  # blocks until the parent unlocks
            fcntl.fcntl(fd, fcntl.F_SETLK, fl(fcntl.F_UNLCK))
            os.write(w2, b"y")
        os._exit(0)
    fd = os.open(path, os.O_RDWR)
    t0 = time.monotonic()
    for _ in range(handoffs):
        fcntl.fcntl(fd, fcntl.F_SETLKW, fl(fcntl.F_WRLCK))
        os.write(w1, b"x")
        os.read(r2, 1)
        time.sleep(0)                                        # let the child block on the lock
        fcntl.fcntl(fd, fcntl.F_SETLK, fl(fcntl.F_UNLCK))
        os.read(r2, 1)                                       # child got it and gave it back
    elapsed = time.monotonic() - t0
    os.waitpid(pid, 0)
    os.close(fd)
    return handoffs / elapsed


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--handoffs", type=int, default=2000)
    ap.add_argument("--work", default="/var/tmp/ferry-lockbench")
    ap.add_argument("--results", default=os.path.join(bench.HERE, "results", time.strftime("%Y-%m-%d")))
    ap.add_argument("--ferry", default=os.path.join(bench.ROOT, ".build/release/ferry"))
    ap.add_argument("--baseline", help="another ferry binary, measured as 'ferry-baseline' in the same run")
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    os.makedirs(a.results, exist_ok=True)
    ll = bench.build_passthrough_ll(a.work)
    names = ["native", "ferry"] + (["ferry-baseline"] if a.baseline else []) + ["passthrough_ll"]
    runs = {n: {"uncontended": [], "contended": [], "flock": []} for n in names}
    for rnd in range(a.rounds):
        group = []
        for n in names:
            src = os.path.join(a.work, n + "-src")
            os.makedirs(src, exist_ok=True)
            mnt = os.path.join(a.work, n + "-mnt")
            group.append({"native": lambda: bench.Native(src), "ferry": lambda: bench.Ferry(src, mnt, a.ferry, []),
                          "ferry-baseline": lambda: bench.Ferry(src, mnt, a.baseline, [], name="ferry-baseline"),
                          "passthrough_ll": lambda: bench.PassthroughLL(src, mnt, ll)}[n]())
        shift = rnd % len(group)
        for c in group[shift:] + group[:shift]:
            c.start()
            try:
                p = os.path.join(c.path, "lockfile")
                runs[c.name]["uncontended"].append(uncontended(p, a.seconds))
                runs[c.name]["contended"].append(contended(p, a.handoffs))
                runs[c.name]["flock"].append(flock_rate(p, a.seconds))
                print(f"round {rnd + 1} {c.name}: " + ", ".join(f"{k} {v[-1]:.0f}/s" for k, v in runs[c.name].items()), flush=True)
            finally:
                c.stop()
    med = {n: {k: statistics.median(v) for k, v in runs[n].items()} for n in names}
    lines = [f"# Lock round trips, {time.strftime('%Y-%m-%d %H:%M')}", "",
             f"Medians of {a.rounds} rounds, contenders interleaved. Repeat: `sudo python3 benchmarks/lockbench.py`.",
             "passthrough_ll forwards flock (flock(2) on its descriptor) but not POSIX locks: its fcntl figures are "
             "the cost of kernel-local locks, which do not conflict with other mounts or the host.", "",
             (f"ferry-baseline: {a.baseline}." if a.baseline else ""), "",
             "| workload | " + " | ".join(f"{n} /s" for n in names) + " | " +
             " | ".join(f"{n}/native" for n in names if n.startswith("ferry")) + " |",
             "|---" * (len(names) + sum(n.startswith("ferry") for n in names) + 1) + "|"]
    for k in ("uncontended", "contended", "flock"):
        lines.append(f"| {k} | " + " | ".join(f"{med[n][k]:.0f}" for n in names) + " | " +
                     " | ".join(f"{med[n][k] / med['native'][k]:.2f}" for n in names if n.startswith("ferry")) + " |")
    with open(os.path.join(a.results, "locks.json"), "w") as f:
        json.dump({"runs": runs, "medians": med}, f, indent=1)
    with open(os.path.join(a.results, "locks.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
