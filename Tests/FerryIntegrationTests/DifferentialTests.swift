import Foundation
import XCTest

/// Seeded random walks of file-system calls by root and two ordinary users, made step by step on
/// a plain host directory and through a Ferry mount, every outcome and the final trees compared
/// (Tests/FerryIntegrationTests/scripts/opdiff.py), under each cache configuration.
final class DifferentialTests: XCTestCase {
    private static let steps = "800"

    /// Serves a fresh SOURCE with `arguments` and runs the walk for each seed against it.
    private func walk(_ arguments: [String], seeds: [Int], environment: [String] = [],
                      file: StaticString = #filePath, line: UInt = #line) throws {
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
    }

    func testDefaultOptionsMatchTheHost() throws { try walk([], seeds: [1, 2]) }

    func testCacheAlwaysMatchesTheHost() throws { try walk(["--cache", "always"], seeds: [4]) }

    func testCacheNeverMatchesTheHost() throws { try walk(["--cache", "never"], seeds: [6]) }

    func testInodeDescriptorsMatchTheHost() throws { try walk(["--inode-file-handles", "never"], seeds: [8]) }

    /// With the writeback cache the kernel owns regular files' mtime and ctime (it ignores the
    /// host's), so those are left out; everything else, and the EIO a refused time flush would
    /// cause, is compared.
    func testWritebackCacheMatchesTheHost() throws {
        try walk(["--cache", "always", "--writeback"], seeds: [9], environment: ["OPDIFF_KERNEL_FILE_TIMES=1"])
    }
}
