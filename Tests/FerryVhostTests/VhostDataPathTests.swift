import FerrySystem
import FerryVhost
import Foundation
import Glibc
import XCTest

/// READ and WRITE through a queue with their data left in guest memory: the host file gets
/// exactly the bytes of a WRITE whose data lies in several descriptors at odd places, a READ
/// lands in the chain's writable descriptors behind the reply header (the used length counts
/// the data), and a READ at the end of the file says how much it read.
extension VhostProtocolTests {
    func testReadAndWriteMoveDataInGuestMemory() throws {
        let ram = try FakeRAM(directory + "/ram")
        let kick = try EventCounter(), call = try EventCounter()
        let client = try startDevice(ram, kick: kick, call: call)
        defer { withExtendedLifetime(client) {} }
        /// Puts a chain of `readable` then `writable` (address, length) buffers at descriptors
        /// 0..., offers it and waits until it is used; returns its used length.
        func run(readable: [(UInt64, Int)], writable: [(UInt64, Int)]) -> UInt32? {
            let all = readable.map { ($0.0, $0.1, UInt16(0)) } + writable.map { ($0.0, $0.1, UInt16(2)) }
            for (i, (address, length, flags)) in all.enumerated() {
                let last = i == all.count - 1
                ram.descriptor(i, addr: address, len: UInt32(length), flags: flags | (last ? 0 : 1), next: UInt16(i + 1))
            }
            let before = ram.usedIdx
            ram.offer(0)
            kick.signal()
            guard waitFor({ ram.usedIdx == before &+ 1 }) else { return nil }
            return ram.used(Int(before) % FakeRAM.qsize).len
        }
        func status(at gpa: UInt64) -> Int32 { ram.read(16, at: gpa).withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 4, as: Int32.self) } }

        let initRequest = Self.initRequest(unique: 1)
        ram.write(initRequest, at: 0x10000)
        XCTAssertNotNil(run(readable: [(0x10000, initRequest.count)], writable: [(0x11000, 256)]))
        let create = Self.request(35, unique: 2, node: 1, Self.u32(UInt32(O_RDWR)) + Self.u32(0o100644) + Self.u32(0) + Self.u32(0)
            + Array("data\0".utf8))
        ram.write(create, at: 0x12000)
        XCTAssertNotNil(run(readable: [(0x12000, create.count)], writable: [(0x13000, 512)]))
        XCTAssertEqual(status(at: 0x13000), 0, "CREATE failed: \(book.all)")
        let fh = ram.read(8, at: 0x13000 + 16 + 128).withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }

        // WRITE: 8100 bytes in three descriptors, the middle one at an odd address.
        let data = (0..<8100).map { UInt8(truncatingIfNeeded: $0 &* 13 &+ 5) }
        let pieces: [(UInt64, Range<Int>)] = [(0x40000, 0..<100), (0x50007, 100..<5100), (0x60000, 5100..<8100)]
        for (gpa, range) in pieces { ram.write(Array(data[range]), at: gpa) }
        func io(_ size: Int, offset: UInt64) -> [UInt8] {
            Self.u64(fh) + Self.u64(offset) + Self.u32(UInt32(size)) + Self.u32(0) + Self.u64(0) + Self.u32(UInt32(O_RDWR)) + Self.u32(0)
        }
        var write = Self.request(16, unique: 3, node: 2, io(data.count, offset: 0))
        write.replaceSubrange(0..<4, with: Self.u32(UInt32(write.count + data.count)))
        ram.write(write, at: 0x14000)
        let written = run(readable: [(0x14000, write.count)] + pieces.map { ($0.0, $0.1.count) }, writable: [(0x15000, 24)])
        XCTAssertEqual(written, 24)
        XCTAssertEqual(status(at: 0x15000), 0, book.all)
        XCTAssertEqual(ram.read(4, at: 0x15010).withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) }, 8100)
        XCTAssertEqual(Array(try Data(contentsOf: URL(fileURLWithPath: directory + "/src/data"))), data)

        // READ of 8192 bytes: the reply header in one descriptor, the data in two more.
        let read = Self.request(15, unique: 4, node: 2, io(8192, offset: 0))
        ram.write(read, at: 0x16000)
        ram.write([UInt8](repeating: 0xee, count: 0x3000), at: 0x70000)
        let used = run(readable: [(0x16000, read.count)], writable: [(0x17000, 16), (0x70000, 4000), (0x71003, 5000)])
        XCTAssertEqual(status(at: 0x17000), 0, book.all)
        XCTAssertEqual(used, 16 + 8100, "the used length counts the data read into place")
        XCTAssertEqual(ram.read(4, at: 0x17000).withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) }, 16 + 8100)
        XCTAssertEqual(ram.read(4000, at: 0x70000) + ram.read(4100, at: 0x71003), data)
        XCTAssertEqual(ram.read(1, at: 0x71003 + 4100), [0xee], "nothing written past the end of the file's data")

        // A READ from the middle, header and data sharing one descriptor.
        let tail = Self.request(15, unique: 5, node: 2, io(1000, offset: 7600))
        ram.write(tail, at: 0x18000)
        XCTAssertEqual(run(readable: [(0x18000, tail.count)], writable: [(0x19000, 16 + 1000)]), 16 + 500)
        XCTAssertEqual(ram.read(500, at: 0x19010), Array(data[7600...]))
        XCTAssertFalse(book.contains("error"), book.all)
    }
}

extension VhostProtocolTests {
    /// An O_DIRECT host file and guest buffers at odd addresses: the data goes through Ferry's
    /// page-aligned buffers (the host would refuse the guest's), and arrives intact both ways.
    func testODirectWithUnalignedGuestBuffersGoesThroughAlignedBuffers() throws {
        let ram = try FakeRAM(directory + "/ram")
        let kick = try EventCounter(), call = try EventCounter()
        let client = try startDevice(ram, kick: kick, call: call)
        defer { withExtendedLifetime(client) {} }
        func run(readable: [(UInt64, Int)], writable: [(UInt64, Int)]) -> UInt32? {
            let all = readable.map { ($0.0, $0.1, UInt16(0)) } + writable.map { ($0.0, $0.1, UInt16(2)) }
            for (i, (address, length, flags)) in all.enumerated() {
                ram.descriptor(i, addr: address, len: UInt32(length), flags: flags | (i == all.count - 1 ? 0 : 1), next: UInt16(i + 1))
            }
            let before = ram.usedIdx
            ram.offer(0)
            kick.signal()
            guard waitFor({ ram.usedIdx == before &+ 1 }) else { return nil }
            return ram.used(Int(before) % FakeRAM.qsize).len
        }
        func status(at gpa: UInt64) -> Int32 { ram.read(16, at: gpa).withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 4, as: Int32.self) } }
        let initRequest = Self.initRequest(unique: 1)
        ram.write(initRequest, at: 0x10000)
        XCTAssertNotNil(run(readable: [(0x10000, initRequest.count)], writable: [(0x11000, 256)]))
        let flags = UInt32(O_RDWR | HostFlags.oDirect)
        let create = Self.request(35, unique: 2, node: 1, Self.u32(flags) + Self.u32(0o100644) + Self.u32(0) + Self.u32(0)
            + Array("direct\0".utf8))
        ram.write(create, at: 0x12000)
        XCTAssertNotNil(run(readable: [(0x12000, create.count)], writable: [(0x13000, 512)]))
        XCTAssertEqual(status(at: 0x13000), 0, "CREATE failed: \(book.all)")
        let fh = ram.read(8, at: 0x13000 + 16 + 128).withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }
        func io(_ size: Int, offset: UInt64) -> [UInt8] {
            Self.u64(fh) + Self.u64(offset) + Self.u32(UInt32(size)) + Self.u32(0) + Self.u64(0) + Self.u32(flags) + Self.u32(0)
        }
        // The server (in this process) holds the host file open with O_DIRECT, which refuses
        // buffers at these addresses: only the aligned bounce makes the requests work.
        let fds = try FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")
        let direct = fds.filter { fd in
            guard (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/" + fd)) == directory + "/src/direct",
                  let info = try? String(contentsOfFile: "/proc/self/fdinfo/" + fd, encoding: .utf8),
                  let line = info.split(separator: "\n").first(where: { $0.hasPrefix("flags:") }),
                  let value = Int32(line.dropFirst(6).trimmingCharacters(in: .whitespaces), radix: 8) else { return false }
            return value & HostFlags.oDirect != 0
        }
        XCTAssertFalse(direct.isEmpty, "the host file is not open with O_DIRECT")
        let data = (0..<8192).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ 1) }
        ram.write(Array(data[..<100]), at: 0x40007)
        ram.write(Array(data[100...]), at: 0x50003)
        var write = Self.request(16, unique: 3, node: 2, io(data.count, offset: 4096))
        write.replaceSubrange(0..<4, with: Self.u32(UInt32(write.count + data.count)))
        ram.write(write, at: 0x14000)
        XCTAssertEqual(run(readable: [(0x14000, write.count), (0x40007, 100), (0x50003, 8092)], writable: [(0x15000, 24)]), 24)
        XCTAssertEqual(status(at: 0x15000), 0, book.all)
        XCTAssertEqual(ram.read(4, at: 0x15010).withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) }, 8192)
        let onHost = Array(try Data(contentsOf: URL(fileURLWithPath: directory + "/src/direct")))
        XCTAssertEqual(Array(onHost.suffix(from: 4096)), data)

        let read = Self.request(15, unique: 4, node: 2, io(8192, offset: 4096))
        ram.write(read, at: 0x16000)
        XCTAssertEqual(run(readable: [(0x16000, read.count)], writable: [(0x17000, 16), (0x60005, 3000), (0x70001, 5192)]), 16 + 8192)
        XCTAssertEqual(status(at: 0x17000), 0, book.all)
        XCTAssertEqual(ram.read(3000, at: 0x60005) + ram.read(5192, at: 0x70001), data)
    }
}
