#!/usr/bin/env python3
"""Writes the seed inputs of every fuzz target into corpus/TARGET/seed-NAME (committed).
Layouts: protocol/fuse-abi.md, protocol/vhost-user.md, fanotify(7), inotify(7), virtio 1.2 2.7."""
import os, struct

HERE = os.path.dirname(os.path.abspath(__file__))

def write(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data)

# FUSE requests: a 40-byte header (len, opcode, unique, nodeid, uid, gid, pid, extlen, pad).
unique = [100]
def req(opcode, body, node=1, uid=0, gid=0):
    unique[0] += 2
    return struct.pack("<IIQQIIIHH", 40 + len(body), opcode, unique[0], node, uid, gid, 1, 0, 0) + body

def z(s): return s.encode() + b"\0"
read_in = lambda fh, off, size: struct.pack("<QQIIQII", fh, off, size, 0, 0, 0, 0)
LOOKUP, FORGET, GETATTR, SETATTR, READLINK, SYMLINK, MKNOD, MKDIR, UNLINK, RMDIR, RENAME, LINK, OPEN, READ, WRITE, STATFS, RELEASE = 1, 2, 3, 4, 5, 6, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18
FSYNC, SETXATTR, GETXATTR, LISTXATTR, REMOVEXATTR, FLUSH, OPENDIR, READDIR, RELEASEDIR = 20, 21, 22, 23, 24, 25, 27, 28, 29
GETLK, SETLK, ACCESS, CREATE, INTERRUPT, BATCH_FORGET, FALLOCATE, READDIRPLUS, RENAME2, LSEEK, COPY_FILE_RANGE, TMPFILE, STATX = 31, 32, 34, 35, 36, 42, 43, 44, 45, 46, 47, 51, 52

seeds = {
    "lookup-getattr": req(LOOKUP, z("a")) + req(GETATTR, struct.pack("<IIQ", 0, 0, 0)),
    "mkdir-opendir-readdirplus": req(MKDIR, struct.pack("<II", 0o755, 0o022) + z("d")) + req(OPENDIR, struct.pack("<II", 0, 0))
        + req(READDIRPLUS, read_in(1, 0, 4096)) + req(READDIR, read_in(1, 0, 4096)) + req(RELEASEDIR, struct.pack("<QIIQ", 1, 0, 0, 0)),
    "create-write-read": req(CREATE, struct.pack("<IIII", 0o2, 0o644, 0o022, 0) + z("f"))
        + req(WRITE, struct.pack("<QQIIQII", 1, 0, 11, 0, 0, 0, 0) + b"hello world")
        + req(READ, read_in(1, 0, 11)) + req(FSYNC, struct.pack("<QII", 1, 1, 0))
        + req(FALLOCATE, struct.pack("<QQQII", 1, 0, 8192, 0, 0)) + req(LSEEK, struct.pack("<QQII", 1, 0, 3, 0))
        + req(FLUSH, struct.pack("<QIIQ", 1, 0, 0, 0)) + req(RELEASE, struct.pack("<QIIQ", 1, 0, 0, 0)),
    "xattrs": req(SETXATTR, struct.pack("<II", 3, 0) + z("user.k") + b"val") + req(GETXATTR, struct.pack("<II", 64, 0) + z("user.k"))
        + req(LISTXATTR, struct.pack("<II", 256, 0)) + req(REMOVEXATTR, z("user.k")),
    "symlink-link-rename": req(SYMLINK, z("s") + z("/etc/passwd")) + req(READLINK, b"") + req(LINK, struct.pack("<Q", 1) + z("l"))
        + req(RENAME, struct.pack("<Q", 1) + z("s") + z("t")) + req(RENAME2, struct.pack("<QII", 1, 1, 0) + z("t") + z("u"))
        + req(UNLINK, z("u")) + req(RMDIR, z("d")),
    "dotdot-and-slash": req(LOOKUP, z("..")) + req(LOOKUP, z("a/../../etc")) + req(MKNOD, struct.pack("<IIII", 0o10644, 0, 0o022, 0) + z("p")),
    "setattr-statfs-access": req(SETATTR, struct.pack("<IIQQQQQQIIIIIIII", 0x8 | 0x1, 0, 0, 100, 0, 0, 0, 0, 0, 0, 0, 0o600, 0, 0, 0, 0))
        + req(STATFS, b"") + req(ACCESS, struct.pack("<II", 4, 0)) + req(STATX, struct.pack("<IIQII", 0, 0, 0, 0, 0x7ff)),
    "locks": req(OPEN, struct.pack("<II", 2, 0), node=1) + req(SETLK, struct.pack("<QQQQIIII", 1, 7, 0, 99, 1, 1, 0, 0))
        + req(GETLK, struct.pack("<QQQQIIII", 1, 8, 0, 99, 1, 1, 0, 0)) + req(INTERRUPT, struct.pack("<Q", 3)),
    "forget": req(FORGET, struct.pack("<Q", 1), node=5) + req(BATCH_FORGET, struct.pack("<II", 2, 0) + struct.pack("<QQ", 5, 1) * 2, node=0),
    "copy-range-tmpfile": req(TMPFILE, struct.pack("<IIII", 2, 0o600, 0, 0)) + req(COPY_FILE_RANGE, struct.pack("<QQQQQQQ", 1, 0, 1, 1, 0, 100, 0)),
    # A FIFO made, then created over, opened and truncated: each must be refused at once (the
    # fuzzer once found CREATE blocking in open(2) of a FIFO until its timeout).
    "fifo-create-open": req(MKNOD, struct.pack("<IIII", 0o10644, 0, 0o022, 0) + z("q"))
        + req(CREATE, struct.pack("<IIII", 0, 0o644, 0o022, 0) + z("q")) + req(LOOKUP, z("q"))
        + req(OPEN, struct.pack("<II", 1, 0), node=2)
        + req(SETATTR, struct.pack("<IIQQQQQQIIIIIIII", 0x8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0), node=2),
    "bad-lengths": struct.pack("<IIQQIIIHH", 8, LOOKUP, 1, 1, 0, 0, 0, 0, 0) + struct.pack("<IIQQIIIHH", 41, 9999, 1, 1, 0, 0, 0, 0, 0) + b"x",
}
for name, data in seeds.items(): write("fuse-requests", name, data)

# fanotify: metadata (event_len, vers 3, reserved, metadata_len 24, mask, fd, pid) + info records.
def fan_event(mask, infos):
    body = b"".join(infos)
    return struct.pack("<IBBHQii", 24 + len(body), 3, 0, 24, mask, -1, 42) + body
def fid_record(kind, handle, name=b""):
    rec = struct.pack("<ii", 1, 2) + struct.pack("<Ii", len(handle), 1) + handle + name
    pad = (-(4 + len(rec))) % 4
    return struct.pack("<BBH", kind, 0, 4 + len(rec) + pad) + rec + b"\0" * pad
handle = bytes(range(8))
write("fanotify-events", "modify-fid", fan_event(0x2, [fid_record(1, handle)]))
write("fanotify-events", "create-dfid-name", fan_event(0x100 | 0x40000000, [fid_record(2, handle, b"new-file\0")]))
write("fanotify-events", "rename-old-new", fan_event(0x10000000, [fid_record(10, handle, b"old\0"), fid_record(12, handle, b"new\0")]))
write("fanotify-events", "overflow-and-two", struct.pack("<IBBHQii", 24, 3, 0, 24, 0x4000, -1, 0) + fan_event(0x4, [fid_record(3, handle)]))

# inotify: wd, mask, cookie, len, name (padded to len).
def ino(wd, mask, name=b""):
    n = name + b"\0" * ((16 - len(name) % 16) if name else 0)
    return struct.pack("<iIII", wd, mask, 0, len(n)) + n
write("inotify-events", "modify-create", ino(1, 0x2) + ino(1, 0x100, b"file"))
write("inotify-events", "move-overflow", ino(2, 0x40, b"a") + ino(2, 0x80, b"b") + ino(-1, 0x4000))

# vhost-user: request, flags (version 1), size, payload.
def vh(request, payload=b"", flags=1): return struct.pack("<III", request, flags, len(payload)) + payload
write("vhost-message", "get-features", vh(1))
write("vhost-message", "set-features", vh(2, struct.pack("<Q", 1 << 32 | 1 << 30)))
write("vhost-message", "set-mem-table", vh(5, struct.pack("<II", 2, 0) + struct.pack("<QQQQ", 0, 1 << 20, 0x7f0000000000, 0) * 2))
write("vhost-message", "set-vring-addr", vh(9, struct.pack("<IIQQQQ", 1, 0, 0x7f0000000000, 0x7f0000002000, 0x7f0000001000, 0)))
write("vhost-message", "set-vring-num", vh(8, struct.pack("<II", 1, 128)))
write("vhost-message", "get-config", vh(24, struct.pack("<III", 0, 40, 0) + b"\0" * 40))
write("vhost-message", "add-mem-reg", vh(37, struct.pack("<Q", 0) + struct.pack("<QQQQ", 0x100000, 1 << 20, 0x7f0000100000, 0)))
write("vhost-message", "rem-mem-reg", vh(38, struct.pack("<Q", 0) + struct.pack("<QQQQ", 0x100000, 1 << 20, 0x7f0000100000, 0), flags=1 | 8))
write("vhost-message", "get-max-mem-slots", vh(36))

# Virtqueue: 64 KiB of guest memory at 0x10000; descriptors at 0, available ring at 0x100,
# used ring at 0x200; descriptor: addr, len, flags (1 next, 2 write, 4 indirect), next.
def vq(descs, heads, extra=()):
    mem = bytearray(1 << 16)
    for i, (addr, length, flags, nxt) in enumerate(descs): struct.pack_into("<QIHH", mem, 16 * i, addr, length, flags, nxt)
    struct.pack_into("<HH", mem, 0x100, 0, len(heads))
    for i, h in enumerate(heads): struct.pack_into("<H", mem, 0x104 + 2 * i, h)
    for offset, data in extra: mem[offset:offset + len(data)] = data
    return bytes(mem[:0x3000])
request = struct.pack("<IIQQIIIHH", 41, 1, 2, 1, 0, 0, 0, 0, 0) + b"a\0"
write("virtqueue", "two-chains", vq([(0x11000, 40, 1, 1), (0x11100, 256, 2, 0), (0x11200, 16, 1, 3), (0x11300, 64, 2, 0)], [0, 2], [(0x1000, request)]))
indirect = struct.pack("<QIHH", 0x11000, 42, 1, 1) + struct.pack("<QIHH", 0x11100, 256, 2, 0)
write("virtqueue", "indirect", vq([(0x12000, 32, 4, 0)], [0], [(0x1000, request), (0x2000, indirect)]))
write("virtqueue", "loop", vq([(0x11000, 8, 1, 1), (0x11000, 8, 1, 0)], [0]))
