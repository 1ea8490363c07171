import Foundation
import XCTest

/// Many files with a small descriptor limit: inodes are kept as file handles, not descriptors.
final class ScaleTests: XCTestCase {
    func testFiftyThousandFilesUnderNofile1024() throws {
        let server = try FerryServer(prefix: ["prlimit", "--nofile=1024:1024"])
        // Keep every inode in the kernel's cache so the server really holds 50,000 nodes.
        let pressure = try String(contentsOfFile: "/proc/sys/vm/vfs_cache_pressure", encoding: .utf8)
        try "1".write(toFile: "/proc/sys/vm/vfs_cache_pressure", atomically: false, encoding: .utf8)
        defer { try? pressure.write(toFile: "/proc/sys/vm/vfs_cache_pressure", atomically: false, encoding: .utf8) }
        let result = try runCommand(["python3", script("manyfiles.py"), server.mountpoint, "50000"], timeout: 900)
        print(result.output)
        XCTAssertEqual(result.status, 0, result.output)
        XCTAssertTrue(result.output.contains("listed 50000"), result.output)
        let fds = try FileManager.default.contentsOfDirectory(atPath: "/proc/\(server.serverPID)/fd").count
        XCTAssertLessThan(fds, 200, "ferry holds \(fds) descriptors")
        XCTAssertEqual(server.stop(), 0, server.log)
        XCTAssertFalse(server.log.contains("error"), server.log)
    }
}
