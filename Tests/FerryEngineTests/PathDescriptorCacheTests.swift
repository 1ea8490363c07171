@testable import FerryFS
import FerrySystem
import Glibc
import XCTest

/// The bounded table of O_PATH descriptors for file-handle inodes.
final class PathDescriptorCacheTests: XCTestCase {
    private func pathFD() -> OwnedFD { OwnedFD(open("/", HostFlags.oPath | O_CLOEXEC)) }

    private func isOpen(_ fd: Int32) -> Bool { fcntl(fd, F_GETFD) >= 0 }

    func testKeepsFindsEvictsAndRemoves() {
        let cache = PathDescriptorCache(capacity: 64)   // one slot per shard
        XCTAssertEqual(cache.capacity, 64)
        XCTAssertNil(cache.descriptor(of: 5))
        var first: OwnedFD? = pathFD()
        let firstNumber = first!.rawValue
        cache.store(first!, for: 5)
        XCTAssertTrue(cache.descriptor(of: 5) === first)
        first = nil
        XCTAssertTrue(isOpen(firstNumber), "kept by the cache")
        // Another node landing on the same slot evicts (and closes) it.
        let rival = (6..<100_000).first { id in
            let probe = PathDescriptorCache(capacity: 64)
            probe.store(pathFD(), for: 5)
            probe.store(pathFD(), for: UInt64(id))
            return probe.descriptor(of: 5) == nil
        }!
        let second = pathFD()
        cache.store(second, for: UInt64(rival))
        XCTAssertNil(cache.descriptor(of: 5))
        XCTAssertFalse(isOpen(firstNumber), "evicted and closed")
        // Removing only a given descriptor leaves a newer one alone.
        cache.remove(UInt64(rival), only: pathFD())
        XCTAssertTrue(cache.descriptor(of: UInt64(rival)) === second)
        cache.remove(UInt64(rival), only: second)
        XCTAssertNil(cache.descriptor(of: UInt64(rival)))
        XCTAssertEqual(cache.count, 0)
    }

    func testADescriptorInUseOutlivesItsEviction() {
        let cache = PathDescriptorCache(capacity: 64)
        cache.store(pathFD(), for: 9)
        let inUse = cache.descriptor(of: 9)!
        cache.remove(9)
        XCTAssertTrue(isOpen(inUse.rawValue))
    }

    func testStaysWithinItsShareOfTheDescriptorLimit() {
        XCTAssertEqual(PathDescriptorCache.capacity(forDescriptorLimit: 1024), 64)
        XCTAssertEqual(PathDescriptorCache.capacity(forDescriptorLimit: 1_048_576), 4096)
        let cache = PathDescriptorCache(capacity: 128)
        for id in 0..<UInt64(10_000) { cache.store(pathFD(), for: id) }
        XCTAssertLessThanOrEqual(cache.count, 128)
        XCTAssertEqual(PathDescriptorCache(capacity: 0).capacity, 0)
        let none = PathDescriptorCache(capacity: 0)
        none.store(pathFD(), for: 1)
        XCTAssertNil(none.descriptor(of: 1))
    }

    func testLinkCountTellsDeletedFiles() throws {
        let path = "/var/tmp/ferry-pathcache-\(getpid())"
        let fd = open(path, O_CREAT | O_WRONLY | O_CLOEXEC, 0o600)
        XCTAssertGreaterThanOrEqual(fd, 0)
        let pathFD = open(path, HostFlags.oPath | O_CLOEXEC)
        close(fd)
        XCTAssertTrue(PathDescriptorCache.isLinked(pathFD))
        unlink(path)
        XCTAssertFalse(PathDescriptorCache.isLinked(pathFD))
        close(pathFD)
    }
}

/// Calls on a descriptor through the kept /proc/self/fd directory.
final class ProcSelfFDTests: XCTestCase {
    func testNamesTheDescriptorsOwnFile() throws {
        let path = "/var/tmp/ferry-procfd-\(getpid())"
        let fd = open(path, O_CREAT | O_WRONLY | O_CLOEXEC, 0o600)
        XCTAssertGreaterThanOrEqual(fd, 0)
        defer { close(fd); unlink(path) }
        let pathFD = open(path, HostFlags.oPath | O_CLOEXEC)
        defer { close(pathFD) }
        XCTAssertEqual(String(decoding: try Host.path(of: pathFD), as: UTF8.self), path)
        try Host.setxattr(pathFD, CName("user.ferry"), value: UnsafeRawBufferPointer(start: "v1", count: 2), flags: 0)
        XCTAssertEqual(try Host.getxattr(pathFD, CName("user.ferry"), size: 0).size, 2)
        XCTAssertEqual(try Host.getxattr(pathFD, CName("user.ferry"), size: 64).value, Array("v1".utf8))
        XCTAssertThrowsError(try Host.getxattr(pathFD, CName("user.nope"), size: 64)) { XCTAssertEqual($0 as? Errno, Errno(rawValue: ENODATA)) }
        XCTAssertTrue(try Host.listxattr(pathFD, size: 256).names.starts(with: Array("user.ferry\0".utf8)))
        try Host.removexattr(pathFD, CName("user.ferry"))
        XCTAssertEqual(try Host.listxattr(pathFD, size: 0).size, 0)
        try Host.chmod(pathFD: pathFD, mode: 0o640)
        var st = stat()
        XCTAssertEqual(stat(path, &st), 0)
        XCTAssertEqual(st.st_mode & 0o777, 0o640)
        let reopened = try Host.reopen(pathFD, flags: O_RDONLY)
        XCTAssertEqual(fcntl(reopened, F_GETFD) & FD_CLOEXEC, FD_CLOEXEC)
        close(reopened)
        // A descriptor number with many digits.
        let high = fcntl(pathFD, F_DUPFD_CLOEXEC, 12345)
        XCTAssertEqual(high, 12345)
        defer { close(high) }
        XCTAssertEqual(String(decoding: try Host.path(of: high), as: UTF8.self), path)
        try Host.link(high, AT_FDCWD, CName(path + ".link"))
        XCTAssertEqual(unlink(path + ".link"), 0)
    }

    func testNamesWithTheirTerminator() {
        XCTAssertTrue(CName.empty.isEmpty)
        XCTAssertEqual(CName("abc").bytes, Array("abc".utf8))
        XCTAssertEqual(CName("abc"), CName(Array("abc".utf8)))
        XCTAssertEqual(CName("abc").withCString { strlen($0) }, 3)
        XCTAssertEqual(CName("abc").description, "abc")
    }
}
