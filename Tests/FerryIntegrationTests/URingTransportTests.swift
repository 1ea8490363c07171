import Foundation
import XCTest

/// The fuse module's enable_uring parameter, switched for a test class and put back afterwards.
enum URingParameter {
    static let path = "/sys/module/fuse/parameters/enable_uring"

    /// The current value ("Y"/"N"), or nil when the kernel has no FUSE-over-io_uring.
    static var value: String? {
        (try? String(contentsOfFile: path, encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    static func set(_ on: Bool) {
        guard let file = FileHandle(forWritingAtPath: path) else { return }
        file.write(Data((on ? "1\n" : "0\n").utf8))
        try? file.close()
    }

    /// The value before the first `enable()` of this process, restored by `restore()` (and at exit).
    nonisolated(unsafe) private static var saved: String?

    static func enable() throws {
        guard let current = value else { throw XCTSkip("this kernel has no FUSE-over-io_uring (\(path) is missing)") }
        if saved == nil {
            saved = current
            atexit { URingParameter.restore() }
        }
        set(true)
        guard value == "Y" || value == "1" else { throw TestFailure("could not turn \(path) on") }
    }

    static func restore() {
        guard let saved else { return }
        set(saved == "Y" || saved == "1")
    }
}

/// `--transport uring` (protocol/fuse-uring.md): requests really come through the io_uring
/// queues, the differential and coherence walks still match the host, the fallback and the
/// start-up error when the kernel's FUSE-over-io_uring is off, and a clean exit on unmount.
final class URingTransportTests: XCTestCase {
    override func setUpWithError() throws { try URingParameter.enable() }
    override func tearDown() { URingParameter.restore(); super.tearDown() }

    /// "N request(s) through the io_uring queues, M through /dev/fuse" from the exit log.
    private func totals(_ log: String) throws -> (ring: Int, dev: Int) {
        guard let line = log.split(separator: "\n").last(where: { $0.contains("transport totals:") }) else {
            throw TestFailure("no transport totals in the log:\n\(log)")
        }
        let numbers = line.split(whereSeparator: { !$0.isNumber }).compactMap { Int($0) }
        // The timestamp comes first; the last two numbers are the totals.
        guard numbers.count >= 2 else { throw TestFailure("cannot read \(line)") }
        return (numbers[numbers.count - 2], numbers[numbers.count - 1])
    }

    func testRequestsGoThroughTheRings() throws {
        let server = try FerryServer(arguments: ["--transport", "uring", "--passthrough", "never"])
        for i in 0..<200 {
            let path = server.mountpoint + "/f\(i)"
            try Data(repeating: UInt8(i & 0xff), count: 70_000).write(to: URL(fileURLWithPath: path))
            XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: path)).count, 70_000)
        }
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: server.mountpoint).count, 200)
        // A large write and read (1 MiB requests fill a whole payload buffer).
        let big = (0..<(3 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        try Data(big).write(to: URL(fileURLWithPath: server.mountpoint + "/big"))
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: server.source + "/big")), Data(big))
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: server.mountpoint + "/big")), Data(big))
        XCTAssertEqual(server.stop(), 0, server.log)
        let log = server.log
        XCTAssertTrue(log.contains("transport io_uring: \(ProcessInfo.processInfo.processorCount) queue(s)"), log)
        let (ring, dev) = try totals(log)
        // 200 x (create, write, flush, release, open, read, ...): well over 1,000 requests; only
        // what the kernel sends before the rings are ready, FORGETs and INTERRUPTs use /dev/fuse.
        XCTAssertGreaterThan(ring, 1_500, log)
        XCTAssertLessThan(dev, ring / 4, log)
    }

    /// Every opcode the walk makes, compared with a plain host directory (root and two users),
    /// through the rings, with data through Ferry (passthrough off) and with passthrough.
    func testDifferentialWalkMatchesTheHost() throws {
        for (arguments, seed) in [(["--passthrough", "never"], 1), ([], 2)] {
            let server = try FerryServer(arguments: ["--transport", "uring"] + arguments)
            let native = try Scratch.directory("ferry-opdiff")
            let result = try runCommand(["python3", script("opdiff.py"), native, server.mountpoint, String(seed), "600"])
            XCTAssertTrue(result.output.contains("PASS seed \(seed)"), "\(arguments) seed \(seed):\n\(result.output)")
            XCTAssertEqual(result.status, 0)
            XCTAssertEqual(server.stop(), 0, server.log)
            let (ring, dev) = try totals(server.log)
            XCTAssertGreaterThan(ring, 150, server.log)
            XCTAssertLessThan(dev, ring / 4, server.log)
        }
    }

    /// Host changes pushed as notifications (on /dev/fuse) while requests use the rings.
    func testHostChangesReachTheMount() throws {
        let server = try FerryServer(arguments: ["--transport", "uring", "--cache", "always", "--passthrough", "never"])
        let result = try runCommand(["env", "COHERENCE_LIMIT=1.0", "python3", script("coherencewalk.py"),
                                     server.source, server.mountpoint, "1", "300"])
        XCTAssertTrue(result.output.contains("PASS seed 1"), result.output)
        XCTAssertEqual(result.status, 0)
        let notify = try runCommand(["python3", script("notifycheck.py"), "notify", server.source, server.mountpoint,
                                     "create", "write", "rename", "unlink", "chmod", "truncate"])
        XCTAssertFalse(notify.output.split(separator: "\n").contains { !$0.hasPrefix("PASS") }, notify.output)
        XCTAssertEqual(server.stop(), 0, server.log)
    }

    /// setid bits and inode flags (sidecheck.py) through the rings.
    func testConformanceChecks() throws {
        for name in ["setid_bits_cleared", "inode_flag_ioctls_move_ctime", "execute_only_files"] {
            let dir = try Scratch.directory("ferry-conf")
            chmod(dir, 0o755)
            let native = dir + "/native"
            try FileManager.default.createDirectory(atPath: native, withIntermediateDirectories: true)
            let server = try FerryServer(source: dir + "/src", mountpoint: dir + "/mnt", arguments: ["--transport", "uring"])
            let result = try runCommand(["python3", script("sidecheck.py"), native, server.mountpoint, server.source, name],
                                        timeout: 120)
            XCTAssertTrue(result.output.contains("PASS \(name)"), result.output)
            XCTAssertEqual(server.stop(), 0, server.log)
        }
    }

    /// With enable_uring off, the default serves over /dev/fuse and says why in one line.
    func testDefaultFallsBackToDevFuseWithALogLine() throws {
        URingParameter.set(false)
        let server = try FerryServer()
        try Data("x".utf8).write(to: URL(fileURLWithPath: server.mountpoint + "/x"))
        XCTAssertEqual(server.stop(), 0, server.log)
        XCTAssertTrue(server.log.contains("transport /dev/fuse (the kernel's FUSE-over-io_uring is off"), server.log)
        XCTAssertFalse(server.log.contains("transport io_uring"), server.log)
    }

    /// With enable_uring off, an explicit `--transport uring` is a start-up error, nothing mounted.
    func testExplicitUringFailsAtStartWhenTheKernelHasItOff() throws {
        URingParameter.set(false)
        let server = try FerryServer(arguments: ["--transport", "uring"], waitForMount: false)
        server.process.waitUntilExit()
        XCTAssertNotEqual(server.process.terminationStatus, 0)
        XCTAssertTrue(server.log.contains("--transport uring: the kernel's FUSE-over-io_uring is off"), server.log)
        XCTAssertFalse(FerryServer.isMounted(server.mountpoint))
    }

    /// `--transport dev` stays on /dev/fuse even where the rings are offered.
    func testTransportDevKeepsDevFuse() throws {
        let server = try FerryServer(arguments: ["-o", "transport=dev"])
        try Data("x".utf8).write(to: URL(fileURLWithPath: server.mountpoint + "/x"))
        XCTAssertEqual(server.stop(), 0, server.log)
        XCTAssertTrue(server.log.contains("transport /dev/fuse (--transport dev)"), server.log)
        XCTAssertFalse(server.log.contains("transport totals"), server.log)
    }

    /// Unmounting ends the server at once (the kernel fails the ring entries with ENOTCONN),
    /// after a blocked lock waiter was parked on a ring entry and answered through it.
    /// (--passthrough never: with passthrough, flock's blocking wait is not woken by the
    /// holder's release on /dev/fuse either; see the report of issue 9 part 4.)
    func testUnmountEndsTheServerCleanly() throws {
        let server = try FerryServer(arguments: ["--transport", "uring", "--passthrough", "never", "--log-level", "debug"])
        let path = server.mountpoint + "/locked"
        try Data("x".utf8).write(to: URL(fileURLWithPath: path))
        // A holder for one second and a waiter blocked behind it, both through the mount.
        let holder = Process(), waiter = Process()
        holder.executableURL = URL(fileURLWithPath: "/usr/bin/flock")
        holder.arguments = [path, "sleep", "1"]
        try holder.run()
        usleep(300_000)
        waiter.executableURL = URL(fileURLWithPath: "/usr/bin/flock")
        waiter.arguments = ["-w", "10", path, "true"]
        try waiter.run()
        usleep(300_000)
        XCTAssertTrue(waiter.isRunning, "the waiter should be blocked")
        holder.waitUntilExit()
        waiter.waitUntilExit()
        XCTAssertEqual(waiter.terminationStatus, 0, "the waiter got the lock once the holder left: \(server.log)")
        XCTAssertTrue(server.log.contains("SETLKW") && server.log.contains("-> waiting"), "a SETLKW was parked")
        let start = Date()
        XCTAssertEqual(try runCommand(["umount", server.mountpoint], timeout: 20).status, 0)
        let deadline = Date().addingTimeInterval(10)
        while server.process.isRunning && Date() < deadline { usleep(20_000) }
        XCTAssertFalse(server.process.isRunning, "ferry still runs after the unmount")
        server.stop()
        XCTAssertEqual(server.process.terminationStatus, 0, server.log)
        XCTAssertLessThan(Date().timeIntervalSince(start), 5)
        XCTAssertTrue(server.log.contains("unmounted; exiting"), server.log)
        XCTAssertFalse(server.log.contains("ended: "), "no ring entry ended with an unexpected error:\n\(server.log)")
    }

    /// The io_uring instances of process `pid` (/proc/PID/fdinfo): whether each has /dev/fuse
    /// as a registered file (a queue's ring) and how many completions it has posted (CqTail).
    private func rings(of pid: Int32) throws -> [(queue: Bool, completions: Int)] {
        var found: [(queue: Bool, completions: Int)] = []
        for fd in try FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd") {
            guard (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/fd/\(fd)")) == "anon_inode:[io_uring]",
                  let info = try? String(contentsOfFile: "/proc/\(pid)/fdinfo/\(fd)", encoding: .utf8) else { continue }
            let lines = info.split(separator: "\n")
            let tail = lines.first { $0.hasPrefix("CqTail:") }.flatMap { Int($0.split(separator: "\t").last ?? "") } ?? -1
            found.append((queue: lines.contains { $0.hasSuffix(": /dev/fuse") }, completions: tail))
        }
        return found
    }

    /// READ and WRITE data stays in the ring entry's payload buffer: the host file is read
    /// straight into it ("read into place" in the debug log; the log would say "bytes read"
    /// for a read into Ferry's own reply buffer) and written from it, and with the io_uring
    /// engine the host reads run on the queue's own ring: the queues' rings (the ones with
    /// /dev/fuse registered) post the completions, the /dev/fuse readers' engine rings none (a
    /// separate engine ring per queue would show up there). The bytes read back through the
    /// mount match the host byte for byte: whole-file, 1 MiB and odd-sized (`--cache never`:
    /// every pread is one READ of its own offset and size), O_DIRECT included.
    func testDataMovesThroughTheEntryPayloadOnTheQueueRing() throws {
        var content = [UInt8](repeating: 0, count: (5 << 20) + 4_321)
        let random = open("/dev/urandom", O_RDONLY)
        XCTAssertEqual(content.withUnsafeMutableBytes { read(random, $0.baseAddress, $0.count) }, content.count)
        close(random)
        // Whether `count` bytes at `bytes` are the content's bytes at `offset` (memcmp: a debug
        // build's element-wise comparison of megabytes takes seconds).
        func matches(_ bytes: UnsafeRawPointer, _ offset: Int, _ count: Int) -> Bool {
            content.withUnsafeBytes { memcmp($0.baseAddress! + offset, bytes, count) == 0 }
        }
        for engine in ["uring", "sync"] {
            let server = try FerryServer(arguments: ["--transport", "uring", "--passthrough", "never", "--cache", "never",
                                                     "--io-engine", engine, "--log-level", "debug"])
            let path = server.mountpoint + "/data"
            try Data(content).write(to: URL(fileURLWithPath: path))   // WRITEs from the payload buffers
            XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: server.source + "/data")), Data(content), engine)
            XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: path)), Data(content), engine)
            // Odd offsets and sizes, each one READ, compared with the host file.
            let fd = open(path, O_RDONLY)
            XCTAssertGreaterThanOrEqual(fd, 0)
            var buffer = [UInt8](repeating: 0, count: 1 << 20)
            var seed: UInt64 = 42
            for _ in 0..<300 {
                seed = seed &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
                let offset = Int(seed >> 33) % (content.count + 100)
                let size = 1 + Int((seed >> 7) & 0xfffff) % (256 << 10)
                let n = buffer.withUnsafeMutableBytes { pread(fd, $0.baseAddress, size, off_t(offset)) }
                let expected = max(0, min(content.count, offset + size) - offset)
                XCTAssertEqual(n, expected, "\(engine): pread of \(size) at \(offset)")
                if n > 0 && n <= expected {
                    XCTAssertTrue(buffer.withUnsafeBytes { matches($0.baseAddress!, offset, n) }, "\(engine): bytes at \(offset)+\(size)")
                }
            }
            close(fd)
            // O_DIRECT: aligned reads land in the page-aligned payload buffer; the last one is short.
            let direct = open(path, O_RDONLY | 0o40000)   // O_DIRECT (x86_64), which Glibc does not export
            XCTAssertGreaterThanOrEqual(direct, 0)
            let aligned = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 4096)
            defer { aligned.deallocate() }
            var at = 0
            while at < content.count {
                let n = pread(direct, aligned.baseAddress, aligned.count, off_t(at))
                XCTAssertEqual(n, min(aligned.count, content.count - at), "\(engine): O_DIRECT read at \(at)")
                guard n > 0 else { break }
                XCTAssertTrue(matches(aligned.baseAddress!, at, n), "\(engine): O_DIRECT bytes at \(at)")
                at += n
            }
            close(direct)
            let rings = try rings(of: server.serverPID)
            XCTAssertEqual(rings.filter(\.queue).count, ProcessInfo.processInfo.processorCount, "\(engine): \(rings)")
            if engine == "uring" {   // a fetch and a host read per READ, at least
                XCTAssertGreaterThan(rings.filter(\.queue).map(\.completions).reduce(0, +), 2 * 300, "\(engine): \(rings)")
            }
            XCTAssertEqual(rings.filter { !$0.queue }.map(\.completions).reduce(0, +), 0,
                           "\(engine): data went through an engine ring of its own: \(rings)")
            XCTAssertEqual(server.stop(), 0, server.log)
            let log = server.log
            let inPlace = log.split(separator: "\n").filter { $0.contains("READ -> ok") && $0.contains("read into place") }.count
            XCTAssertGreaterThan(inPlace, 300, "\(engine): READs not read into the payload buffer")
            XCTAssertFalse(log.contains(" bytes read (I/O core)"), "\(engine): a READ went through the reply buffer")
            XCTAssertFalse(log.contains("which no entry holds"), log)
        }
    }

    /// A READ's commit is linked to its host read on the queue's ring: at one read in flight
    /// (4 KiB preads, one after the other, from the page cache) the queue makes one
    /// io_uring_enter per READ (submit the read with its commit, and wait for the next request),
    /// where committing after the read's completion takes two. Counted with perf's syscall
    /// tracepoint on the server; skipped where perf cannot count.
    func testOneIoUringEnterPerReadAtQueueDepthOne() throws {
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/perf") else { throw XCTSkip("no perf") }
        let server = try FerryServer(arguments: ["--transport", "uring", "--passthrough", "never", "--cache", "never"])
        let path = server.mountpoint + "/qd1"
        var content = [UInt8](repeating: 0, count: 8 << 20)
        for i in stride(from: 0, to: content.count, by: 4096) { content[i] = UInt8(truncatingIfNeeded: i >> 12) }
        try Data(content).write(to: URL(fileURLWithPath: server.source + "/qd1"))
        let fd = open(path, O_RDONLY)
        XCTAssertGreaterThanOrEqual(fd, 0)
        defer { close(fd) }
        var buffer = [UInt8](repeating: 0, count: 4096)
        for block in 0..<2048 { _ = buffer.withUnsafeMutableBytes { pread(fd, $0.baseAddress, 4096, off_t(block * 4096)) } }   // warm the host cache
        let output = try Scratch.directory("ferry-perf") + "/perf.txt"
        let perf = Process()
        perf.executableURL = URL(fileURLWithPath: "/usr/bin/perf")
        perf.arguments = ["stat", "-x,", "-e", "syscalls:sys_enter_io_uring_enter", "-p", String(server.serverPID),
                          "-o", output]
        try perf.run()
        usleep(500_000)
        let reads = 5_000
        for i in 0..<reads {
            let block = (i &* 7_919) % 2048
            let n = buffer.withUnsafeMutableBytes { pread(fd, $0.baseAddress, 4096, off_t(block * 4096)) }
            XCTAssertEqual(n, 4096)
            if buffer[0] != UInt8(truncatingIfNeeded: block) { XCTFail("block \(block) read \(buffer[0])"); break }
        }
        kill(perf.processIdentifier, SIGINT)
        perf.waitUntilExit()
        let text = (try? String(contentsOfFile: output, encoding: .utf8)) ?? ""
        guard let line = text.split(separator: "\n").first(where: { $0.contains("sys_enter_io_uring_enter") }),
              let count = Int(line.split(separator: ",").first ?? "") else {
            throw XCTSkip("perf counted nothing: \(text)")
        }
        let perRead = Double(count) / Double(reads)
        XCTAssertLessThan(perRead, 1.5, "\(count) io_uring_enter for \(reads) READs")
        XCTAssertGreaterThan(perRead, 0.5, "\(count) io_uring_enter for \(reads) READs: did they go through the rings?")
        XCTAssertEqual(server.stop(), 0, server.log)
    }

    /// directio.py's checks over the rings (aligned and unaligned O_DIRECT compared with the
    /// host, dd, a mixed O_DIRECT and buffered random workload checked against a model of the
    /// file, fio --direct=1 jobs), with Ferry moving the data, through each I/O engine.
    func testDirectIOMatchesTheHostThroughTheRings() throws {
        for arguments in [["--io-engine", "uring"], ["--io-engine", "sync"], ["--cache", "never"]] {
            let dir = try Scratch.directory("ferry-ring-directio")
            let native = dir + "/native"
            try FileManager.default.createDirectory(atPath: native, withIntermediateDirectories: true)
            let server = try FerryServer(source: dir + "/src", mountpoint: dir + "/mnt",
                                         arguments: ["--transport", "uring", "--passthrough", "never"] + arguments)
            let result = try runCommand(["python3", script("directio.py"), native, server.mountpoint, server.source, "all"],
                                        timeout: 300)
            for name in ["aligned_io", "dd", "mixed", "fio", "page_cache_writes"] {
                XCTAssertTrue(result.output.contains("PASS \(name)"), "\(arguments) \(name): \(result.output)")
            }
            XCTAssertEqual(result.status, 0)
            XCTAssertEqual(server.stop(), 0, server.log)
            XCTAssertGreaterThan(try totals(server.log).ring, 1_000, server.log)
            try? FileManager.default.removeItem(atPath: dir)
        }
    }

    /// fio writes and reads random blocks of 4 KiB to 1 MiB at depth 16 with checksums, O_DIRECT
    /// and buffered, two jobs at once, through the rings with each I/O engine: a reply committed
    /// from the wrong entry, or data read into another request's buffer, fails the verify.
    func testVerifiedMixedSizesThroughTheRings() throws {
        for engine in ["uring", "sync"] {
            let server = try FerryServer(arguments: ["--transport", "uring", "--passthrough", "never", "--io-engine", engine])
            for direct in ["1", "0"] {
                let result = try runCommand(["fio", "--name=ring", "--directory=\(server.mountpoint)", "--size=32m",
                                             "--bsrange=4k-1m", "--rw=randwrite", "--direct=\(direct)",
                                             "--ioengine=io_uring", "--iodepth=16", "--numjobs=2", "--verify=crc32c",
                                             "--verify_fatal=1", "--do_verify=1", "--verify_state_save=0", "--output-format=normal"], timeout: 300)
                XCTAssertEqual(result.status, 0, "\(engine) direct=\(direct): \(result.output)")
                XCTAssertFalse(result.output.contains("verify: bad"), "\(engine) direct=\(direct): \(result.output)")
            }
            XCTAssertEqual(server.stop(), 0, server.log)
            XCTAssertFalse(server.log.contains("which no entry holds"), server.log)
        }
    }

    /// SIGTERM with a file held open: detach, then abort after the grace period; no hang.
    func testStopWithAnOpenFileDoesNotHang() throws {
        let server = try FerryServer(arguments: ["--transport", "uring"])
        let path = server.mountpoint + "/held"
        try Data("x".utf8).write(to: URL(fileURLWithPath: path))
        let holder = try FileHandle(forReadingFrom: URL(fileURLWithPath: path))
        let start = Date()
        XCTAssertEqual(server.stop(timeout: 15), 0, server.log)
        XCTAssertLessThan(Date().timeIntervalSince(start), 10, server.log)
        try? holder.close()
    }
}

/// Lock checks (scripts/lockcheck.py) across two mounts that both serve through the rings:
/// blocking waits keep their ring entry until the waiter answers, and close-before-lock
/// ordering holds with requests arriving on per-CPU queues.
final class LockTestsOverURing: XCTestCase {
    nonisolated(unsafe) static var mounts: LockMounts?

    override class func setUp() {
        super.setUp()
        if (try? URingParameter.enable()) != nil {
            mounts = LockMounts(arguments: ["--transport", "uring"])
        }
    }

    override class func tearDown() {
        mounts?.stop()
        if let mounts {
            for server in [mounts.a, mounts.b].compactMap({ $0 }) {
                XCTAssertTrue(server.log.contains("transport io_uring"), server.log)
            }
        }
        mounts = nil
        URingParameter.restore()
        super.tearDown()
    }

    func check(_ name: String, file: StaticString = #filePath, line: UInt = #line) throws {
        guard let mounts = Self.mounts else { throw TestFailure("ferry did not start (or no FUSE-over-io_uring)") }
        try mounts.check(name, file: file, line: line)
    }

    func testConflictsBetweenEveryPair() throws { try check("conflicts") }
    func testGetlkReportsTheHolder() throws { try check("getlk_reports_the_holder") }
    func testFlockSharedAndExclusive() throws { try check("flock_shared_exclusive") }
    func testBlockingWaiterWakesWithin50ms() throws { try check("blocking_waiter_wakes_fast") }
    func testInterruptedOrKilledWaiterLeavesNoLock() throws { try check("interrupted_waiter_leaves_no_lock") }
    func testCloseAndExitReleaseLocks() throws { try check("close_and_exit_release_locks") }
    func testReleaseIsSeenAtOnceThroughTheSameMount() throws { try check("release_is_seen_at_once") }
    func testDeadlockIsDetected() throws { try check("deadlock_is_detected") }
    func testFiveHundredWaitersDoNotBlockIO() throws { try check("many_waiters_do_not_block_io") }
}
