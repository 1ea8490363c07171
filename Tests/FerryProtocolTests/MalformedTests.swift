import XCTest
@testable import FerryProtocol

/// Truncated, oversized and inconsistent requests are rejected with an error, never a trap.
final class MalformedTests: XCTestCase {
    /// One well-formed body per opcode with fixed arguments.
    static let samples: [(Opcode, [UInt8])] = {
        func body(_ build: (inout RequestBytes) -> Void) -> [UInt8] { var b = RequestBytes(); build(&b); return b.body }
        return [
            (.`init`, body { $0.u32(7); $0.u32(45); $0.u32(0); $0.u32(0) }),
            (.lookup, body { $0.name("x") }),
            (.forget, body { $0.u64(1) }),
            (.getattr, body { $0.u32(0); $0.u32(0); $0.u64(0) }),
            (.setattr, [UInt8](repeating: 0, count: 88)),
            (.statx, [UInt8](repeating: 0, count: 24)),
            (.symlink, body { $0.name("a"); $0.name("b") }),
            (.mknod, body { $0.u32(0); $0.u32(0); $0.u32(0); $0.u32(0); $0.name("n") }),
            (.mkdir, body { $0.u32(0); $0.u32(0); $0.name("d") }),
            (.rename2, body { $0.u64(1); $0.u32(0); $0.u32(0); $0.name("a"); $0.name("b") }),
            (.link, body { $0.u64(1); $0.name("l") }),
            (.open, body { $0.u32(0); $0.u32(0) }),
            (.create, body { $0.u32(0); $0.u32(0); $0.u32(0); $0.u32(0); $0.name("c") }),
            (.read, [UInt8](repeating: 0, count: 40)),
            (.flush, [UInt8](repeating: 0, count: 24)),
            (.release, [UInt8](repeating: 0, count: 24)),
            (.fsync, [UInt8](repeating: 0, count: 16)),
            (.setxattr, body { $0.u32(0); $0.u32(0); $0.name("user.x") }),
            (.getxattr, body { $0.u32(0); $0.u32(0); $0.name("user.x") }),
            (.listxattr, [UInt8](repeating: 0, count: 8)),
            (.access, [UInt8](repeating: 0, count: 8)),
            (.fallocate, [UInt8](repeating: 0, count: 32)),
            (.lseek, [UInt8](repeating: 0, count: 24)),
            (.copyFileRange, [UInt8](repeating: 0, count: 56)),
            (.interrupt, [UInt8](repeating: 0, count: 8)),
            (.ioctl, [UInt8](repeating: 0, count: 32)),
            (.getlk, [UInt8](repeating: 0, count: 48)),
            (.batchForget, body { $0.u32(1); $0.u32(0); $0.u64(1); $0.u64(1) }),
        ]
    }()

    func testSamplesDecode() throws {
        for (opcode, body) in Self.samples {
            var b = RequestBytes(); b.body = body
            XCTAssertNoThrow(try decode(b.message(opcode)), "\(opcode)")
        }
    }

    func testEveryTruncationIsRejected() {
        for (opcode, body) in Self.samples {
            for cut in 0..<body.count {
                var b = RequestBytes(); b.body = Array(body[0..<cut])
                XCTAssertThrowsError(try decode(b.message(opcode)), "\(opcode) cut at \(cut) of \(body.count)")
            }
        }
    }

    func testShortHeaderIsRejected() {
        for n in 0..<40 {
            let bytes = Array(RequestBytes().message(.statfs)[0..<n])
            XCTAssertThrowsError(try decode(bytes)) { XCTAssertEqual($0 as? DecodeError, .truncated) }
        }
    }

    func testLengthFieldMustMatchTheBytesReceived() {
        var b = RequestBytes(); b.u64(1)
        XCTAssertThrowsError(try decode(b.message(.forget, lengthAdjust: 8)))   // claims more than sent
        XCTAssertThrowsError(try decode(b.message(.forget, lengthAdjust: -4)))  // claims less than sent
    }

    func testWritePayloadMustMatchItsSize() {
        var b = RequestBytes()
        b.u64(3); b.u64(0); b.u32(100); b.u32(0); b.u64(0); b.u32(0); b.u32(0)
        b.body += [UInt8](repeating: 1, count: 10)
        XCTAssertThrowsError(try decode(b.message(.write)))
    }

    func testOversizedCountsAreRejected() {
        var bf = RequestBytes(); bf.u32(1_000_000); bf.u32(0); bf.u64(1); bf.u64(1)
        XCTAssertThrowsError(try decode(bf.message(.batchForget)))
        var sx = RequestBytes(); sx.u32(1 << 30); sx.u32(0); sx.name("user.big")
        XCTAssertThrowsError(try decode(sx.message(.setxattr)))
        var io = RequestBytes(); io.u64(3); io.u32(0); io.u32(1); io.u64(0); io.u32(1 << 20); io.u32(0)
        XCTAssertThrowsError(try decode(io.message(.ioctl)))
        var ext = RequestBytes(); ext.name("x")
        XCTAssertThrowsError(try decode(ext.message(.lookup, extLength: 100)))
    }

    func testNamesWithoutTerminatorAreRejected() {
        var b = RequestBytes(); b.body = Array("noterm".utf8)
        XCTAssertThrowsError(try decode(b.message(.lookup))) { XCTAssertEqual($0 as? DecodeError, .missingTerminator) }
    }

    func testRandomBytesNeverTrap() {
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<20_000 {
            let count = Int.random(in: 0..<200, using: &generator)
            var bytes = (0..<count).map { _ in UInt8.random(in: 0...255, using: &generator) }
            if bytes.count >= 40 {
                // Make the length field agree sometimes, so bodies are reached.
                let length = UInt32(bytes.count)
                if Bool.random() { bytes.replaceSubrange(0..<4, with: withUnsafeBytes(of: length.littleEndian, Array.init)) }
                bytes[4] = UInt8.random(in: 1...53); bytes[5] = 0; bytes[6] = 0; bytes[7] = 0
                bytes[36] = 0; bytes[37] = 0
            }
            _ = try? decode(bytes)
        }
    }
}
