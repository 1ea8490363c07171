import FerrySystem
import XCTest

/// fanotify and inotify event buffers, laid out as protocol/notify-ring.md describes, decode to
/// the right fields; truncated and random buffers never trap.
final class WatchEventParsingTests: XCTestCase {
    private func le<T: FixedWidthInteger>(_ v: T) -> [UInt8] { withUnsafeBytes(of: v.littleEndian, Array.init) }

    /// A FID-style info record: header, fsid (two words), struct file_handle, optional name.
    private func fidRecord(type: UInt8, fsid: (UInt32, UInt32), handle: [UInt8], handleType: Int32, name: String? = nil) -> [UInt8] {
        var body = le(fsid.0) + le(fsid.1) + le(UInt32(handle.count)) + le(handleType) + handle
        if let name { body += Array(name.utf8) + [0] }
        while (body.count + 4) % 4 != 0 { body.append(0) }
        return [type, 0] + le(UInt16(body.count + 4)) + body
    }

    private func fanotifyEvent(mask: UInt64, pid: Int32, records: [[UInt8]]) -> [UInt8] {
        let info = records.flatMap { $0 }
        return le(UInt32(24 + info.count)) + [3, 0] + le(UInt16(24)) + le(mask) + le(Int32(-1)) + le(pid) + info
    }

    private func parse(_ bytes: [UInt8]) -> [FanotifyEvent] {
        bytes.withUnsafeBytes { FanotifyEvent.parse($0) }
    }

    func testEntryEventWithDirectoryNameAndTarget() {
        let dir: [UInt8] = [1, 2, 3, 4, 5, 6, 7, 8], child: [UInt8] = [9, 9, 9, 9, 1, 0, 0, 0]
        let bytes = fanotifyEvent(mask: Fanotify.create, pid: 77, records: [
            fidRecord(type: 2, fsid: (0x1111, 0x2222), handle: dir, handleType: 1, name: "new.txt"),
            fidRecord(type: 1, fsid: (0x1111, 0x2222), handle: child, handleType: 1),
        ])
        let events = parse(bytes)
        XCTAssertEqual(events.count, 1)
        let e = events[0]
        XCTAssertEqual(e.mask, Fanotify.create)
        XCTAssertEqual(e.pid, 77)
        XCTAssertEqual(e.directory, FileHandle(bytes: dir, type: 1))
        XCTAssertEqual(e.name, Array("new.txt".utf8))
        XCTAssertEqual(e.object, FileHandle(bytes: child, type: 1))
        XCTAssertEqual(e.filesystem, 0x2222_0000_1111)
    }

    func testSeveralEventsAndOverflow() {
        let h: [UInt8] = [1, 0, 0, 0, 2, 0, 0, 0]
        let bytes = fanotifyEvent(mask: Fanotify.modify, pid: 5, records: [fidRecord(type: 1, fsid: (1, 0), handle: h, handleType: 1)])
            + fanotifyEvent(mask: Fanotify.queueOverflow, pid: 0, records: [])
        let events = parse(bytes)
        XCTAssertEqual(events.map(\.mask), [Fanotify.modify, Fanotify.queueOverflow])
        XCTAssertEqual(events[0].object?.bytes, h)
    }

    func testOwnEventsAreSkippedWithoutDecoding() {
        let h: [UInt8] = [1, 0, 0, 0, 2, 0, 0, 0]
        let record = fidRecord(type: 1, fsid: (1, 0), handle: h, handleType: 1)
        let bytes = fanotifyEvent(mask: Fanotify.modify, pid: 42, records: [record])
            + fanotifyEvent(mask: Fanotify.attrib, pid: 43, records: [record])
            + fanotifyEvent(mask: Fanotify.queueOverflow, pid: 42, records: [])
        var skipped = 0
        let events = bytes.withUnsafeBytes { FanotifyEvent.parse($0, skipping: 42, skipped: &skipped) }
        XCTAssertEqual(skipped, 1)
        XCTAssertEqual(events.map(\.pid), [43, 42], "an overflow is never skipped")
    }

    func testEveryTruncationDecodesOnlyWholeEvents() {
        let h: [UInt8] = Array(1...12)
        let one = fanotifyEvent(mask: Fanotify.delete, pid: 9, records: [
            fidRecord(type: 2, fsid: (3, 4), handle: h, handleType: 0x81, name: "gone"),
            fidRecord(type: 1, fsid: (3, 4), handle: h, handleType: 0x81),
        ])
        let bytes = one + one
        for cut in 0...bytes.count {
            let events = parse(Array(bytes[0..<cut]))
            XCTAssertEqual(events.count, cut / one.count, "cut at \(cut)")
        }
    }

    func testLyingLengthsNeverTrap() {
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<20_000 {
            let count = Int.random(in: 0..<200, using: &rng)
            var bytes = (0..<count).map { _ in UInt8.random(in: 0...255, using: &rng) }
            if bytes.count >= 8, Bool.random(using: &rng) {
                // Plausible header lengths with garbage behind them.
                bytes.replaceSubrange(0..<4, with: le(UInt32(min(bytes.count, 24 + Int.random(in: 0..<64)))))
                bytes.replaceSubrange(6..<8, with: le(UInt16(24)))
            }
            _ = parse(bytes)
            _ = bytes.withUnsafeBytes { InotifyEvent.parse($0) }
        }
    }

    func testInotifyEvents() {
        // struct inotify_event: i32 wd, u32 mask, u32 cookie, u32 len, name padded with NULs.
        let first = le(Int32(3)) + le(Inotify.create) + le(UInt32(0)) + le(UInt32(8)) + Array("file".utf8) + [0, 0, 0, 0]
        let second = le(Int32(-1)) + le(Inotify.queueOverflow) + le(UInt32(0)) + le(UInt32(0))
        let events = (first + second).withUnsafeBytes { InotifyEvent.parse($0) }
        XCTAssertEqual(events, [InotifyEvent(watch: 3, mask: Inotify.create, name: Array("file".utf8)),
                                InotifyEvent(watch: -1, mask: Inotify.queueOverflow, name: [])])
        let cut = Array(first.prefix(first.count - 1))
        XCTAssertEqual(cut.withUnsafeBytes { InotifyEvent.parse($0) }, [])
    }
}
