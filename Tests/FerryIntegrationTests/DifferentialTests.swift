import Foundation
import XCTest

/// Seeded random walks of file-system calls. opdiff.py: calls by root and two ordinary users, made
/// step by step on a plain host directory and through a Ferry mount, every outcome and the final
/// trees compared, under each cache configuration. coherencewalk.py: calls made on the host in
/// SOURCE while the mount caches for a day, every touched path compared through the mount.
final class DifferentialTests: XCTestCase {
    private static let steps = "800"

    /// Serves a fresh SOURCE with `arguments` and runs the walk for each seed against it;
    /// returns SOURCE.
    @discardableResult
    private func walk(_ arguments: [String], seeds: [Int], environment: [String] = [],
                      file: StaticString = #filePath, line: UInt = #line) throws -> String {
        let server = try FerryServer(arguments: arguments)
        let native = try Scratch.directory("ferry-opdiff")
        for seed in seeds {
            let result = try runCommand(["env"] + environment + ["python3", script("opdiff.py"), native,
                                                                 server.mountpoint, String(seed), Self.steps])
            print(result.output, terminator: "")
            XCTAssertTrue(result.output.contains("PASS seed \(seed)"),
                          "\(arguments) seed \(seed) differs from the host:\n\(result.output)", file: file, line: line)
            XCTAssertEqual(result.status, 0, file: file, line: line)
        }
        XCTAssertEqual(server.stop(), 0, "ferry did not exit cleanly: \(server.log)", file: file, line: line)
        return server.source
    }

    func testDefaultOptionsMatchTheHost() throws { try walk([], seeds: [1, 2]) }

    /// Id translation that maps every id onto itself changes nothing a caller sees.
    func testIdentityIdMapMatchesTheHost() throws {
        try walk(["--translate-uid", "map:0:0:65536", "--translate-gid", "map:0:0:65536"], seeds: [3])
    }

    /// The walk's users (2001, 2002, group 3000) shifted to host 102001, 102002, 103000: callers,
    /// chowns and ACL owners become host ids, and the mount shows the walk exactly what a plain
    /// directory shows it.
    func testShiftedIdMapMatchesTheHost() throws {
        let source = try walk(["--translate-uid", "map:2000:102000:1001", "--translate-gid", "map:2000:102000:1001"],
                              seeds: [1])
        let shifted = try runCommand(["sh", "-c", "find \(source) \\( -uid 102001 -o -uid 102002 -o -gid 103000 \\) | wc -l"])
        let unshifted = try runCommand(["sh", "-c", "find \(source) \\( -uid 2001 -o -uid 2002 -o -gid 3000 \\) | wc -l"])
        XCTAssertGreaterThan(Int(shifted.output.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0, 0,
                             "the walk left files owned by the shifted ids on the host")
        XCTAssertEqual(unshifted.output.trimmingCharacters(in: .whitespacesAndNewlines), "0",
                       "no file on the host carries a guest id")
    }

    func testCacheAlwaysMatchesTheHost() throws { try walk(["--cache", "always"], seeds: [4]) }

    func testCacheNeverMatchesTheHost() throws { try walk(["--cache", "never"], seeds: [6]) }

    /// The walks above run with passthrough (the default for root); these without it.
    func testWithoutPassthroughMatchesTheHost() throws { try walk(["--passthrough", "never"], seeds: [1]) }

    /// Without passthrough Ferry moves the data with its I/O engine: io_uring above, sync here.
    func testSyncEngineWithoutPassthroughMatchesTheHost() throws {
        try walk(["--passthrough", "never", "--io-engine", "sync"], seeds: [2])
    }

    func testCacheAlwaysWithoutPassthroughMatchesTheHost() throws {
        try walk(["--cache", "always", "--passthrough", "never"], seeds: [4])
    }

    func testInodeDescriptorsMatchTheHost() throws { try walk(["--inode-file-handles", "never"], seeds: [8]) }

    /// An ordinary user's own server (no credential switching, inodes as descriptors, fanotify
    /// directory marks) against that user's own plain directory.
    func testOrdinaryUserServerMatchesTheHost() throws {
        let user = try OrdinaryUser()
        defer { user.restore() }
        let server = try FerryServer(source: user.directory + "/src", mountpoint: user.directory + "/mnt",
                                     prefix: OrdinaryUser.asUser)
        let native = user.directory + "/native"
        try FileManager.default.createDirectory(atPath: native, withIntermediateDirectories: false)
        chown(native, OrdinaryUser.uid, OrdinaryUser.uid)
        // The user may not reach the checkout: a copy of the script, run by the system python.
        let copy = try Scratch.directory("ferry-script") + "/opdiff.py"
        try FileManager.default.copyItem(atPath: script("opdiff.py"), toPath: copy)
        chmod(URL(fileURLWithPath: copy).deletingLastPathComponent().path, 0o755)
        let result = try runCommand(OrdinaryUser.asUser + ["/usr/bin/python3", copy, native, server.mountpoint, "11", Self.steps])
        print(result.output, terminator: "")
        XCTAssertTrue(result.output.contains("PASS seed 11"), result.output)
        XCTAssertEqual(result.status, 0)
        _ = try runCommand(OrdinaryUser.asUser + ["fusermount3", "-u", server.mountpoint])
        XCTAssertEqual(server.stop(), 0, server.log)
    }

    /// With the writeback cache the kernel owns regular files' mtime and ctime (it ignores the
    /// host's), so those are left out; everything else, and the EIO a refused time flush would
    /// cause, is compared.
    func testWritebackCacheMatchesTheHost() throws {
        try walk(["--cache", "always", "--writeback"], seeds: [9], environment: ["OPDIFF_KERNEL_FILE_TIMES=1"])
    }

    /// Runs the coherence walk for each seed against a `--cache always` server with `arguments`.
    private func coherence(_ arguments: [String], seeds: [Int], steps: Int = 400, limit: String = "1.0")
        throws -> [(status: Int32, output: String)] {
        let server = try FerryServer(arguments: ["--cache", "always"] + arguments)
        defer { XCTAssertEqual(server.stop(), 0, "ferry did not exit cleanly: \(server.log)") }
        return try seeds.map { seed in
            let result = try runCommand(["env", "COHERENCE_LIMIT=\(limit)", "python3", script("coherencewalk.py"),
                                         server.source, server.mountpoint, String(seed), String(steps)])
            print(result.output, terminator: "")
            return result
        }
    }

    func testHostChangesReachTheMountWithFanotify() throws {
        for (seed, result) in zip([1, 2], try coherence([], seeds: [1, 2])) {
            XCTAssertTrue(result.output.contains("PASS seed \(seed)"), result.output)
            XCTAssertEqual(result.status, 0)
        }
    }

    func testHostChangesReachTheMountWithoutPassthrough() throws {
        let result = try coherence(["--passthrough", "never"], seeds: [1])[0]
        XCTAssertTrue(result.output.contains("PASS seed 1"), result.output)
        XCTAssertEqual(result.status, 0)
    }

    func testHostChangesReachTheMountWithFanotifyDirectoryMarks() throws {
        let result = try coherence(["--notify-watcher", "fanotify-directories"], seeds: [3])[0]
        XCTAssertTrue(result.output.contains("PASS seed 3"), result.output)
        XCTAssertEqual(result.status, 0)
    }

    /// The walk's calls made through a second mount of the same SOURCE (a second guest) reach the
    /// first mount's day-long caches.
    func testChangesThroughASecondMountReachTheFirst() throws {
        let first = try FerryServer(arguments: ["--cache", "always"])
        let second = try FerryServer(source: first.source, mountpoint: first.mountpoint + "-second",
                                     arguments: ["--cache", "always"])
        let result = try runCommand(["python3", script("coherencewalk.py"), second.mountpoint, first.mountpoint, "30", "400"])
        print(result.output, terminator: "")
        XCTAssertTrue(result.output.contains("PASS seed 30"), result.output)
        XCTAssertEqual(result.status, 0)
        XCTAssertEqual(second.stop(), 0, second.log)
        XCTAssertEqual(first.stop(), 0, first.log)
    }

    /// The control: without notifications the same walk must see stale caches, or it tests nothing.
    func testWithoutNotificationsTheCoherenceWalkSeesStaleCaches() throws {
        let result = try coherence(["--no-notify"], seeds: [1], steps: 150, limit: "0.2")[0]
        XCTAssertTrue(result.output.contains("FAIL seed 1"), result.output)
        XCTAssertTrue(result.output.contains("DIFF step"), result.output)
    }
}
