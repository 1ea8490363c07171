import XCTest
@testable import FerryProtocol

/// Buffer placement for O_DIRECT: a WRITE request's data and a READ reply's data start on a page
/// boundary, while the message stays one contiguous run of bytes.
final class MessageBufferTests: XCTestCase {
    private func address(_ view: ByteView) -> Int {
        view.withUnsafeBytes { Int(bitPattern: $0.baseAddress) }
    }

    func testAlignedOffsetFallsOnAPageBoundary() {
        for offset in [0, 16, 80, 4095] {
            let buffer = MessageBuffer(capacity: 8192, alignedAt: offset)
            let start = Int(bitPattern: buffer.mutableBytes.baseAddress)
            XCTAssertEqual((start + offset) % MessageBuffer.pageSize, 0, "offset \(offset)")
            XCTAssertEqual(buffer.mutableBytes.count, 8192)
            // The whole capacity is usable: write its last byte.
            buffer.mutableBytes[8191] = 1
        }
    }

    func testDecodedWritePayloadIsPageAligned() throws {
        var b = RequestBytes()
        b.u64(3); b.u64(4096); b.u32(4096); b.u32(0); b.u64(0); b.u32(0o40002); b.u32(0)
        b.body += [UInt8](repeating: 0xab, count: 4096)
        let message = b.message(.write)
        let buffer = MessageBuffer(capacity: 8192 + 80, alignedAt: FUSEABI.writePayloadOffset)
        buffer.mutableBytes.copyBytes(from: message)
        let request = try RequestDecoder.decode(buffer.view(count: message.count))
        guard case let .write(io, data) = request.operation else { return XCTFail("not a WRITE") }
        XCTAssertEqual(io.size, 4096)
        XCTAssertEqual(address(data) % MessageBuffer.pageSize, 0)
        XCTAssertEqual(data.bytes, [UInt8](repeating: 0xab, count: 4096))
    }

    func testReadReplyBodyIsPageAligned() {
        let buffer = MessageBuffer(capacity: 8192, alignedAt: FUSEABI.readPayloadOffset)
        var writer = WireWriter(buffer, offset: ReplyFraming.bodyOffset)
        var start = 0
        writer.appendInPlace(upTo: 4096) { dest in
            start = Int(bitPattern: dest.baseAddress)
            return 4096
        }
        XCTAssertEqual(start % MessageBuffer.pageSize, 0)
        ReplyFraming.finishSuccess(&writer, unique: 9)
        XCTAssertEqual(writer.written.count, 16 + 4096)
    }
}
