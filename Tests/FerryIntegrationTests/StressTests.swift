import Foundation
import XCTest

/// stress-ng's file-system stressors, all at once with --verify, against the mount.
final class StressTests: XCTestCase {
    static let stressors = [
        "access", "chattr", "chdir", "chmod", "chown", "copy-file", "dentry", "dir", "dirdeep", "dirmany",
        "dup", "fallocate", "fcntl", "fiemap", "file-ioctl", "filename", "flock", "fpunch", "fsize", "fstat",
        "getdent", "handle", "hdd", "inode-flags", "io", "iomix", "lease", "link", "locka", "lockf", "lockofd",
        "mknod", "open", "rename", "symlink", "sync-file", "touch", "utime", "xattr",
    ]

    func testStressNgFilesystemStressorsVerify() throws {
        let server = try FerryServer()
        let seconds = ProcessInfo.processInfo.environment["FERRY_STRESS_SECONDS"] ?? "60"
        let command = ["stress-ng"] + Self.stressors.flatMap { ["--\($0)", "1"] }
            + ["--timeout", "\(seconds)s", "--verify", "--metrics-brief", "--temp-path", server.mountpoint]
        let result = try runCommand(command, timeout: 600)
        print(result.output)
        XCTAssertEqual(result.status, 0, "stress-ng reported failures")
        XCTAssertTrue(result.output.contains("successful run completed"), "stress-ng did not complete")
        XCTAssertFalse(result.output.contains(" fail"), "a stressor failed")
        XCTAssertTrue(server.process.isRunning, "ferry died: \(server.log)")
        XCTAssertEqual(server.stop(), 0, server.log)
    }
}
