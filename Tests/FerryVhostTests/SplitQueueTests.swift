import FerryVhost
import XCTest

/// A fake guest: 1 MiB of memory at guest address 0x100000 (front-end address 0x7f0000000000),
/// with a queue of `size` entries at fixed places.
final class FakeGuest {
    static let gpa: UInt64 = 0x100000, uva: UInt64 = 0x7f00_0000_0000, bytes = 1 << 20
    let base = UnsafeMutableRawPointer.allocate(byteCount: FakeGuest.bytes, alignment: 4096)
    let memory: GuestMemory
    let size: Int
    let descGPA: UInt64 = FakeGuest.gpa, availGPA: UInt64 = FakeGuest.gpa + 0x10000, usedGPA: UInt64 = FakeGuest.gpa + 0x20000
    var availIdx: UInt16 = 0
    let dataGPA: UInt64 = FakeGuest.gpa + 0x40000

    init(size: Int = 8) {
        base.initializeMemory(as: UInt8.self, repeating: 0, count: FakeGuest.bytes)
        let b = base
        memory = GuestMemory(regions: [.init(region: MemoryRegion(guestAddress: FakeGuest.gpa, size: UInt64(FakeGuest.bytes),
                                                                   userAddress: FakeGuest.uva, mmapOffset: 0), host: base)]) { b.deallocate() }
        self.size = size
    }

    func host(_ gpa: UInt64) -> UnsafeMutableRawPointer { base + Int(gpa - FakeGuest.gpa) }

    var address: VringAddress {
        VringAddress(index: 1, flags: 0, descriptorTable: descGPA - FakeGuest.gpa + FakeGuest.uva,
                     usedRing: usedGPA - FakeGuest.gpa + FakeGuest.uva, availableRing: availGPA - FakeGuest.gpa + FakeGuest.uva, log: 0)
    }

    func queue(eventIndex: Bool = false, indirect: Bool = true) throws -> SplitQueue {
        try SplitQueue(memory: memory, size: size, address: address, base: 0, eventIndex: eventIndex, indirect: indirect)
    }

    func setDescriptor(table: UInt64? = nil, _ i: Int, addr: UInt64, len: UInt32, flags: UInt16, next: UInt16 = 0) {
        let p = host(table ?? descGPA) + 16 * i
        p.storeBytes(of: addr.littleEndian, toByteOffset: 0, as: UInt64.self)
        p.storeBytes(of: len.littleEndian, toByteOffset: 8, as: UInt32.self)
        p.storeBytes(of: flags.littleEndian, toByteOffset: 12, as: UInt16.self)
        p.storeBytes(of: next.littleEndian, toByteOffset: 14, as: UInt16.self)
    }

    func makeAvailable(_ head: UInt16) {
        host(availGPA).storeBytes(of: head.littleEndian, toByteOffset: 4 + 2 * (Int(availIdx) % size), as: UInt16.self)
        availIdx &+= 1
        host(availGPA).storeBytes(of: availIdx.littleEndian, toByteOffset: 2, as: UInt16.self)
    }

    func setAvailIndex(_ v: UInt16) { host(availGPA).storeBytes(of: v.littleEndian, toByteOffset: 2, as: UInt16.self) }
    func setUsedEvent(_ v: UInt16) { host(availGPA).storeBytes(of: v.littleEndian, toByteOffset: 4 + 2 * size, as: UInt16.self) }
    var usedIdx: UInt16 { host(usedGPA).load(fromByteOffset: 2, as: UInt16.self) }
    func usedEntry(_ i: Int) -> (UInt32, UInt32) {
        (host(usedGPA).load(fromByteOffset: 4 + 8 * i, as: UInt32.self), host(usedGPA).load(fromByteOffset: 8 + 8 * i, as: UInt32.self))
    }
    var availEvent: UInt16 { host(usedGPA).load(fromByteOffset: 4 + 8 * size, as: UInt16.self) }
}

final class SplitQueueTests: XCTestCase {
    static let next: UInt16 = 1, write: UInt16 = 2, indirect: UInt16 = 4

    func testChainReadWriteAndUsedRing() throws {
        let g = FakeGuest()
        let q = try g.queue()
        XCTAssertNil(try q.pop())
        let request = Array("hello, device".utf8)
        g.host(g.dataGPA).copyMemory(from: request, byteCount: request.count)
        g.setDescriptor(0, addr: g.dataGPA, len: 5, flags: Self.next, next: 3)
        g.setDescriptor(3, addr: g.dataGPA + 5, len: UInt32(request.count - 5), flags: Self.next, next: 5)
        g.setDescriptor(5, addr: g.dataGPA + 0x1000, len: 64, flags: Self.write)
        g.makeAvailable(0)
        let chain = try XCTUnwrap(try q.pop())
        XCTAssertEqual(chain.head, 0)
        XCTAssertEqual(chain.readableLength, request.count)
        XCTAssertEqual(chain.writableLength, 64)
        var copy = [UInt8](repeating: 0, count: 100)
        let n = copy.withUnsafeMutableBytes { chain.copyReadable(into: $0) }
        XCTAssertEqual(Array(copy[0..<n]), request)
        XCTAssertEqual([UInt8](repeating: 7, count: 10).withUnsafeBytes { chain.writeReply($0) }, 10)
        XCTAssertNil([UInt8](repeating: 7, count: 65).withUnsafeBytes { chain.writeReply($0) })
        XCTAssertEqual(g.host(g.dataGPA + 0x1000).load(fromByteOffset: 9, as: UInt8.self), 7)
        q.push(head: chain.head, length: 10)
        XCTAssertEqual(g.usedIdx, 1)
        XCTAssertEqual(g.usedEntry(0).0, 0)
        XCTAssertEqual(g.usedEntry(0).1, 10)
        XCTAssertEqual(q.lastAvailable, 1)
        XCTAssertTrue(q.needsSignal())   // no EVENT_IDX, NO_INTERRUPT clear
        XCTAssertNil(try q.pop())
    }

    func testIndirectTable() throws {
        let g = FakeGuest()
        let table = g.dataGPA + 0x8000
        g.setDescriptor(table: table, 0, addr: g.dataGPA, len: 40, flags: Self.next, next: 1)
        g.setDescriptor(table: table, 1, addr: g.dataGPA + 0x100, len: 16, flags: Self.write)
        g.setDescriptor(2, addr: table, len: 32, flags: Self.indirect)
        g.makeAvailable(2)
        let chain = try XCTUnwrap(try g.queue().pop())
        XCTAssertEqual(chain.readableLength, 40)
        XCTAssertEqual(chain.writableLength, 16)

        // Not negotiated, nested, with NEXT, odd size: errors for that chain only.
        let g2 = FakeGuest()
        g2.setDescriptor(0, addr: table, len: 32, flags: Self.indirect)
        g2.makeAvailable(0)
        XCTAssertThrowsError(try g2.queue(indirect: false).pop())
        let g3 = FakeGuest()
        g3.setDescriptor(table: table, 0, addr: table, len: 16, flags: Self.indirect)
        g3.setDescriptor(0, addr: table, len: 16, flags: Self.indirect)
        g3.setDescriptor(1, addr: table, len: 16, flags: Self.indirect | Self.next, next: 0)
        g3.setDescriptor(2, addr: table, len: 17, flags: Self.indirect)
        g3.setDescriptor(3, addr: FakeGuest.gpa, len: 16 * 32769, flags: Self.indirect)   // longer than any queue
        g3.makeAvailable(0); g3.makeAvailable(1); g3.makeAvailable(2); g3.makeAvailable(3)
        let q3 = try g3.queue()
        for head in [UInt16(0), 1, 2, 3] {
            XCTAssertThrowsError(try q3.pop()) { error in
                guard case let QueueError.badChain(h, _) = error else { return XCTFail("\(error)") }
                XCTAssertEqual(h, head)
            }
        }
        XCTAssertFalse(q3.isBroken)
    }

    func testHostileChainsAreErrorsForThatChain() throws {
        let g = FakeGuest()
        g.setDescriptor(0, addr: g.dataGPA, len: 16, flags: Self.next, next: 1)   // loop 0 -> 1 -> 0
        g.setDescriptor(1, addr: g.dataGPA, len: 16, flags: Self.next, next: 0)
        g.setDescriptor(2, addr: 0x10, len: 16, flags: 0)                           // below guest memory
        g.setDescriptor(3, addr: FakeGuest.gpa + UInt64(FakeGuest.bytes) - 8, len: 16, flags: 0)   // runs off the end
        g.setDescriptor(4, addr: g.dataGPA, len: 16, flags: Self.write | Self.next, next: 5)       // readable after writable
        g.setDescriptor(5, addr: g.dataGPA, len: 16, flags: 0)
        g.setDescriptor(6, addr: g.dataGPA, len: 16, flags: Self.next, next: 200)  // next outside the table
        g.setDescriptor(7, addr: UInt64.max - 4, len: 0xffff_ffff, flags: 0)       // wraps
        for head in UInt16(0)..<8 where head != 1 && head != 5 { g.makeAvailable(head) }
        let q = try g.queue()
        for _ in 0..<6 {
            XCTAssertThrowsError(try q.pop()) { error in
                guard case QueueError.badChain = error else { return XCTFail("\(error)") }
            }
        }
        XCTAssertNil(try q.pop())
        XCTAssertFalse(q.isBroken)
    }

    func testLongChainWithinTableIsFine() throws {
        let g = FakeGuest(size: 8)
        for i in 0..<8 { g.setDescriptor(i, addr: g.dataGPA, len: 1, flags: i < 7 ? Self.next : 0, next: UInt16(i + 1)) }
        g.makeAvailable(0)
        XCTAssertEqual(try g.queue().pop()?.readableLength, 8)
    }

    func testCorruptAvailableRingBreaksQueue() throws {
        let g = FakeGuest()
        g.setAvailIndex(100)   // 100 chains in a queue of 8
        let q = try g.queue()
        XCTAssertThrowsError(try q.pop()) { error in
            guard case QueueError.broken = error else { return XCTFail("\(error)") }
        }
        XCTAssertTrue(q.isBroken)
        XCTAssertNil(try q.pop())
        let g2 = FakeGuest()
        g2.makeAvailable(9)    // head beyond the table
        XCTAssertThrowsError(try g2.queue().pop())
    }

    func testRingsOutsideMemoryOrBadSizeAreRefused() {
        let g = FakeGuest()
        var address = g.address
        address.usedRing = FakeGuest.uva + UInt64(FakeGuest.bytes) - 8
        XCTAssertThrowsError(try SplitQueue(memory: g.memory, size: 8, address: address, base: 0, eventIndex: false, indirect: false))
        XCTAssertThrowsError(try SplitQueue(memory: g.memory, size: 6, address: g.address, base: 0, eventIndex: false, indirect: false))
        XCTAssertThrowsError(try SplitQueue(memory: g.memory, size: 65536, address: g.address, base: 0, eventIndex: false, indirect: false))
    }

    func testEventIndex() throws {
        let g = FakeGuest()
        let q = try g.queue(eventIndex: true)
        for i in 0..<4 { g.setDescriptor(i, addr: g.dataGPA, len: 8, flags: 0); g.makeAvailable(UInt16(i)) }
        _ = try q.pop()
        XCTAssertEqual(g.availEvent, 1)          // the device asks to be kicked after entry 1
        q.push(head: 0, length: 0)
        XCTAssertTrue(q.needsSignal())            // first signal always goes out
        g.setUsedEvent(5)                          // the driver wants an interrupt once used idx passes 5
        _ = try q.pop(); q.push(head: 1, length: 0)
        XCTAssertFalse(q.needsSignal())
        _ = try q.pop(); q.push(head: 2, length: 0)
        _ = try q.pop(); q.push(head: 3, length: 0)
        XCTAssertFalse(q.needsSignal())           // used idx 4: event 5 not crossed
        for i in 0..<2 { g.setDescriptor(i, addr: g.dataGPA, len: 8, flags: 0); g.makeAvailable(UInt16(i)) }
        _ = try q.pop(); q.push(head: 0, length: 0)
        _ = try q.pop(); q.push(head: 1, length: 0)
        XCTAssertTrue(q.needsSignal())            // used idx went 4 -> 6, crossing 5
        XCTAssertFalse(q.armNotification())
        g.makeAvailable(0)
        XCTAssertTrue(q.armNotification())
    }
}
