import Foundation
import XCTest
@testable import FerryProtocol

/// The FUSE-over-io_uring layouts in URingABI.swift against the tables of protocol/fuse-uring.md,
/// and the rebuilding of a request from a ring entry's header.
final class URingABITests: XCTestCase {
    /// The rows `| field | offset | size |` of the table that follows the line containing `title`.
    private func table(_ title: String) throws -> [String: (offset: Int, size: Int)] {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("protocol/fuse-uring.md")
        let lines = try String(contentsOf: url, encoding: .utf8).split(separator: "\n", omittingEmptySubsequences: false)
        guard let start = lines.firstIndex(where: { $0.contains(title) }) else {
            XCTFail("no table for \(title) in protocol/fuse-uring.md"); return [:]
        }
        var rows: [String: (Int, Int)] = [:]
        var inTable = false
        for line in lines[(start + 1)...] {
            guard line.hasPrefix("|") else { if inTable { break } else { continue } }
            inTable = true
            let cells = line.split(separator: "|").map { $0.trimmingCharacters(in: .whitespaces) }
            guard cells.count >= 2, let offset = Int(cells[1]) else { continue }
            rows[cells[0]] = (offset, cells.count > 2 ? Int(cells[2]) ?? -1 : -1)
        }
        return rows
    }

    func testRequestHeaderMatchesTheDocument() throws {
        let rows = try table("`struct fuse_uring_req_header`")
        XCTAssertEqual(rows["in_out"]?.offset, FUSERingABI.inOutOffset)
        XCTAssertEqual(rows["in_out"]?.size, FUSERingABI.inOutSize)
        XCTAssertEqual(rows["op_in"]?.offset, FUSERingABI.opInOffset)
        XCTAssertEqual(rows["op_in"]?.size, FUSERingABI.opInSize)
        XCTAssertEqual(rows["ring_ent_in_out"]?.offset, FUSERingABI.entInOutOffset)
        XCTAssertEqual(rows["ring_ent_in_out"]?.size, FUSERingABI.entInOutSize)
        XCTAssertEqual(rows["(total)"]?.size, FUSERingABI.requestHeaderSize)
        XCTAssertEqual(FUSERingABI.inOutSize + FUSERingABI.opInSize + FUSERingABI.entInOutSize, FUSERingABI.requestHeaderSize)
        // The in header and the out header both fit in in_out.
        XCTAssertLessThanOrEqual(FUSEABI.inHeaderSize, FUSERingABI.inOutSize)
    }

    func testEntryInOutMatchesTheDocument() throws {
        let rows = try table("`struct fuse_uring_ent_in_out`")
        XCTAssertEqual(rows["flags"]?.offset, FUSERingABI.entFlagsOffset)
        XCTAssertEqual(rows["commit_id"]?.offset, FUSERingABI.entCommitIDOffset)
        XCTAssertEqual(rows["payload_sz"]?.offset, FUSERingABI.entPayloadSizeOffset)
        XCTAssertEqual(rows["payload_sz"]?.size, 4)
        XCTAssertEqual(rows["(total)"]?.size, FUSERingABI.entInOutSize)
    }

    func testCommandMatchesTheDocument() throws {
        let rows = try table("`struct fuse_uring_cmd_req`")
        XCTAssertEqual(rows["flags"]?.offset, FUSERingABI.commandFlagsOffset)
        XCTAssertEqual(rows["commit_id"]?.offset, FUSERingABI.commandCommitIDOffset)
        XCTAssertEqual(rows["qid"]?.offset, FUSERingABI.commandQueueIDOffset)
        XCTAssertEqual(rows["qid"]?.size, 2)
        XCTAssertEqual(rows["(total)"]?.size, FUSERingABI.commandSize)
        XCTAssertLessThanOrEqual(FUSERingABI.commandSize, FUSERingABI.sqeCommandAreaSize)
        let commands = try table("Commands (`sqe->cmd_op`")
        XCTAssertEqual(commands["FUSE_IO_URING_CMD_REGISTER"]?.offset, Int(FUSERingABI.Command.register.rawValue))
        XCTAssertEqual(commands["FUSE_IO_URING_CMD_COMMIT_AND_FETCH"]?.offset, Int(FUSERingABI.Command.commitAndFetch.rawValue))
    }

    func testPayloadSizeIsTheKernelsMinimum() {
        XCTAssertEqual(FUSERingABI.payloadSize(maxWrite: 1 << 20, maxPages: 256), 1 << 20)
        XCTAssertEqual(FUSERingABI.payloadSize(maxWrite: 4096, maxPages: 1), 8192)
        XCTAssertEqual(FUSERingABI.payloadSize(maxWrite: 128 << 10, maxPages: 256), 1 << 20)
    }

    /// A WRITE as the kernel puts it in a ring entry: header in in_out, fuse_write_in in op_in,
    /// the data in the payload.
    func testLayoutOfAWriteInAnEntry() throws {
        var header = [UInt8](repeating: 0, count: 4096)
        func put<T: FixedWidthInteger>(_ v: T, _ at: Int) {
            withUnsafeBytes(of: v.littleEndian) { for (i, b) in $0.enumerated() { header[at + i] = b } }
        }
        put(UInt32(40 + 40 + 4096), 0)      // len
        put(UInt32(16), 4)                  // opcode WRITE
        put(UInt64(77), 8)                  // unique
        put(UInt64(77), 256 + 8)            // commit_id
        put(UInt32(4096), 256 + 16)         // payload_sz
        let layout = try XCTUnwrap(header.withUnsafeBytes { RingRequestLayout(header: ByteView($0), payloadCapacity: 1 << 20) })
        XCTAssertEqual(layout, RingRequestLayout(length: 4176, opInLength: 40, payloadLength: 4096, commitID: 77))
        // Sizes that do not add up are refused.
        put(UInt32(4096 + 200), 256 + 16)
        XCTAssertNil(header.withUnsafeBytes { RingRequestLayout(header: ByteView($0), payloadCapacity: 1 << 20) })
        put(UInt32(4096), 256 + 16)
        XCTAssertNil(header.withUnsafeBytes { RingRequestLayout(header: ByteView($0), payloadCapacity: 1024) })
    }
}
