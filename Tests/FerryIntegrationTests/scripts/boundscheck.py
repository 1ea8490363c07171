#!/usr/bin/env python3
"""Drives a Ferry mount into one of its resource bounds (README, "Resource bounds") and checks
that Ferry keeps serving other callers meanwhile. Prints "key value" lines for the test to
assert on, and "PASS check" when every step behaved.

  boundscheck.py inodes SOURCE MOUNT COUNT      stat COUNT new names (until refused)
  boundscheck.py openfiles SOURCE MOUNT COUNT   open files until refused
  boundscheck.py lockwaiters SOURCE MOUNT WAITERS FERRY_PID
                                                queue WAITERS blocking flocks behind a holder
"""
import errno, fcntl, os, subprocess, sys, threading, time


def other_caller(mount, name):
    """A different process reads a file Ferry already knows: it must succeed."""
    result = subprocess.run(["cat", os.path.join(mount, name)], capture_output=True, timeout=20)
    ok = result.returncode == 0 and result.stdout == b"known\n"
    print("other_caller", "ok" if ok else "failed: %r" % (result.stderr,), flush=True)
    return ok


def threads_of(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    return -1


def populate(source, count):
    os.makedirs(os.path.join(source, "many"), exist_ok=True)
    for i in range(count):
        with open(os.path.join(source, "many", f"f{i:06d}"), "w") as f:
            f.write("x")
    with open(os.path.join(source, "known"), "w") as f:
        f.write("known\n")


def inodes(source, mount, count):
    populate(source, count)
    os.stat(os.path.join(mount, "known"))   # held by the kernel from now on
    refused_at, refused_errno = None, None
    for i in range(count):
        try:
            os.stat(os.path.join(mount, "many", f"f{i:06d}"))
        except OSError as e:
            refused_at, refused_errno = i, e.errno
            break
    print("looked_up", refused_at if refused_at is not None else count, flush=True)
    print("errno", errno.errorcode.get(refused_errno, "none"), flush=True)
    if refused_at is None:   # within the bound: the caller checks that this was expected
        return other_caller(mount, "known")
    # More refusals (each one is logged at most once per interval), then other callers.
    for i in range(refused_at, min(count, refused_at + 200)):
        try:
            os.stat(os.path.join(mount, "many", f"f{i:06d}"))
        except OSError:
            pass
    ok = other_caller(mount, "known")
    # The kernel forgets unused inodes when it reclaims its caches: then lookups work again.
    name = os.path.join(mount, "many", f"f{refused_at:06d}")
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("2")
    recovered = False
    for _ in range(100):
        try:
            os.stat(name)
            recovered = True
            break
        except OSError:
            time.sleep(0.05)
    print("recovered_after_drop_caches", "yes" if recovered else "no", flush=True)
    return ok and recovered


def openfiles(source, mount, count):
    populate(source, count)
    fds, refused_errno = [], None
    for i in range(count):
        try:
            fds.append(os.open(os.path.join(mount, "many", f"f{i:06d}"), os.O_RDONLY))
        except OSError as e:
            refused_errno = e.errno
            break
    print("opened", len(fds), flush=True)
    print("errno", errno.errorcode.get(refused_errno, "none"), flush=True)
    # Another caller's stat is still answered while the table is full ...
    stat = subprocess.run(["stat", "-c", "%s", os.path.join(mount, "known")], capture_output=True, timeout=20)
    print("other_stat", "ok" if stat.returncode == 0 and stat.stdout.strip() == b"6" else "failed", flush=True)
    # ... and once one file is closed, another caller can open and read.
    os.close(fds.pop())
    ok = other_caller(mount, "known")
    for fd in fds:
        os.close(fd)
    return refused_errno is not None and ok and stat.returncode == 0


def lockwaiters(source, mount, waiters, pid):
    populate(source, 0)
    path = os.path.join(mount, "lockfile")
    holder = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    fcntl.flock(holder, fcntl.LOCK_EX)
    baseline = threads_of(pid)
    results, lock = [], threading.Lock()

    def wait_for_lock():
        fd = os.open(path, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            outcome = "locked"
            fcntl.flock(fd, fcntl.LOCK_UN)
        except OSError as e:
            outcome = errno.errorcode.get(e.errno, str(e.errno))
        finally:
            os.close(fd)
        with lock:
            results.append(outcome)

    threads = [threading.Thread(target=wait_for_lock) for _ in range(waiters)]
    for t in threads:
        t.start()
    time.sleep(3)   # the refused ones come back at once; the rest wait for the holder
    with lock:
        early = list(results)
    during = threads_of(pid)
    print("refused_early", sum(1 for r in early if r == "ENOLCK"), flush=True)
    print("other_early", sum(1 for r in early if r not in ("ENOLCK",)), flush=True)
    print("threads_baseline", baseline, flush=True)
    print("threads_during", during, flush=True)
    ok = other_caller(mount, "known")
    fcntl.flock(holder, fcntl.LOCK_UN)
    for t in threads:
        t.join(60)
    print("locked_after_release", sum(1 for r in results if r == "locked"), flush=True)
    print("all_finished", "yes" if all(not t.is_alive() for t in threads) else "no", flush=True)
    os.close(holder)
    return ok


def main():
    check, source, mount = sys.argv[1], sys.argv[2], sys.argv[3]
    if check == "inodes":
        ok = inodes(source, mount, int(sys.argv[4]))
    elif check == "openfiles":
        ok = openfiles(source, mount, int(sys.argv[4]))
    elif check == "lockwaiters":
        ok = lockwaiters(source, mount, int(sys.argv[4]), int(sys.argv[5]))
    else:
        sys.exit(f"unknown check {check}")
    print(("PASS " if ok else "FAIL ") + check, flush=True)
    sys.exit(0 if ok else 1)


main()
