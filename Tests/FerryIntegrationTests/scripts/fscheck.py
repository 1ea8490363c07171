#!/usr/bin/env python3
"""Filesystem checks run through a Ferry mount, compared with the same operations on a
plain host directory (same file system as SOURCE).

Usage: fscheck.py NATIVE_DIR MOUNT_DIR SOURCE_DIR GROUP [CHECK...]
Each check prints "PASS name" or "FAIL name: reason"; the exit status is the number of failures.
"""
import errno, fcntl, os, stat, socket, struct, sys, traceback

NATIVE, MOUNT, SOURCE, GROUP = sys.argv[1:5]
ONLY = set(sys.argv[5:])
CHECKS = []


def check(group):
    def register(fn):
        CHECKS.append((group, fn.__name__, fn))
        return fn
    return register


def outcome(fn, *args, **kwargs):
    """('ok', value) or ('err', errno name)."""
    try:
        return ("ok", fn(*args, **kwargs))
    except OSError as e:
        return ("err", errno.errorcode.get(e.errno, e.errno))


class Mismatch(Exception):
    pass


def same(label, fn, native, mount):
    """Runs fn(root) in both trees and demands equal outcomes."""
    a, b = outcome(fn, native), outcome(fn, mount)
    if a != b:
        raise Mismatch(f"{label}: native {a!r} vs ferry {b!r}")
    return b


def expect(cond, message):
    if not cond:
        raise Mismatch(message)


def fresh(name):
    """A new empty directory pair for one check: (native, mount, source-side path of mount)."""
    n, m = os.path.join(NATIVE, name), os.path.join(MOUNT, name)
    for d in (n, m):
        os.mkdir(d)
    return n, m, os.path.join(SOURCE, name)


def make_file(path, data="", mode=None, owner=None):
    """Creates `path` holding `data`, then sets its mode and (uid, gid) if given."""
    with open(path, "w") as f:
        f.write(data)
    if owner is not None:
        os.chown(path, *owner)
    if mode is not None:
        os.chmod(path, mode)
    return path


def shape(st):
    """The attributes that must agree between native and ferry for the same operations."""
    return (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_nlink, st.st_uid, st.st_gid,
            st.st_size if not stat.S_ISDIR(st.st_mode) else None)


def as_user(uid, gid, groups, fn, umask=0o022):
    """Runs fn() in a child process with the given identity; returns its outcome."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            os.setgroups(groups)
            os.setresgid(gid, gid, gid)
            os.setresuid(uid, uid, uid)
            os.umask(umask)
            result = outcome(fn)
        except BaseException as e:  # noqa
            result = ("crash", repr(e))
        os.write(w, repr(result).encode())
        os._exit(0)
    os.close(w)
    data = b""
    while True:
        chunk = os.read(r, 65536)
        if not chunk:
            break
        data += chunk
    os.close(r)
    os.waitpid(pid, 0)
    return eval(data.decode())


# ---------------------------------------------------------------- basic operations

@check("basic")
def files_read_write_append_truncate():
    n, m, _ = fresh("rw")
    def ops(root):
        p = os.path.join(root, "f")
        with open(p, "wb") as f:
            f.write(b"hello world" * 1000)
        with open(p, "ab") as f:
            f.write(b"tail")
        os.truncate(p, 5000)
        with open(p, "r+b") as f:
            f.seek(100)
            f.write(b"XYZ")
        with open(p, "rb") as f:
            data = f.read()
        return len(data), hash(data), shape(os.stat(p))
    same("write/append/truncate", ops, n, m)
    same("open missing", lambda r: open(os.path.join(r, "missing")).read(), n, m)
    same("O_EXCL on existing", lambda r: os.open(os.path.join(r, "f"), os.O_CREAT | os.O_EXCL | os.O_WRONLY), n, m)
    same("open dir for write", lambda r: os.open(r, os.O_WRONLY), n, m)


@check("basic")
def directories_and_rmdir():
    n, m, _ = fresh("dirs")
    def ops(root):
        os.makedirs(os.path.join(root, "a/b/c"), 0o750)
        out = [outcome(os.rmdir, os.path.join(root, "a")), outcome(os.rmdir, os.path.join(root, "a/b/c"))]
        out.append(shape(os.stat(os.path.join(root, "a/b"))))
        out.append(outcome(os.mkdir, os.path.join(root, "a")))
        out.append(outcome(os.unlink, os.path.join(root, "a")))
        out.append(sorted(os.listdir(os.path.join(root, "a"))))
        return out
    same("mkdir/rmdir", ops, n, m)


@check("basic")
def rename_flags():
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    def renameat2(a, b, flags):
        if libc.renameat2(-100, a.encode(), -100, b.encode(), flags) != 0:
            e = ctypes.get_errno()
            raise OSError(e, os.strerror(e))
    n, m, _ = fresh("rename")
    def ops(root):
        j = lambda x: os.path.join(root, x)
        for name, content in (("x", b"1"), ("y", b"22")):
            with open(j(name), "wb") as f:
                f.write(content)
        os.mkdir(j("d"))
        out = [outcome(renameat2, j("x"), j("y"), 1)]          # NOREPLACE onto existing
        out.append(outcome(renameat2, j("x"), j("y"), 2))      # EXCHANGE
        out.append((open(j("x"), "rb").read(), open(j("y"), "rb").read()))
        out.append(outcome(renameat2, j("x"), j("z"), 4))      # WHITEOUT (root only)
        out.append(stat.S_ISCHR(os.lstat(j("x")).st_mode) if os.path.lexists(j("x")) else None)
        out.append(outcome(os.rename, j("y"), j("d")))         # file onto dir
        out.append(outcome(os.rename, j("d"), j("d/sub")))     # dir into itself
        os.rename(j("z"), j("d/z"))
        out.append(sorted(os.listdir(j("d"))))
        return out
    same("renameat2", ops, n, m)


@check("basic")
def hard_links_share_a_node():
    n, m, _ = fresh("links")
    def ops(root):
        p = os.path.join(root, "f")
        with open(p, "w") as f:
            f.write("data")
        os.link(p, p + "2")
        os.link(p, p + "3")
        a, b = os.stat(p), os.stat(p + "3")
        os.unlink(p + "2")
        return a.st_ino == b.st_ino, os.stat(p).st_nlink, open(p + "3").read()
    same("link", ops, n, m)
    same("link to dir", lambda r: os.link(r, os.path.join(r, "dl")), n, m)


@check("basic")
def symlinks_fifos_sockets_devices():
    n, m, _ = fresh("special")
    def ops(root):
        j = lambda x: os.path.join(root, x)
        os.symlink("target/../x", j("s"))
        os.symlink("/etc/passwd", j("abs"))
        os.mkfifo(j("fifo"), 0o640)
        os.mknod(j("chr"), 0o600 | stat.S_IFCHR, os.makedev(1, 3))
        os.mknod(j("blk"), 0o600 | stat.S_IFBLK, os.makedev(7, 200))
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(j("sock"))
        sock.close()
        out = [os.readlink(j("s")), os.readlink(j("abs"))]
        for name in ("s", "fifo", "chr", "blk", "sock"):
            st = os.lstat(j(name))
            out.append((name, shape(st), st.st_rdev))
        out.append(outcome(os.readlink, j("fifo")))
        return out
    same("special files", ops, n, m)


@check("basic")
def attributes_chmod_chown_utimes():
    n, m, _ = fresh("attrs")
    def ops(root):
        p = os.path.join(root, "f")
        open(p, "w").close()
        os.chmod(p, 0o4755)
        os.chown(p, 1234, 5678)
        os.utime(p, ns=(1_000_000_123, 2_000_000_456))
        st = os.stat(p)
        out = [shape(st), st.st_atime_ns, st.st_mtime_ns]
        os.utime(p)  # UTIME_NOW
        out.append(os.stat(p).st_mtime_ns > 2_000_000_456)
        os.chown(p, 1234, 5678)  # chown clears suid
        out.append(oct(os.stat(p).st_mode))
        os.symlink("f", os.path.join(root, "l"))
        os.utime(os.path.join(root, "l"), ns=(5, 6), follow_symlinks=False)
        out.append(os.lstat(os.path.join(root, "l")).st_mtime_ns)
        os.chown(os.path.join(root, "l"), 42, 43, follow_symlinks=False)
        out.append(shape(os.lstat(os.path.join(root, "l"))))
        return out
    same("chmod/chown/utimes", ops, n, m)


@check("basic")
def xattrs():
    n, m, _ = fresh("xattr")
    def ops(root):
        p = os.path.join(root, "f")
        open(p, "w").close()
        out = [outcome(os.getxattr, p, "user.none")]
        os.setxattr(p, "user.a", b"1")
        os.setxattr(p, "user.b", b"x" * 3000)
        os.setxattr(p, "trusted.t", b"root")
        out.append(outcome(os.setxattr, p, "user.a", b"2", os.XATTR_CREATE))
        out.append(outcome(os.setxattr, p, "user.c", b"2", os.XATTR_REPLACE))
        out.append(sorted(os.listxattr(p)))
        out.append(os.getxattr(p, "user.b"))
        os.removexattr(p, "user.a")
        out.append(outcome(os.removexattr, p, "user.a"))
        out.append(sorted(os.listxattr(p)))
        d = os.path.join(root, "d")
        os.mkdir(d)
        os.setxattr(d, "user.dir", b"yes")
        out.append(os.getxattr(d, "user.dir"))
        return out
    same("xattrs", ops, n, m)
    # A value too large for the caller's buffer: ERANGE, as on the host.
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    buf = ctypes.create_string_buffer(10)
    for root in (n, m):
        r = libc.getxattr(os.path.join(root, "f").encode(), b"user.b", buf, 10)
        expect(r == -1 and ctypes.get_errno() == errno.ERANGE, f"ERANGE expected in {root}")


@check("basic")
def statfs_matches_host():
    a, b = os.statvfs(SOURCE), os.statvfs(MOUNT)
    for field in ("f_bsize", "f_frsize", "f_blocks", "f_files", "f_namemax"):
        expect(getattr(a, field) == getattr(b, field), f"statvfs {field}: {getattr(a, field)} vs {getattr(b, field)}")
    expect(abs(a.f_bfree - b.f_bfree) < a.f_blocks // 100, "free blocks differ by over 1%")


@check("basic")
def sparse_file_past_4gib_and_seek_data_hole():
    n, m, _ = fresh("sparse")
    def ops(root):
        p = os.path.join(root, "f")
        fd = os.open(p, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            os.pwrite(fd, b"A" * 4096, 0)
            os.pwrite(fd, b"B" * 4096, 5 << 30)
            st = os.fstat(fd)
            out = [st.st_size, st.st_blocks * 512 < (1 << 20)]
            out.append(os.pread(fd, 4096, 5 << 30) == b"B" * 4096)
            out.append(os.pread(fd, 16, (5 << 30) - 8))
            out.append(os.lseek(fd, 0, os.SEEK_HOLE))
            out.append(os.lseek(fd, 8192, os.SEEK_DATA))
            out.append(outcome(os.lseek, fd, (5 << 30) + 4096, os.SEEK_DATA))
            return out
        finally:
            os.close(fd)
    same("sparse", ops, n, m)


@check("basic")
def fallocate_modes():
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]
    def fallocate(fd, mode, off, length):
        if libc.fallocate(fd, mode, off, length) != 0:
            e = ctypes.get_errno()
            raise OSError(e, os.strerror(e))
    KEEP, PUNCH, COLLAPSE, ZERO, INSERT = 1, 2, 8, 16, 32
    n, m, _ = fresh("falloc")
    def ops(root):
        fd = os.open(os.path.join(root, "f"), os.O_CREAT | os.O_RDWR, 0o644)
        try:
            out = [outcome(fallocate, fd, 0, 0, 1 << 20), os.fstat(fd).st_size]
            os.pwrite(fd, b"x" * (1 << 20), 0)
            out.append(outcome(fallocate, fd, KEEP, 1 << 20, 1 << 20))
            out.append(os.fstat(fd).st_size)
            out.append(outcome(fallocate, fd, PUNCH | KEEP, 4096, 8192))
            out.append(os.pread(fd, 4, 4096))
            out.append(outcome(fallocate, fd, ZERO, 65536, 4096))
            out.append(outcome(fallocate, fd, PUNCH, 0, 4096))   # PUNCH without KEEP_SIZE: EOPNOTSUPP
            out.append(os.fstat(fd).st_size)
            return out
        finally:
            os.close(fd)
    same("fallocate", ops, n, m)
    # The kernel's FUSE client forwards only KEEP_SIZE, PUNCH_HOLE and ZERO_RANGE; collapse and
    # insert range stop in the kernel with EOPNOTSUPP before reaching any server.
    fd = os.open(os.path.join(m, "f"), os.O_RDWR)
    try:
        for mode in (COLLAPSE, INSERT):
            r = outcome(fallocate, fd, mode, 0, 65536)
            expect(r == ("err", "ENOTSUP"), f"mode {mode}: {r}")
    finally:
        os.close(fd)


@check("basic")
def copy_file_range_between_files():
    n, m, _ = fresh("cfr")
    def ops(root):
        src = os.open(os.path.join(root, "src"), os.O_CREAT | os.O_RDWR, 0o644)
        dst = os.open(os.path.join(root, "dst"), os.O_CREAT | os.O_RDWR, 0o644)
        try:
            payload = bytes(range(256)) * 4096
            os.pwrite(src, payload, 0)
            copied = os.copy_file_range(src, dst, len(payload) - 100, 100, 50)
            return copied, os.pread(dst, 200, 0) == bytes(50) + payload[100:250], os.fstat(dst).st_size
        finally:
            os.close(src)
            os.close(dst)
    same("copy_file_range", ops, n, m)


@check("basic")
def tmpfile_and_linkat():
    n, m, _ = fresh("tmpf")
    def ops(root):
        fd = os.open(root, os.O_TMPFILE | os.O_RDWR, 0o600)
        os.write(fd, b"anonymous")
        os.link(f"/proc/self/fd/{fd}", os.path.join(root, "named"))
        os.close(fd)
        return open(os.path.join(root, "named"), "rb").read(), shape(os.stat(os.path.join(root, "named")))
    same("O_TMPFILE", ops, n, m)


@check("basic")
def unlinked_open_file_keeps_working():
    n, m, _ = fresh("unlinked")
    def ops(root):
        p = os.path.join(root, "f")
        fd = os.open(p, os.O_CREAT | os.O_RDWR, 0o644)
        os.unlink(p)
        os.write(fd, b"still here")
        os.fchmod(fd, 0o600)
        os.ftruncate(fd, 5)
        st = os.fstat(fd)
        data = os.pread(fd, 100, 0)
        os.close(fd)
        return data, stat.S_IMODE(st.st_mode), st.st_nlink, st.st_size
    same("unlinked", ops, n, m)


@check("basic")
def ioctl_inode_flags():
    FS_IOC_GETFLAGS, FS_IOC_SETFLAGS = 0x80086601, 0x40086602
    n, m, _ = fresh("ioctl")
    def ops(root):
        p = os.path.join(root, "f")
        open(p, "w").close()
        fd = os.open(p, os.O_RDONLY)
        try:
            buf = bytearray(8)
            fcntl.ioctl(fd, FS_IOC_GETFLAGS, buf)
            flags = struct.unpack("<i", buf[:4])[0]
            fcntl.ioctl(fd, FS_IOC_SETFLAGS, struct.pack("<q", flags | 0x20))  # FS_APPEND_FL
            fcntl.ioctl(fd, FS_IOC_GETFLAGS, buf)
            after = struct.unpack("<i", buf[:4])[0]
            fcntl.ioctl(fd, FS_IOC_SETFLAGS, struct.pack("<q", flags))
            out = [after & 0x20, outcome(fcntl.ioctl, fd, 0x5401, bytearray(64))]  # TCGETS: ENOTTY
            return out
        finally:
            os.close(fd)
    same("ioctl", ops, n, m)


@check("basic")
def access_checks():
    n, m, _ = fresh("access")
    def ops(root):
        p = os.path.join(root, "f")
        open(p, "w").close()
        os.chmod(p, 0o644)
        return [os.access(p, os.R_OK), os.access(p, os.X_OK), os.access(root, os.X_OK),
                os.access(os.path.join(root, "none"), os.F_OK)]
    same("access", ops, n, m)


@check("basic")
def directory_of_20000_entries():
    n, m, src = fresh("big")
    for i in range(20000):
        open(os.path.join(src, f"entry-{i:05d}"), "w").close()
    names = os.listdir(m)
    expect(len(names) == 20000, f"listed {len(names)} entries")
    expect(sorted(names) == sorted(os.listdir(src)), "names differ from the host")
    with os.scandir(m) as it:
        kinds = {e.is_file() for e in it}
    expect(kinds == {True}, "d_type wrong")
    for i in range(0, 20000, 997):
        os.stat(os.path.join(m, f"entry-{i:05d}"))


@check("basic")
def host_and_mount_see_each_other():
    _, m, src = fresh("coherent")
    with open(os.path.join(m, "from-mount"), "w") as f:
        f.write("via ferry")
    expect(open(os.path.join(src, "from-mount")).read() == "via ferry", "host does not see the write")
    with open(os.path.join(src, "from-host"), "w") as f:
        f.write("via host")
    expect(open(os.path.join(m, "from-host")).read() == "via host", "mount does not see the host file")


# ---------------------------------------------------------------- permissions as ordinary users

U, G, SUPP, OTHER = 2001, 2001, 2002, 2003


@check("perms")
def new_files_belong_to_the_caller():
    n, m, _ = fresh("owner")
    for d in (n, m):
        os.chmod(d, 0o777)
    def ops(root):
        p = os.path.join(root, "mine")
        def body():
            with open(p, "w") as f:
                f.write("x")
            os.mkdir(p + ".d", 0o777)
            os.symlink("mine", p + ".l")
            return [shape(os.lstat(x)) for x in (p, p + ".d", p + ".l")]
        return as_user(U, G, [SUPP], body, umask=0o027)
    same("owner and umask", ops, n, m)


@check("perms")
def permission_denied_like_the_host():
    n, m, _ = fresh("denied")
    def ops(root):
        p = make_file(os.path.join(root, "secret"), "s", 0o600)
        g = make_file(os.path.join(root, "groupfile"), "g", 0o060, (0, SUPP))
        closed = os.path.join(root, "closed")
        os.mkdir(closed, 0o700)
        def body():
            return [outcome(lambda: open(p).read()), outcome(lambda: open(g).read()),
                    outcome(os.listdir, closed), outcome(os.stat, os.path.join(closed, "x")),
                    outcome(os.chmod, p, 0o777), outcome(os.unlink, p),
                    os.access(g, os.R_OK), os.access(p, os.R_OK)]
        return as_user(U, G, [SUPP], body)
    same("EACCES/EPERM", ops, n, m)


@check("perms")
def chown_to_supplementary_group_only():
    n, m, _ = fresh("chown")
    for d in (n, m):
        os.chmod(d, 0o777)
    def ops(root):
        def body():
            p = os.path.join(root, "f")
            open(p, "w").close()
            return [outcome(os.chown, p, -1, SUPP), outcome(os.chown, p, -1, OTHER),
                    outcome(os.chown, p, 0, -1), shape(os.stat(p))]
        return as_user(U, G, [SUPP], body)
    same("chown rules", ops, n, m)


@check("perms")
def sticky_and_setgid_directories():
    n, m, _ = fresh("sticky")
    def ops(root):
        tmp = os.path.join(root, "tmp")
        os.mkdir(tmp)
        os.chmod(tmp, 0o1777)
        sg = os.path.join(root, "sgid")
        os.mkdir(sg)
        os.chown(sg, 0, SUPP)
        os.chmod(sg, 0o2777)
        as_user(OTHER, OTHER, [], lambda: open(os.path.join(tmp, "theirs"), "w").close())
        def body():
            f = os.path.join(sg, "f")
            open(f, "w").close()
            os.mkdir(os.path.join(sg, "d"))
            return [outcome(os.unlink, os.path.join(tmp, "theirs")),
                    outcome(os.rename, os.path.join(tmp, "theirs"), os.path.join(tmp, "moved")),
                    shape(os.stat(f)), shape(os.stat(os.path.join(sg, "d")))]
        return as_user(U, G, [], body)
    same("sticky/setgid", ops, n, m)


@check("perms")
def write_clears_suid_sgid():
    n, m, _ = fresh("suid")
    def ops(root):
        p = make_file(os.path.join(root, "prog"), "#!/bin/sh\n", 0o6775, (U, G))
        def body():
            with open(p, "a") as f:
                f.write("echo\n")
            return oct(os.stat(p).st_mode)
        r = as_user(U, G, [], body)
        # Root writing keeps the bits (CAP_FSETID), as on the host.
        os.chmod(p, 0o6775)
        with open(p, "a") as f:
            f.write("# root\n")
        return r, oct(os.stat(p).st_mode)
    same("suid clearing", ops, n, m)


@check("perms")
def truncate_and_utime_need_rights():
    n, m, _ = fresh("trunc")
    def ops(root):
        p = make_file(os.path.join(root, "f"), "content", 0o644)
        w = make_file(os.path.join(root, "w"), "content", 0o666)
        def body():
            return [outcome(os.truncate, p, 0), outcome(os.truncate, w, 2),
                    outcome(os.utime, p, None), outcome(os.utime, w, None),
                    outcome(os.utime, w, (1, 1)), os.stat(w).st_size]
        return as_user(U, G, [], body)
    same("truncate/utime rights", ops, n, m)


# ---------------------------------------------------------------- confinement

@check("escape")
def dotdot_at_the_root_stays_inside():
    # The kernel resolves "..", so MOUNT/.. is the mount's parent, not SOURCE's parent.
    expect(os.path.samestat(os.stat(os.path.join(MOUNT, "..")), os.stat(os.path.dirname(MOUNT.rstrip("/")))),
           "MOUNT/.. is not the mount point's parent")
    marker = os.path.join(os.path.dirname(SOURCE.rstrip("/")), "outside-marker")
    open(marker, "w").close()
    try:
        expect(not os.path.exists(os.path.join(MOUNT, "../" + os.path.basename(SOURCE.rstrip("/")) + "/../outside-marker"))
               or os.path.dirname(MOUNT.rstrip("/")) == os.path.dirname(SOURCE.rstrip("/")),
               "reached a file beside SOURCE through the mount")
    finally:
        os.unlink(marker)


@check("escape")
def replaced_directory_does_not_redirect_writes():
    _, m, src = fresh("swap")
    outside = os.path.join(os.path.dirname(SOURCE.rstrip("/")), "ferry-outside-" + str(os.getpid()))
    os.mkdir(outside)
    try:
        os.mkdir(os.path.join(src, "d"))
        fd = os.open(os.path.join(m, "d"), os.O_RDONLY | os.O_DIRECTORY)   # the kernel knows "d" now
        os.rename(os.path.join(src, "d"), os.path.join(src, "d.old"))
        os.symlink(outside, os.path.join(src, "d"))                         # host swaps in a symlink
        r = outcome(lambda: os.open("planted", os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=fd))
        os.close(fd)
        expect(not os.listdir(outside), f"a file was created outside SOURCE: {os.listdir(outside)} ({r})")
    finally:
        for name in os.listdir(outside):
            os.unlink(os.path.join(outside, name))
        os.rmdir(outside)


@check("escape")
def links_and_renames_cannot_leave():
    _, m, src = fresh("leave")
    open(os.path.join(src, "f"), "w").close()
    outside = os.path.dirname(MOUNT.rstrip("/"))
    r1 = outcome(os.link, os.path.join(m, "f"), os.path.join(outside, "ferry-link-escape"))
    r2 = outcome(os.rename, os.path.join(m, "f"), os.path.join(outside, "ferry-rename-escape"))
    expect(r1 == ("err", "EXDEV") and r2 == ("err", "EXDEV"), f"link {r1}, rename {r2}")
    expect(os.path.exists(os.path.join(src, "f")), "file moved")


@check("escape")
def symlinks_are_not_followed_on_the_host():
    _, m, src = fresh("nofollow")
    target = os.path.join(os.path.dirname(SOURCE.rstrip("/")), "ferry-target-" + str(os.getpid()))
    open(target, "w").close()
    os.chmod(target, 0o600)
    try:
        os.symlink(target, os.path.join(src, "l"))
        st = os.lstat(os.path.join(m, "l"))
        expect(stat.S_ISLNK(st.st_mode), "lstat through the mount followed the link")
        r = outcome(os.chown, os.path.join(m, "l"), 4321, 4321, follow_symlinks=False)
        expect(os.stat(target).st_uid == 0, f"chown of the link changed the target ({r})")
        r = outcome(os.setxattr, os.path.join(m, "l"), "trusted.x", b"1", follow_symlinks=False)
        expect(outcome(os.getxattr, target, "trusted.x")[0] == "err", f"xattr of the link landed on the target ({r})")
    finally:
        os.unlink(target)


def main():
    failures = 0
    for group, name, fn in CHECKS:
        if group != GROUP or (ONLY and name not in ONLY):
            continue
        try:
            fn()
            print(f"PASS {name}", flush=True)
        except Exception as e:  # noqa
            failures += 1
            detail = str(e) if isinstance(e, Mismatch) else traceback.format_exc()
            print(f"FAIL {name}: {detail}", flush=True)
    sys.exit(min(failures, 100))


main()
