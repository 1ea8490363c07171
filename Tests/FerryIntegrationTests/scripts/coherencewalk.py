#!/usr/bin/env python3
"""Coherence walk: one seeded random sequence of changes made by root directly in SOURCE (on
the host, as another program would) while a Ferry mount with day-long cache timeouts watches.
Before each change the mount's caches are primed with every path the change touches and their
parent directories; after it, each of them must look the same through the mount as on the host
— shape, file contents, directory listing, link target — within LIMIT. With day-long timeouts
only change notifications can explain that. The two trees are compared whole at the end.

The calls come from opdiff.py's generator (create, mkdir, mknod, links, renames with flags,
chmod/chown, truncate, writes, utimes, xattrs, ACLs, ...).

Usage: coherencewalk.py SOURCE MOUNT SEED STEPS   (as root; the mount needs --cache always)
Prints "PASS seed N: ... p50/p99/max ms" or the steps whose change did not show; the exit status
is the number of differences (at most 20 are reported).
"""
import errno, os, random, stat, sys, time

from opdiff import outcome, random_step, shape, tree_differences

# Seconds; against day-long timeouts any convergence is a notification's doing. COHERENCE_LIMIT
# shortens it for the control run without notifications, where nothing converges.
LIMIT = float(os.environ.get("COHERENCE_LIMIT", "1.0"))


def view(path):
    """What the mount must agree with the host on for one path."""
    try:
        st = os.lstat(path)
        seen = [shape(path)]
        if stat.S_ISREG(st.st_mode):
            with open(path, "rb") as f:
                seen.append(f.read())
        elif stat.S_ISDIR(st.st_mode):
            seen.append(sorted(os.listdir(path)))
        elif stat.S_ISLNK(st.st_mode):
            seen.append(os.readlink(path))
        return seen
    except OSError as e:
        return errno.errorcode.get(e.errno, e.errno)


def converge(source, mount, targets):
    """Seconds until every target looks the same through the mount as on the host, or None."""
    start = time.monotonic()
    while True:
        if all(view(os.path.join(source, t)) == view(os.path.join(mount, t)) for t in targets):
            return time.monotonic() - start
        if time.monotonic() - start > LIMIT:
            return None
        time.sleep(0.001)


def main():
    source_dir, mount_dir, seed, steps = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    rng = random.Random(seed)
    source, mount = os.path.join(source_dir, f"coherence-{seed}"), os.path.join(mount_dir, f"coherence-{seed}")
    os.mkdir(source)
    os.chmod(source, 0o777)
    differences, latencies = [], []
    for step in range(steps):
        kind, fn, args, paths = random_step(rng)
        targets = sorted({t for p in paths for t in (p, os.path.dirname(p))})
        for _ in range(2):  # the second pass is served from the caches the first one filled
            for t in targets:
                view(os.path.join(mount, t))
        result = outcome(fn, source, *args)
        latency = converge(source, mount, targets)
        if latency is None:
            detail = "; ".join(f"{t or '.'}: host {view(os.path.join(source, t))!r:.160} vs mount "
                               f"{view(os.path.join(mount, t))!r:.160}" for t in targets)
            differences.append(f"step {step}: {kind}{args!r:.100} -> {result!r:.60} not visible within "
                               f"{LIMIT * 1000:.0f} ms: {detail}")
            if len(differences) >= 20:
                break
        else:
            latencies.append(latency)
    differences += tree_differences(source, mount, "host", "mount")[0]
    for line in differences:
        print("DIFF", line)
    latencies.sort()
    pick = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000 if latencies else 0
    print(f"{'PASS' if not differences else 'FAIL'} seed {seed}: {steps} host changes, visible after "
          f"p50 {pick(0.5):.1f} / p99 {pick(0.99):.1f} / max {pick(1.0):.1f} ms")
    return min(len(differences), 100)


if __name__ == "__main__":
    sys.exit(main())
