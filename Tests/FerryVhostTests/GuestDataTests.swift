import FerryIO
import FerryProtocol
@testable import FerryVhost
import XCTest

/// The iovecs a READ's or WRITE's data gets in guest memory: every piece comes from the checked
/// translation (a buffer spanning two regions is two pieces, each in its own mapping), anything
/// outside guest memory or wrapping around 2^64 is refused, and only requests whose data can
/// stay in place get iovecs.
final class GuestDataTests: XCTestCase {
    /// Two regions adjacent in guest memory (0x10000 and 0x11000) but far apart in Ferry's.
    final class TwoRegions {
        let a = UnsafeMutableRawPointer.allocate(byteCount: 0x1000, alignment: 4096)
        let b = UnsafeMutableRawPointer.allocate(byteCount: 0x1000, alignment: 4096)
        let memory: GuestMemory
        init() {
            memory = GuestMemory(regions: [
                .init(region: MemoryRegion(guestAddress: 0x10000, size: 0x1000, userAddress: 0x7000_0000, mmapOffset: 0), host: a),
                .init(region: MemoryRegion(guestAddress: 0x11000, size: 0x1000, userAddress: 0x9000_0000, mmapOffset: 0), host: b),
            ])
        }
        deinit { a.deallocate(); b.deallocate() }

        /// A chain of readable then writable guest buffers, translated as `SplitQueue` does.
        func chain(readable: [(UInt64, UInt64)], writable: [(UInt64, UInt64)]) -> DescriptorChain? {
            var chain = DescriptorChain(head: 0)
            for (address, length) in readable {
                guard memory.segments(address, length: length, into: &chain.readable) else { return nil }
                chain.readableLength += Int(length)
            }
            for (address, length) in writable {
                guard memory.segments(address, length: length, into: &chain.writable) else { return nil }
                chain.writableLength += Int(length)
            }
            return chain
        }
    }

    static func header(_ opcode: Opcode, length: Int) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: FUSEABI.inHeaderSize)
        bytes.withUnsafeMutableBytes {
            $0.storeBytes(of: UInt32(length).littleEndian, toByteOffset: 0, as: UInt32.self)
            $0.storeBytes(of: opcode.rawValue.littleEndian, toByteOffset: 4, as: UInt32.self)
        }
        return bytes
    }

    func testAWriteSpanningTwoRegionsIsTwoPiecesInTheirOwnMappings() throws {
        let g = TwoRegions()
        // Headers (80 bytes) in region a, then 0x100 bytes of data from 0x10f80 across into b.
        let chain = try XCTUnwrap(g.chain(readable: [(0x10000, 80), (0x10f80, 0x100)], writable: [(0x10800, 16)]))
        XCTAssertEqual(chain.readable.count, 3, "the data descriptor spans two regions")
        let list = IOVectorList()
        XCTAssertEqual(QueueRunner.placeData(opcode: Opcode.write.rawValue, chain: chain, into: list), .writeInPlace)
        XCTAssertEqual(list.count, 2)
        XCTAssertEqual(list.totalLength, 0x100)
        var pieces: [UnsafeMutableRawBufferPointer] = []
        list.vectors.forEach { pieces.append($0) }
        XCTAssertEqual(pieces[0].baseAddress, g.a + 0xf80)
        XCTAssertEqual(pieces[0].count, 0x80)
        XCTAssertEqual(pieces[1].baseAddress, g.b)
        XCTAssertEqual(pieces[1].count, 0x80)
    }

    func testAReadGoesBehindTheReplyHeaderEvenInsideOneDescriptor() throws {
        let g = TwoRegions()
        // One writable descriptor: reply header and data together, crossing from a into b.
        let chain = try XCTUnwrap(g.chain(readable: [(0x10000, 80)], writable: [(0x10ff0, 0x30)]))
        let list = IOVectorList()
        XCTAssertEqual(QueueRunner.placeData(opcode: Opcode.read.rawValue, chain: chain, into: list), .readInPlace)
        var pieces: [UnsafeMutableRawBufferPointer] = []
        list.vectors.forEach { pieces.append($0) }
        XCTAssertEqual(pieces.map(\.baseAddress), [g.b])   // the 16 header bytes fill the rest of a
        XCTAssertEqual(pieces.map(\.count), [0x30 - 16])
        // A READ with room for the header only, a WRITE without data and other requests copy.
        let headerOnly = try XCTUnwrap(g.chain(readable: [(0x10000, 80)], writable: [(0x10800, 16)]))
        XCTAssertEqual(QueueRunner.placeData(opcode: Opcode.read.rawValue, chain: headerOnly, into: list), .copied)
        XCTAssertEqual(QueueRunner.placeData(opcode: Opcode.write.rawValue, chain: headerOnly, into: list), .copied)
        XCTAssertEqual(QueueRunner.placeData(opcode: Opcode.getattr.rawValue, chain: chain, into: list), .copied)
        XCTAssertEqual(list.count, 0)
        // A READ whose readable part is not exactly its headers is not taken in place either.
        let odd = try XCTUnwrap(g.chain(readable: [(0x10000, 88)], writable: [(0x10800, 0x100)]))
        XCTAssertEqual(QueueRunner.placeData(opcode: Opcode.read.rawValue, chain: odd, into: list), .copied)
    }

    func testDataInMorePiecesThanIOVMaxIsCopied() {
        let g = TwoRegions()
        var chain = DescriptorChain(head: 0)
        XCTAssertTrue(g.memory.segments(0x10000, length: 80, into: &chain.readable))
        chain.readableLength = 80
        for i in 0..<(QueueRunner.maxDataPieces + 1) {
            XCTAssertTrue(g.memory.segments(0x10100 + UInt64(i % 16), length: 1, into: &chain.readable))
            chain.readableLength += 1
        }
        let list = IOVectorList()
        XCTAssertEqual(QueueRunner.placeData(opcode: Opcode.write.rawValue, chain: chain, into: list), .copied)
        XCTAssertEqual(list.count, 0)
    }

    func testOutOfRangeAndWrappingBuffersAreRefused() {
        let g = TwoRegions()
        // Starting inside, ending past the last region; before the first; wrapping past 2^64.
        XCTAssertNil(g.chain(readable: [(0x10000, 80), (0x11f00, 0x200)], writable: []))
        XCTAssertNil(g.chain(readable: [(0x10000, 80)], writable: [(0xfff0, 0x20)]))
        XCTAssertNil(g.chain(readable: [(0x10000, 80)], writable: [(UInt64.max - 8, 0x20)]))
        var out: [UnsafeMutableRawBufferPointer] = []
        XCTAssertFalse(g.memory.segments(0x10000, length: UInt64.max, into: &out))
        XCTAssertFalse(g.memory.segments(UInt64.max, length: 1, into: &out))
        XCTAssertFalse(g.memory.segments(0x12000, length: 1, into: &out))
        // Exactly up to the end of guest memory is fine; one byte more is not.
        out = []
        XCTAssertTrue(g.memory.segments(0x10000, length: 0x2000, into: &out))
        XCTAssertEqual(out.map(\.count), [0x1000, 0x1000])
        XCTAssertFalse(g.memory.segments(0x10000, length: 0x2001, into: &out))
    }

    func testChainSegmentsAfterAnOffset() throws {
        let g = TwoRegions()
        let chain = try XCTUnwrap(g.chain(readable: [(0x10000, 10), (0x10100, 10), (0x10200, 10)], writable: []))
        var seen: [(UnsafeMutableRawPointer?, Int)] = []
        XCTAssertEqual(chain.forEachSegment(writable: false, after: 15) { seen.append(($0.baseAddress, $0.count)) }, 2)
        XCTAssertEqual(seen.map(\.0), [g.a + 0x105, g.a + 0x200])
        XCTAssertEqual(seen.map(\.1), [5, 10])
        XCTAssertEqual(chain.forEachSegment(writable: false, after: 30) { _ in XCTFail("nothing after the end") }, 0)
    }
}
