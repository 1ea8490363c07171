import Foundation
import XCTest

/// O_DIRECT through the mount (scripts/directio.py), compared with a plain host directory in each
/// cache mode: aligned and unaligned pread/pwrite, dd with oflag/iflag=direct, a mixed O_DIRECT
/// and buffered random workload checked against a model of the file, fio --direct=1 jobs, and
/// the page cache's writes made beside an O_DIRECT handle.
final class DirectIOTests: XCTestCase {
    /// Runs every check of directio.py against a fresh server with `arguments`, beside a plain
    /// host directory on the same file system.
    private func check(_ arguments: [String], file: StaticString = #filePath, line: UInt = #line) throws {
        let dir = try Scratch.directory("ferry-directio")
        let native = dir + "/native"
        try FileManager.default.createDirectory(atPath: native, withIntermediateDirectories: true)
        let server = try FerryServer(source: dir + "/src", mountpoint: dir + "/mnt", arguments: arguments)
        defer { server.stop() }
        let result = try runCommand(["python3", script("directio.py"), native, server.mountpoint, server.source, "all"],
                                    timeout: 120)
        print(result.output, terminator: "")
        for name in ["aligned_io", "dd", "mixed", "fio", "page_cache_writes"] {
            XCTAssertTrue(result.output.contains("PASS \(name)"), "\(arguments) \(name): \(result.output)",
                          file: file, line: line)
        }
        XCTAssertEqual(result.status, 0, file: file, line: line)
        XCTAssertEqual(server.stop(), 0, "ferry did not exit cleanly: \(server.log)", file: file, line: line)
        try? FileManager.default.removeItem(atPath: dir)
    }

    /// Defaults: plain files are passed through (the kernel does the O_DIRECT I/O itself).
    func testDirectIOMatchesTheHostWithDefaultOptions() throws { try check([]) }

    /// Ferry's own data path: page-aligned payloads in its request and reply buffers.
    func testDirectIOMatchesTheHostWithoutPassthrough() throws { try check(["--passthrough", "never"]) }

    /// The same through the sync I/O engine (the default is io_uring).
    func testDirectIOMatchesTheHostWithTheSyncEngine() throws {
        try check(["--passthrough", "never", "--io-engine", "sync"])
    }

    func testDirectIOMatchesTheHostWithCacheAlways() throws { try check(["--cache", "always", "--passthrough", "never"]) }

    /// `--cache never` answers every open with FOPEN_DIRECT_IO; the client's O_DIRECT still
    /// reaches the host file.
    func testDirectIOMatchesTheHostWithCacheNever() throws { try check(["--cache", "never", "--passthrough", "never"]) }

    /// With the writeback cache the kernel flushes buffered writes through whichever writable
    /// handle it picks, an O_DIRECT one included.
    func testDirectIOMatchesTheHostWithWritebackCache() throws { try check(["--cache", "always", "--writeback"]) }
}
