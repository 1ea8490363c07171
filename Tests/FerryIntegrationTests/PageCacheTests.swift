import Foundation
import XCTest

/// The kernel's page cache of a file across opens with `--cache auto` (protocol/fuse-abi.md,
/// "Open reply flags by cache mode"): kept while the host file is unchanged since the node's
/// last open, dropped when the host changed it in between, with and without change
/// notifications. Residency is read with fincore(1), which opens the file through the mount.
final class PageCacheTests: XCTestCase {
    private let size = 1 << 20

    /// Pages of `path` in the page cache (fincore opens the file itself: one more OPEN).
    private func residentPages(_ path: String) throws -> Int {
        let result = try runCommand(["fincore", "--raw", "--noheadings", "--output", "PAGES", path])
        XCTAssertEqual(result.status, 0, result.output)
        return Int(result.output.trimmingCharacters(in: .whitespacesAndNewlines)) ?? -1
    }

    /// Reads `path` whole through the mount (a fresh open each time).
    private func read(_ path: String) throws -> Data {
        try Data(contentsOf: URL(fileURLWithPath: path))
    }

    private func check(_ arguments: [String], file: StaticString = #filePath, line: UInt = #line) throws {
        // The file exists before the server starts: no host change notification is still on
        // its way to drop the cache while the test looks at it.
        let scratch = try Scratch.directory("ferry-pagecache")
        try FileManager.default.createDirectory(atPath: scratch + "/src", withIntermediateDirectories: true)
        try Data(repeating: UInt8(ascii: "a"), count: size).write(to: URL(fileURLWithPath: scratch + "/src/f"))
        let server = try FerryServer(source: scratch + "/src", mountpoint: scratch + "/mnt",
                                     arguments: ["--passthrough", "never"] + arguments)
        defer { server.stop() }
        let host = server.source + "/f", guest = server.mountpoint + "/f"

        // First open: read through the mount fills the cache; the next open keeps it.
        XCTAssertEqual(try read(guest), Data(repeating: UInt8(ascii: "a"), count: size), file: file, line: line)
        XCTAssertEqual(try residentPages(guest), size / 4096, "unchanged file: cache kept across opens",
                       file: file, line: line)
        XCTAssertEqual(try read(guest), Data(repeating: UInt8(ascii: "a"), count: size), file: file, line: line)

        // The host rewrites the content in place (same size, within the 1 s attribute timeout):
        // the next open reads the host's bytes.
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: host))
        try handle.write(contentsOf: Data(repeating: UInt8(ascii: "b"), count: size))
        try handle.close()
        XCTAssertEqual(try read(guest), Data(repeating: UInt8(ascii: "b"), count: size),
                       "host change between opens not seen \(arguments)", file: file, line: line)

        // A write through the mount: the host and a later open through the mount agree.
        let through = try FileHandle(forWritingTo: URL(fileURLWithPath: guest))
        try through.write(contentsOf: Data(repeating: UInt8(ascii: "c"), count: 4096))
        try through.close()
        var expected = Data(repeating: UInt8(ascii: "b"), count: size)
        expected.replaceSubrange(0..<4096, with: Data(repeating: UInt8(ascii: "c"), count: 4096))
        XCTAssertEqual(try read(host), expected, file: file, line: line)
        XCTAssertEqual(try read(guest), expected, file: file, line: line)

        // The host truncates and appends: size and content change; the next open sees both.
        let appended = try FileHandle(forWritingTo: URL(fileURLWithPath: host))
        try appended.truncate(atOffset: 4096)
        try appended.seekToEnd()
        try appended.write(contentsOf: Data("tail".utf8))
        try appended.close()
        XCTAssertEqual(try read(guest), expected.prefix(4096) + Data("tail".utf8), file: file, line: line)
        XCTAssertEqual(server.stop(), 0, "ferry did not exit cleanly: \(server.log)", file: file, line: line)
    }

    func testPageCacheIsKeptOnlyWhileTheHostFileIsUnchanged() throws { try check([]) }

    /// Without notifications the open's validator alone keeps the cache coherent.
    func testPageCacheIsValidatedAtOpenWithoutNotifications() throws { try check(["--no-notify"]) }

    /// The same for the sync engine (the validator is in the engine, not the I/O core).
    func testPageCacheIsValidatedAtOpenWithTheSyncEngine() throws {
        try check(["--no-notify", "--io-engine", "sync"])
    }
}
