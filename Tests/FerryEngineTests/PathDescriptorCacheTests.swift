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
