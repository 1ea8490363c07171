#!/usr/bin/env python3
"""Differential conformance: one seeded random sequence of file-system calls, made by root and by
two ordinary users, applied step by step to a plain host directory and to a Ferry mount, with
every step's outcome compared — the return value or errno, the shape of each path it touched
(type, mode, link count, owner, size) and which of their ctimes and mtimes moved — and the two
trees compared whole at the end. The calls include O_DIRECT opens, reads and writes, aligned to
the host's 512-byte blocks or not (the host's EINVAL must come back through the mount).

Usage: opdiff.py NATIVE_DIR MOUNT_DIR SEED STEPS
OPDIFF_TRACE=1 prints every step; OPDIFF_KERNEL_FILE_TIMES=1 is for the writeback cache. Prints "PASS seed N" or the first steps that differ; the exit status is the number of differences
(at most 20 are reported).
"""
import ctypes, errno, mmap, os, random, socket, stat, struct, sys, time

TRACE = os.environ.get("OPDIFF_TRACE") == "1"  # print every step
# With the writeback cache the kernel keeps regular files' mtime and ctime itself (it ignores the
# host's), so OPDIFF_KERNEL_FILE_TIMES=1 leaves those out of the comparison.
KERNEL_FILE_TIMES = os.environ.get("OPDIFF_KERNEL_FILE_TIMES") == "1"

# Who makes each call: (uid, gid, supplementary groups). 3000 is a group both users share.
ROOT = (0, 0, [0])
ALICE = (2001, 2001, [2001, 3000])
BOB = (2002, 2002, [2002, 3000])
# Run by an ordinary user (against that user's own Ferry server), the walk's only caller is itself.
PEOPLE = [ROOT, ALICE, BOB] if os.geteuid() == 0 else [None]

# The names the walk plays with: some nest, so ENOTDIR/ENOENT/EISDIR paths come up often.
PATHS = ["f1", "f2", "d1", "d2", "s1", "d1/f1", "d1/f2", "d1/d3", "d1/d3/f1", "d2/f1", "d2/d3", "d2/s1",
         "n" * 255, "d1/" + "m" * 256]  # the longest name allowed, and one byte more
OPEN_FLAGS = [os.O_RDONLY | os.O_DIRECTORY, os.O_RDONLY | os.O_NOFOLLOW, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW,
              os.O_RDWR | os.O_CREAT | os.O_TRUNC, os.O_RDONLY | os.O_CREAT | os.O_EXCL | os.O_DIRECTORY,
              os.O_WRONLY | os.O_APPEND, os.O_PATH | os.O_NOFOLLOW, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
              os.O_RDWR | os.O_DIRECT, os.O_WRONLY | os.O_CREAT | os.O_DIRECT | os.O_NOFOLLOW,
              os.O_RDONLY | os.O_DIRECT | os.O_DIRECTORY]
# Symlink targets stay inside the tree from wherever the link is (no absolute or "../" targets).
TARGETS = ["f1", "d3", "d3/f1", "s1", "missing"]
MODES = [0o644, 0o600, 0o755, 0o700, 0o777, 0o000, 0o4755, 0o2755, 0o1777, 0o2770, 0o640]
OWNERS = [(2001, 2001), (2002, 3000), (0, 0), (-1, 3000), (2001, -1), (-1, 2002)]
XATTR_NAMES = [b"user.a", b"user.b"]


def acl(*entries):
    """A POSIX ACL in its xattr form: version 2, then (tag, permissions, id) entries."""
    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", tag, perm, ident) for tag, perm, ident in entries)


USER_OBJ, USER, GROUP_OBJ, GROUP, MASK, OTHER = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
NOBODY = 0xFFFFFFFF
ACLS = [
    acl((USER_OBJ, 6, NOBODY), (USER, 7, 2002), (GROUP_OBJ, 4, NOBODY), (MASK, 7, NOBODY), (OTHER, 0, NOBODY)),
    acl((USER_OBJ, 7, NOBODY), (GROUP_OBJ, 5, NOBODY), (GROUP, 7, 3000), (MASK, 7, NOBODY), (OTHER, 5, NOBODY)),
    acl((USER_OBJ, 7, NOBODY), (USER, 5, 2001), (GROUP_OBJ, 0, NOBODY), (MASK, 5, NOBODY), (OTHER, 0, NOBODY)),
]
ACL_NAMES = [b"system.posix_acl_access", b"system.posix_acl_default"]

libc = ctypes.CDLL(None, use_errno=True)


def checked(result):
    if result != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


def renameat2(a, b, flags):
    checked(libc.renameat2(-100, a.encode(), -100, b.encode(), flags))


def outcome(fn, *args):
    """('ok', value) or ('err', errno name)."""
    try:
        return ("ok", fn(*args))
    except OSError as e:
        return ("err", errno.errorcode.get(e.errno, e.errno))


def as_person(person, fn, *args):
    """Runs fn(*args) in a child with the person's identity and umask 022; returns its outcome."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            if person is not None:
                uid, gid, groups = person
                os.setgroups(groups)
                os.setresgid(gid, gid, gid)
                os.setresuid(uid, uid, uid)
            os.umask(0o022)
            result = outcome(fn, *args)
        except BaseException as e:  # noqa: BLE001 — reported as a difference, never hidden
            result = ("crash", repr(e))
        os.write(w, repr(result).encode())
        os._exit(0)
    os.close(w)
    data = b""
    while chunk := os.read(r, 65536):
        data += chunk
    os.close(r)
    os.waitpid(pid, 0)
    return eval(data.decode())


def shape(path):
    """What must agree about a path: type, mode, links, owner, size (not for directories)."""
    try:
        st = os.lstat(path)
    except OSError as e:
        return errno.errorcode.get(e.errno, e.errno)
    size = None if stat.S_ISDIR(st.st_mode) else st.st_size
    return (stat.S_IFMT(st.st_mode), oct(stat.S_IMODE(st.st_mode)), st.st_nlink, st.st_uid, st.st_gid, size)


def times(path):
    try:
        st = os.lstat(path)
        if KERNEL_FILE_TIMES and stat.S_ISREG(st.st_mode):
            return None
        return (st.st_ctime_ns, st.st_mtime_ns)
    except OSError:
        return None


def moved(before, after):
    """Which of (ctime, mtime) changed, or None when the path did not exist on both sides."""
    if before is None or after is None:
        return None
    return ("ctime" if before[0] != after[0] else "-", "mtime" if before[1] != after[1] else "-")


# ------------------------------------------------------------------------------ the calls
# Each takes the tree's root and the step's arguments; opens are non-blocking so fifos never hang.

def op_create(root, p, mode):
    os.close(os.open(os.path.join(root, p), os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NONBLOCK, mode))


def op_open_trunc(root, p):
    os.close(os.open(os.path.join(root, p), os.O_WRONLY | os.O_TRUNC | os.O_NONBLOCK))


def op_open(root, p, flags, mode):
    os.close(os.open(os.path.join(root, p), flags | os.O_NONBLOCK, mode))


def op_mknod(root, p, mode, device):
    os.mknod(os.path.join(root, p), mode, device)


def op_bind(root, p):
    os.chdir(root)  # relative: socket paths are short (108 bytes), and the trees' paths differ in length
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(p)


def op_mkdir(root, p, mode):
    os.mkdir(os.path.join(root, p), mode)


def op_mkfifo(root, p, mode):
    os.mkfifo(os.path.join(root, p), mode)


def op_symlink(root, target, p):
    os.symlink(target, os.path.join(root, p))


def op_link(root, a, b):
    os.link(os.path.join(root, a), os.path.join(root, b), follow_symlinks=False)


def op_unlink(root, p):
    os.unlink(os.path.join(root, p))


def op_rmdir(root, p):
    os.rmdir(os.path.join(root, p))


def op_rename(root, a, b, flags):
    renameat2(os.path.join(root, a), os.path.join(root, b), flags)


def op_chmod(root, p, mode):
    os.chmod(os.path.join(root, p), mode)


def op_chown(root, p, uid, gid, follow):
    os.chown(os.path.join(root, p), uid, gid, follow_symlinks=follow)


def op_truncate(root, p, size):
    os.truncate(os.path.join(root, p), size)


def op_write(root, p, offset, data, append):
    flags = os.O_WRONLY | os.O_NONBLOCK | (os.O_APPEND if append else 0)
    fd = os.open(os.path.join(root, p), flags)
    try:
        return os.write(fd, data) if append else os.pwrite(fd, data, offset)
    finally:
        os.close(fd)


def op_read(root, p):
    fd = os.open(os.path.join(root, p), os.O_RDONLY | os.O_NONBLOCK)
    try:
        return os.read(fd, 1 << 16)
    finally:
        os.close(fd)


# O_DIRECT I/O: page-aligned memory (mmap), offsets and lengths on and off the host's 512-byte
# block grid, so the host's EINVAL for an unaligned request must come back through the mount too.
DIRECT_OFFSETS = [0, 512, 4096, 100, 70000 // 512 * 512]
DIRECT_LENGTHS = [512, 4096, 65536, 100, 0]
DIRECT_MEMORY = mmap.mmap(-1, 1 << 17)


def op_direct_write(root, p, offset, length, byte):
    """Creates the file if missing (CREATE with O_DIRECT), then one pwrite."""
    fd = os.open(os.path.join(root, p), os.O_WRONLY | os.O_CREAT | os.O_DIRECT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o644)
    try:
        view = memoryview(DIRECT_MEMORY)[:length]
        view[:] = bytes([byte]) * length
        return os.pwritev(fd, [view], offset)
    finally:
        os.close(fd)


def op_direct_read(root, p, offset, length):
    fd = os.open(os.path.join(root, p), os.O_RDONLY | os.O_DIRECT | os.O_NONBLOCK)
    try:
        view = memoryview(DIRECT_MEMORY)[:length]
        return bytes(view[:os.preadv(fd, [view], offset)])
    finally:
        os.close(fd)


def op_utime(root, p, when, follow):
    os.utime(os.path.join(root, p), ns=when, follow_symlinks=follow) if when else \
        os.utime(os.path.join(root, p), follow_symlinks=follow)


class Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


UTIME_NOW, UTIME_OMIT = (1 << 30) - 1, (1 << 30) - 2
TIME_SPECS = [(0, UTIME_NOW), (0, UTIME_OMIT), (86_400, 5)]


def op_utimensat(root, p, access, modification, flags):
    """utimensat(2) with UTIME_NOW / UTIME_OMIT per time (what os.utime cannot say)."""
    times = (Timespec * 2)(Timespec(*access), Timespec(*modification))
    checked(libc.utimensat(-100, os.path.join(root, p).encode(), times, flags))


def op_setxattr(root, p, name, value, flags):
    os.setxattr(os.path.join(root, p), name, value, flags, follow_symlinks=False)


def op_getxattr(root, p, name):
    return os.getxattr(os.path.join(root, p), name, follow_symlinks=False)


def op_listxattr(root, p):
    return sorted(os.listxattr(os.path.join(root, p), follow_symlinks=False))


def op_removexattr(root, p, name):
    os.removexattr(os.path.join(root, p), name, follow_symlinks=False)


def op_readdir(root, p):
    return sorted(os.listdir(os.path.join(root, p)))


def op_readlink(root, p):
    return os.readlink(os.path.join(root, p))


def op_access(root, p, mode):
    return os.access(os.path.join(root, p), mode, effective_ids=False)


def op_stat(root, p):
    st = os.stat(os.path.join(root, p))
    return (stat.S_IFMT(st.st_mode), oct(stat.S_IMODE(st.st_mode)), st.st_uid, st.st_gid)


def op_fallocate(root, p, offset, length):
    fd = os.open(os.path.join(root, p), os.O_WRONLY | os.O_NONBLOCK)
    try:
        os.posix_fallocate(fd, offset, length)
    finally:
        os.close(fd)


def random_step(rng):
    """One call: (name, function, arguments after root, paths it touches)."""
    p, q = rng.choice(PATHS), rng.choice(PATHS)
    kind = rng.choice(["create", "create", "mkdir", "mkdir", "mkfifo", "symlink", "link", "unlink",
                       "unlink", "rmdir", "rename", "rename", "chmod", "chown", "truncate", "write",
                       "write", "read", "utime", "setxattr", "getxattr", "listxattr", "removexattr",
                       "readdir", "readlink", "access", "stat", "open_trunc", "fallocate", "acl",
                       "getacl", "open", "open", "mknod", "bind", "utimensat", "utimensat",
                       "direct_write", "direct_write", "direct_read", "direct_read"])
    if kind == "create":
        return kind, op_create, (p, rng.choice(MODES)), [p]
    if kind == "mkdir":
        return kind, op_mkdir, (p, rng.choice(MODES)), [p]
    if kind == "mkfifo":
        return kind, op_mkfifo, (p, rng.choice(MODES)), [p]
    if kind == "symlink":
        return kind, op_symlink, (rng.choice(TARGETS), p), [p]
    if kind == "link":
        return kind, op_link, (p, q), [p, q]
    if kind == "unlink":
        return kind, op_unlink, (p,), [p]
    if kind == "rmdir":
        return kind, op_rmdir, (p,), [p]
    if kind == "rename":
        return kind, op_rename, (p, q, rng.choice([0, 0, 1, 2])), [p, q]
    if kind == "chmod":
        return kind, op_chmod, (p, rng.choice(MODES)), [p]
    if kind == "chown":
        uid, gid = rng.choice(OWNERS)
        return kind, op_chown, (p, uid, gid, rng.random() < 0.7), [p]
    if kind == "truncate":
        return kind, op_truncate, (p, rng.choice([0, 1, 100, 5000, 70000, -1])), [p]
    if kind == "write":
        data = bytes([rng.randrange(256)]) * rng.choice([1, 10, 4096, 9000])
        return kind, op_write, (p, rng.choice([0, 3, 4096, 100000]), data, rng.random() < 0.3), [p]
    if kind == "read":
        return kind, op_read, (p,), [p]
    if kind == "direct_write":
        return kind, op_direct_write, (p, rng.choice(DIRECT_OFFSETS), rng.choice(DIRECT_LENGTHS),
                                       rng.randrange(256)), [p]
    if kind == "direct_read":
        return kind, op_direct_read, (p, rng.choice(DIRECT_OFFSETS), rng.choice(DIRECT_LENGTHS)), [p]
    if kind == "utime":
        when = rng.choice([None, (1_000_000_000, 2_000_000_000), (5, 123_456_789), (-1, 7)])
        return kind, op_utime, (p, when, rng.random() < 0.7), [p]
    if kind == "utimensat":
        return kind, op_utimensat, (p, rng.choice(TIME_SPECS), rng.choice(TIME_SPECS),
                                    rng.choice([0, 0x100])), [p]  # 0x100: AT_SYMLINK_NOFOLLOW
    if kind == "setxattr":
        return kind, op_setxattr, (p, rng.choice(XATTR_NAMES), rng.choice([b"", b"v", b"x" * 300]),
                                   rng.choice([0, 0, os.XATTR_CREATE, os.XATTR_REPLACE])), [p]
    if kind == "open":
        return kind, op_open, (p, rng.choice(OPEN_FLAGS), rng.choice(MODES)), [p]
    if kind == "mknod":
        kind_bits = rng.choice([stat.S_IFCHR, stat.S_IFBLK, stat.S_IFIFO, stat.S_IFREG])
        return kind, op_mknod, (p, kind_bits | rng.choice(MODES), os.makedev(1, 3)), [p]
    if kind == "bind":
        return kind, op_bind, (p,), [p]
    if kind == "acl":
        name = rng.choice(ACL_NAMES)
        if rng.random() < 0.2:
            return kind, op_removexattr, (p, name), [p]
        return kind, op_setxattr, (p, name, rng.choice(ACLS), 0), [p]
    if kind == "getacl":
        return kind, op_getxattr, (p, rng.choice(ACL_NAMES)), [p]
    if kind == "getxattr":
        return kind, op_getxattr, (p, rng.choice(XATTR_NAMES)), [p]
    if kind == "listxattr":
        return kind, op_listxattr, (p,), [p]
    if kind == "removexattr":
        return kind, op_removexattr, (p, rng.choice(XATTR_NAMES)), [p]
    if kind == "readdir":
        return kind, op_readdir, (rng.choice(["", "d1", "d2", "d1/d3", "f1", "s1"]),), [p]
    if kind == "readlink":
        return kind, op_readlink, (p,), [p]
    if kind == "access":
        return kind, op_access, (p, rng.choice([os.R_OK, os.W_OK, os.X_OK, os.F_OK, os.R_OK | os.W_OK])), [p]
    if kind == "stat":
        return kind, op_stat, (p,), [p]
    if kind == "open_trunc":
        return kind, op_open_trunc, (p,), [p]
    return kind, op_fallocate, (p, rng.choice([0, 4096]), rng.choice([1, 8192, 65536])), [p]


def observed(root, paths):
    """Times of the touched paths and their parent directories."""
    seen = []
    for p in paths:
        for x in (p, os.path.dirname(p)):
            seen.append(times(os.path.join(root, x)))
    return seen


def tree(root):
    """Everything about a tree that must agree: shape, contents, link targets, user xattrs."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            try:
                st = os.lstat(path)
            except OSError as e:  # a directory the walker may not search (an ordinary user's run)
                out[rel] = errno.errorcode.get(e.errno, e.errno)
                continue
            entry = [shape(path)]
            if stat.S_ISREG(st.st_mode):
                entry.append(outcome(lambda: open(path, "rb").read()))  # unreadable to a user: errno
            elif stat.S_ISLNK(st.st_mode):
                entry.append(os.readlink(path))
            if not stat.S_ISLNK(st.st_mode):
                entry.append(outcome(lambda: sorted((n, os.getxattr(path, n)) for n in os.listxattr(path)
                                                    if n.startswith(("user.", "system.posix_acl")))))
            out[rel] = entry
    return out


def tree_differences(a_root, b_root, a_name, b_name):
    """One line per path on which two trees differ, and how many paths the first holds."""
    a, b = tree(a_root), tree(b_root)
    lines = [f"end of walk, {rel}: {a_name} {a.get(rel)!r:.300} vs {b_name} {b.get(rel)!r:.300}"
             for rel in sorted(set(a) | set(b)) if a.get(rel) != b.get(rel)]
    return lines, len(a)


def main():
    native_dir, mount_dir, seed, steps = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    rng = random.Random(seed)
    native, mount = os.path.join(native_dir, f"walk-{seed}"), os.path.join(mount_dir, f"walk-{seed}")
    for root in (native, mount):
        os.mkdir(root)
        os.chmod(root, 0o777)
    differences = []
    for step in range(steps):
        kind, fn, args, paths = random_step(rng)
        person = rng.choice(PEOPLE)
        results = []
        for root in (native, mount):
            before = observed(root, paths)
            time.sleep(0.002)  # past the clock's granularity, so a change shows in the times
            result = as_person(person, fn, root, *args)
            after = observed(root, paths)
            results.append((result, [shape(os.path.join(root, p)) for p in paths],
                            [moved(b, a) for b, a in zip(before, after)]))
        if TRACE:
            print(f"step {step}: uid {person[0] if person else os.geteuid()} {kind}{args!r:.120} -> {results[1][0]!r:.80}")
        if results[0] != results[1]:
            differences.append(f"step {step}: uid {person[0] if person else os.geteuid()} {kind}{args!r}:\n"
                               f"   native {results[0]!r}\n   ferry  {results[1]!r}")
            if len(differences) >= 20:
                break
    at_end, paths = tree_differences(native, mount, "native", "ferry")
    differences += at_end
    for line in differences:
        print("DIFF", line)
    print(f"{'PASS' if not differences else 'FAIL'} seed {seed}: {steps} steps, {paths} paths at the end")
    return min(len(differences), 100)


if __name__ == "__main__":
    sys.exit(main())
