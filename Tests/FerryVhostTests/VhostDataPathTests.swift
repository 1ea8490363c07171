import FerrySystem
import FerryVhost
import Foundation
import Glibc
import XCTest

/// READ and WRITE through a queue with their data left in guest memory: the host file gets
/// exactly the bytes of a WRITE whose data lies in several descriptors at odd places, a READ
/// lands in the chain's writable descriptors behind the reply header (the used length counts
/// the data), a READ at the end of the file says how much it read, and an O_DIRECT host file
/// gets guest buffers it could not take through Ferry's aligned buffers.
extension VhostProtocolTests {
    /// Queue 1 of a started device, FUSE_INIT done, for data requests.
    final class DataDevice {
        let ram: FakeRAM
        let kick: EventCounter, call: EventCounter
        let client: Client
        let test: VhostProtocolTests

        init(_ test: VhostProtocolTests) throws {
            self.test = test
            ram = try FakeRAM(test.directory + "/ram")
            kick = try EventCounter()
            call = try EventCounter()
            client = try test.startDevice(ram, kick: kick, call: call)
            let initRequest = VhostProtocolTests.initRequest(unique: 1)
            ram.write(initRequest, at: 0x10000)
            XCTAssertNotNil(run(readable: [(0x10000, initRequest.count)], writable: [(0x11000, 256)]))
        }

        /// Puts a chain of `readable` then `writable` (address, length) buffers at descriptors
        /// 0..., offers it and waits until it is used; returns its used length.
        func run(readable: [(UInt64, Int)], writable: [(UInt64, Int)]) -> UInt32? {
            let all = readable.map { ($0.0, $0.1, UInt16(0)) } + writable.map { ($0.0, $0.1, UInt16(2)) }
            for (i, (address, length, flags)) in all.enumerated() {
                let last = i == all.count - 1
                ram.descriptor(i, addr: address, len: UInt32(length), flags: flags | (last ? 0 : 1), next: UInt16(i + 1))
            }
            let before = ram.usedIdx, ram = self.ram
            ram.offer(0)
            kick.signal()
            guard test.waitFor({ ram.usedIdx == before &+ 1 }) else { return nil }
            return ram.used(Int(before) % FakeRAM.qsize).len
        }

        /// The error field of the reply at `gpa`.
        func status(at gpa: UInt64) -> Int32 { ram.read(16, at: gpa).withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 4, as: Int32.self) } }

        /// CREATE `name` in the root (node 2 then) with open `flags`; returns its fh.
        func create(_ name: String, flags: UInt32) -> UInt64 {
            let create = VhostProtocolTests.request(35, unique: 2, node: 1, u32(flags) + u32(0o100644) + u32(0) + u32(0) + Array("\(name)\0".utf8))
            ram.write(create, at: 0x12000)
            XCTAssertNotNil(run(readable: [(0x12000, create.count)], writable: [(0x13000, 512)]))
            XCTAssertEqual(status(at: 0x13000), 0, "CREATE failed: \(test.book.all)")
            return ram.read(8, at: 0x13000 + 16 + 128).withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }
        }

        /// A READ (15) or WRITE (16) of node 2: headers only; a WRITE's length counts `size`.
        func request(_ opcode: UInt32, unique: UInt64, fh: UInt64, size: Int, offset: UInt64, flags: UInt32) -> [UInt8] {
            let io = u64(fh) + u64(offset) + u32(UInt32(size)) + u32(0) + u64(0) + u32(flags) + u32(0)
            var bytes = VhostProtocolTests.request(opcode, unique: unique, node: 2, io)
            if opcode == 16 { bytes.replaceSubrange(0..<4, with: u32(UInt32(bytes.count + size))) }
            return bytes
        }

        private func u32(_ v: UInt32) -> [UInt8] { VhostProtocolTests.u32(v) }
        private func u64(_ v: UInt64) -> [UInt8] { VhostProtocolTests.u64(v) }
    }

    func testReadAndWriteMoveDataInGuestMemory() throws {
        let device = try DataDevice(self)
        let ram = device.ram
        let fh = device.create("data", flags: UInt32(O_RDWR))

        // WRITE: 8100 bytes in three descriptors, the middle one at an odd address.
        let data = (0..<8100).map { UInt8(truncatingIfNeeded: $0 &* 13 &+ 5) }
        let pieces: [(UInt64, Range<Int>)] = [(0x40000, 0..<100), (0x50007, 100..<5100), (0x60000, 5100..<8100)]
        for (gpa, range) in pieces { ram.write(Array(data[range]), at: gpa) }
        let write = device.request(16, unique: 3, fh: fh, size: data.count, offset: 0, flags: UInt32(O_RDWR))
        ram.write(write, at: 0x14000)
        XCTAssertEqual(device.run(readable: [(0x14000, write.count)] + pieces.map { ($0.0, $0.1.count) }, writable: [(0x15000, 24)]), 24)
        XCTAssertEqual(device.status(at: 0x15000), 0, book.all)
        XCTAssertEqual(ram.read(4, at: 0x15010).withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) }, 8100)
        XCTAssertEqual(Array(try Data(contentsOf: URL(fileURLWithPath: directory + "/src/data"))), data)

        // READ of 8192 bytes: the reply header in one descriptor, the data in two more.
        let read = device.request(15, unique: 4, fh: fh, size: 8192, offset: 0, flags: UInt32(O_RDWR))
        ram.write(read, at: 0x16000)
        ram.write([UInt8](repeating: 0xee, count: 0x3000), at: 0x70000)
        let used = device.run(readable: [(0x16000, read.count)], writable: [(0x17000, 16), (0x70000, 4000), (0x71003, 5000)])
        XCTAssertEqual(device.status(at: 0x17000), 0, book.all)
        XCTAssertEqual(used, 16 + 8100, "the used length counts the data read into place")
        XCTAssertEqual(ram.read(4, at: 0x17000).withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) }, 16 + 8100)
        XCTAssertEqual(ram.read(4000, at: 0x70000) + ram.read(4100, at: 0x71003), data)
        XCTAssertEqual(ram.read(1, at: 0x71003 + 4100), [0xee], "nothing written past the end of the file's data")

        // A READ from the middle, header and data sharing one descriptor.
        let tail = device.request(15, unique: 5, fh: fh, size: 1000, offset: 7600, flags: UInt32(O_RDWR))
        ram.write(tail, at: 0x18000)
        XCTAssertEqual(device.run(readable: [(0x18000, tail.count)], writable: [(0x19000, 16 + 1000)]), 16 + 500)
        XCTAssertEqual(ram.read(500, at: 0x19010), Array(data[7600...]))
        XCTAssertFalse(book.contains("error"), book.all)
    }

    /// An O_DIRECT host file and guest buffers at odd addresses: the data goes through Ferry's
    /// page-aligned buffers (the host would refuse the guest's), and arrives intact both ways.
    func testODirectWithUnalignedGuestBuffersGoesThroughAlignedBuffers() throws {
        let device = try DataDevice(self)
        let ram = device.ram
        let flags = UInt32(O_RDWR | HostFlags.oDirect)
        let fh = device.create("direct", flags: flags)
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
        let write = device.request(16, unique: 3, fh: fh, size: data.count, offset: 4096, flags: flags)
        ram.write(write, at: 0x14000)
        XCTAssertEqual(device.run(readable: [(0x14000, write.count), (0x40007, 100), (0x50003, 8092)], writable: [(0x15000, 24)]), 24)
        XCTAssertEqual(device.status(at: 0x15000), 0, book.all)
        XCTAssertEqual(ram.read(4, at: 0x15010).withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) }, 8192)
        let onHost = Array(try Data(contentsOf: URL(fileURLWithPath: directory + "/src/direct")))
        XCTAssertEqual(Array(onHost.suffix(from: 4096)), data)

        let read = device.request(15, unique: 4, fh: fh, size: 8192, offset: 4096, flags: flags)
        ram.write(read, at: 0x16000)
        XCTAssertEqual(device.run(readable: [(0x16000, read.count)], writable: [(0x17000, 16), (0x60005, 3000), (0x70001, 5192)]), 16 + 8192)
        XCTAssertEqual(device.status(at: 0x17000), 0, book.all)
        XCTAssertEqual(ram.read(3000, at: 0x60005) + ram.read(5192, at: 0x70001), data)
    }
}
