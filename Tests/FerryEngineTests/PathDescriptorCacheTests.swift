@testable import FerryFS
import FerrySystem
import Glibc
import XCTest

/// The bounded table of O_PATH descriptors for file-handle inodes.
final class PathDescriptorCacheTests: XCTestCase {
    private func pathFD() -> OwnedFD { OwnedFD(open("/", HostFlags.oPath | O_CLOEXEC)) }

    private func isOpen(_ fd: Int32) -> Bool { fcntl(fd, F_GETFD) >= 0 }

    func testKeepsFindsEvictsAndRemoves() {
        let cache = PathDescriptorCache(capacity: 128)   // one pair of slots per shard
        XCTAssertEqual(cache.capacity, 128)
        XCTAssertNil(cache.descriptor(of: 5))
        var first: OwnedFD? = pathFD()
        let firstNumber = first!.rawValue
        cache.store(first!, for: 5)
        XCTAssertTrue(cache.descriptor(of: 5) === first)
        first = nil
        XCTAssertTrue(isOpen(firstNumber), "kept by the cache")
        // Nodes whose pair of slots is node 5's.
        let rivals = Array((6..<UInt64(1_000_000)).lazy.filter { cache.place($0) == cache.place(5) }.prefix(3))
        XCTAssertEqual(rivals.count, 3)
        // The first rival takes the free slot of the pair; both stay.
        let second = pathFD()
        cache.store(second, for: rivals[0])
        XCTAssertTrue(cache.descriptor(of: 5)?.rawValue == firstNumber, "5 is now the more recently used")
        XCTAssertTrue(cache.descriptor(of: rivals[0]) === second)
        _ = cache.descriptor(of: 5)
        // The next rival replaces the less recently used of the two (rivals[0]), which is closed.
        let third = pathFD()
        cache.store(third, for: rivals[1])
        XCTAssertNil(cache.descriptor(of: rivals[0]))
        XCTAssertNotNil(cache.descriptor(of: 5))
        XCTAssertTrue(cache.descriptor(of: rivals[1]) === third)
        // Now 5 is the less recently used: the last rival evicts it.
        cache.store(pathFD(), for: rivals[2])
        XCTAssertNil(cache.descriptor(of: 5))
        XCTAssertFalse(isOpen(firstNumber), "evicted and closed")
        // Removing only a given descriptor leaves a newer one alone.
        cache.remove(rivals[1], only: pathFD())
        XCTAssertTrue(cache.descriptor(of: rivals[1]) === third)
        cache.remove(rivals[1], only: third)
        XCTAssertNil(cache.descriptor(of: rivals[1]))
        cache.remove(rivals[2])
        XCTAssertEqual(cache.count, 0)
    }

    func testADescriptorInUseOutlivesItsEviction() {
        let cache = PathDescriptorCache(capacity: 128)
        cache.store(pathFD(), for: 9)
        let inUse = cache.descriptor(of: 9)!
        cache.remove(9)
        XCTAssertTrue(isOpen(inUse.rawValue))
    }

    func testStaysWithinItsShareOfTheDescriptorLimit() {
        XCTAssertEqual(PathDescriptorCache.capacity(forDescriptorLimit: 1024), 64)
        XCTAssertEqual(PathDescriptorCache.capacity(forDescriptorLimit: 1_048_576), 16384)
        let cache = PathDescriptorCache(capacity: 256)
        for id in 0..<UInt64(10_000) { cache.store(pathFD(), for: id) }
        XCTAssertLessThanOrEqual(cache.count, 256)
        XCTAssertGreaterThan(cache.count, 200, "two ways per set fill most slots")
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
