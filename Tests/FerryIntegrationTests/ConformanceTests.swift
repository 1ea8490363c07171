import Foundation
import XCTest

/// Things a plain host directory does that a mount must do too, even where the kernel caches
/// what Ferry told it (scripts/sidecheck.py): set-id bits cleared by another user's write,
/// inode flag changes moving ctime, and programs that may be executed but not read.
final class ConformanceTests: XCTestCase {
    /// Runs `check` against a fresh server with `arguments`, next to a plain host directory.
    private func check(_ name: String, _ arguments: [String], file: StaticString = #filePath, line: UInt = #line) throws {
        let dir = try Scratch.directory("ferry-conf")
        chmod(dir, 0o755)   // other users run programs below it
        let native = dir + "/native"
        try FileManager.default.createDirectory(atPath: native, withIntermediateDirectories: true)
        let server = try FerryServer(source: dir + "/src", mountpoint: dir + "/mnt", arguments: arguments)
        defer { server.stop() }
        let result = try runCommand(["python3", script("sidecheck.py"), native, server.mountpoint, server.source, name],
                                    timeout: 120)
        print(result.output, terminator: "")
        XCTAssertTrue(result.output.contains("PASS \(name)"), "\(arguments): \(result.output)", file: file, line: line)
        XCTAssertEqual(server.stop(), 0, file: file, line: line)
    }

    /// Every cache mode, with and without change notifications (whose watcher skips Ferry's own
    /// changes, so it cannot be what refreshes these), with passthrough (the default) and
    /// without.
    private let configurations: [[String]] = [[], ["--cache", "always"], ["--cache", "always", "--no-notify"],
                                              ["--cache", "never"], ["--passthrough", "never"],
                                              ["--cache", "always", "--no-notify", "--passthrough", "never"]]

    func testSetIDBitsClearedByAnotherUsersChangeShowAtOnce() throws {
        for arguments in configurations { try check("setid_bits_cleared", arguments) }
    }

    func testInodeFlagIoctlsMoveCtime() throws {
        for arguments in configurations { try check("inode_flag_ioctls_move_ctime", arguments) }
    }

    func testBirthTimeAndInodeFlagsAreTheHosts() throws {
        try check("birth_time_and_inode_flags", [])
    }

    func testExecuteOnlyProgramsRunButStayUnreadable() throws {
        try check("execute_only_files", [])
        try check("execute_only_files", ["--cache", "always"])
        try check("execute_only_files", ["--passthrough", "never"])
    }
}
