#!/usr/bin/env python3
"""Host changes against a Ferry mount served with --cache always (one-day timeouts).

usage: notifycheck.py notify SOURCE MOUNT CASE...   each change visible through MOUNT within 100 ms
       notifycheck.py stale  SOURCE MOUNT CASE...   each change still invisible after 300 ms
                                                   (the control: proves the kernel really caches)
       notifycheck.py twomounts SOURCE MOUNT_A MOUNT_B   writes through A visible through B at once
       notifycheck.py overflow SOURCE MOUNT              10,000 host changes in a burst, then every
                                                         file read through MOUNT equals the host's

Prints "PASS <case> <latency>" or "FAIL <case>: <why>" per case; exits non-zero on any failure.
"""
import os
import sys
import time

DEADLINE = 0.100      # the bound for a host change to show through the mount
STALE_WAIT = 0.300


def write(path, data, mode="wb"):
    with open(path, mode) as f:
        f.write(data)


def read(path):
    with open(path, "rb") as f:
        return f.read()


def exists(path):
    try:
        os.lstat(path)
        return True
    except FileNotFoundError:
        return False


def listing(path):
    return set(os.listdir(path))


class Case:
    """One change type: setup on the host, prime the mount's caches, change on the host,
    and a predicate that is true once the mount shows the change."""

    def __init__(self, source, mount, name):
        self.s = os.path.join(source, "case-" + name)
        self.m = os.path.join(mount, "case-" + name)
        os.mkdir(self.s)
        self.fds = []

    def close(self):
        for fd in self.fds:
            os.close(fd)


def case_write(c):
    write(f"{c.s}/f", b"A" * 4096)
    yield lambda: (read(f"{c.m}/f"), os.stat(f"{c.m}/f"))
    with open(f"{c.s}/f", "r+b") as f:           # same size: only the data cache can be stale
        f.write(b"B" * 4096)
    yield lambda: read(f"{c.m}/f") == b"B" * 4096


def case_append_to_open_file(c):
    write(f"{c.s}/log", b"line 1\n")
    fd = os.open(f"{c.m}/log", os.O_RDONLY)
    c.fds.append(fd)
    yield lambda: (os.pread(fd, 4096, 0), os.fstat(fd))
    write(f"{c.s}/log", b"line 2\n", "ab")
    yield lambda: os.pread(fd, 4096, 0) == b"line 1\nline 2\n"


def case_truncate(c):
    write(f"{c.s}/f", bytes(range(256)) * 32)
    yield lambda: (read(f"{c.m}/f"), os.stat(f"{c.m}/f"))
    os.truncate(f"{c.s}/f", 3)
    yield lambda: os.stat(f"{c.m}/f").st_size == 3 and read(f"{c.m}/f") == bytes([0, 1, 2])


def case_chmod(c):
    write(f"{c.s}/f", b"x")
    os.chmod(f"{c.s}/f", 0o600)
    yield lambda: os.stat(f"{c.m}/f")
    os.chmod(f"{c.s}/f", 0o640)
    yield lambda: os.stat(f"{c.m}/f").st_mode & 0o7777 == 0o640


def case_chown(c):
    write(f"{c.s}/f", b"x")
    yield lambda: os.stat(f"{c.m}/f")
    os.chown(f"{c.s}/f", 1234, 5678)
    yield lambda: (lambda st: (st.st_uid, st.st_gid) == (1234, 5678))(os.stat(f"{c.m}/f"))


def case_utimes(c):
    write(f"{c.s}/f", b"x")
    yield lambda: os.stat(f"{c.m}/f")
    os.utime(f"{c.s}/f", (1_000_000_000, 1_000_000_000))
    yield lambda: os.stat(f"{c.m}/f").st_mtime == 1_000_000_000


def case_create(c):
    os.mkdir(f"{c.s}/d")
    yield lambda: (exists(f"{c.m}/d/new"), listing(f"{c.m}/d"))
    write(f"{c.s}/d/new", b"fresh")
    yield lambda: "new" in listing(f"{c.m}/d") and exists(f"{c.m}/d/new") and read(f"{c.m}/d/new") == b"fresh"


def case_unlink(c):
    write(f"{c.s}/f", b"x")
    yield lambda: (os.stat(f"{c.m}/f"), listing(c.m))
    os.unlink(f"{c.s}/f")
    yield lambda: not exists(f"{c.m}/f") and "f" not in listing(c.m)


def case_rename(c):
    write(f"{c.s}/a", b"moved")
    yield lambda: (os.stat(f"{c.m}/a"), exists(f"{c.m}/b"), listing(c.m))
    os.rename(f"{c.s}/a", f"{c.s}/b")
    yield lambda: not exists(f"{c.m}/a") and exists(f"{c.m}/b") and read(f"{c.m}/b") == b"moved" \
        and listing(c.m) == {"b"}


def case_replace_file(c):
    """An editor's save: write a temporary file, rename it over the original."""
    write(f"{c.s}/doc", b"version 1")
    yield lambda: (read(f"{c.m}/doc"), os.stat(f"{c.m}/doc"))
    write(f"{c.s}/.doc.tmp", b"version 2, longer")
    os.rename(f"{c.s}/.doc.tmp", f"{c.s}/doc")
    # stat first: a cached name answers from cached attributes, while an open of the old
    # (now deleted) file gets ESTALE and the kernel retries the lookup by itself.
    yield lambda: os.stat(f"{c.m}/doc").st_size == 17 and read(f"{c.m}/doc") == b"version 2, longer"


def case_recreate_tree(c):
    """A checkout: the host deletes a directory tree and creates it again under the same names."""
    os.mkdir(f"{c.s}/d")
    write(f"{c.s}/d/a", b"old a")
    write(f"{c.s}/d/b", b"old b")
    yield lambda: (listing(f"{c.m}/d"), read(f"{c.m}/d/a"), read(f"{c.m}/d/b"), os.stat(f"{c.m}/d/a"))
    for name in ("a", "b"):
        os.unlink(f"{c.s}/d/{name}")
    os.rmdir(f"{c.s}/d")
    os.mkdir(f"{c.s}/d")
    write(f"{c.s}/d/a", b"new a, longer")
    write(f"{c.s}/d/c", b"c")
    # stat first (cached attributes), then the names and the bytes.
    yield lambda: os.stat(f"{c.m}/d/a").st_size == 13 and listing(f"{c.m}/d") == {"a", "c"} \
        and read(f"{c.m}/d/a") == b"new a, longer" and not exists(f"{c.m}/d/b")


def case_mkdir(c):
    yield lambda: (exists(f"{c.m}/sub"), listing(c.m))
    os.mkdir(f"{c.s}/sub")
    yield lambda: "sub" in listing(c.m) and os.path.isdir(f"{c.m}/sub")


def case_rmdir(c):
    os.mkdir(f"{c.s}/sub")
    yield lambda: (os.stat(f"{c.m}/sub"), listing(c.m))
    os.rmdir(f"{c.s}/sub")
    yield lambda: not exists(f"{c.m}/sub") and "sub" not in listing(c.m)


def case_xattr(c):
    write(f"{c.s}/f", b"x")
    os.setxattr(f"{c.s}/f", "user.k", b"v1")
    before = os.stat(f"{c.s}/f").st_ctime_ns
    yield lambda: os.stat(f"{c.m}/f")
    time.sleep(0.01)
    os.setxattr(f"{c.s}/f", "user.k", b"v2")
    yield lambda: os.getxattr(f"{c.m}/f", "user.k") == b"v2" and os.stat(f"{c.m}/f").st_ctime_ns != before


CASES = {name[5:]: fn for name, fn in globals().items() if name.startswith("case_")}


def poll(predicate, limit):
    start = time.monotonic()
    while True:
        try:
            if predicate():
                return time.monotonic() - start
        except OSError as e:
            last = e
            if e.errno == 116:  # ESTALE is a failure in itself, never a transient
                raise
        if time.monotonic() - start > limit:
            return None
        time.sleep(0.001)


def run_case(mode, source, mount, name):
    c = Case(source, mount, name)
    steps = CASES[name](c)
    try:
        prime = next(steps)
        prime()
        prime()  # the second pass is served from the caches the first one filled
        visible = next(steps)
        if mode == "notify":
            latency = poll(visible, DEADLINE)
            if latency is None:
                return f"FAIL {name}: not visible through the mount within {DEADLINE * 1000:.0f} ms"
            return f"PASS {name} {latency * 1000:.1f} ms"
        time.sleep(STALE_WAIT)
        if visible():
            return f"FAIL {name}: visible without notifications, so this case does not test them"
        return f"PASS {name} (stale after {STALE_WAIT * 1000:.0f} ms, as expected without notifications)"
    except OSError as e:
        return f"FAIL {name}: {e!r}"
    finally:
        c.close()


def two_mounts(source, mount_a, mount_b):
    """Changes made through mount A reach mount B's caches."""
    results = []
    os.mkdir(f"{source}/two")
    a, b = f"{mount_a}/two", f"{mount_b}/two"
    write(f"{a}/f", b"1" * 100)
    steps = [
        ("write_through_a", lambda: write(f"{a}/f", b"2" * 100), lambda: read(f"{b}/f") == b"2" * 100),
        ("append_through_a", lambda: write(f"{a}/f", b"3", "ab"), lambda: read(f"{b}/f") == b"2" * 100 + b"3"),
        ("chmod_through_a", lambda: os.chmod(f"{a}/f", 0o604), lambda: os.stat(f"{b}/f").st_mode & 0o777 == 0o604),
        ("create_through_a", lambda: write(f"{a}/g", b"g"), lambda: "g" in listing(b) and read(f"{b}/g") == b"g"),
        ("rename_through_a", lambda: os.rename(f"{a}/g", f"{a}/h"), lambda: listing(b) == {"f", "h"} and not exists(f"{b}/g")),
        ("unlink_through_a", lambda: os.unlink(f"{a}/h"), lambda: listing(b) == {"f"} and not exists(f"{b}/h")),
    ]
    for name, change, visible in steps:
        for _ in range(2):  # prime B's caches
            read(f"{b}/f"), os.stat(f"{b}/f"), listing(b), exists(f"{b}/g"), exists(f"{b}/h")
        change()
        latency = poll(visible, DEADLINE)
        results.append(f"PASS {name} {latency * 1000:.1f} ms" if latency is not None
                       else f"FAIL {name}: not visible through the second mount within {DEADLINE * 1000:.0f} ms")
    return results


def overflow(source, mount, files=200, rounds=50, late=50):
    """files x rounds host writes in one burst into a tiny ring, then compare every file. Names
    the mount has looked up and found missing (cached as negative entries) are created during
    the burst: after an overflow only revalidating every cached name can reveal them."""
    os.mkdir(f"{source}/burst")
    names = [f"file-{i:04d}" for i in range(files)]
    late_names = [f"late-{i:03d}" for i in range(late)]
    for n in names:
        write(f"{source}/burst/{n}", b"initial " + n.encode())
    for _ in range(2):
        for n in names:
            read(f"{mount}/burst/{n}")
        for n in late_names:
            exists(f"{mount}/burst/{n}")
    for r in range(rounds):
        for n in names:
            write(f"{source}/burst/{n}", f"{n} round {r} ".encode() * (1 + r % 7))
        if r == rounds // 2:
            for n in late_names:
                write(f"{source}/burst/{n}", b"late")
    deadline = time.monotonic() + 5
    while True:
        wrong = [n for n in names if read(f"{mount}/burst/{n}") != read(f"{source}/burst/{n}")]
        missing = [n for n in late_names if not exists(f"{mount}/burst/{n}")]
        if not wrong and not missing:
            return [f"PASS overflow {files * rounds} host writes and {late} creates, every file matches"]
        if time.monotonic() > deadline:
            return [f"FAIL overflow 5 s after the burst: {len(wrong)} file(s) differ from the host "
                    f"(e.g. {wrong[:3]}), {len(missing)} created name(s) missing (e.g. {missing[:3]})"]
        time.sleep(0.01)


def main():
    mode = sys.argv[1]
    if mode in ("notify", "stale"):
        source, mount, names = sys.argv[2], sys.argv[3], sys.argv[4:] or sorted(CASES)
        results = [run_case(mode, source, mount, n) for n in names]
    elif mode == "twomounts":
        results = two_mounts(*sys.argv[2:5])
    elif mode == "overflow":
        results = overflow(*sys.argv[2:4])
    else:
        sys.exit(__doc__)
    for line in results:
        print(line)
    sys.exit(0 if all(line.startswith("PASS") for line in results) else 1)


if __name__ == "__main__":
    main()
