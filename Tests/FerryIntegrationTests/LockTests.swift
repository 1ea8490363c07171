import Foundation
import XCTest

/// Two Ferry mounts of one SOURCE (A and B), started once per test class, and the lock checks
/// of scripts/lockcheck.py run across them and the host.
final class LockMounts {
    let a: FerryServer?
    let b: FerryServer?

    /// --cache never: the programs in LockTests read what another mount just wrote.
    init(arguments: [String]) {
        a = try? FerryServer(arguments: ["--cache", "never"] + arguments)
        if let source = a?.source {
            let mountB = URL(fileURLWithPath: source).deletingLastPathComponent().appendingPathComponent("mnt-b").path
            b = try? FerryServer(source: source, mountpoint: mountB, arguments: ["--cache", "never"] + arguments)
        } else {
            b = nil
        }
    }

    /// Both servers, or an error if either did not start.
    func servers() throws -> (FerryServer, FerryServer) {
        guard let a, let b else { throw TestFailure("ferry did not start") }
        return (a, b)
    }

    /// Stops both servers; each must exit cleanly.
    func stop() {
        for server in [a, b].compactMap({ $0 }) { XCTAssertEqual(server.stop(), 0, server.log) }
    }

    /// Runs lockcheck.py's check `name`.
    func check(_ name: String, file: StaticString, line: UInt) throws {
        let (a, b) = try servers()
        let result = try runCommand(["python3", script("lockcheck.py"), a.source, a.mountpoint, b.mountpoint, name], timeout: 300)
        print(result.output, terminator: "")
        XCTAssertTrue(result.output.contains("PASS \(name)"), result.output, file: file, line: line)
        XCTAssertEqual(result.status, 0, file: file, line: line)
    }
}

/// Host locks through two Ferry mounts of one SOURCE plus the host (scripts/lockcheck.py), and
/// real programs that depend on them.
final class LockTests: XCTestCase {
    nonisolated(unsafe) static var mounts: LockMounts?

    override class func setUp() {
        super.setUp()
        mounts = LockMounts(arguments: [])
    }

    override class func tearDown() {
        mounts?.stop()
        mounts = nil
        super.tearDown()
    }

    private func servers() throws -> (FerryServer, FerryServer) {
        guard let mounts = Self.mounts else { throw TestFailure("ferry did not start") }
        return try mounts.servers()
    }

    func check(_ name: String, file: StaticString = #filePath, line: UInt = #line) throws {
        guard let mounts = Self.mounts else { throw TestFailure("ferry did not start") }
        try mounts.check(name, file: file, line: line)
    }

    func testConflictsBetweenEveryPair() throws { try check("conflicts") }
    func testGetlkReportsTheHolder() throws { try check("getlk_reports_the_holder") }
    func testByteRangesAndSplitting() throws { try check("byte_ranges_and_splitting") }
    func testFlockSharedAndExclusive() throws { try check("flock_shared_exclusive") }
    func testBlockingWaiterWakesWithin50ms() throws { try check("blocking_waiter_wakes_fast") }
    func testInterruptedOrKilledWaiterLeavesNoLock() throws { try check("interrupted_waiter_leaves_no_lock") }
    func testCloseAndExitReleaseLocks() throws { try check("close_and_exit_release_locks") }
    func testReleaseIsSeenAtOnceThroughTheSameMount() throws { try check("release_is_seen_at_once") }
    func testFlockEndsWithTheOpenThatTookIt() throws { try check("flock_ends_with_the_open_that_took_it") }
    func testDeadlockIsDetected() throws { try check("deadlock_is_detected") }
    func testFiveHundredWaitersDoNotBlockIO() throws { try check("many_waiters_do_not_block_io") }

    /// Three sqlite3 writers (two mounts and the host) on one database: every row lands and the
    /// database stays intact.
    func testSqliteWritersOnTwoMountsAndTheHost() throws {
        let (a, b) = try servers()
        let perWriter = 100
        let db = "/lock-sqlite.db"
        XCTAssertEqual(try runCommand(["sqlite3", a.source + db, "CREATE TABLE t(id INTEGER PRIMARY KEY, w TEXT, n INT);"]).status, 0)
        let loop = { (root: String, tag: String) -> String in
            "for i in $(seq \(perWriter)); do sqlite3 -cmd '.timeout 30000' \(root)\(db) " +
            "\"BEGIN IMMEDIATE; INSERT INTO t(w, n) SELECT '\(tag)', count(*) FROM t; COMMIT;\" >/dev/null || echo FAIL \(tag) $i; done"
        }
        let script = [loop(a.mountpoint, "A"), loop(b.mountpoint, "B"), loop(a.source, "host")]
            .map { "(\($0)) &" }.joined(separator: "\n") + "\nwait"
        let run = try runCommand(["sh", "-c", script], timeout: 600)
        XCTAssertFalse(run.output.contains("FAIL"), run.output)
        let check = try runCommand(["sqlite3", b.mountpoint + db, "PRAGMA integrity_check; SELECT count(*) FROM t; SELECT count(DISTINCT n) FROM t;"])
        XCTAssertEqual(check.output.split(separator: "\n").map(String.init), ["ok", "\(3 * perWriter)", "\(3 * perWriter)"],
                       "integrity, rows, and distinct counts seen by each insert")
    }

    /// flock(1) serialising a read-modify-write counter across both mounts and the host.
    func testFlockCounterAcrossMountsIsExact() throws {
        let (a, b) = try servers()
        try "0\n".write(toFile: a.source + "/counter", atomically: false, encoding: .utf8)
        let rounds = 100
        let loop = { (root: String) -> String in
            "for i in $(seq \(rounds)); do flock \(root)/counter.lock sh -c 'n=$(cat \(root)/counter); echo $((n+1)) > \(root)/counter'; done"
        }
        let script = [a.mountpoint, b.mountpoint, a.source].map { "(\(loop($0))) &" }.joined(separator: "\n") + "\nwait"
        XCTAssertEqual(try runCommand(["sh", "-c", script], timeout: 600).status, 0)
        let final = try String(contentsOfFile: a.source + "/counter", encoding: .utf8)
        XCTAssertEqual(final.trimmingCharacters(in: .whitespacesAndNewlines), "\(3 * rounds)")
    }

    /// stress-ng's lock stressors against a mount, with --verify.
    func testStressNgLockStressors() throws {
        let (a, _) = try servers()
        let result = try runCommand(["stress-ng", "--fcntl", "2", "--lockf", "2", "--flock", "2", "--lockofd", "2",
                                     "--timeout", "20s", "--verify", "--metrics-brief", "--temp-path", a.mountpoint], timeout: 300)
        print(result.output)
        XCTAssertEqual(result.status, 0)
        XCTAssertTrue(result.output.contains("successful run completed"))
        XCTAssertFalse(result.output.contains(" fail"))
    }
}

/// A subset of the lock tests with passthrough off (LockTests runs with the default, on): the
/// lock requests are the same, but reads and writes of the locked files then go through Ferry.
final class LockTestsWithoutPassthrough: XCTestCase {
    nonisolated(unsafe) static var mounts: LockMounts?

    override class func setUp() {
        super.setUp()
        mounts = LockMounts(arguments: ["--passthrough", "never"])
    }

    override class func tearDown() {
        mounts?.stop()
        mounts = nil
        super.tearDown()
    }

    private func check(_ name: String, file: StaticString = #filePath, line: UInt = #line) throws {
        guard let mounts = Self.mounts else { throw TestFailure("ferry did not start") }
        try mounts.check(name, file: file, line: line)
    }

    func testConflictsBetweenEveryPair() throws { try check("conflicts") }
    func testFlockSharedAndExclusive() throws { try check("flock_shared_exclusive") }
    func testCloseAndExitReleaseLocks() throws { try check("close_and_exit_release_locks") }
    func testReleaseIsSeenAtOnceThroughTheSameMount() throws { try check("release_is_seen_at_once") }
    func testBlockingWaiterWakesWithin50ms() throws { try check("blocking_waiter_wakes_fast") }
}
