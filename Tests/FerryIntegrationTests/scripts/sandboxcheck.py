#!/usr/bin/env python3
"""Tries to leave SOURCE through a mount served by a sandboxed Ferry.

usage: sandboxcheck.py SOURCE MOUNTPOINT FERRY_PID CANARY

CANARY is a file outside SOURCE (on the same file system). SOURCE gets symlinks that lead out
of it (absolute, relative with "..", through /proc/self/root, /proc/self/cwd and Ferry's own
/proc/PID/root); every operation through the mount that Ferry performs on the link itself
(never following it) must leave CANARY as it was. Then Ferry's own view is checked: its root
is SOURCE and CANARY has no path there. Prints one line per failure and "ok" at the end.
"""
import errno
import os
import sys

source, mountpoint, pid, canary = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
failures = []


def fail(message):
    failures.append(message)
    print("FAIL " + message)


def canary_state():
    st = os.stat(canary)
    return (st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns, st.st_size,
            sorted(os.listxattr(canary)), open(canary, "rb").read())


before = canary_state()
targets = {
    "absolute": canary,
    "dotdot": os.path.relpath(canary, source),
    "proc-self-root": "/proc/self/root" + canary,
    "proc-self-cwd": "/proc/self/cwd/../../../../../../.." + canary,
    "ferry-root": "/proc/%s/root%s" % (pid, canary),
    "etc": "/etc",
}
for name, target in targets.items():
    os.symlink(target, os.path.join(source, "link-" + name))

for name, target in targets.items():
    link = os.path.join(mountpoint, "link-" + name)
    # Operations Ferry performs on the link itself, on the host, with no following.
    if os.readlink(link) != target:
        fail("%s: readlink gave %r" % (name, os.readlink(link)))
    os.lstat(link)
    try:
        os.utime(link, ns=(1, 1), follow_symlinks=False)
    except OSError as e:
        fail("%s: utime -h: %s" % (name, e))
    try:
        os.setxattr(link, "user.escape", b"1", follow_symlinks=False)
        fail("%s: a user xattr was set on a symlink" % name)
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.ENOTSUP):
            fail("%s: setxattr -h: %s" % (name, e))
    try:
        os.listxattr(link, follow_symlinks=False)
    except OSError as e:
        if e.errno != errno.ENOTSUP:
            fail("%s: listxattr -h: %s" % (name, e))
    os.link(link, link + ".hard", follow_symlinks=False)
    os.rename(link + ".hard", link + ".moved")
    os.unlink(link + ".moved")
    try:
        os.chmod(link, 0o600, follow_symlinks=False)
    except (OSError, NotImplementedError):
        pass   # Linux has no lchmod: refused, and never passed to the target

# Ferry's own world: its root is SOURCE, and nothing outside has a path there.
root = "/proc/%s/root" % pid
st_root, st_source = os.stat(root), os.stat(source)
if (st_root.st_dev, st_root.st_ino) != (st_source.st_dev, st_source.st_ino):
    fail("Ferry's root is not SOURCE")
if sorted(os.listdir(root)) != sorted(os.listdir(source)):
    fail("Ferry's root lists %r, SOURCE %r" % (sorted(os.listdir(root)), sorted(os.listdir(source))))
for path in [canary, "/etc/passwd", "/proc/1/status", "/dev/null", "/sys/kernel"]:
    if os.path.lexists(root + path):
        fail("%s has a path in Ferry's root" % path)
if os.path.exists(root + "/..") and os.stat(root + "/..").st_ino != st_source.st_ino:
    fail("'..' at Ferry's root leaves SOURCE")
with open("/proc/%s/mountinfo" % pid) as mounts:
    for line in mounts:
        point = line.split()[4]
        if point != "/" and not point.startswith("/"):
            fail("odd mount point %r in Ferry's namespace" % point)

if canary_state() != before:
    fail("the canary outside SOURCE changed")
print("ok" if not failures else "%d failure(s)" % len(failures))
sys.exit(1 if failures else 0)
