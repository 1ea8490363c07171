import FerrySystem
import Glibc
import Synchronization
import XCTest

/// Supplementary groups: the /proc parser and the short-lived per-caller cache.
final class CallerGroupsTests: XCTestCase {
    func testParsesTheGroupsLine() {
        let text = Array("Name:\tx\nUid:\t1\t1\t1\t1\nGroups:\t27 100 3000 \nNgid:\t0\n".utf8)
        XCTAssertEqual(ThreadCredentials.parseGroups(text[...], complete: false), [27, 100, 3000])
        let none = Array("Name:\tx\nGroups:\t\nNgid:\t0\n".utf8)
        XCTAssertEqual(ThreadCredentials.parseGroups(none[...], complete: false), [])
        let missing = Array("Name:\tx\nUid:\t1\n".utf8)
        XCTAssertNil(ThreadCredentials.parseGroups(missing[...], complete: true))
        // A line not yet ended is incomplete until the file ended.
        let cut = Array("Name:\tx\nGroups:\t27 10".utf8)
        XCTAssertNil(ThreadCredentials.parseGroups(cut[...], complete: false))
        XCTAssertEqual(ThreadCredentials.parseGroups(cut[...], complete: true), [27, 10])
    }

    func testReadsThisThreadsGroups() throws {
        var expected = [gid_t](repeating: 0, count: 65536)
        let n = getgroups(Int32(expected.count), &expected)
        XCTAssertGreaterThanOrEqual(n, 0)
        let tid = UInt32(HostThread.currentID)
        XCTAssertEqual(ThreadCredentials.supplementaryGroups(ofThread: tid).map { Set($0) }, Set(expected[0..<Int(n)]))
        XCTAssertNil(ThreadCredentials.supplementaryGroups(ofThread: 0x7fff_fff0))
    }

    func testManyGroupsAreReadWhole() throws {
        guard geteuid() == 0 else { throw XCTSkip("needs root to set groups") }
        // A child thread with 2,000 groups (a status file larger than the first read).
        let groups = (0..<2000).map { gid_t(10_000 + $0) }
        let read = Mutex<[UInt32]?>(nil)
        var thread = pthread_t()
        let box = Unmanaged.passRetained(Box { () in
            // Switches only this thread (glibc's setgroups would change them all).
            ThreadCredentials(switching: true).become(uid: 0, gid: 0, groups: groups.map { UInt32($0) })
            read.withLock { $0 = ThreadCredentials.supplementaryGroups(ofThread: UInt32(HostThread.currentID)) }
        })
        XCTAssertEqual(pthread_create(&thread, nil, { raw in
            Unmanaged<Box>.fromOpaque(raw!).takeRetainedValue().body(); return nil
        }, box.toOpaque()), 0)
        pthread_join(thread, nil)
        XCTAssertEqual(read.withLock { $0 }, groups.map { UInt32($0) })
    }

    func testCacheIsPerCallerAndShortLived() {
        let reads = Mutex<Int>(0)
        let current = Mutex<[UInt32]>([5])
        let cache = CallerGroups(source: { _ in reads.withLock { $0 += 1 }; return current.withLock { $0 } })
        let t0: Int64 = 1_000_000_000
        XCTAssertEqual(cache.groups(tid: 7, uid: 1000, gid: 1000, now: t0), [5])
        current.withLock { $0 = [6] }
        // Within 100 ms the same caller is served from the cache...
        XCTAssertEqual(cache.groups(tid: 7, uid: 1000, gid: 1000, now: t0 + 50_000_000), [5])
        XCTAssertEqual(reads.withLock { $0 }, 1)
        // ...but not with another uid or gid (setuid/setgid after setgroups), nor after 100 ms.
        XCTAssertEqual(cache.groups(tid: 7, uid: 1001, gid: 1000, now: t0 + 50_000_000), [6])
        XCTAssertEqual(cache.groups(tid: 7, uid: 1000, gid: 1001, now: t0 + 50_000_000), [6])
        XCTAssertEqual(cache.groups(tid: 7, uid: 1000, gid: 1000, now: t0 + CallerGroups.maximumAge), [6])
        XCTAssertEqual(reads.withLock { $0 }, 4)
        // Another thread id is another caller.
        XCTAssertEqual(cache.groups(tid: 8, uid: 1000, gid: 1000, now: t0 + CallerGroups.maximumAge), [6])
        XCTAssertEqual(reads.withLock { $0 }, 5)
    }

    func testVanishedThreadsAreNotRemembered() {
        let cache = CallerGroups(source: { _ in nil })
        XCTAssertEqual(cache.groups(tid: 9, uid: 1, gid: 1, now: 0), [])
        XCTAssertEqual(cache.count, 0)
    }

    func testCacheStaysBounded() {
        let cache = CallerGroups(source: { _ in [1] })
        for tid in 0..<UInt32(CallerGroups.capacity * 2 + 10) {
            _ = cache.groups(tid: tid, uid: 1, gid: 1, now: 5)
        }
        XCTAssertLessThanOrEqual(cache.count, CallerGroups.capacity)
    }
}

private final class Box {
    let body: () -> Void
    init(_ body: @escaping () -> Void) { self.body = body }
}
