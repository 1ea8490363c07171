#!/usr/bin/env python3
"""Side effects the kernel cannot see, and execute-only files: each step is made in a plain host
directory (NATIVE) and through a Ferry mount (MOUNT, serving SOURCE), and what a user sees next
must be the same in both.

Usage: sidecheck.py NATIVE MOUNT SOURCE CHECK
Prints "PASS name" or "FAIL name: reason"; exit status 0 only on PASS. Run as root; NATIVE,
MOUNT and SOURCE must be reachable (searchable) by every user.
"""
import fcntl, os, shutil, struct, subprocess, sys, time

NATIVE, MOUNT, SOURCE, CHECK = sys.argv[1:5]
NOBODY = (65534, 65534)


class Failure(Exception):
    pass


def expect(cond, msg):
    if not cond:
        raise Failure(msg)


def as_user(uid, gid, command, groups=None):
    """Runs `command` (a list) as uid/gid with only `groups`; returns (status, output)."""
    group_arg = ["--groups=" + ",".join(map(str, groups))] if groups else ["--clear-groups"]
    # Through sh: setpriv itself still holds root's capabilities when it execs its command.
    p = subprocess.run(["setpriv", f"--reuid={uid}", f"--regid={gid}", *group_arg,
                        "sh", "-c", 'exec "$0" "$@"', *command],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace", timeout=60)
    return p.returncode, p.stdout.strip()


def mode(path):
    """The mode as `stat -c %a` sees it: statx asking for the mode alone, which the kernel may
    answer from its cache (a full stat(2) would refetch after any write)."""
    return subprocess.run(["stat", "-c", "%a", path], stdout=subprocess.PIPE, text=True, check=True).stdout.strip()


def ctime(path):
    return subprocess.run(["stat", "-c", "%z", path], stdout=subprocess.PIPE, text=True, check=True).stdout.strip()


def py(code):
    return ["python3", "-c", code]


# Changes an ordinary user (nobody) makes to a file it may write but does not own; the host
# clears S_ISUID and S_ISGID on each.
SETID_CHANGES = {
    "append": lambda p: ["sh", "-c", f"echo x >> {p}"],
    "write": lambda p: py(f"import os; fd=os.open({p!r}, os.O_WRONLY); os.pwrite(fd, b'y', 1)"),
    "truncate at open": lambda p: ["sh", "-c", f": > {p}"],
    "ftruncate": lambda p: ["truncate", "-s", "3", p],
    "fallocate": lambda p: ["fallocate", "-l", "8192", p],
    "punch hole": lambda p: ["fallocate", "-p", "-o", "0", "-l", "2", p],
    "zero range": lambda p: ["fallocate", "-z", "-o", "0", "-l", "2", p],
    "copy_file_range": lambda p: py(f"import os; a=os.open({p + '.src'!r}, os.O_RDONLY); "
                                    f"b=os.open({p!r}, os.O_WRONLY); os.copy_file_range(a, b, 3, 0, 0)"),
}


def setid_bits_cleared():
    for name, command in SETID_CHANGES.items():
        seen = {}
        for side in (NATIVE, MOUNT):
            path = os.path.join(side, "setid-" + name.replace(" ", "-"))
            with open(path, "w") as f:
                f.write("data\n")
            with open(path + ".src", "w") as f:
                f.write("src\n")
            os.chmod(path + ".src", 0o644)
            os.chmod(path, 0o6777)
            expect(mode(path) == "6777", f"{name}: setup mode {mode(path)} in {side}")
            status, out = as_user(*NOBODY, command(path))
            expect(status == 0, f"{name} in {side} failed: {out}")
            seen[side] = mode(path)
        expect(seen[NATIVE] == seen[MOUNT],
               f"after {name} by another user the host shows mode {seen[NATIVE]}, the mount {seen[MOUNT]}")


FS_IOC_GETFLAGS, FS_IOC_SETFLAGS = 0x80086601, 0x40086602
FS_NOATIME_FL = 0x80
FS_IOC_FSGETXATTR, FS_IOC_FSSETXATTR = 0x801C581F, 0x401C5820


def inode_flag_ioctls_move_ctime():
    for name in ("setflags", "fssetxattr"):
        for side in (NATIVE, MOUNT):
            path = os.path.join(side, "flags-" + name)
            open(path, "w").close()
            before = ctime(path)
            time.sleep(0.02)
            fd = os.open(path, os.O_RDONLY)
            try:
                if name == "setflags":
                    flags = struct.unpack("l", fcntl.ioctl(fd, FS_IOC_GETFLAGS, struct.pack("l", 0)))[0]
                    fcntl.ioctl(fd, FS_IOC_SETFLAGS, struct.pack("l", flags | FS_NOATIME_FL))
                else:
                    raw = bytearray(fcntl.ioctl(fd, FS_IOC_FSGETXATTR, bytes(28)))
                    xflags = struct.unpack_from("I", raw, 0)[0]
                    struct.pack_into("I", raw, 0, xflags ^ 0x40)   # FS_XFLAG_NOATIME
                    fcntl.ioctl(fd, FS_IOC_FSSETXATTR, bytes(raw))
            finally:
                os.close(fd)
            after = ctime(path)
            expect(after != before, f"{name}: ctime did not move in {side} ({before})")
            if side == MOUNT:
                host = ctime(os.path.join(SOURCE, os.path.basename(path)))
                expect(after == host, f"{name}: the mount shows ctime {after}, the host {host}")


def execute_only_files():
    """0711, 0111 and 0701 programs owned by 2001:2001, run by their owner, a member of their
    group and another user: exec as on the host, and a plain read still refused."""
    callers = {"owner": (2001, 2001, None), "group": (2002, 2002, [2001]), "other": (2003, 2003, None)}
    for perm in (0o711, 0o111, 0o701):
        for side in (NATIVE, MOUNT):
            path = os.path.join(side, f"prog-{perm:o}")
            shutil.copyfile("/bin/true", path)
            os.chown(path, 2001, 2001)
            os.chmod(path, perm)
        for who, (uid, gid, groups) in callers.items():
            results = {}
            for side in (NATIVE, MOUNT):
                path = os.path.join(side, f"prog-{perm:o}")
                ran = as_user(uid, gid, [path], groups)
                read = as_user(uid, gid, ["cat", path], groups)
                results[side] = (ran[0], read[0] == 0)
            expect(results[NATIVE] == results[MOUNT],
                   f"{perm:o} by {who}: host (exit, readable) {results[NATIVE]}, mount {results[MOUNT]}")
    # The exceptional open is only for exec: a read of a 0711 file by another user stays EACCES.
    status, out = as_user(2003, 2003, py(f"open({os.path.join(MOUNT, 'prog-711')!r}, 'rb').read()"))
    expect(status != 0 and "Permission denied" in out, f"a read of a 0711 file by another user: {status} {out}")


def birth_time_and_inode_flags():
    """statx's birth time and lsattr's inode flags through the mount are the host's."""
    path = os.path.join(MOUNT, "born")
    open(path, "w").close()
    host = os.path.join(SOURCE, "born")
    birth = lambda p: subprocess.run(["stat", "-c", "%W", p], stdout=subprocess.PIPE, text=True, check=True).stdout.strip()
    expect(birth(path) == birth(host) != "0", f"birth time: mount {birth(path)}, host {birth(host)}")
    subprocess.run(["chattr", "+d", host], check=True)
    flags = lambda p: subprocess.run(["lsattr", "-d", p], stdout=subprocess.PIPE, text=True, check=True).stdout.split()[0]
    expect(flags(path) == flags(host), f"inode flags: mount {flags(path)}, host {flags(host)}")


CHECKS = {f.__name__: f for f in [setid_bits_cleared, inode_flag_ioctls_move_ctime, execute_only_files,
                                  birth_time_and_inode_flags]}

try:
    CHECKS[CHECK]()
    print(f"PASS {CHECK}")
except Exception as e:  # noqa
    import traceback
    print(f"FAIL {CHECK}: {e if isinstance(e, Failure) else traceback.format_exc()}")
    sys.exit(1)
