import Foundation
import XCTest

/// The per-connection resource bounds (README, "Resource bounds"): with small bounds on the
/// command line, a client that looks up many names, opens files until refused, or queues more
/// blocking locks than allowed gets the documented errno, Ferry logs the bound once (not once
/// per refusal) and keeps serving other callers, and its thread count stays bounded.
class ResourceBoundsTests: XCTestCase {
    /// Arguments that pick the transport (the subclass runs the bounds over io_uring).
    var transport: [String] { [] }

    /// Runs boundscheck.py's `check` against `server`; returns its "key value" lines.
    private func run(_ check: String, _ server: FerryServer, _ arguments: [String],
                     timeout: TimeInterval = 600) throws -> [String: String] {
        let result = try runCommand(["python3", script("boundscheck.py"), check, server.source, server.mountpoint] + arguments,
                                    timeout: timeout)
        print(result.output, terminator: "")
        XCTAssertTrue(result.output.contains("PASS \(check)"), result.output)
        XCTAssertEqual(result.status, 0, result.output)
        var values: [String: String] = [:]
        for line in result.output.split(separator: "\n") {
            let parts = line.split(separator: " ", maxSplits: 1).map(String.init)
            if parts.count == 2 { values[parts[0]] = parts[1] }
        }
        return values
    }

    /// Asserts that boundscheck.py reported each of `expected`.
    private func expect(_ values: [String: String], _ expected: [String: String],
                        file: StaticString = #filePath, line: UInt = #line) {
        for (key, value) in expected.sorted(by: { $0.key < $1.key }) {
            XCTAssertEqual(values[key], value, key, file: file, line: line)
        }
    }

    /// How many warning lines of the bound named `what` the log holds.
    private func warnings(_ server: FerryServer, _ what: String) -> Int {
        server.log.split(separator: "\n").filter { $0.contains("resource bound reached") && $0.contains(what) }.count
    }

    /// --max-inodes 2000: the 2000th new name is refused ENOMEM (the root is not counted, and
    /// "known" holds one), a known file is still read by another process, and after the kernel
    /// drops its caches (FORGET) the refused name is found.
    func testInodeBoundRefusesLookupsWithENOMEM() throws {
        // No change notifications: the host-side creation of the files would otherwise make the
        // kernel drop (and FORGET) names it had looked up, and the count would drift.
        let server = try FerryServer(arguments: transport + ["--cache", "always", "--no-notify", "--max-inodes", "2000"])
        let values = try run("inodes", server, ["3000"])
        // "known", the directory "many", then files: 1998 of them fit.
        expect(values, ["errno": "ENOMEM", "looked_up": "1998", "other_caller": "ok", "recovered_after_drop_caches": "yes"])
        XCTAssertEqual(warnings(server, "inodes (--max-inodes)"), 1, server.log)
        XCTAssertTrue(server.log.contains("2000 inodes"), server.log)
        XCTAssertEqual(server.stop(), 0, server.log)
    }

    /// --max-open-files 100: the 101st open is ENFILE; another process's stat is answered
    /// meanwhile, and after one close another process opens and reads.
    func testOpenFileBoundRefusesOpensWithENFILE() throws {
        let server = try FerryServer(arguments: transport + ["--cache", "never", "--max-open-files", "100"])
        let values = try run("openfiles", server, ["300"])
        expect(values, ["errno": "ENFILE", "opened": "100", "other_stat": "ok", "other_caller": "ok"])
        XCTAssertEqual(warnings(server, "open files (--max-open-files)"), 1, server.log)
        // SIGUSR1 reports the bounds in use: every file is closed again, one refusal counted.
        // (RELEASE is asynchronous: ask again until the last ones have arrived.)
        let deadline = Date().addingTimeInterval(10)
        while !server.log.contains("0/100 open files (1 refused)") && Date() < deadline {
            kill(server.process.processIdentifier, SIGUSR1)
            usleep(200_000)
        }
        XCTAssertTrue(server.log.contains("0/100 open files (1 refused)"), server.log)
        XCTAssertEqual(server.stop(), 0, server.log)
    }

    /// --max-lock-waiters 8 with 40 blocking flocks queued behind a holder: 32 are refused
    /// ENOLCK at once, ferry gains at most 8 threads (plus slack for its own), another process
    /// reads meanwhile, and the 8 waiters get the lock once the holder lets go.
    func testLockWaiterBoundRefusesWithENOLCKAndBoundsThreads() throws {
        let server = try FerryServer(arguments: transport + ["--cache", "never", "--max-lock-waiters", "8"])
        let pid = server.serverPID
        let values = try run("lockwaiters", server, ["40", String(pid)], timeout: 120)
        expect(values, ["refused_early": "32", "other_early": "0", "other_caller": "ok", "locked_after_release": "8",
                        "all_finished": "yes"])
        let baseline = Int(values["threads_baseline"] ?? "") ?? -1
        let during = Int(values["threads_during"] ?? "") ?? Int.max
        XCTAssertGreaterThan(baseline, 0)
        XCTAssertLessThanOrEqual(during, baseline + 8 + 2, "ferry went from \(baseline) to \(during) threads")
        XCTAssertEqual(warnings(server, "blocked lock requests (--max-lock-waiters)"), 1, server.log)
        XCTAssertEqual(server.stop(), 0, server.log)
    }

    /// With the default bounds, 200,000 names looked up and held by the kernel are all served
    /// (the default inode bound is 1,000,000) and nothing is refused.
    func testDefaultBoundsServe200000Lookups() throws {
        let server = try FerryServer(arguments: ["--cache", "always", "--no-notify"])
        let pressure = try String(contentsOfFile: "/proc/sys/vm/vfs_cache_pressure", encoding: .utf8)
        try "1".write(toFile: "/proc/sys/vm/vfs_cache_pressure", atomically: false, encoding: .utf8)
        defer { try? pressure.write(toFile: "/proc/sys/vm/vfs_cache_pressure", atomically: false, encoding: .utf8) }
        let values = try run("inodes", server, ["200000"])
        expect(values, ["looked_up": "200000", "errno": "none", "other_caller": "ok"])
        XCTAssertEqual(warnings(server, "inodes"), 0, server.log)
        XCTAssertEqual(server.stop(), 0, server.log)
    }

    /// `--explain` shows the bounds (options and `-o` spellings, both transports), a bound of 0
    /// is refused, and `ferry virtiofsd --rlimit-nofile=N` reaches the vhost server, which then
    /// runs with RLIMIT_NOFILE N.
    func testOptionsExplainAndVirtiofsdSpelling() throws {
        let dir = try Scratch.directory("ferry-bounds-options")
        mkdir(dir + "/src", 0o755)
        mkdir(dir + "/mnt", 0o755)
        let explain = try runCommand([FerryServer.binary, "serve", dir + "/src", dir + "/mnt", "--explain",
                                      "--max-inodes", "5000", "-o", "max_open_files=300"])
        XCTAssertEqual(explain.status, 0, explain.output)
        XCTAssertTrue(explain.output.contains("5000 inodes (then ENOMEM), 300 open files (then ENFILE), 1024 blocked lock requests (then ENOLCK)"),
                      explain.output)
        let vhost = try runCommand([FerryServer.binary, "serve", dir + "/src", "--socket-path", dir + "/sock", "--explain",
                                    "--max-lock-waiters", "7", "--rlimit-nofile", "4096"])
        XCTAssertTrue(vhost.output.contains("(descriptor limit 4096)"), vhost.output)
        XCTAssertTrue(vhost.output.contains("7 blocked lock requests (then ENOLCK)"), vhost.output)
        let zero = try runCommand([FerryServer.binary, "serve", dir + "/src", dir + "/mnt", "--max-lock-waiters", "0"])
        XCTAssertNotEqual(zero.status, 0)
        XCTAssertTrue(zero.output.contains("--max-lock-waiters must be between 1 and 65536"), zero.output)
        let small = try runCommand([FerryServer.binary, "virtiofsd", "--socket-path=\(dir)/sock", "--shared-dir=\(dir)/src",
                                    "--rlimit-nofile=10"])
        XCTAssertEqual(small.status, 2, small.output)
        XCTAssertTrue(small.output.contains("--rlimit-nofile must be 0 (leave it) or between 64"), small.output)

        let server = Process()
        server.executableURL = URL(fileURLWithPath: FerryServer.binary)
        server.arguments = ["virtiofsd", "--socket-path=\(dir)/sock", "--shared-dir=\(dir)/src", "--rlimit-nofile=4096"]
        let log = URL(fileURLWithPath: dir + "/ferry.log")
        _ = FileManager.default.createFile(atPath: log.path, contents: nil)
        let handle = try FileHandle(forWritingTo: log)
        server.standardOutput = handle
        server.standardError = handle
        try server.run()
        defer {
            if server.isRunning { kill(server.processIdentifier, SIGTERM) }
            server.waitUntilExit()
        }
        let deadline = Date().addingTimeInterval(20)
        while !FileManager.default.fileExists(atPath: dir + "/sock") && server.isRunning && Date() < deadline { usleep(20_000) }
        let output = (try? String(contentsOf: log, encoding: .utf8)) ?? ""
        XCTAssertTrue(FileManager.default.fileExists(atPath: dir + "/sock"), output)
        let limits = try String(contentsOfFile: "/proc/\(server.processIdentifier)/limits", encoding: .utf8)
        let line = limits.split(separator: "\n").first { $0.hasPrefix("Max open files") }.map(String.init) ?? ""
        XCTAssertEqual(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst(3).prefix(2).map(String.init),
                       ["4096", "4096"], limits)
    }
}

/// The same bounds over FUSE-over-io_uring: the ring queues hand requests to the same engine
/// and filesystem, and a blocked lock waiter there holds a ring entry besides its thread.
final class ResourceBoundsOverURingTests: ResourceBoundsTests {
    override var transport: [String] { ["--transport", "uring"] }
    override func setUpWithError() throws { try URingParameter.enable() }
    override func tearDown() { URingParameter.restore(); super.tearDown() }

    /// Transport-independent, and long: run once, over /dev/fuse.
    override func testDefaultBoundsServe200000Lookups() throws {
        throw XCTSkip("run by ResourceBoundsTests (the bound is counted in the filesystem, not the transport)")
    }

    override func testOptionsExplainAndVirtiofsdSpelling() throws {
        throw XCTSkip("run by ResourceBoundsTests (options only)")
    }

    /// A server started so serves through the rings (not a silent /dev/fuse fallback).
    func testTheBoundsRunOverTheRings() throws {
        let server = try FerryServer(arguments: transport + ["--max-open-files", "10"])
        SandboxTests.waitForLog({ server.log }, "transport io_uring")
        try "x".write(toFile: server.mountpoint + "/f", atomically: false, encoding: .utf8)
        XCTAssertEqual(try String(contentsOfFile: server.mountpoint + "/f", encoding: .utf8), "x")
        XCTAssertEqual(server.stop(), 0, server.log)
        XCTAssertNil(server.log.range(of: "totals: 0 request(s) through the io_uring queues"), server.log)
        XCTAssertTrue(server.log.contains("request(s) through the io_uring queues"), server.log)
    }
}
