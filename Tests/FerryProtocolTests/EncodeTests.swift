import XCTest
@testable import FerryProtocol

/// Replies encode to the exact bytes of the kernel's structs.
final class EncodeTests: XCTestCase {
    private func le<T: FixedWidthInteger>(_ v: T) -> [UInt8] { withUnsafeBytes(of: v.littleEndian, Array.init) }

    private var sampleAttributes: Attributes {
        var a = Attributes()
        a.ino = 1; a.size = 2; a.blocks = 3; a.atime = 4; a.mtime = 5; a.ctime = 6
        a.atimeNsec = 7; a.mtimeNsec = 8; a.ctimeNsec = 9; a.mode = 10; a.nlink = 11; a.uid = 12; a.gid = 13
        a.rdev = 14; a.blksize = 15; a.flags = 16
        return a
    }

    private var sampleAttributeBytes: [UInt8] {
        [1, 2, 3, 4, 5, 6].flatMap { le(UInt64($0)) } + (7...16).flatMap { le(UInt32($0)) }
    }

    func testAttrIs88Bytes() {
        let bytes = encoded { $0.append(sampleAttributes) }
        XCTAssertEqual(bytes.count, FUSEABI.attrSize)
        XCTAssertEqual(bytes, sampleAttributeBytes)
    }

    func testEntryOut() {
        let e = EntryOut(nodeID: 0x1122, generation: 3, entryTimeout: Timeout(seconds: 5, nanoseconds: 6),
                         attrTimeout: Timeout(seconds: 7, nanoseconds: 8), attributes: sampleAttributes)
        let bytes = encoded { $0.append(e) }
        XCTAssertEqual(bytes.count, FUSEABI.entryOutSize)
        XCTAssertEqual(bytes, le(UInt64(0x1122)) + le(UInt64(3)) + le(UInt64(5)) + le(UInt64(7)) + le(UInt32(6))
                       + le(UInt32(8)) + sampleAttributeBytes)
    }

    func testAttrOut() {
        let bytes = encoded { $0.appendAttrOut(sampleAttributes, timeout: Timeout(seconds: 1, nanoseconds: 2)) }
        XCTAssertEqual(bytes.count, FUSEABI.attrOutSize)
        XCTAssertEqual(bytes, le(UInt64(1)) + le(UInt32(2)) + le(UInt32(0)) + sampleAttributeBytes)
    }

    func testOpenOut() {
        XCTAssertEqual(encoded { $0.appendOpenOut(fh: 9, flags: [.directIO, .keepCache], backingID: -1) },
                       le(UInt64(9)) + le(UInt32(3)) + le(Int32(-1)))
    }

    func testPassthroughOpenOutCarriesTheBackingID() {
        XCTAssertEqual(encoded { $0.appendOpenOut(fh: 7, flags: .passthrough, backingID: 3) },
                       le(UInt64(7)) + le(UInt32(0x80)) + le(Int32(3)))
    }

    func testInitOutCarriesMaxStackDepth() {
        let o = InitOut(major: 7, minor: 45, maxReadahead: 0, flags: .passthrough, maxBackground: 0,
                        congestionThreshold: 0, maxWrite: 0, timeGranularity: 0, maxPages: 0, maxStackDepth: 1)
        let bytes = encoded { $0.append(o) }
        XCTAssertEqual(Array(bytes[32..<40]), le(UInt32(1 << 5)) + le(UInt32(1)))   // flags2 bit 37, max_stack_depth
    }

    func testInitOut() {
        let o = InitOut(major: 7, minor: 45, maxReadahead: 0x20000, flags: InitFlags(rawValue: 0x3_0000_0001),
                        maxBackground: 64, congestionThreshold: 48, maxWrite: 1 << 20, timeGranularity: 1, maxPages: 256)
        let bytes = encoded { $0.append(o) }
        XCTAssertEqual(bytes.count, FUSEABI.initOutSize)
        let expected = le(UInt32(7)) + le(UInt32(45)) + le(UInt32(0x20000)) + le(UInt32(1))
            + le(UInt16(64)) + le(UInt16(48)) + le(UInt32(1 << 20)) + le(UInt32(1)) + le(UInt16(256)) + le(UInt16(0))
            + le(UInt32(3)) + le(UInt32(0)) + le(UInt16(0)) + [UInt8](repeating: 0, count: 22)
        XCTAssertEqual(bytes, expected)
        var old = o; old.minor = 22
        XCTAssertEqual(encoded { $0.append(old) }.count, 24)
    }

    func testStatfsOut() {
        let s = StatfsOut(blocks: 1, bfree: 2, bavail: 3, files: 4, ffree: 5, bsize: 6, namelen: 7, frsize: 8)
        let bytes = encoded { $0.append(s) }
        XCTAssertEqual(bytes.count, FUSEABI.statfsOutSize)
        XCTAssertEqual(bytes, (1...5).flatMap { le(UInt64($0)) } + (6...8).flatMap { le(UInt32($0)) } + [UInt8](repeating: 0, count: 28))
    }

    func testStatxOutIs288Bytes() {
        var s = StatxAttributes(); s.mask = 0x7ff; s.mode = 0o100644; s.btime = .init(seconds: -1, nanoseconds: 5)
        let bytes = encoded { $0.appendStatxOut(s, timeout: .zero) }
        XCTAssertEqual(bytes.count, FUSEABI.statxOutSize)
        XCTAssertEqual(Array(bytes[32..<36]), le(UInt32(0x7ff)))
        XCTAssertEqual(Array(bytes[60..<62]), le(UInt16(0o100644)))
        XCTAssertEqual(Array(bytes[(32 + 80)..<(32 + 92)]), le(Int64(-1)) + le(UInt32(5)))   // btime
    }

    func testDirentIsPaddedTo8() {
        let name: [UInt8] = Array("abc".utf8)
        let bytes = name.withUnsafeBytes { raw in encoded { $0.appendDirent(ino: 5, offset: 6, type: 8, name: ByteView(raw)) } }
        XCTAssertEqual(bytes, le(UInt64(5)) + le(UInt64(6)) + le(UInt32(3)) + le(UInt32(8)) + name + [0, 0, 0, 0, 0])
        XCTAssertEqual(WireWriter.direntSize(nameLength: 3), 32)
        XCTAssertEqual(WireWriter.direntSize(nameLength: 8), 32)
        XCTAssertEqual(WireWriter.direntSize(nameLength: 9), 40)
    }

    func testReplyFraming() {
        let ok = encoded { w in
            w.appendZeros(ReplyFraming.bodyOffset)
            w.append(UInt64(0xdead))
            ReplyFraming.finishSuccess(&w, unique: 42)
        }
        XCTAssertEqual(ok, le(UInt32(24)) + le(Int32(0)) + le(UInt64(42)) + le(UInt64(0xdead)))
        let failed = encoded { w in
            w.appendZeros(40)
            ReplyFraming.finishError(&w, unique: 42, errno: 2)
        }
        XCTAssertEqual(failed, le(UInt32(16)) + le(Int32(-2)) + le(UInt64(42)))
        // A reply sent later (a blocking lock): the header alone.
        XCTAssertEqual(ReplyFraming.headerOnly(unique: 7, errno: EINTR), le(UInt32(16)) + le(Int32(-EINTR)) + le(UInt64(7)))
        XCTAssertEqual(ReplyFraming.headerOnly(unique: 8, errno: 0), le(UInt32(16)) + le(Int32(0)) + le(UInt64(8)))
    }

    func testWriterRefusesOverflow() {
        let buffer = MessageBuffer(capacity: 4096)
        var w = WireWriter(buffer)
        w.appendZeros(4090)
        w.append(UInt64(1))
        XCTAssertTrue(w.overflowed)
        XCTAssertEqual(w.count, 4090)
    }

    // MARK: Notifications (unique 0, error = notify code)

    private func notificationBytes(_ n: FUSENotification) -> [UInt8] {
        let buffer = MessageBuffer(capacity: FUSENotification.maxSize)
        return n.encode(into: buffer).withUnsafeBytes { Array($0) }
    }

    private func notifyHeader(length: Int, code: Int32) -> [UInt8] {
        le(UInt32(length)) + le(code) + le(UInt64(0))
    }

    func testInvalidateInode() {
        let bytes = notificationBytes(.invalidateInode(node: 5, offset: -1, length: 0))
        XCTAssertEqual(bytes, notifyHeader(length: 40, code: 2) + le(UInt64(5)) + le(Int64(-1)) + le(Int64(0)))
    }

    func testInvalidateEntry() {
        let bytes = notificationBytes(.invalidateEntry(parent: 1, name: Array("ab".utf8)))
        XCTAssertEqual(bytes, notifyHeader(length: 35, code: 3) + le(UInt64(1)) + le(UInt32(2)) + le(UInt32(0)) + [0x61, 0x62, 0])
    }

    func testDelete() {
        let bytes = notificationBytes(.delete(parent: 1, child: 9, name: Array("x".utf8)))
        XCTAssertEqual(bytes, notifyHeader(length: 42, code: 6) + le(UInt64(1)) + le(UInt64(9)) + le(UInt32(1)) + le(UInt32(0)) + [0x78, 0])
    }

    func testIncrementEpochIsAHeaderOnly() {
        XCTAssertEqual(notificationBytes(.incrementEpoch), notifyHeader(length: 16, code: 8))
        XCTAssertEqual(FUSENotification.incrementEpoch.minimumMinor, 44)
    }

    func testLongestNameFits() {
        let name = [UInt8](repeating: 0x61, count: 255)
        XCTAssertEqual(notificationBytes(.delete(parent: 1, child: 2, name: name)).count, 16 + 24 + 256)
    }
}
