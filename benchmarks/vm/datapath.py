#!/usr/bin/env python3
"""Ferry's vhost-user data path without a guest: a fake front-end (this script) hands a `ferry
serve` process a memfd as guest memory and one request queue, then keeps DEPTH FUSE requests in
flight: 1 MiB WRITEs or READs whose data lies in 256 scattered 4 KiB guest pages (as a Linux
guest's pages are), on a 64 MiB host file in the page cache (so the host disk is out of the
picture). Prints requests per second and Ferry's CPU time per request (utime + stime from
/proc). Compare two builds in one run with several FERRY binaries.

With --direct the guest opens the file O_DIRECT, and so does Ferry on the host: the data then
comes from and goes to the host's disk (reads and writes through io_uring into guest memory).

Usage: benchmarks/vm/datapath.py [--requests N] [--depth D] [--rounds R] [--direct] FERRY_BIN [FERRY_BIN ...]
"""
import argparse, os, random, select, shutil, socket, struct, subprocess, sys, tempfile, time

MEM = 96 << 20                       # guest memory
DESC, AVAIL, USED = 0x0, 0x10000, 0x20000
QSIZE = 256
TABLES = 0x100000                    # indirect tables, 8 KiB each
HEADERS = 0x400000                   # request headers and reply space, 4 KiB per chain
DATA = 0x800000                      # 64 MiB of data pages from here
PAGES = 256                          # 1 MiB per request
FILE_MB = 64
UVA = 0x7F00_0000_0000


def msg(sock, request, payload=b"", fds=(), need_reply=False):
    header = struct.pack("<III", request, 1 | (8 if need_reply else 0), len(payload))
    socket.send_fds(sock, [header + payload], list(fds)) if fds else sock.sendall(header + payload)


def reply(sock):
    header = sock.recv(12, socket.MSG_WAITALL)
    size = struct.unpack("<III", header)[2]
    return sock.recv(size, socket.MSG_WAITALL) if size else b""


class Guest:
    def __init__(self, mem):
        self.mem, self.avail_idx, self.used_seen = mem, 0, 0

    def put(self, at, data): self.mem[at:at + len(data)] = data
    def u16(self, at): return struct.unpack_from("<H", self.mem, at)[0]

    def desc(self, table, i, addr, length, flags, nxt=0):
        struct.pack_into("<QIHH", self.mem, table + 16 * i, addr, length, flags, nxt)

    def offer(self, head):
        struct.pack_into("<H", self.mem, AVAIL + 4 + 2 * (self.avail_idx % QSIZE), head)
        self.avail_idx = (self.avail_idx + 1) & 0xFFFF
        # One 2-byte store: struct.pack_into zero-fills before it writes, and Ferry, reading the
        # index at that moment, would see 0 (a corrupt ring: the queue breaks).
        self.mem[AVAIL + 2:AVAIL + 4] = struct.pack("<H", self.avail_idx)


def fuse(opcode, unique, node, body):
    return struct.pack("<IIQQIIIHH", 40 + len(body), opcode, unique, node, 0, 0, 1, 0, 0) + body


def run(binary, requests, depth, opcode, direct=False):
    work = tempfile.mkdtemp(prefix="ferry-datapath.")
    src, sock_path = os.path.join(work, "src"), os.path.join(work, "sock")
    os.mkdir(src)
    with open(os.path.join(src, "data"), "wb") as f:
        f.write(os.urandom(FILE_MB << 20))
    ferry = subprocess.Popen([binary, "serve", src, "--socket-path", sock_path], stdout=subprocess.DEVNULL,
                             stderr=open(os.path.join(work, "log"), "w"))
    try:
        for _ in range(200):
            if os.path.exists(sock_path): break
            time.sleep(0.02)
        fd = os.memfd_create("guest")
        os.ftruncate(fd, MEM)
        import mmap
        mem = mmap.mmap(fd, MEM)
        g = Guest(mem)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(sock_path)
        kick, call = os.eventfd(0), os.eventfd(0)
        msg(s, 1); reply(s)
        msg(s, 15); reply(s)
        msg(s, 16, struct.pack("<Q", 1 | 8))
        msg(s, 3)
        msg(s, 2, struct.pack("<Q", (1 << 32) | (1 << 30) | (1 << 28)))
        msg(s, 5, struct.pack("<II", 1, 0) + struct.pack("<QQQQ", 0, MEM, UVA, 0), fds=[fd], need_reply=True)
        assert struct.unpack("<Q", reply(s))[0] == 0
        msg(s, 8, struct.pack("<II", 1, QSIZE))
        msg(s, 10, struct.pack("<II", 1, 0))
        msg(s, 9, struct.pack("<IIQQQQ", 1, 0, UVA + DESC, UVA + USED, UVA + AVAIL, 0))
        msg(s, 12, struct.pack("<Q", 1), fds=[kick])
        msg(s, 13, struct.pack("<Q", 1), fds=[call])
        msg(s, 18, struct.pack("<II", 1, 1), need_reply=True)
        assert struct.unpack("<Q", reply(s))[0] == 0

        def submit(slot, request, data_pages, writable_pages):
            """Chain `slot`: one indirect descriptor for header (+ data) and reply (+ data)."""
            table, hdr = TABLES + slot * 0x2000, HEADERS + slot * 0x1000
            g.put(hdr, request)
            entries = [(hdr, len(request), 0)] + [(p, 4096, 0) for p in data_pages] \
                + [(hdr + 0x800, 0x100, 2)] + [(p, 4096, 2) for p in writable_pages]
            for i, (addr, length, flags) in enumerate(entries):
                g.desc(table, i, addr, length, flags | (1 if i < len(entries) - 1 else 0), i + 1)
            g.desc(DESC, slot, table, 16 * len(entries), 4)
            g.offer(slot)

        def wait(count):
            while True:
                done = (g.u16(USED + 2) - g.used_seen) & 0xFFFF
                if done >= count:
                    g.used_seen = (g.used_seen + count) & 0xFFFF
                    return
                select.select([call], [], [], 1.0)
                try: os.eventfd_read(call)
                except BlockingIOError: pass

        init = struct.pack("<IIII", 7, 38, 128 << 10, (1 << 1) | (1 << 10)) + bytes(48)
        submit(0, fuse(26, 1, 0, init), [], [])
        os.eventfd_write(kick, 1); wait(1)
        # LOOKUP "data" in the root, then OPEN it.
        submit(0, fuse(1, 3, 1, b"data\0"), [], [])
        os.eventfd_write(kick, 1); wait(1)
        node = struct.unpack_from("<Q", mem, HEADERS + 0x800 + 16)[0]
        flags = os.O_RDWR | (os.O_DIRECT if direct else 0)
        submit(0, fuse(14, 4, node, struct.pack("<II", flags, 0)), [], [])
        os.eventfd_write(kick, 1); wait(1)
        err, = struct.unpack_from("<i", mem, HEADERS + 0x800 + 4)
        assert err == 0, f"OPEN failed: {err}"
        fh = struct.unpack_from("<Q", mem, HEADERS + 0x800 + 16)[0]

        pages = [DATA + 4096 * i for i in range((FILE_MB << 20) // 4096)]
        random.seed(1)
        random.shuffle(pages)
        per_slot = [pages[i * PAGES:(i + 1) * PAGES] for i in range(depth)]

        def ticks():
            fields = open(f"/proc/{ferry.pid}/stat").read().rsplit(")", 1)[1].split()
            return int(fields[11]) + int(fields[12])
        hz = os.sysconf("SC_CLK_TCK")
        start_cpu, start = ticks(), time.monotonic()
        unique, sent, done = 100, 0, 0
        chunks = FILE_MB
        while done < requests:
            batch = min(depth, requests - sent) if sent == done else 0
            for slot in range(batch):
                offset = ((sent + slot) % chunks) << 20
                body = struct.pack("<QQIIQII", fh, offset, 1 << 20, 0, 0, flags, 0)
                if opcode == 16:
                    req = bytearray(fuse(16, unique, node, body))
                    struct.pack_into("<I", req, 0, len(req) + (1 << 20))
                    submit(slot, bytes(req), per_slot[slot], [])
                else:
                    submit(slot, fuse(15, unique, node, body), [], per_slot[slot])
                unique += 1
            sent += batch
            os.eventfd_write(kick, 1)
            wait(batch)
            done += batch
        elapsed, cpu = time.monotonic() - start, (ticks() - start_cpu) / hz
        err, = struct.unpack_from("<i", mem, HEADERS + 0x800 + 4)
        assert err == 0, f"request failed: {err}"
        s.close()
        ferry.wait(timeout=20)
        return requests / elapsed, cpu / requests * 1e6
    finally:
        if ferry.poll() is None:
            ferry.terminate(); ferry.wait()
        shutil.rmtree(work, ignore_errors=True)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--requests", type=int, default=2048)
    p.add_argument("--depth", type=int, default=16)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--direct", action="store_true")
    p.add_argument("binaries", nargs="+")
    a = p.parse_args()
    results = {}
    for r in range(a.rounds):
        for b in a.binaries:
            for name, opcode in (("write-1M", 16), ("read-1M", 15)):
                results.setdefault((b, name), []).append(run(b, a.requests, a.depth, opcode, a.direct))
    import statistics
    print(f"| binary | workload | requests/s (MiB/s) | Ferry CPU µs per request |")
    print("|---|---|---|---|")
    for (b, name), values in results.items():
        rate = statistics.median(v[0] for v in values)
        cpu = statistics.median(v[1] for v in values)
        print(f"| {b} | {name} | {rate:.0f} | {cpu:.0f} |")
    print(f"\nmedian of {a.rounds} round(s), {a.requests} requests each, {a.depth} in flight"
          + (", O_DIRECT" if a.direct else ", page cache"))


if __name__ == "__main__":
    main()
