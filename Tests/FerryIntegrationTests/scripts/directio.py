#!/usr/bin/env python3
"""O_DIRECT through a Ferry mount, compared with a plain host directory: every call is made on
NATIVE and through MOUNT (which serves SOURCE), and what each returns must be the same.

Usage: directio.py NATIVE MOUNT SOURCE CHECK [SEED]
CHECK is one of the names in CHECKS, or "all". Prints "PASS name" or "FAIL name: reason" per
check; the exit status is 0 only when every check passed. Run as root (fio, dd) on a host file
system with O_DIRECT (ext4 here: offsets and lengths in 512-byte logical blocks).

Buffers for O_DIRECT come from mmap, so they are page-aligned; a buffer offset of 512 or 2048
keeps them aligned to the logical block size. The one difference a FUSE mount cannot avoid is
memory alignment: the kernel copies the caller's pages into the request, so the server never
sees the caller's buffer address, and a buffer the host would refuse (EINVAL) works through the
mount. `aligned_io` checks that such a call gives the right bytes; everything else must match.
"""
import errno, json, mmap, os, random, shutil, subprocess, sys, tempfile

NATIVE, MOUNT, SOURCE, CHECK = sys.argv[1:5]
SEED = int(sys.argv[5]) if len(sys.argv) > 5 else 1
BLOCK = 512     # the host's logical block size (/var/tmp on ext4 on virtio-blk)
SIDES = ("native", "mount")


class Failure(Exception):
    pass


def expect(cond, msg):
    if not cond:
        raise Failure(msg)


def roots():
    return {"native": NATIVE, "mount": MOUNT}


def aligned_buffer(size):
    """Page-aligned memory of at least `size` bytes (plus a page, for offset buffers)."""
    return mmap.mmap(-1, (size + 2 * mmap.PAGESIZE) // mmap.PAGESIZE * mmap.PAGESIZE)


def outcome(fn, *args):
    try:
        return ("ok", fn(*args))
    except OSError as e:
        return ("err", errno.errorcode.get(e.errno, e.errno))


def dpread(fd, memory, buffer_offset, length, offset):
    """pread into memory[buffer_offset:]; returns the bytes read."""
    view = memoryview(memory)[buffer_offset:buffer_offset + length]
    n = os.preadv(fd, [view], offset)
    return bytes(view[:n])


def dpwrite(fd, memory, buffer_offset, data, offset):
    """pwrite of `data` from memory[buffer_offset:]; returns the count written."""
    view = memoryview(memory)[buffer_offset:buffer_offset + len(data)]
    view[:] = data
    return os.pwritev(fd, [view], offset)


def content(path):
    with open(path, "rb") as f:
        return f.read()


def same_content(paths, expected, what):
    for path in paths:
        data = content(path)
        if data != expected:
            first = next((i for i, (a, b) in enumerate(zip(data, expected)) if a != b), min(len(data), len(expected)))
            raise Failure(f"{what}: {path} differs from the model at byte {first} "
                          f"(size {len(data)} vs {len(expected)})")


# ------------------------------------------------------------------------------ the checks

def check_aligned_io():
    """pread/pwrite with O_DIRECT, offsets, lengths and buffer offsets varied, on the host and
    through the mount: the same count or errno, the same bytes, the same file afterwards."""
    rng = random.Random(SEED)
    size = 3 * 65536 + 700           # the last block is partial
    start = rng.randbytes(size)
    paths = {side: os.path.join(root, "aligned") for side, root in roots().items()}
    for path in paths.values():
        with open(path, "wb") as f:
            f.write(start)
    memory = aligned_buffer(1 << 21)
    offsets = [0, 512, 4096, 8704, 196608, 100, 4095, size - 100, size + 4096, size + 100, 1 << 20]
    lengths = [512, 4096, 65536, 1 << 20, 100, 1000, 0]
    buffers = [0, 512, 2048]

    def on_each_side(flags, call):
        """Opens the file on the host and through the mount with `flags`; `call(fd)` on each."""
        got = {}
        for side, path in paths.items():
            fd = os.open(path, flags)
            try:
                got[side] = call(fd)
            finally:
                os.close(fd)
        return got

    def read_all(tag):
        for offset in offsets:
            for length in lengths:
                for b in buffers:
                    got = on_each_side(os.O_RDONLY | os.O_DIRECT,
                                       lambda fd: outcome(dpread, fd, memory, b, length, offset))
                    expect(got["native"] == got["mount"],
                           f"{tag}: pread(offset {offset}, length {length}, buffer +{b}): "
                           f"host {got['native']!r:.80} vs mount {got['mount']!r:.80}")

    read_all("before writes")
    writes = [(o, n, b) for o in [0, 512, 4096, 100, 196608 + 512, 1 << 20, (1 << 20) + 7]
              for n in [512, 4096, 65536, 100] for b in [0, 512]]
    rng.shuffle(writes)
    for offset, length, b in writes:
        data = rng.randbytes(length)
        got = on_each_side(os.O_WRONLY | os.O_DIRECT, lambda fd: outcome(dpwrite, fd, memory, b, data, offset))
        expect(got["native"] == got["mount"],
               f"pwrite(offset {offset}, length {length}, buffer +{b}): host {got['native']} vs mount {got['mount']}")
    native_after = content(paths["native"])
    same_content([paths["mount"], os.path.join(SOURCE, "aligned")], native_after, "after O_DIRECT writes")
    read_all("after writes")

    # A file created with O_DIRECT (CREATE carries the flag), and O_APPEND with O_DIRECT.
    for name, steps in [("created", [(0, 4096), (4096, 512), (100, 512)]),
                        ("appended", [(None, 4096), (None, 512), (None, 100), (None, 512)])]:
        got = {}
        for side, root in roots().items():
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_DIRECT | (os.O_APPEND if steps[0][0] is None else 0)
            fd = os.open(os.path.join(root, name), flags, 0o644)
            try:
                results = []
                for offset, length in steps:
                    data = bytes([length % 251]) * length
                    if offset is None:
                        view = memoryview(memory)[:length]
                        view[:] = data
                        results.append(outcome(os.write, fd, view))
                    else:
                        results.append(outcome(dpwrite, fd, memory, 0, data, offset))
                got[side] = results
            finally:
                os.close(fd)
        expect(got["native"] == got["mount"], f"{name}: host {got['native']} vs mount {got['mount']}")
        same_content([os.path.join(MOUNT, name)], content(os.path.join(NATIVE, name)), name)

    # Memory alignment: invisible to the server (see the module comment).
    native_fd = os.open(paths["native"], os.O_RDONLY | os.O_DIRECT)
    mount_fd = os.open(paths["mount"], os.O_RDONLY | os.O_DIRECT)
    try:
        host = outcome(dpread, native_fd, memory, 16, 4096, 0)
        mount = outcome(dpread, mount_fd, memory, 16, 4096, 0)
        expect(mount == host or mount == ("ok", native_after[:4096]),
               f"pread into a buffer at +16: host {host!r:.60}, mount {mount!r:.60}")
    finally:
        os.close(native_fd)
        os.close(mount_fd)


def check_dd():
    """dd with oflag=direct and iflag=direct, aligned and not, on the host and through the mount."""
    work = tempfile.mkdtemp(prefix="directio-dd.", dir=NATIVE)
    src = os.path.join(work, "random")
    with open(src, "wb") as f:
        f.write(random.Random(SEED).randbytes(4 << 20))
    runs = [
        ("zeros", ["if=/dev/zero", "of={dir}/zeros", "bs=1M", "count=4", "oflag=direct"]),
        ("random", ["if=" + src, "of={dir}/random", "bs=1M", "count=4", "oflag=direct"]),
        ("random 4k", ["if=" + src, "of={dir}/random4k", "bs=4k", "oflag=direct", "conv=notrunc"]),
        ("read back", ["if={dir}/random", "of={dir}/back", "bs=64k", "iflag=direct"]),
        ("direct both", ["if={dir}/random4k", "of={dir}/both", "bs=128k", "iflag=direct", "oflag=direct"]),
        ("unaligned bs", ["if=" + src, "of={dir}/odd", "bs=1000", "count=3", "oflag=direct"]),
        ("unaligned skip", ["if={dir}/random", "of=/dev/null", "bs=1000", "skip=1", "count=2", "iflag=direct"]),
    ]
    for name, args in runs:
        got = {}
        for side, root in roots().items():
            p = subprocess.run(["dd", "status=none"] + [a.format(dir=root) for a in args],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            got[side] = (p.returncode, "Invalid argument" in p.stderr)
        expect(got["native"] == got["mount"], f"dd {name}: host (status, EINVAL) {got['native']} vs mount {got['mount']}")
    for name in ["zeros", "random", "random4k", "back", "both", "odd"]:
        native = os.path.join(NATIVE, name)
        mount = os.path.join(MOUNT, name)
        expect(os.path.exists(native) == os.path.exists(mount), f"{name}: exists on one side only")
        if os.path.exists(native):
            same_content([mount, os.path.join(SOURCE, name)], content(native), f"dd {name}")
    same_content([os.path.join(MOUNT, "back")], content(src), "dd read back")
    shutil.rmtree(work)


def check_mixed(operations=4000):
    """A seeded random workload on one file through an O_DIRECT descriptor and a buffered one
    (and an O_DIRECT reader), made on the host and through the mount; every read is checked
    against an in-memory model of the file, and the files against it at the end."""
    rng = random.Random(SEED)
    model = bytearray()
    memory = aligned_buffer(1 << 17)
    files = {}
    for side, root in roots().items():
        path = os.path.join(root, "mixed")
        direct = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_DIRECT, 0o644)
        files[side] = (path, direct, os.open(path, os.O_RDWR), os.open(path, os.O_RDONLY | os.O_DIRECT))
    limit = 1 << 20
    counts = {}
    try:
        for step in range(operations):
            kind = rng.choices(["dwrite", "dread", "bwrite", "bread", "dread2", "truncate", "unaligned", "fsync"],
                               [30, 25, 15, 15, 8, 2, 4, 1])[0]
            counts[kind] = counts.get(kind, 0) + 1
            if kind in ("dwrite", "bwrite"):
                if kind == "dwrite":
                    offset, length = BLOCK * rng.randrange(limit // BLOCK), BLOCK * rng.randrange(1, 129)
                else:
                    offset, length = rng.randrange(limit), rng.randrange(1, 20000)
                data = rng.randbytes(length)
                got = {}
                for side, (path, direct, buffered, _) in files.items():
                    if kind == "dwrite":
                        got[side] = outcome(dpwrite, direct, memory, 0, data, offset)
                    else:
                        got[side] = outcome(os.pwrite, buffered, data, offset)
                expect(got["native"] == got["mount"] == ("ok", length),
                       f"step {step} {kind}(offset {offset}, length {length}): host {got['native']} vs mount {got['mount']}")
                if offset > len(model):
                    model.extend(bytes(offset - len(model)))
                model[offset:offset + length] = data
            elif kind in ("dread", "dread2", "bread"):
                if kind == "bread":
                    offset, length = rng.randrange(limit + 4096), rng.randrange(1, 70000)
                else:
                    offset, length = BLOCK * rng.randrange((limit + 4096) // BLOCK), BLOCK * rng.randrange(1, 129)
                want = ("ok", bytes(model[offset:offset + length]))
                for side, (path, direct, buffered, reader) in files.items():
                    if kind == "bread":
                        got = outcome(os.pread, buffered, length, offset)
                    else:
                        got = outcome(dpread, direct if kind == "dread" else reader, memory, 0, length, offset)
                    expect(got == want, f"step {step} {kind}(offset {offset}, length {length}) on the {side} side: "
                                        f"{got!r:.60} vs the model's {len(want[1])} bytes")
            elif kind == "truncate":
                size = rng.choice([0, rng.randrange(limit), BLOCK * rng.randrange(limit // BLOCK)])
                for side, (path, direct, buffered, _) in files.items():
                    os.ftruncate(buffered, size)
                del model[size:]
                model.extend(bytes(size - len(model)))
            elif kind == "fsync":
                for side, (path, direct, buffered, _) in files.items():
                    os.fdatasync(direct)
            else:
                # Offset or length off the block grid: whatever the host answers, the mount must too.
                offset = BLOCK * rng.randrange(limit // BLOCK) + rng.choice([0, 1, 100, 511])
                length = BLOCK * rng.randrange(1, 17) + rng.choice([0, 3, 200]) if offset % BLOCK == 0 \
                    else BLOCK * rng.randrange(1, 17)
                write = rng.random() < 0.5
                data = rng.randbytes(length)
                got = {}
                for side, (path, direct, buffered, _) in files.items():
                    got[side] = outcome(dpwrite, direct, memory, 0, data, offset) if write \
                        else outcome(dpread, direct, memory, 0, length, offset)
                expect(got["native"] == got["mount"],
                       f"step {step} unaligned {'pwrite' if write else 'pread'}(offset {offset}, length {length}): "
                       f"host {got['native']!r:.60} vs mount {got['mount']!r:.60}")
                if got["native"][0] == "ok" and write:
                    if offset > len(model):
                        model.extend(bytes(offset - len(model)))
                    model[offset:offset + length] = data
                elif got["native"][0] == "ok":
                    expect(got["native"][1] == bytes(model[offset:offset + length]), f"step {step}: unaligned read")
    finally:
        for path, *fds in files.values():
            for fd in fds:
                os.close(fd)
    same_content([files["native"][0], files["mount"][0], os.path.join(SOURCE, "mixed")], bytes(model), "at the end")
    # The whole file once more through a fresh O_DIRECT descriptor of the mount.
    fd = os.open(files["mount"][0], os.O_RDONLY | os.O_DIRECT)
    try:
        whole = b"".join(dpread(fd, memory, 0, 1 << 16, offset) for offset in range(0, len(model) + 1, 1 << 16))
    finally:
        os.close(fd)
    expect(whole == bytes(model), "a fresh O_DIRECT read of the whole file differs from the model")
    print(f"mixed: {operations} operations {sorted(counts.items())}, final size {len(model)}")


def fio(args):
    # No verify state files (fio writes them into the working directory otherwise).
    p = subprocess.run(["fio", "--output-format=json", "--verify_state_save=0"] + args, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True, timeout=120)
    expect(p.returncode == 0, f"fio {' '.join(args)} exited {p.returncode}: {p.stderr.strip()[-400:]}")
    job = json.loads(p.stdout[p.stdout.index("{"):])["jobs"][0]
    expect(job["error"] == 0, f"fio {job['jobname']}: error {job['error']}")
    return job


def check_fio():
    """fio --direct=1 random read and random write (verified) jobs through the mount."""
    path = os.path.join(MOUNT, "fio.dat")
    common = ["--direct=1", "--bs=4k", "--size=8m", "--filename=" + path]
    job = fio(["--name=randread", "--rw=randread", "--ioengine=psync", "--runtime=1", "--time_based"] + common)
    expect(job["read"]["io_bytes"] > 0, "randread read nothing")
    job = fio(["--name=randwrite", "--rw=randwrite", "--ioengine=psync", "--verify=crc32c", "--verify_fatal=1",
               "--do_verify=1"] + common)
    expect(job["write"]["io_bytes"] == 8 << 20, f"randwrite wrote {job['write']['io_bytes']} bytes")
    # Several O_DIRECT requests in flight at once (ASYNC_DIO).
    fio(["--name=aio", "--rw=randwrite", "--ioengine=libaio", "--iodepth=8", "--verify=crc32c",
         "--verify_fatal=1", "--do_verify=1"] + common)
    os.unlink(path)


def check_page_cache_writes():
    """The kernel writes cached pages back through any writable handle of the file, the last
    one opened first (or through the handle a shared mapping came from), in pieces cut at the
    end of the file: with an O_DIRECT handle open beside a buffered one, buffered writes
    (writeback cache) and mmap stores must still reach the host."""
    got = {}
    for side, root in roots().items():
        results = []
        path = os.path.join(root, "cached")
        buffered = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        direct = os.open(path, os.O_RDWR | os.O_DIRECT)
        try:
            results.append(outcome(os.pwrite, buffered, b"x" * 100, 0))
            results.append(outcome(os.fsync, buffered))
            results.append(outcome(os.pwrite, buffered, b"y" * 5000, 7000))
            results.append(outcome(os.fdatasync, buffered))
            mapped = mmap.mmap(buffered, 12000)
            mapped[50:55] = b"hello"
            mapped[11990:12000] = b"0123456789"
            results.append(outcome(mapped.flush))
            mapped.close()
            # A shared mapping of the O_DIRECT descriptor itself is written back through it.
            mapped = mmap.mmap(direct, 12000)
            mapped[60:66] = b"direct"
            results.append(outcome(mapped.flush))
            mapped.close()
        finally:
            os.close(direct)
            os.close(buffered)
        got[side] = results
    expect(got["native"] == got["mount"], f"host {got['native']} vs mount {got['mount']}")
    same_content([os.path.join(MOUNT, "cached"), os.path.join(SOURCE, "cached")],
                 content(os.path.join(NATIVE, "cached")), "page cache writes beside an O_DIRECT handle")


CHECKS = {"aligned_io": check_aligned_io, "dd": check_dd, "mixed": check_mixed, "fio": check_fio,
          "page_cache_writes": check_page_cache_writes}


def main():
    names = list(CHECKS) if CHECK == "all" else [CHECK]
    failed = 0
    for name in names:
        try:
            CHECKS[name]()
            print(f"PASS {name}")
        except (Failure, OSError, subprocess.SubprocessError, ValueError) as e:
            print(f"FAIL {name}: {e}")
            failed += 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
