#!/usr/bin/env python3
"""Makes an idmapped bind mount: idmapped_mount.py SOURCE TARGET MAP [MAP...]

Each MAP is NSID:HOSTID:COUNT, written to both uid_map and gid_map of a new user namespace
(as /proc/PID/uid_map lines), which becomes the mount's idmapping: a file whose owner on
SOURCE is NSID+k is shown at TARGET as owned by HOSTID+k, and a caller HOSTID+k creates files
owned by NSID+k. The steps are those of mount-idmapped and podman's `:idmap`:
open_tree(OPEN_TREE_CLONE) of SOURCE, mount_setattr(MOUNT_ATTR_IDMAP, userns fd), move_mount
onto TARGET. Prints `ok`, or the failing call and its errno (exit status 1). Run as root.
"""
import ctypes
import errno
import os
import sys

SYS_OPEN_TREE, SYS_MOVE_MOUNT, SYS_MOUNT_SETATTR = 428, 429, 442
OPEN_TREE_CLONE, OPEN_TREE_CLOEXEC = 1, os.O_CLOEXEC
AT_FDCWD, AT_EMPTY_PATH, AT_RECURSIVE = -100, 0x1000, 0x8000
MOVE_MOUNT_F_EMPTY_PATH = 0x4
MOUNT_ATTR_IDMAP = 0x00100000
CLONE_NEWUSER = 0x10000000

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long


class MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def check(name, result):
    if result < 0:
        err = ctypes.get_errno()
        print(f"{name}: {errno.errorcode.get(err, err)} ({os.strerror(err)})")
        sys.exit(1)
    return result


def userns_fd(maps):
    """A descriptor of a new user namespace with `maps` as its uid and gid maps."""
    ready_r, ready_w = os.pipe()
    done_r, done_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(ready_r); os.close(done_w)
        if libc.unshare(CLONE_NEWUSER) != 0:
            os._exit(1)
        os.write(ready_w, b"x")
        os.read(done_r, 1)
        os._exit(0)
    os.close(ready_w); os.close(done_r)
    if os.read(ready_r, 1) != b"x":
        print("unshare(CLONE_NEWUSER) failed in the child")
        sys.exit(1)
    lines = "".join(f"{m.replace(':', ' ')}\n" for m in maps)
    for kind in ("uid_map", "gid_map"):
        with open(f"/proc/{pid}/{kind}", "w") as f:
            f.write(lines)
    fd = os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    os.write(done_w, b"x")
    os.waitpid(pid, 0)
    return fd


def main():
    if len(sys.argv) < 4:
        print(__doc__)
        sys.exit(2)
    source, target, maps = sys.argv[1], sys.argv[2], sys.argv[3:]
    ns = userns_fd(maps)
    tree = check("open_tree", libc.syscall(SYS_OPEN_TREE, AT_FDCWD, source.encode(),
                                           OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC))
    attr = MountAttr(MOUNT_ATTR_IDMAP, 0, 0, ns)
    check("mount_setattr(MOUNT_ATTR_IDMAP)",
          libc.syscall(SYS_MOUNT_SETATTR, tree, b"", AT_EMPTY_PATH, ctypes.byref(attr), ctypes.sizeof(attr)))
    check("move_mount", libc.syscall(SYS_MOVE_MOUNT, tree, b"", AT_FDCWD, target.encode(), MOVE_MOUNT_F_EMPTY_PATH))
    print("ok")


main()
