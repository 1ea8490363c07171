import FerrySystem
import FerryVhost
import Foundation
import Glibc
import XCTest

/// A device with two request queues (QEMU's `vhost-user-fs-pci,num-request-queues=2`): both
/// start, each with its own thread, and requests kicked on both at once are answered on the
/// queue they came from (replies, used entries, interrupts, GET_VRING_BASE indexes).
extension VhostProtocolTests {
    func testTwoRequestQueuesServeTheirOwnChains() throws {
        let ram = try FakeRAM(directory + "/ram")
        let kick = try EventCounter(), call = try EventCounter()
        let client = try startDevice(ram, kick: kick, call: call)
        // Queue 2: descriptors at 0x3000, available ring at 0x4000, used ring at 0x5000.
        let kick2 = try EventCounter(), call2 = try EventCounter()
        let desc2 = 0x3000, avail2 = 0x4000, used2 = 0x5000
        client.send(8, Self.u32(2) + Self.u32(UInt32(FakeRAM.qsize)))
        client.send(10, Self.u32(2) + Self.u32(0))
        client.send(9, Self.u32(2) + Self.u32(0) + Self.u64(FakeRAM.uva + UInt64(desc2)) + Self.u64(FakeRAM.uva + UInt64(used2))
                    + Self.u64(FakeRAM.uva + UInt64(avail2)) + Self.u64(0))
        client.send(12, Self.u64(2), fds: [kick2.fd.rawValue])
        client.send(13, Self.u64(2), fds: [call2.fd.rawValue])
        client.send(18, Self.u32(2) + Self.u32(1), needReply: true)
        XCTAssertEqual(Self.le64(try XCTUnwrap(client.reply()).payload), 0)
        XCTAssertTrue(waitFor { self.book.contains("queue 2 (requests, size 8) started") }, book.all)

        /// A two-descriptor chain (request, reply space) at descriptor `head` of the queue
        /// whose table is at `table`.
        func chain(table: Int, _ head: Int, request: [UInt8], at gpa: UInt64, reply: UInt64, space: UInt32 = 512) {
            ram.write(request, at: gpa)
            for (i, (address, length, flags)) in [(gpa, UInt32(request.count), UInt16(1)), (reply, space, UInt16(2))].enumerated() {
                let p = ram.base + table + 16 * (head + i)
                p.storeBytes(of: address, toByteOffset: 0, as: UInt64.self)
                p.storeBytes(of: length, toByteOffset: 8, as: UInt32.self)
                p.storeBytes(of: flags, toByteOffset: 12, as: UInt16.self)
                p.storeBytes(of: UInt16(head + 1), toByteOffset: 14, as: UInt16.self)
            }
        }
        var avail2Idx: UInt16 = 0
        func offer2(_ head: UInt16) {
            (ram.base + avail2).storeBytes(of: head, toByteOffset: 4 + 2 * (Int(avail2Idx) % FakeRAM.qsize), as: UInt16.self)
            avail2Idx &+= 1
            (ram.base + avail2).storeBytes(of: avail2Idx, toByteOffset: 2, as: UInt16.self)
        }
        var used2Idx: UInt16 { (ram.base + used2).load(fromByteOffset: 2, as: UInt16.self) }
        func status(at gpa: UInt64) -> Int32 { ram.read(16, at: gpa).withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 4, as: Int32.self) } }

        chain(table: Int(FakeRAM.desc), 0, request: Self.initRequest(unique: 1), at: 0x10000, reply: 0x11000)
        ram.offer(0)
        kick.signal()
        XCTAssertTrue(waitFor { ram.usedIdx == 1 })
        // GETATTR of the root on both queues at once, four on each.
        for i in 0..<4 {
            let getattr = Self.request(3, unique: UInt64(10 + i), node: 1, Self.u32(0) + Self.u32(0) + Self.u64(0))
            chain(table: Int(FakeRAM.desc), 2 * i, request: getattr, at: 0x20000 + UInt64(i) * 0x2000, reply: 0x21000 + UInt64(i) * 0x2000)
            let other = Self.request(3, unique: UInt64(20 + i), node: 1, Self.u32(0) + Self.u32(0) + Self.u64(0))
            chain(table: desc2, 2 * i, request: other, at: 0x40000 + UInt64(i) * 0x2000, reply: 0x41000 + UInt64(i) * 0x2000)
        }
        for i in 0..<4 { ram.offer(UInt16(2 * i)); offer2(UInt16(2 * i)) }
        kick.signal()
        kick2.signal()
        XCTAssertTrue(waitFor { ram.usedIdx == 5 && used2Idx == 4 }, "used: queue 1 \(ram.usedIdx), queue 2 \(used2Idx)\n\(book.all)")
        XCTAssertEqual(Host.waitReadable([call2.fd.rawValue], timeoutMilliseconds: 5000), [true], "queue 2 interrupted the guest")
        for i in 0..<4 {
            XCTAssertEqual(status(at: 0x21000 + UInt64(i) * 0x2000), 0)
            XCTAssertEqual(status(at: 0x41000 + UInt64(i) * 0x2000), 0)
            XCTAssertEqual(ram.read(8, at: 0x41008 + UInt64(i) * 0x2000).withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }, UInt64(20 + i),
                           "queue 2's reply went to queue 2's chain")
        }
        // Both threads stop on GET_VRING_BASE, each at its own index.
        client.send(11, Self.u32(2) + Self.u32(0))
        XCTAssertEqual(try XCTUnwrap(client.reply()).payload, Self.u32(2) + Self.u32(4))
        client.send(11, Self.u32(1) + Self.u32(0))
        XCTAssertEqual(try XCTUnwrap(client.reply()).payload, Self.u32(1) + Self.u32(5))
    }
}
