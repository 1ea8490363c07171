import FerrySystem
import FerryVhost
import Foundation
import Glibc
import XCTest

/// SET_MEM_TABLE while the queues run (QEMU sends one on memory hot-plug when
/// CONFIGURE_MEM_SLOTS is not negotiated): the running queue switches to the new mapping
/// between chains without stopping (an open file handle stays valid, the queue is not
/// restarted), and data then moves through the new table, here split into two regions with a
/// WRITE whose data crosses from one into the other.
extension VhostProtocolTests {
    func testANewMemoryTableWhileRunningIsMappedIntoTheRunningQueue() throws {
        let device = try DataDevice(self)
        let ram = device.ram
        let fh = device.create("remap", flags: UInt32(O_RDWR))
        // The same guest memory as two regions: [0, 1 MiB) and [1 MiB, 2 MiB) of the file.
        let half = UInt64(FakeRAM.size / 2)
        let table = Self.u32(2) + Self.u32(0)
            + Self.u64(0) + Self.u64(half) + Self.u64(FakeRAM.uva) + Self.u64(0)
            + Self.u64(half) + Self.u64(half) + Self.u64(FakeRAM.uva + half) + Self.u64(half)
        device.client.send(5, table, fds: [ram.fd, ram.fd], needReply: true)
        XCTAssertEqual(Self.le64(try XCTUnwrap(device.client.reply()).payload), 0)
        XCTAssertTrue(book.contains("ran: they switched to it without stopping"), book.all)
        XCTAssertTrue(book.contains("queue 1: now on the new memory table (2 region(s))"), book.all)
        XCTAssertFalse(book.contains("queue 1 stopped"), book.all)
        XCTAssertFalse(book.contains("new FUSE session"), book.all)

        // 8 KiB of data from 4 KiB below the region boundary to 4 KiB above it.
        let data = (0..<8192).map { UInt8(truncatingIfNeeded: $0 &* 3 &+ 11) }
        ram.write(data, at: half - 4096)
        let write = device.request(16, unique: 3, fh: fh, size: data.count, offset: 0, flags: UInt32(O_RDWR))
        ram.write(write, at: 0x14000)
        XCTAssertEqual(device.run(readable: [(0x14000, write.count), (half - 4096, 8192)], writable: [(0x15000, 24)]), 24,
                       book.all)
        XCTAssertEqual(device.status(at: 0x15000), 0, "the file handle opened before the new table: \(book.all)")
        XCTAssertEqual(Array(try Data(contentsOf: URL(fileURLWithPath: directory + "/src/remap"))), data)
        // And a READ into the second region.
        let read = device.request(15, unique: 4, fh: fh, size: 8192, offset: 0, flags: UInt32(O_RDWR))
        ram.write(read, at: 0x16000)
        XCTAssertEqual(device.run(readable: [(0x16000, read.count)], writable: [(0x17000, 16), (half + 0x10000, 8192)]), 16 + 8192)
        XCTAssertEqual(ram.read(8192, at: half + 0x10000), data)
    }
}
