import Foundation
import XCTest

/// Host-side changes reach the mount's caches (scripts/notifycheck.py): with --cache always
/// (one-day timeouts) only a notification can explain a change showing up.
final class NotifyTests: XCTestCase {
    /// Runs notifycheck.py and asserts every line it prints is a PASS (and that it printed some).
    @discardableResult
    private func check(_ arguments: [String], expectLines: Int? = nil, asUser: Bool = false,
                       file: StaticString = #filePath, line: UInt = #line) throws -> String {
        var command = ["python3", script("notifycheck.py")]
        if asUser {
            // The user may not reach the checkout (or root's python shims): copy the script out
            // and use the system python.
            let copy = try Scratch.directory("ferry-script") + "/notifycheck.py"
            try FileManager.default.copyItem(atPath: script("notifycheck.py"), toPath: copy)
            chmod(URL(fileURLWithPath: copy).deletingLastPathComponent().path, 0o755)
            command = OrdinaryUser.asUser + ["/usr/bin/python3", copy]
        }
        let result = try runCommand(command + arguments, timeout: 300)
        print(result.output, terminator: "")
        let lines = result.output.split(separator: "\n")
        let failures = lines.filter { !$0.hasPrefix("PASS") }
        XCTAssertTrue(failures.isEmpty, failures.joined(separator: "\n"), file: file, line: line)
        if let expectLines { XCTAssertEqual(lines.count, expectLines, result.output, file: file, line: line) }
        XCTAssertEqual(result.status, 0, file: file, line: line)
        return result.output
    }

    /// The counters ferry printed last (--stats prints them at exit).
    private func lastStats(_ log: String) throws -> [String: Int] {
        guard let line = log.split(separator: "\n").last(where: { $0.contains("stats: notify: events") }) else {
            throw TestFailure("no stats line in the log:\n\(log)")
        }
        // "events 12 (own 3, not cached 4); pushed 5; ring high-water 2/4096; overflows 0 ring + 1 watcher;
        //  revalidations 1; batches 3; sent 4 inode + 1 entry + 0 delete + 1 epoch (2 refused by the kernel)"
        let patterns = ["events": "events (\\d+)", "own": "own (\\d+)", "pushed": "pushed (\\d+)",
                        "ring": "overflows (\\d+) ring", "watcher": "(\\d+) watcher", "revalidations": "revalidations (\\d+)",
                        "inode": "sent (\\d+) inode", "entry": "(\\d+) entry", "delete": "(\\d+) delete"]
        var counters: [String: Int] = [:]
        let text = String(line)
        for (name, pattern) in patterns {
            let regex = try NSRegularExpression(pattern: pattern)
            if let match = regex.firstMatch(in: text, range: NSRange(text.startIndex..., in: text)),
               let range = Range(match.range(at: 1), in: text) {
                counters[name] = Int(text[range])
            }
        }
        return counters
    }

    /// Files opened for writing through the mount with passthrough (created, or opened
    /// read-write and only read, as databases do): the kernel's backing files report the
    /// clients' closes as a host process's CLOSE_WRITE; Ferry has fanotify ignore those while a
    /// node has such files, so they cost no invalidation. A host process's write to such a file
    /// still shows (its MODIFY is reported). (The clients' own writes still show as MODIFY.)
    func testClosesOfPassedThroughFilesAreNotHostChanges() throws {
        let server = try FerryServer(arguments: ["--cache", "always", "--stats"])
        let m = server.mountpoint, s = server.source
        let script = """
            import os, time
            for i in range(50):
                os.close(os.open('\(m)/f%d' % i, os.O_CREAT | os.O_WRONLY, 0o644))
                fd = os.open('\(m)/f%d' % i, os.O_RDWR)
                os.read(fd, 10)
                os.close(fd)
            fd = os.open('\(m)/held', os.O_CREAT | os.O_RDWR, 0o644)
            os.write(fd, b'guest')
            with open('\(s)/held', 'ab') as f: f.write(b' and host')
            deadline = time.time() + 2
            while os.stat('\(m)/held').st_size != 14 and time.time() < deadline: time.sleep(0.01)
            print('size', os.stat('\(m)/held').st_size)
            os.close(fd)
            time.sleep(0.3)
            """
        let result = try runCommand(["python3", "-c", script])
        XCTAssertEqual(result.status, 0, result.output)
        XCTAssertTrue(result.output.contains("size 14"), "a host write to a file open through the mount did not show: \(result.output)")
        XCTAssertEqual(server.stop(), 0, server.log)
        XCTAssertTrue(server.log.contains("passthrough on:"), server.log)
        let stats = try lastStats(server.log)
        XCTAssertLessThan(stats["pushed"] ?? .max, 10, "the clients' closes counted as host changes: \(stats)")
    }

    static let cases = ["append_to_open_file", "chmod", "chown", "create", "mkdir", "recreate_tree", "rename",
                        "replace_file", "rmdir", "truncate", "unlink", "utimes", "write", "xattr"]

    func testEveryHostChangeIsVisibleWithin100Milliseconds() throws {
        let server = try FerryServer(arguments: ["--cache", "always"])
        try check(["notify", server.source, server.mountpoint] + NotifyTests.cases, expectLines: NotifyTests.cases.count)
        XCTAssertTrue(server.log.contains("change notifications: fanotify"), server.log)
        XCTAssertEqual(server.stop(), 0, server.log)
    }

    /// The same with every read and write going through Ferry (passthrough off).
    func testEveryHostChangeIsVisibleWithoutPassthrough() throws {
        let server = try FerryServer(arguments: ["--cache", "always", "--passthrough", "never"])
        try check(["notify", server.source, server.mountpoint] + NotifyTests.cases, expectLines: NotifyTests.cases.count)
        XCTAssertEqual(server.stop(), 0, server.log)
    }

    /// The control for the tests above: without notifications every one of those changes stays
    /// invisible, so they measure notifications and not cache expiry. Passthrough is off here:
    /// with it the kernel reads the host file itself, so data changes (write, append) show at
    /// once anyway (PassthroughTests.testHostWritesShowWithoutNotifications).
    func testWithoutNotificationsTheSameChangesStayStale() throws {
        let server = try FerryServer(arguments: ["--cache", "always", "--no-notify", "--passthrough", "never"])
        try check(["stale", server.source, server.mountpoint] + NotifyTests.cases, expectLines: NotifyTests.cases.count)
        XCTAssertTrue(server.log.contains("change notifications off"), server.log)
        XCTAssertEqual(server.stop(), 0, server.log)
    }

    func testWritesThroughOneMountAreVisibleThroughAnother() throws {
        let a = try FerryServer(arguments: ["--cache", "always"])
        let mountB = URL(fileURLWithPath: a.source).deletingLastPathComponent().appendingPathComponent("mnt-b").path
        let b = try FerryServer(source: a.source, mountpoint: mountB, arguments: ["--cache", "always"])
        try check(["twomounts", a.source, a.mountpoint, b.mountpoint], expectLines: 6)
        XCTAssertEqual(b.stop(), 0, b.log)
        XCTAssertEqual(a.stop(), 0, a.log)
    }

    /// An eight-slot ring and 10,000 host writes: the ring overflows, and afterwards every file
    /// read through the mount equals the host's bytes.
    func testRingOverflowLosesNoChange() throws {
        let server = try FerryServer(arguments: ["--cache", "always", "--notify-ring-size", "8", "--stats"])
        try check(["overflow", server.source, server.mountpoint], expectLines: 1)
        XCTAssertEqual(server.stop(), 0, server.log)
        let stats = try lastStats(server.log)
        XCTAssertGreaterThan((stats["ring"] ?? 0) + (stats["watcher"] ?? 0), 0, "the burst overflowed: \(stats)")
        XCTAssertGreaterThan(stats["revalidations"] ?? 0, 0, "\(stats)")
        XCTAssertTrue(server.log.contains("revalidating all"), server.log)
    }

    /// Changes made through the mount itself are filtered out: the kernel made them, so no
    /// invalidation is sent back. With passthrough (the second run) the kernel writes the host
    /// file in the writing process, which fanotify reports as that process's change: each
    /// written file then costs one inode invalidation (protocol/notify-ring.md), nothing else.
    func testOwnChangesSendNoInvalidations() throws {
        for passthrough in ["never", "auto"] {
            let server = try FerryServer(arguments: ["--cache", "always", "--stats", "--passthrough", passthrough])
            let m = server.mountpoint
            let commands = "for i in $(seq 100); do echo data > \(m)/f$i; chmod 600 \(m)/f$i; mv \(m)/f$i \(m)/g$i; done; rm \(m)/g*"
            XCTAssertEqual(try runCommand(["sh", "-c", commands]).status, 0)
            XCTAssertEqual(server.stop(), 0, server.log)
            let stats = try lastStats(server.log)
            XCTAssertGreaterThanOrEqual(stats["own"] ?? 0, 400, "\(stats)")
            if passthrough == "never" {
                XCTAssertEqual(stats["inode"] ?? -1, 0, "\(stats)")
            } else {
                XCTAssertLessThanOrEqual(stats["inode"] ?? -1, 200, "\(stats)")
            }
            XCTAssertEqual(stats["entry"] ?? -1, 0, "\(stats)")
            XCTAssertEqual(stats["delete"] ?? -1, 0, "\(stats)")
        }
    }

    /// git on the host commits, edits and switches branches; git through the mount (cache
    /// always) sees each state at once. Without notifications the same run goes stale.
    func testGitThroughTheMountFollowsTheHost() throws {
        let server = try FerryServer(arguments: ["--cache", "always"])
        let result = try runCommand(["sh", script("gitcoherence.sh"), server.source, server.mountpoint])
        print(result.output, terminator: "")
        XCTAssertFalse(result.output.contains("FAIL"), result.output)
        XCTAssertEqual(result.output.split(separator: "\n").filter { $0.hasPrefix("PASS") }.count, 11, result.output)
        XCTAssertEqual(result.status, 0)
        XCTAssertEqual(server.stop(), 0, server.log)

        let control = try FerryServer(arguments: ["--cache", "always", "--no-notify"])
        let stale = try runCommand(["sh", script("gitcoherence.sh"), control.source, control.mountpoint])
        XCTAssertTrue(stale.output.contains("FAIL"), "without notifications git should have seen stale state:\n\(stale.output)")
        XCTAssertEqual(control.stop(), 0, control.log)
    }

    /// Host changes racing the mount's own lookups of the same names (scripts/lookuprace.c).
    func testChangesRacingLookupsAreNotLost() throws {
        let server = try FerryServer(arguments: ["--cache", "always"])
        let binary = URL(fileURLWithPath: server.source).deletingLastPathComponent().appendingPathComponent("lookuprace").path
        let build = try runCommand(["gcc", "-O2", "-pthread", "-o", binary, script("lookuprace.c")])
        XCTAssertEqual(build.status, 0, build.output)
        let result = try runCommand([binary, server.source, server.mountpoint, "500"], timeout: 300)
        print(result.output, terminator: "")
        XCTAssertEqual(result.output.split(separator: "\n").filter { $0.hasPrefix("PASS") }.count, 2, result.output)
        XCTAssertEqual(result.status, 0)
        XCTAssertEqual(server.stop(), 0, server.log)
    }

    /// A file system mounted inside SOURCE is marked too once the kernel reaches it.
    func testChangesBelowAMountInsideTheShareAreSeen() throws {
        let scratch = try Scratch.directory("ferry-submount")
        let source = scratch + "/src", inner = scratch + "/src/inner"
        try FileManager.default.createDirectory(atPath: inner, withIntermediateDirectories: true)
        XCTAssertEqual(try runCommand(["mount", "-t", "tmpfs", "ferry-inner", inner]).status, 0)
        defer { _ = try? runCommand(["umount", "-l", inner]) }
        let server = try FerryServer(source: source, mountpoint: scratch + "/mnt", arguments: ["--cache", "always"])
        let cases = ["write", "chmod", "create", "unlink", "rename"]
        try check(["notify", inner, server.mountpoint + "/inner"] + cases, expectLines: cases.count)
        XCTAssertEqual(server.stop(), 0, server.log)
        XCTAssertFalse(server.log.contains("cannot watch"), server.log)
    }

    func testInotifyWatcherSeesEveryHostChange() throws {
        let server = try FerryServer(arguments: ["--cache", "always", "--notify-watcher", "inotify"])
        try check(["notify", server.source, server.mountpoint] + NotifyTests.cases, expectLines: NotifyTests.cases.count)
        XCTAssertTrue(server.log.contains("change notifications: inotify"), server.log)
        XCTAssertEqual(server.stop(), 0, server.log)
    }

    func testFanotifyDirectoryMarksSeeEveryHostChange() throws {
        let server = try FerryServer(arguments: ["--cache", "always", "--notify-watcher", "fanotify-directories"])
        try check(["notify", server.source, server.mountpoint] + NotifyTests.cases, expectLines: NotifyTests.cases.count)
        XCTAssertTrue(server.log.contains("change notifications: fanotify (a mark per cached directory"), server.log)
        XCTAssertEqual(server.stop(), 0, server.log)
    }

    /// An unprivileged server may not mark a whole file system; it says so and marks each cached
    /// directory instead. Its own changes are still recognised (fanotify reports its own pid to
    /// an unprivileged listener), and the user's host-side changes reach the mount.
    func testUnprivilegedServerMarksCachedDirectories() throws {
        let user = try OrdinaryUser()
        defer { user.restore() }
        let server = try FerryServer(source: user.directory + "/src", mountpoint: user.directory + "/mnt",
                                     arguments: ["--cache", "always", "--stats"], prefix: OrdinaryUser.asUser)
        let cases = NotifyTests.cases.filter { $0 != "chown" }   // only root may give files away
        try check(["notify", server.source, server.mountpoint] + cases, expectLines: cases.count, asUser: true)
        XCTAssertTrue(server.log.contains("fanotify refused a file-system mark"), server.log)
        XCTAssertTrue(server.log.contains("change notifications: fanotify (a mark per cached directory"), server.log)
        let m = server.mountpoint
        let own = try runCommand(OrdinaryUser.asUser + ["sh", "-c", "for i in $(seq 50); do echo x > \(m)/own$i; done"])
        XCTAssertEqual(own.status, 0, own.output)
        _ = try runCommand(OrdinaryUser.asUser + ["fusermount3", "-u", server.mountpoint])
        XCTAssertEqual(server.stop(), 0, server.log)
        XCTAssertGreaterThanOrEqual(try lastStats(server.log)["own"] ?? 0, 50, server.log)
    }

    /// Asked for explicitly, a watcher that cannot run is a start-up error, not a warning.
    func testExplicitWatcherThatCannotRunStopsTheStart() throws {
        let limit = "/proc/sys/fs/inotify/max_user_instances"
        let old = try String(contentsOfFile: limit, encoding: .utf8)
        try "0\n".write(toFile: limit, atomically: false, encoding: .utf8)
        defer { try? old.write(toFile: limit, atomically: false, encoding: .utf8) }
        let server = try FerryServer(arguments: ["--notify-watcher", "inotify"], waitForMount: false)
        server.process.waitUntilExit()
        XCTAssertEqual(server.process.terminationStatus, 2, server.log)
        XCTAssertTrue(server.log.contains("ferry: change notifications cannot run: inotify refused"), server.log)
        XCTAssertFalse(FerryServer.isMounted(server.mountpoint))
    }

    func testRingSizeMustBeAPowerOfTwo() throws {
        let result = try runCommand([FerryServer.binary, "serve", "/tmp", "/mnt", "--notify-ring-size", "6"])
        XCTAssertNotEqual(result.status, 0)
        XCTAssertTrue(result.output.contains("power of two"), result.output)
    }

    func testCacheNeverNeedsNoNotifications() throws {
        let server = try FerryServer(arguments: ["--cache", "never"])
        XCTAssertEqual(server.stop(), 0, server.log)
        XCTAssertTrue(server.log.contains("change notifications off (not needed with --cache never)"), server.log)
    }
}
