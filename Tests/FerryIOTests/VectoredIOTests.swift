@testable import FerryIO
import Foundation
import Glibc
import XCTest

/// `.readv` and `.writev`: both engines move the bytes of several buffers in order, as
/// preadv/pwritev do, through the ring (O_DIRECT) and at submission (page cache), and
/// `IOVectorList` keeps the entries it is given.
extension IOEngineTests {
    /// Three page-aligned buffers of different sizes (a guest's pages are like that).
    func buffers() -> [UnsafeMutableRawBufferPointer] {
        [4096, 8192, 4096].map { UnsafeMutableRawBufferPointer.allocate(byteCount: $0, alignment: 4096) }
    }

    func testVectoredWritesAndReadsMoveEveryBufferInOrder() throws {
        for engine in try engines(depth: 2) {
            for cached in [false, true] {
                let path = "\(directory)/v-\(engine.kind)-\(cached)"
                let fd = try open("v-\(engine.kind)-\(cached)")
                defer { close(fd) }
                let source = buffers(), target = buffers()
                defer { (source + target).forEach { $0.deallocate() } }
                var expected: [UInt8] = []
                for (n, buffer) in source.enumerated() {
                    for i in 0..<buffer.count { buffer[i] = UInt8(truncatingIfNeeded: i &* 31 &+ n) }
                    expected += Array(buffer)
                }
                let list = IOVectorList(capacity: 1)   // grows while appending
                source.forEach { list.append($0) }
                list.append(UnsafeMutableRawBufferPointer(start: source[0].baseAddress, count: 0))   // left out
                XCTAssertEqual(list.count, 3)
                XCTAssertEqual(list.totalLength, 16384)
                XCTAssertEqual(run(engine, .writev(fd: fd, offset: 4096, vectors: list.vectors, cached: cached)), 16384,
                               "\(engine.kind) cached=\(cached)")
                let onDisk = try Data(contentsOf: URL(fileURLWithPath: path))
                XCTAssertEqual(Array(onDisk.suffix(from: 4096)), expected, "\(engine.kind) cached=\(cached)")

                list.removeAll()
                target.forEach { list.append($0) }
                XCTAssertEqual(run(engine, .readv(fd: fd, offset: 4096, vectors: list.vectors)), 16384)
                XCTAssertEqual(target.flatMap { Array($0) }, expected, "\(engine.kind) cached=\(cached)")
                // At the end of the file a vectored read stops short, as preadv does.
                list.removeAll()
                target.forEach { list.append($0) }
                XCTAssertEqual(run(engine, .readv(fd: fd, offset: 16384, vectors: list.vectors)), 4096)
                XCTAssertEqual(Array(target[0]), Array(expected.suffix(4096)))
                // A descriptor that cannot write gives the syscall's errno.
                let readOnly = try open("v-\(engine.kind)-\(cached)", O_RDONLY)
                defer { close(readOnly) }
                XCTAssertEqual(run(engine, .writev(fd: readOnly, offset: 0, vectors: list.vectors, cached: cached)), -EBADF)
            }
        }
    }

    func testCopiesAndAlignment() {
        let a = UnsafeMutableRawBufferPointer.allocate(byteCount: 8, alignment: 4096)
        let b = UnsafeMutableRawBufferPointer.allocate(byteCount: 4096, alignment: 4096)
        defer { a.deallocate(); b.deallocate() }
        let list = IOVectorList()
        list.append(a)
        list.append(b)
        XCTAssertFalse(list.vectors.isAligned(to: 512), "an 8-byte entry is not block-aligned")
        let bytes = (0..<20).map { UInt8($0) }
        XCTAssertEqual(bytes.withUnsafeBytes { list.vectors.copy(from: $0) }, 20)
        XCTAssertEqual(Array(a), Array(bytes.prefix(8)))
        XCTAssertEqual(Array(b.prefix(12)), Array(bytes.suffix(12)))
        var out = [UInt8](repeating: 0, count: 10)
        XCTAssertEqual(out.withUnsafeMutableBytes { list.vectors.copy(into: $0) }, 10)
        XCTAssertEqual(out, Array(bytes.prefix(10)))
        list.removeAll()
        list.append(b)
        XCTAssertTrue(list.vectors.isAligned(to: 512))
    }

    /// What a short write continues with, and a READ's cut to the size asked for.
    func testDroppingAndTruncating() {
        let a = UnsafeMutableRawBufferPointer.allocate(byteCount: 100, alignment: 16)
        let b = UnsafeMutableRawBufferPointer.allocate(byteCount: 200, alignment: 16)
        let c = UnsafeMutableRawBufferPointer.allocate(byteCount: 300, alignment: 16)
        defer { [a, b, c].forEach { $0.deallocate() } }
        let list = IOVectorList()
        [a, b, c].forEach { list.append($0) }
        // 150 bytes written: a is done, b continues at its 50th byte.
        let rest = list.vectors.dropping(150)
        var pieces: [UnsafeMutableRawBufferPointer] = []
        rest.forEach { pieces.append($0) }
        XCTAssertEqual(pieces.map(\.baseAddress), [b.baseAddress! + 50, c.baseAddress])
        XCTAssertEqual(pieces.map(\.count), [150, 300])
        XCTAssertEqual(rest.totalLength, 450)
        // Exactly at an entry's end: the next entry whole.
        let next = rest.dropping(150)
        XCTAssertEqual(next.count, 1)
        XCTAssertEqual(next.totalLength, 300)

        list.removeAll()
        [a, b, c].forEach { list.append($0) }
        list.truncate(to: 250)
        pieces = []
        list.vectors.forEach { pieces.append($0) }
        XCTAssertEqual(pieces.map(\.count), [100, 150])
        XCTAssertEqual(list.totalLength, 250)
        list.truncate(to: 1000)   // longer than it is: unchanged
        XCTAssertEqual(list.totalLength, 250)
        list.truncate(to: 0)
        XCTAssertEqual(list.count, 0)
        XCTAssertEqual(list.vectors.totalLength, 0)
    }

    /// io_uring would hand a buffered write to a worker thread: the engine runs a `cached`
    /// writev with pwritev at submission instead, as it does a `cached` write.
    func testBufferedVectoredWritesRunAtSubmission() throws {
        let engine = try UringIOEngine(depth: 2)
        let fd = try open("submission")
        defer { close(fd) }
        let source = buffers()
        defer { source.forEach { $0.deallocate() } }
        let list = IOVectorList()
        source.forEach { list.append($0) }
        engine.submit(.writev(fd: fd, offset: 0, vectors: list.vectors, cached: true), slot: 1)
        var st = stat()
        XCTAssertEqual(fstat(fd, &st), 0)
        XCTAssertEqual(st.st_size, 16384, "written before any flush or reap")
        var results: [Int32] = []
        engine.reap(wait: false) { results.append($0.result) }
        XCTAssertEqual(results, [16384])
        XCTAssertEqual(engine.inFlight, 0)
    }
}
