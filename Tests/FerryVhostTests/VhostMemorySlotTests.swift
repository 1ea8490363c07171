import FerrySystem
import FerryVhost
import Foundation
import Glibc
import XCTest

/// CONFIGURE_MEM_SLOTS: GET_MAX_MEM_SLOTS, ADD_MEM_REG and REM_MEM_REG (what QEMU sends on
/// memory hot-plug and unplug when the feature is negotiated), against a running queue.
extension VhostProtocolTests {
    /// A second memory file, as a hot-plugged DIMM's memfd: 1 MiB of guest memory at guest
    /// 4 GiB, lying at `offset` in its 2 MiB file (the region's mmap_offset).
    final class DIMM {
        static let gpa: UInt64 = 0x1_0000_0000, uva: UInt64 = 0x7f13_0000_0000
        static let size = 1 << 20, offset = 1 << 20
        let path: String
        let fd: Int32
        let base: UnsafeMutableRawPointer
        init(_ path: String) throws {
            self.path = path
            fd = open(path, O_RDWR | O_CREAT, 0o600)
            guard fd >= 0, ftruncate(fd, off_t(DIMM.offset + DIMM.size)) == 0 else { throw Errno.current }
            guard let p = mmap(nil, DIMM.offset + DIMM.size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0), p != MAP_FAILED else {
                throw Errno.current
            }
            base = p
        }
        deinit { munmap(base, DIMM.offset + DIMM.size); close(fd) }

        /// The ADD_MEM_REG / REM_MEM_REG payload: padding, then the region.
        static func payload(gpa: UInt64 = gpa, size: UInt64 = UInt64(size), uva: UInt64 = uva,
                            offset: UInt64 = UInt64(offset)) -> [UInt8] {
            u64(0) + u64(gpa) + u64(size) + u64(uva) + u64(offset)
        }
        /// Guest physical `gpa` (inside the DIMM) in this process's mapping of the file.
        func pointer(_ gpa: UInt64) -> UnsafeMutableRawPointer { base + DIMM.offset + Int(gpa - DIMM.gpa) }
        func write(_ bytes: [UInt8], at gpa: UInt64) { pointer(gpa).copyMemory(from: bytes, byteCount: bytes.count) }
        func read(_ n: Int, at gpa: UInt64) -> [UInt8] { Array(UnsafeRawBufferPointer(start: pointer(gpa), count: n)) }

        /// How many mappings of the file this process has (the test's own, plus the server's).
        var mappings: Int {
            ((try? String(contentsOfFile: "/proc/self/maps", encoding: .utf8)) ?? "")
                .split(separator: "\n").filter { $0.hasSuffix(" " + path) }.count
        }
    }

    /// A region added while the queue runs serves requests whose buffers lie in it, without
    /// the queue stopping (a blocked lock wait taken before goes on). After REM_MEM_REG a
    /// descriptor into the region fails its chain, but a request taken while the region was
    /// there still completes into it: the region stays mapped until then, and only then goes.
    func testAddAndRemoveARegionWhileTheQueueRuns() throws {
        let device = try DataDevice(self)
        let ram = device.ram, client = device.client
        let dimm = try DIMM(directory + "/dimm")
        XCTAssertEqual(dimm.mappings, 1)
        let fh = device.create("slots", flags: UInt32(O_RDWR))
        let node = ram.read(8, at: 0x13000 + 16).withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }
        client.send(36)
        XCTAssertEqual(Self.le64(try XCTUnwrap(client.reply()).payload), UInt64(VhostOffer.maxMemSlots))

        // A guest flock behind a host lock, its chain (heads 6, 7) in the base memory: it waits.
        let host = open(directory + "/src/slots", O_RDWR)
        defer { close(host) }
        XCTAssertEqual(flock(host, LOCK_EX), 0)
        let lk = Self.u64(fh) + Self.u64(0x77) + Self.u64(0) + Self.u64(UInt64.max) + Self.u32(UInt32(F_WRLCK)) + Self.u32(1)
            + Self.u32(1) + Self.u32(0)
        Self.run(ram, device.kick, 6, Self.request(33, unique: 50, node: node, lk), at: 0x30000)
        usleep(200_000)
        let usedBefore = ram.usedIdx

        // ADD_MEM_REG, as QEMU sends it: the region's fd, NEED_REPLY.
        client.send(37, DIMM.payload(), fds: [dimm.fd], needReply: true)
        XCTAssertEqual(Self.le64(try XCTUnwrap(client.reply()).payload), 0, book.all)
        XCTAssertEqual(dimm.mappings, 2, "the server did not map the region")
        XCTAssertTrue(book.contains("queue 1: now on the new memory table (2 region(s)), 1 request(s) in flight"), book.all)
        XCTAssertFalse(book.contains("queue 1 stopped"), "the queue was stopped for the new region: \(book.all)")

        // A WRITE whose request, data and reply all lie in the new region.
        let data = (0..<12288).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ 3) }
        let write = device.request(16, unique: 3, fh: fh, size: data.count, offset: 0, flags: UInt32(O_RDWR))
        let g = DIMM.gpa
        dimm.write(write, at: g + 0x1000)
        dimm.write(data, at: g + 0x3005)
        XCTAssertEqual(device.run(readable: [(g + 0x1000, write.count), (g + 0x3005, data.count)], writable: [(g + 0x2000, 24)]), 24,
                       book.all)
        XCTAssertEqual(dimm.read(16, at: g + 0x2000).withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 4, as: Int32.self) }, 0)
        XCTAssertEqual(Array(try Data(contentsOf: URL(fileURLWithPath: directory + "/src/slots"))), data)
        // A READ whose data lands in the new region, and one split between both memories.
        let read = device.request(15, unique: 4, fh: fh, size: data.count, offset: 0, flags: UInt32(O_RDWR))
        ram.write(read, at: 0x16000)
        XCTAssertEqual(device.run(readable: [(0x16000, read.count)], writable: [(0x17000, 16), (g + 0x8003, data.count)]),
                       UInt32(16 + data.count))
        XCTAssertEqual(dimm.read(data.count, at: g + 0x8003), data)
        ram.write([UInt8](repeating: 0, count: 4096), at: 0x70000)
        XCTAssertEqual(device.run(readable: [(0x16000, read.count)], writable: [(0x17000, 16), (0x70000, 4096), (g + 0x20000, 8192)]),
                       UInt32(16 + data.count))
        XCTAssertEqual(ram.read(4096, at: 0x70000) + dimm.read(8192, at: g + 0x20000), data)

        // A second flock waiting, on another file the host holds, its request and reply in the
        // new region.
        let fh2 = device.create("slots2", flags: UInt32(O_RDWR))
        let node2 = ram.read(8, at: 0x13000 + 16).withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }
        let host2 = open(directory + "/src/slots2", O_RDWR)
        defer { close(host2) }
        XCTAssertEqual(flock(host2, LOCK_EX), 0)
        let lk2 = Self.u64(fh2) + Self.u64(0x78) + Self.u64(0) + Self.u64(UInt64.max) + Self.u32(UInt32(F_WRLCK)) + Self.u32(1)
            + Self.u32(1) + Self.u32(0)
        let setlkw = Self.request(33, unique: 51, node: node2, lk2)
        dimm.write(setlkw, at: g + 0x40000)
        dimm.write([UInt8](repeating: 0xaa, count: 64), at: g + 0x41000)
        ram.descriptor(4, addr: g + 0x40000, len: UInt32(setlkw.count), flags: 1, next: 5)
        ram.descriptor(5, addr: g + 0x41000, len: 64, flags: 2)
        ram.offer(4)
        device.kick.signal()
        usleep(200_000)
        XCTAssertEqual(ram.usedIdx, usedBefore &+ 4, "a lock request did not wait: \(book.all)")

        // REM_MEM_REG, with the region's fd as the spec still allows (closed unused) and another
        // mmap offset (it does not count in the match).
        client.send(38, DIMM.payload(offset: 12345), fds: [dimm.fd], needReply: true)
        XCTAssertEqual(Self.le64(try XCTUnwrap(client.reply()).payload), 0, book.all)
        XCTAssertTrue(book.contains("queue 1: now on the new memory table (1 region(s)), 2 request(s) in flight"), book.all)
        XCTAssertEqual(dimm.mappings, 2, "the region was unmapped while a request taken through it waits")
        // A descriptor into the removed region fails its chain, and nothing reaches the file.
        dimm.write(write, at: g + 0x1000)
        dimm.write([UInt8](repeating: 0x55, count: data.count), at: g + 0x3005)
        XCTAssertEqual(device.run(readable: [(g + 0x1000, write.count), (g + 0x3005, data.count)], writable: [(g + 0x2000, 24)]), 0)
        ram.write(write, at: 0x14000)
        XCTAssertEqual(device.run(readable: [(0x14000, write.count), (g + 0x3005, data.count)], writable: [(0x15000, 24)]), 0)
        XCTAssertTrue(book.contains("is outside guest memory"), book.all)
        XCTAssertEqual(Array(try Data(contentsOf: URL(fileURLWithPath: directory + "/src/slots"))), data)

        // The host lets go of the first file: the first flock is granted (the queue never
        // stopped, so its wait never ended in EINTR); the region is still mapped for the second.
        let afterRemove = ram.usedIdx
        XCTAssertEqual(flock(host, LOCK_UN), 0)
        XCTAssertTrue(waitFor { ram.usedIdx == afterRemove &+ 1 }, book.all)
        XCTAssertEqual(ram.used(Int(afterRemove) % FakeRAM.qsize).id, 6)
        XCTAssertEqual(device.status(at: 0x31000), 0, "the lock wait across ADD/REM_MEM_REG did not end in a grant")
        XCTAssertEqual(dimm.mappings, 2)
        // And of the second: its reply is written into the region that left the table but is
        // still mapped; then the mapping goes.
        XCTAssertEqual(flock(host2, LOCK_UN), 0)
        XCTAssertTrue(waitFor { ram.usedIdx == afterRemove &+ 2 }, book.all)
        XCTAssertEqual(ram.used(Int(afterRemove &+ 1) % FakeRAM.qsize).id, 4)
        XCTAssertEqual(ram.used(Int(afterRemove &+ 1) % FakeRAM.qsize).len, 16)
        XCTAssertEqual(dimm.read(16, at: g + 0x41000).withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 4, as: Int32.self) }, 0)
        XCTAssertEqual(dimm.read(16, at: g + 0x41000).withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 8, as: UInt64.self) }, 51)
        XCTAssertTrue(waitFor { dimm.mappings == 1 }, "the removed region stayed mapped after its last request")
        XCTAssertFalse(book.contains("new FUSE session") || book.contains("same FUSE session"), book.all)
    }

    /// ADD_MEM_REG and REM_MEM_REG that cannot be honoured are refused one by one (REPLY_ACK 1,
    /// a log line), the memory table stays as it was and the connection goes on; a payload of
    /// the wrong size is a framing error like any other and ends the connection.
    func testMalformedMemoryRegionMessages() throws {
        let device = try DataDevice(self)
        let client = device.client
        let dimm = try DIMM(directory + "/dimm")
        let cases: [(String, [UInt8], [Int32], String)] = [
            ("no fd", DIMM.payload(), [], "ADD_MEM_REG refused: no file descriptor"),
            ("two fds", DIMM.payload(), [dimm.fd, dimm.fd], "ADD_MEM_REG refused: 2 file descriptors"),
            ("empty", DIMM.payload(size: 0), [dimm.fd], "is empty"),
            ("wraps", DIMM.payload(gpa: UInt64.max - 4095, size: 8192), [dimm.fd], "wraps around the address space"),
            ("offset past 2^63", DIMM.payload(offset: UInt64(Int64.max)), [dimm.fd], "wraps around the address space"),
            ("overlaps the base memory", DIMM.payload(gpa: 0x100000, uva: 0x7f14_0000_0000), [dimm.fd], "overlaps region [0x0"),
            ("overlaps in front-end addresses", DIMM.payload(uva: FakeRAM.uva + 0x1000), [dimm.fd], "overlaps region [0x0"),
        ]
        for (name, payload, fds, logged) in cases {
            client.send(37, payload, fds: fds, needReply: true)
            let reply = try XCTUnwrap(client.reply(), "\(name): connection closed:\n\(book.all)")
            XCTAssertEqual(reply.request, 37)
            XCTAssertEqual(Self.le64(reply.payload), 1, "\(name) was accepted")
            XCTAssertTrue(book.contains(logged), "\(name): not logged (\(logged)):\n\(book.all)")
        }
        // Removing what is not there.
        client.send(38, DIMM.payload(), needReply: true)
        XCTAssertEqual(Self.le64(try XCTUnwrap(client.reply()).payload), 1)
        XCTAssertTrue(book.contains("REM_MEM_REG refused: no region [0x100000000, +0x100000) at 0x7f1300000000 is mapped"), book.all)
        // The same region added, then removed with a different front-end address: not a match.
        client.send(37, DIMM.payload(), fds: [dimm.fd], needReply: true)
        XCTAssertEqual(Self.le64(try XCTUnwrap(client.reply()).payload), 0)
        client.send(38, DIMM.payload(uva: DIMM.uva + 0x1000), needReply: true)
        XCTAssertEqual(Self.le64(try XCTUnwrap(client.reply()).payload), 1)
        client.send(38, DIMM.payload(), needReply: true)
        XCTAssertEqual(Self.le64(try XCTUnwrap(client.reply()).payload), 0)
        // Slots: the base region plus 31 one-page regions fill them; the next is refused.
        for i in 0..<(VhostOffer.maxMemSlots - 1) {
            client.send(37, DIMM.payload(gpa: DIMM.gpa + UInt64(i) << 20, size: 4096, uva: DIMM.uva + UInt64(i) << 20), fds: [dimm.fd],
                        needReply: true)
            XCTAssertEqual(Self.le64(try XCTUnwrap(client.reply()).payload), 0, "region \(i): \(book.all)")
        }
        client.send(37, DIMM.payload(gpa: 0x2_0000_0000, size: 4096, uva: 0x7f15_0000_0000), fds: [dimm.fd], needReply: true)
        XCTAssertEqual(Self.le64(try XCTUnwrap(client.reply()).payload), 1)
        XCTAssertTrue(book.contains("all \(VhostOffer.maxMemSlots) memory slots are in use"), book.all)
        // The connection and the queue still work, through the base memory and an added page.
        let ram = device.ram
        let lookup = Self.request(1, unique: 9, node: 1, Array(".\0".utf8))
        ram.write(lookup, at: 0x14000)
        XCTAssertNotNil(device.run(readable: [(0x14000, lookup.count)], writable: [(DIMM.gpa + 0x100000, 256)]), book.all)
        // (Every one-page region maps the same page of the file: the reply is there.)
        XCTAssertEqual(dimm.read(16, at: DIMM.gpa).withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 8, as: UInt64.self) }, 9)
        // A payload of the wrong size ends the connection, as for any request.
        client.send(37, Self.u64(0) + Self.u64(0), fds: [dimm.fd])
        XCTAssertTrue(client.closedByServer)
        XCTAssertTrue(waitFor { self.book.contains("ADD_MEM_REG payload is 16 bytes, expected 40") }, book.all)
        XCTAssertTrue(waitFor { dimm.mappings == 1 }, "the server kept a mapping after the connection ended")
    }
}
