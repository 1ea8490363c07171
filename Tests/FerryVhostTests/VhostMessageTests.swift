import FerryVhost
import Glibc
import XCTest

final class VhostMessageTests: XCTestCase {
    private func header(_ request: UInt32, flags: UInt32 = 1, size: Int) -> VhostHeader {
        VhostHeader(request: request, flags: flags, size: UInt32(size))
    }

    private func u64(_ v: UInt64) -> [UInt8] { withUnsafeBytes(of: v.littleEndian, Array.init) }
    private func u32(_ v: UInt32) -> [UInt8] { withUnsafeBytes(of: v.littleEndian, Array.init) }

    func testHeaderValidation() throws {
        let good = VhostHeader(request: 1, flags: 1, size: 0).encoded
        XCTAssertEqual(try VhostHeader.decode(good), VhostHeader(request: 1, flags: 1, size: 0))
        XCTAssertThrowsError(try VhostHeader.decode(Array(good.prefix(7)))) { XCTAssertEqual($0 as? VhostError, .shortHeader(7)) }
        XCTAssertThrowsError(try VhostHeader.decode(VhostHeader(request: 1, flags: 2, size: 0).encoded)) {
            XCTAssertEqual($0 as? VhostError, .badVersion(flags: 2))
        }
        XCTAssertThrowsError(try VhostHeader.decode(VhostHeader(request: 1, flags: 5, size: 0).encoded)) {
            XCTAssertEqual($0 as? VhostError, .unexpectedReply(request: 1))
        }
        XCTAssertThrowsError(try VhostHeader.decode(VhostHeader(request: 5, flags: 1, size: 0xffff_ffff).encoded)) {
            XCTAssertEqual($0 as? VhostError, .oversized(request: 5, size: 0xffff_ffff))
        }
        XCTAssertTrue(try VhostHeader.decode(VhostHeader(request: 2, flags: 9, size: 8).encoded).needsReply)
    }

    func testSimplePayloads() throws {
        XCTAssertEqual(try VhostDecoder.decode(header(1, size: 0), payload: [], fds: []), .getFeatures)
        XCTAssertEqual(try VhostDecoder.decode(header(2, size: 8), payload: u64(1 << 32), fds: []), .setFeatures(1 << 32))
        XCTAssertEqual(try VhostDecoder.decode(header(8, size: 8), payload: u32(1) + u32(1024), fds: []),
                       .setVringNum(VringState(index: 1, num: 1024)))
        let addr = u32(1) + u32(0) + u64(0x1000) + u64(0x3000) + u64(0x2000) + u64(0)
        XCTAssertEqual(try VhostDecoder.decode(header(9, size: 40), payload: addr, fds: []),
                       .setVringAddr(VringAddress(index: 1, flags: 0, descriptorTable: 0x1000, usedRing: 0x3000,
                                                  availableRing: 0x2000, log: 0)))
        XCTAssertEqual(try VhostDecoder.decode(header(12, size: 8), payload: u64(1), fds: [42]),
                       .setVringKick(VringFile(index: 1, fd: 42)))
        XCTAssertEqual(try VhostDecoder.decode(header(13, size: 8), payload: u64(0x100), fds: []),
                       .setVringCall(VringFile(index: 0, fd: nil)))
        let reply = VhostDecoder.reply(to: 1, payload: VhostDecoder.u64Payload(7))
        XCTAssertEqual(reply.count, 20)
        XCTAssertEqual(Array(reply[4..<8]), u32(5))
    }

    func testMalformedPayloadsAreErrors() {
        // Wrong sizes.
        XCTAssertThrowsError(try VhostDecoder.decode(header(2, size: 4), payload: [0, 0, 0, 0], fds: []))
        XCTAssertThrowsError(try VhostDecoder.decode(header(9, size: 8), payload: u64(0), fds: []))
        XCTAssertThrowsError(try VhostDecoder.decode(header(8, size: 8), payload: [1, 2, 3], fds: [])) {
            XCTAssertEqual($0 as? VhostError, .truncatedPayload(expected: 8, received: 3))
        }
        // Unknown and unsupported request types.
        XCTAssertThrowsError(try VhostDecoder.decode(header(999, size: 0), payload: [], fds: [])) {
            XCTAssertEqual($0 as? VhostError, .unknownRequest(999))
        }
        XCTAssertThrowsError(try VhostDecoder.decode(header(6, size: 0), payload: [], fds: [])) {
            XCTAssertEqual($0 as? VhostError, .unsupportedRequest(.setLogBase))
        }
        // Descriptors missing or extra.
        XCTAssertThrowsError(try VhostDecoder.decode(header(1, size: 0), payload: [], fds: [3])) {
            XCTAssertEqual($0 as? VhostError, .unexpectedFDs(.getFeatures, count: 1))
        }
        XCTAssertThrowsError(try VhostDecoder.decode(header(12, size: 8), payload: u64(0), fds: [])) {
            XCTAssertEqual($0 as? VhostError, .missingFD(.setVringKick))
        }
        XCTAssertThrowsError(try VhostDecoder.decode(header(12, size: 8), payload: u64(0), fds: [3, 4]))
        XCTAssertThrowsError(try VhostDecoder.decode(header(12, size: 8), payload: u64(0x100), fds: [3]))
        XCTAssertThrowsError(try VhostDecoder.decode(header(12, size: 8), payload: u64(0x1_0000_0000), fds: [3]))
    }

    private func region(_ gpa: UInt64, _ size: UInt64, _ uva: UInt64, _ off: UInt64 = 0) -> [UInt8] {
        u64(gpa) + u64(size) + u64(uva) + u64(off)
    }

    func testMemoryTable() throws {
        let payload = u32(2) + u32(0) + region(0, 0xa0000, 0x7f00_0000_0000) + region(0xc0000, 0x100000, 0x7f00_000c_0000, 0xc0000)
        guard case let .setMemTable(regions) = try VhostDecoder.decode(header(5, size: payload.count), payload: payload, fds: [10, 11]) else {
            return XCTFail("not a memory table")
        }
        XCTAssertEqual(regions.map(\.fd), [10, 11])
        XCTAssertEqual(regions[1].region, MemoryRegion(guestAddress: 0xc0000, size: 0x100000, userAddress: 0x7f00_000c_0000, mmapOffset: 0xc0000))
        // Fewer descriptors than regions, more, no regions, 9 regions, overlap, wrap-around.
        XCTAssertThrowsError(try VhostDecoder.decode(header(5, size: payload.count), payload: payload, fds: [10]))
        XCTAssertThrowsError(try VhostDecoder.decode(header(5, size: payload.count), payload: payload, fds: [10, 11, 12]))
        let none = u32(0) + u32(0)
        XCTAssertThrowsError(try VhostDecoder.decode(header(5, size: 8), payload: none, fds: []))
        let nine = u32(9) + u32(0) + (0..<9).flatMap { region(UInt64($0) << 30, 1 << 20, 0) }
        XCTAssertThrowsError(try VhostDecoder.decode(header(5, size: nine.count), payload: nine, fds: Array(0..<9)))
        let overlap = u32(2) + u32(0) + region(0, 0x2000, 0) + region(0x1000, 0x2000, 0)
        XCTAssertThrowsError(try VhostDecoder.decode(header(5, size: overlap.count), payload: overlap, fds: [1, 2]))
        let wrap = u32(1) + u32(0) + region(UInt64.max - 10, 0x1000, 0)
        XCTAssertThrowsError(try VhostDecoder.decode(header(5, size: wrap.count), payload: wrap, fds: [1]))
        let truncated = u32(2) + u32(0) + region(0, 0x1000, 0)
        XCTAssertThrowsError(try VhostDecoder.decode(header(5, size: truncated.count), payload: truncated, fds: [1, 2]))
    }

    /// GET_MAX_MEM_SLOTS, ADD_MEM_REG and REM_MEM_REG: the 40-byte region payload (padding
    /// first) decodes with whatever descriptors came (the connection refuses a wrong count for
    /// that message alone); any other size is a framing error.
    func testMemorySlotMessages() throws {
        XCTAssertEqual(try VhostDecoder.decode(header(36, size: 0), payload: [], fds: []), .getMaxMemSlots)
        XCTAssertThrowsError(try VhostDecoder.decode(header(36, size: 0), payload: [], fds: [3]))
        let payload = u64(0xdead) + region(0x1_0000_0000, 0x1000_0000, 0x7f00_1000_0000, 0x2000)
        let expected = MemoryRegion(guestAddress: 0x1_0000_0000, size: 0x1000_0000, userAddress: 0x7f00_1000_0000, mmapOffset: 0x2000)
        XCTAssertEqual(try VhostDecoder.decode(header(37, size: 40), payload: payload, fds: [7]), .addMemReg(expected, fds: [7]))
        XCTAssertEqual(try VhostDecoder.decode(header(37, size: 40), payload: payload, fds: []), .addMemReg(expected, fds: []))
        XCTAssertEqual(try VhostDecoder.decode(header(38, size: 40), payload: payload, fds: []), .remMemReg(expected, fds: []))
        XCTAssertEqual(VhostMessage.remMemReg(expected, fds: [4]).fds, [4])
        XCTAssertThrowsError(try VhostDecoder.decode(header(37, size: 32), payload: Array(payload.prefix(32)), fds: [7])) {
            XCTAssertEqual($0 as? VhostError, .payloadSize(.addMemReg, expected: "40", received: 32))
        }
        XCTAssertThrowsError(try VhostDecoder.decode(header(38, size: 48), payload: payload + u64(0), fds: []))
        XCTAssertNil(expected.invalidity)
        XCTAssertEqual(MemoryRegion(guestAddress: 0, size: 0, userAddress: 0, mmapOffset: 0).invalidity, "is empty")
        XCTAssertNotNil(MemoryRegion(guestAddress: UInt64.max, size: 2, userAddress: 0, mmapOffset: 0).invalidity)
        XCTAssertNotNil(MemoryRegion(guestAddress: 0, size: 2, userAddress: UInt64.max, mmapOffset: 0).invalidity)
        XCTAssertNotNil(MemoryRegion(guestAddress: 0, size: 2, userAddress: 0, mmapOffset: UInt64(Int64.max)).invalidity)
    }

    func testConfigPayload() throws {
        let payload = u32(0) + u32(40) + u32(0) + [UInt8](repeating: 0, count: 40)
        XCTAssertEqual(try VhostDecoder.decode(header(24, size: payload.count), payload: payload, fds: []),
                       .getConfig(ConfigSpace(offset: 0, size: 40, flags: 0)))
        let lying = u32(0) + u32(300) + u32(0) + [UInt8](repeating: 0, count: 40)
        XCTAssertThrowsError(try VhostDecoder.decode(header(24, size: lying.count), payload: lying, fds: []))
    }
}

final class GuestMemoryTests: XCTestCase {
    func testCheckedTranslation() {
        let a = UnsafeMutableRawPointer.allocate(byteCount: 0x1000, alignment: 4096)
        let b = UnsafeMutableRawPointer.allocate(byteCount: 0x1000, alignment: 4096)
        defer { a.deallocate(); b.deallocate() }
        let memory = GuestMemory(regions: [
            .init(region: MemoryRegion(guestAddress: 0x10000, size: 0x1000, userAddress: 0x7000_0000, mmapOffset: 0), host: a),
            .init(region: MemoryRegion(guestAddress: 0x11000, size: 0x1000, userAddress: 0x9000_0000, mmapOffset: 0), host: b),
        ])
        XCTAssertEqual(memory.guest(0x10000, length: 0x1000), a)
        XCTAssertEqual(memory.guest(0x10ff0, length: 0x10), a + 0xff0)
        XCTAssertNil(memory.guest(0x10ff0, length: 0x11))          // crosses into the next region
        XCTAssertNil(memory.guest(0xffff, length: 1))
        XCTAssertNil(memory.guest(0x12000, length: 1))
        XCTAssertNil(memory.guest(UInt64.max, length: 2))           // would wrap
        XCTAssertNil(memory.guest(0x10000, length: UInt64.max))
        XCTAssertEqual(memory.user(0x9000_0010, length: 8), b + 0x10)
        XCTAssertNil(memory.user(0x10000, length: 8))
        var segments: [UnsafeMutableRawBufferPointer] = []
        XCTAssertTrue(memory.segments(0x10ff0, length: 0x20, into: &segments))
        XCTAssertEqual(segments.map(\.count), [0x10, 0x10])
        XCTAssertEqual(segments[1].baseAddress, b)
        segments = []
        XCTAssertFalse(memory.segments(0x11ff0, length: 0x20, into: &segments))
        XCTAssertFalse(memory.segments(UInt64.max - 1, length: 0x20, into: &segments))
    }
}
