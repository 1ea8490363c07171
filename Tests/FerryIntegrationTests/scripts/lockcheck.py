#!/usr/bin/env python3
"""Lock checks across two Ferry mounts of one SOURCE and the host itself.

Usage: lockcheck.py SOURCE MOUNT_A MOUNT_B CHECK
Prints "PASS name" or "FAIL name: reason"; exit status 0 only on PASS.
Each lock holder is its own process (POSIX locks belong to processes).
"""
import errno, fcntl, os, select, signal, struct, sys, threading, time

SOURCE, MOUNT_A, MOUNT_B, CHECK = sys.argv[1:5]
SIDES = {"A": MOUNT_A, "B": MOUNT_B, "host": SOURCE}
PAIRS = [("A", "B"), ("A", "host"), ("host", "A"), ("A", "A")]
WR, RD, UN = fcntl.F_WRLCK, fcntl.F_RDLCK, fcntl.F_UNLCK


class Failure(Exception):
    pass


def expect(cond, msg):
    if not cond:
        raise Failure(msg)


def flock_struct(kind, start=0, length=0):
    return struct.pack("hhqqi4x", kind, os.SEEK_SET, start, length, 0)


def setlk(fd, kind, start=0, length=0, wait=False):
    fcntl.fcntl(fd, fcntl.F_SETLKW if wait else fcntl.F_SETLK, flock_struct(kind, start, length))


def getlk(fd, kind, start=0, length=0):
    t, _, s, l, pid = struct.unpack("hhqqi4x", fcntl.fcntl(fd, fcntl.F_GETLK, flock_struct(kind, start, length)))
    return t, s, l, pid


def try_setlk(fd, kind, start=0, length=0):
    try:
        setlk(fd, kind, start, length)
        return "ok"
    except OSError as e:
        return errno.errorcode[e.errno]


PARENT_FDS = set()   # pipe ends every holder's parent keeps; a new child must not keep them


class Holder:
    """A child process that runs lock commands on `path` when told, and reports results."""

    def __init__(self, path):
        self.to_r, self.to_w = os.pipe()
        self.from_r, self.from_w = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:
            os.close(self.to_w)
            os.close(self.from_r)
            for fd in PARENT_FDS:
                try:
                    os.close(fd)
                except OSError:
                    pass
            fd = os.open(path, os.O_RDWR)
            src = os.fdopen(self.to_r)
            for line in src:
                cmd = eval(line)
                try:
                    result = ("ok", cmd(fd))
                except OSError as e:
                    result = ("err", errno.errorcode[e.errno])
                except Exception as e:  # noqa
                    result = ("exc", repr(e))
                os.write(self.from_w, (repr(result) + "\n").encode())
            os._exit(0)
        os.close(self.to_r)
        os.close(self.from_w)
        PARENT_FDS.update((self.to_w, self.from_r))
        self.out = os.fdopen(self.from_r)

    def run(self, source):
        """Runs the lambda `source` (text) with the holder's fd; returns its result."""
        os.write(self.to_w, (source + "\n").encode())
        return eval(self.out.readline())

    def send(self, source):
        os.write(self.to_w, (source + "\n").encode())

    def result(self):
        return eval(self.out.readline())

    def close(self):
        try:
            os.close(self.to_w)
        except OSError:
            pass
        PARENT_FDS.discard(self.to_w)
        for _ in range(500):                      # give it 5 s to leave, then kill it
            if os.waitpid(self.pid, os.WNOHANG)[0] != 0:
                break
            time.sleep(0.01)
        else:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        PARENT_FDS.discard(self.from_r)
        self.out.close()


def fresh_file(name):
    p = os.path.join(SOURCE, name)
    with open(p, "wb") as f:
        f.write(b"x" * 4096)
    return name


def path(side, name):
    return os.path.join(SIDES[side], name)


def each_pair(fn):
    for a, b in PAIRS:
        name = fresh_file(f"lock-{CHECK}-{a}-{b}")
        h1, h2 = Holder(path(a, name)), Holder(path(b, name))
        try:
            fn(a, b, h1, h2)
        except Failure as e:
            raise Failure(f"{a}->{b}: {e}")
        finally:
            h1.close()
            h2.close()


# ------------------------------------------------------------------ checks

def conflicts():
    def body(a, b, h1, h2):
        expect(h1.run("lambda fd: setlk(fd, WR)") == ("ok", None), "first write lock")
        expect(h2.run("lambda fd: try_setlk(fd, WR)") == ("ok", "EAGAIN"), "write/write did not conflict")
        expect(h2.run("lambda fd: try_setlk(fd, RD)") == ("ok", "EAGAIN"), "write/read did not conflict")
        expect(h1.run("lambda fd: setlk(fd, RD)") == ("ok", None), "downgrade")
        expect(h2.run("lambda fd: try_setlk(fd, RD)") == ("ok", "ok"), "read/read conflicted")
        expect(h1.run("lambda fd: try_setlk(fd, WR)") == ("ok", "EAGAIN"), "upgrade while another reads")
        expect(h2.run("lambda fd: setlk(fd, UN)") == ("ok", None), "unlock")
        expect(h1.run("lambda fd: try_setlk(fd, WR)") == ("ok", "ok"), "upgrade after the reader left")
    each_pair(body)


def getlk_reports_the_holder():
    def body(a, b, h1, h2):
        h1.run("lambda fd: setlk(fd, WR, 100, 50)")
        r = h2.run("lambda fd: getlk(fd, WR, 0, 0)")
        expect(r[0] == "ok", f"getlk failed {r}")
        t, s, l, pid = r[1]
        expect((t, s, l) == (WR, 100, 50), f"conflict reported as {r[1]}")
        if a == "host":
            expect(pid == h1.pid, f"pid {pid}, host holder is {h1.pid}")
        elif b == "host":
            # The host kernel reports -1 for an OFD lock: a lock taken through Ferry has no pid there.
            expect(pid == -1, f"pid {pid} seen on the host for a lock taken through Ferry")
        elif a == b:
            expect(pid == h1.pid, f"pid {pid}, holder on the same mount is {h1.pid}")
        else:
            expect(pid in (0, h1.pid), f"pid {pid}")
        r = h2.run("lambda fd: getlk(fd, WR, 0, 100)")
        expect(r == ("ok", (UN, 0, 100, 0)) or r[1][0] == UN, f"no conflict expected below 100: {r}")
    each_pair(body)


def byte_ranges_and_splitting():
    def body(a, b, h1, h2):
        h1.run("lambda fd: setlk(fd, WR, 0, 10)")
        expect(h2.run("lambda fd: try_setlk(fd, WR, 10, 10)") == ("ok", "ok"), "adjacent range conflicted")
        expect(h2.run("lambda fd: try_setlk(fd, WR, 5, 10)") == ("ok", "EAGAIN"), "overlap did not conflict")
        h1.run("lambda fd: setlk(fd, UN, 3, 2)")  # split [0,10) into [0,3) and [5,10)
        expect(h2.run("lambda fd: try_setlk(fd, WR, 3, 2)") == ("ok", "ok"), "hole after split still locked")
        expect(h2.run("lambda fd: try_setlk(fd, WR, 2, 1)") == ("ok", "EAGAIN"), "left piece lost")
        expect(h2.run("lambda fd: try_setlk(fd, WR, 9, 1)") == ("ok", "EAGAIN"), "right piece lost")
    each_pair(body)


def flock_shared_exclusive():
    def body(a, b, h1, h2):
        expect(h1.run("lambda fd: fcntl.flock(fd, fcntl.LOCK_SH)") == ("ok", None), "shared")
        expect(h2.run("lambda fd: fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)") == ("ok", None), "shared/shared")
        r = h2.run("lambda fd: fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)")
        expect(r == ("err", "EAGAIN"), f"exclusive while shared held: {r}")
        h1.run("lambda fd: fcntl.flock(fd, fcntl.LOCK_UN)")
        expect(h2.run("lambda fd: fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)") == ("ok", None), "upgrade")
        r = h1.run("lambda fd: fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)")
        expect(r == ("err", "EAGAIN"), f"shared while exclusive held: {r}")
    each_pair(body)


def wake_delay(h1, h2, lock, unlock):
    """Seconds from h1's unlock to h2's blocked lock call returning."""
    h1.run(f"lambda fd: {lock}")
    h2.send(f"lambda fd: ({lock}, time.monotonic())[1]")
    time.sleep(0.3)
    t_unlock = h1.run(f"lambda fd: ({unlock}, time.monotonic())[1]")[1]
    r = h2.result()
    expect(r[0] == "ok", f"waiter failed {r}")
    h2.run(f"lambda fd: {unlock}")
    return r[1] - t_unlock


def woke_within(h1, h2, lock, unlock, limit=0.05, attempts=3):
    """The waiter must wake within `limit` of the unlock. A 2-core machine under load can stall
    one sample past it, so up to `attempts` are made and one in time suffices — a waiter that
    polls, or misses the wake-up, misses every time."""
    delays = []
    for _ in range(attempts):
        delays.append(wake_delay(h1, h2, lock, unlock))
        if delays[-1] < limit:
            return
    raise Failure(f"waiter woke {', '.join(f'{d * 1000:.1f}' for d in delays)} ms after the unlock ({lock})")


def blocking_waiter_wakes_fast():
    def body(a, b, h1, h2):
        woke_within(h1, h2, "setlk(fd, WR, wait=True)", "setlk(fd, UN)")
        woke_within(h1, h2, "fcntl.flock(fd, fcntl.LOCK_EX)", "fcntl.flock(fd, fcntl.LOCK_UN)")
    each_pair(body)


def interrupted_waiter_leaves_no_lock():
    for a, b in [("A", "B"), ("host", "A")]:
        name = fresh_file(f"lock-intr-{a}-{b}")
        holder = Holder(path(a, name))
        holder.run("lambda fd: setlk(fd, WR)")
        # A waiter that a signal interrupts: EINTR, and no lock taken.
        pid = os.fork()
        if pid == 0:
            fd = os.open(path(b, name), os.O_RDWR)

            def on_alarm(*_):
                raise TimeoutError()
            signal.signal(signal.SIGALRM, on_alarm)
            signal.setitimer(signal.ITIMER_REAL, 0.3)
            t = time.monotonic()
            try:
                setlk(fd, WR, wait=True)
                os._exit(3)
            except TimeoutError:
                os._exit(0 if time.monotonic() - t < 1.0 else 4)
        _, status = os.waitpid(pid, 0)
        expect(os.WEXITSTATUS(status) == 0, f"{a}->{b}: interrupted waiter exit {os.WEXITSTATUS(status)}")
        # A waiter that is killed.
        pid = os.fork()
        if pid == 0:
            fd = os.open(path(b, name), os.O_RDWR)
            setlk(fd, WR, wait=True)
            time.sleep(100)
            os._exit(0)
        time.sleep(0.3)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        holder.run("lambda fd: setlk(fd, UN)")
        time.sleep(0.1)
        probe = Holder(path(b, name))
        expect(probe.run("lambda fd: try_setlk(fd, WR)") == ("ok", "ok"), f"{a}->{b}: a lock was left behind")
        probe.close()
        holder.close()


def released_soon(holder, command, wanted, message, limit=1.0):
    """Locks that end with RELEASE through *another* mount: the kernel sends RELEASE after close()
    (or exit) has returned, and that mount's server may not have handled it when the next
    request reaches this one (protocol/locks.md); `command` must answer `wanted` within `limit`."""
    deadline = time.monotonic() + limit
    while (result := holder.run(command)) != wanted:
        expect(time.monotonic() < deadline, f"{message} (still {result!r} after {limit:.0f} s)")
        time.sleep(0.005)


OFD_GETLK = 36


def ofd_getlk_type(fd):
    """The type F_OFD_GETLK reports for a whole-file write lock (F_UNLCK: nothing in the way)."""
    return struct.unpack("hhqqi4x", fcntl.fcntl(fd, OFD_GETLK, flock_struct(WR)))[0]


def close_and_exit_release_locks():
    name = fresh_file("lock-release")
    h = Holder(path("A", name))
    same = Holder(path("A", name))
    other = Holder(path("B", name))
    h.run("lambda fd: setlk(fd, WR)")
    expect(other.run("lambda fd: try_setlk(fd, WR)") == ("ok", "EAGAIN"), "not held")
    # Closing another descriptor of the same file drops the process's POSIX locks.
    h.run(f"lambda fd: os.close(os.open({path('A', name)!r}, os.O_RDONLY))")
    expect(other.run("lambda fd: try_setlk(fd, WR)") == ("ok", "ok"), "close of another fd kept the lock")
    other.run("lambda fd: setlk(fd, UN)")
    # The client's own OFD lock ends with the last close of its open file (no unlock sent).
    # Through the same mount the next request sees it gone at once, as on the host.
    take_ofd_and_close = (f"lambda fd: (lambda d: (fcntl.fcntl(d, fcntl.F_OFD_SETLK, flock_struct(WR)), os.close(d)))"
                          f"(os.open({path('A', name)!r}, os.O_RDWR))")
    h.run(take_ofd_and_close)
    expect(same.run("lambda fd: try_setlk(fd, WR)") == ("ok", "ok"), "an OFD lock outlived its open file")
    same.run("lambda fd: setlk(fd, UN)")
    # Through another mount, after that mount's server has handled the RELEASE.
    h.run(take_ofd_and_close)
    released_soon(other, "lambda fd: try_setlk(fd, WR)", ("ok", "ok"), "an OFD lock outlived its open file")
    other.run("lambda fd: setlk(fd, UN)")
    # Exit drops everything: POSIX locks and flock.
    h.run("lambda fd: setlk(fd, WR)")
    h.run("lambda fd: fcntl.flock(os.open(" + repr(path("A", name)) + ", os.O_RDONLY), fcntl.LOCK_EX)")
    h.close()
    expect(same.run("lambda fd: try_setlk(fd, WR)") == ("ok", "ok"), "exit kept the POSIX lock")
    expect(same.run("lambda fd: fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)") == ("ok", None), "exit kept the flock")
    same.run("lambda fd: (setlk(fd, UN), fcntl.flock(fd, fcntl.LOCK_UN))")
    released_soon(other, "lambda fd: fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)", ("ok", None), "exit kept the flock")
    same.close()
    other.close()


def flock_ends_with_the_open_that_took_it():
    """The first open of a file through mount A takes a flock; a process on A and one on the
    host block on it; the holder exits (its last close, no unlock sent). Both waiters must get
    the lock in turn. With passthrough the kernel keeps a backing file for the inode while any
    open of it lasts: a backing file that shared the first open's file description kept its
    flock alive, and the waiters waited forever."""
    name = fresh_file("lock-flock-first-open")
    holder = Holder(path("A", name))           # the inode's first open through A
    waiters = [Holder(path("A", name)), Holder(path("host", name))]
    try:
        expect(holder.run("lambda fd: fcntl.flock(fd, fcntl.LOCK_EX)") == ("ok", None), "flock not taken")
        for w in waiters:
            w.send("lambda fd: (fcntl.flock(fd, fcntl.LOCK_EX), fcntl.flock(fd, fcntl.LOCK_UN))")
        time.sleep(0.3)
        for w in waiters:
            expect(not select.select([w.out], [], [], 0)[0], "a waiter got the flock while it was held")
        holder.close()
        for w in waiters:
            expect(select.select([w.out], [], [], 5)[0], "a waiter was never woken: the flock outlived the open file that took it")
            expect(w.result() == ("ok", (None, None)), "the waiter's flock failed")
    finally:
        for w in waiters:
            w.close()


def keep_busy(side, count, seconds=60):
    """Starts `count` processes that stat and open files through `side` for up to `seconds`:
    they keep a server's reader threads busy and the CPUs contended, as on a loaded machine."""
    pids = []
    for i in range(count):
        target = path(side, fresh_file(f"busy-{i}"))
        pid = os.fork()
        if pid == 0:
            try:
                end = time.monotonic() + seconds
                while time.monotonic() < end:
                    os.stat(target)
                    os.close(os.open(target, os.O_RDONLY))
            finally:
                os._exit(0)
        pids.append(pid)
    return pids


def stop_all(pids):
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


def release_is_seen_at_once():
    """A process takes an OFD lock or a flock, closes its last descriptor and tells another
    process on the same mount, which must not see the lock any more (F_OFD_GETLK, F_GETLK,
    F_SETLK, flock), without retrying, 200 times each while other requests keep the server busy:
    the RELEASE the kernel queued before the close returned is handled before the later lock
    request, however many reader threads (a reader can be preempted between taking RELEASE and
    handling it)."""
    name = fresh_file("lock-release-order")
    h = Holder(path("A", name))
    other = Holder(path("A", name))
    p = repr(path("A", name))
    takes = {
        "OFD lock": f"lambda fd: (lambda d: (fcntl.fcntl(d, fcntl.F_OFD_SETLK, flock_struct(WR)), os.close(d)))(os.open({p}, os.O_RDWR))",
        "flock": f"lambda fd: (lambda d: (fcntl.flock(d, fcntl.LOCK_EX), os.close(d)))(os.open({p}, os.O_RDONLY))",
    }
    probes = {
        "F_OFD_GETLK": ("lambda fd: ofd_getlk_type(fd)", ("ok", UN)),
        "F_GETLK": ("lambda fd: getlk(fd, WR)[0]", ("ok", UN)),
        "F_SETLK": ("lambda fd: (try_setlk(fd, WR), setlk(fd, UN))[0]", ("ok", "ok")),
        "flock": ("lambda fd: (fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB), fcntl.flock(fd, fcntl.LOCK_UN))[0]",
                  ("ok", None)),
    }
    busy = keep_busy("A", 4)
    try:
        for lock, take in takes.items():
            for probe, (command, wanted) in probes.items():
                if (lock == "flock") != (probe == "flock"):
                    continue   # flocks and record locks do not conflict with each other
                for i in range(200):
                    h.run(take)
                    result = other.run(command)
                    expect(result == wanted, f"{probe} after the holder closed its {lock}: {result!r} (round {i})")
    finally:
        stop_all(busy)
        h.close()
        other.close()


def deadlock_is_detected():
    x, y = fresh_file("lock-dl-x"), fresh_file("lock-dl-y")
    p1x, p2y = Holder(path("A", x)), Holder(path("A", y))
    try:
        p1x.run("lambda fd: setlk(fd, WR)")
        p2y.run("lambda fd: setlk(fd, WR)")
        # p1 waits for y (held by p2) ...
        p1x.send(f"lambda fd: setlk(os.open({path('A', y)!r}, os.O_RDWR), WR, wait=True)")
        time.sleep(0.3)
        # ... so p2 waiting for x (held by p1) would close the cycle.
        r = p2y.run(f"lambda fd: setlk(os.open({path('A', x)!r}, os.O_RDWR), WR, wait=True)")
        expect(r[0] == "err" and r[1] in ("EDEADLK", "EDEADLOCK"), f"second waiter got {r}")
        p2y.run("lambda fd: setlk(fd, UN)")
        expect(p1x.result() == ("ok", None), "first waiter did not get the lock")
    finally:
        p1x.close()
        p2y.close()


def many_waiters_do_not_block_io():
    name = fresh_file("lock-many")
    holder = Holder(path("A", name))
    holder.run("lambda fd: setlk(fd, WR)")
    count = int(os.environ.get("FERRY_LOCK_WAITERS", "500"))
    acquired = []
    lock = threading.Lock()

    def waiter():
        fd = os.open(path("B", name), os.O_RDWR)
        fcntl.fcntl(fd, fcntl.F_OFD_SETLKW, flock_struct(WR))   # each descriptor is its own owner
        with lock:
            acquired.append(time.monotonic())
        fcntl.fcntl(fd, fcntl.F_OFD_SETLK, flock_struct(UN))
        os.close(fd)

    threads = [threading.Thread(target=waiter, daemon=True) for _ in range(count)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    expect(not acquired, "a waiter got the held lock")
    # Other I/O on both mounts proceeds while they wait.
    t0 = time.monotonic()
    for side in ("A", "B"):
        for i in range(50):
            p = path(side, f"io-{i}")
            with open(p, "wb") as f:
                f.write(os.urandom(4096))
            os.stat(p)
            os.unlink(p)
    io_time = time.monotonic() - t0
    expect(io_time < 10, f"100 create/stat/unlink took {io_time:.1f} s with {count} waiters")
    holder.run("lambda fd: setlk(fd, UN)")
    for t in threads:
        t.join(timeout=120)
    expect(len(acquired) == count, f"{len(acquired)} of {count} waiters got the lock")
    holder.close()
    print(f"  {count} waiters; I/O meanwhile {io_time:.2f} s; all acquired in {acquired[-1] - acquired[0]:.2f} s")


CHECKS = {f.__name__: f for f in [conflicts, getlk_reports_the_holder, byte_ranges_and_splitting,
                                  flock_shared_exclusive, blocking_waiter_wakes_fast,
                                  interrupted_waiter_leaves_no_lock, close_and_exit_release_locks, release_is_seen_at_once,
                                  deadlock_is_detected, many_waiters_do_not_block_io,
                                  flock_ends_with_the_open_that_took_it]}

try:
    CHECKS[CHECK]()
    print(f"PASS {CHECK}")
except Exception as e:  # noqa
    import traceback
    print(f"FAIL {CHECK}: {e if isinstance(e, Failure) else traceback.format_exc()}")
    sys.exit(1)
