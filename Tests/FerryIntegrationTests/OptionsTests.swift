import Foundation
import XCTest

/// Each `ferry serve` option changes what a user sees through the mount.
final class OptionsTests: XCTestCase {
    private func sh(_ script: String) throws -> (status: Int32, output: String) {
        try runCommand(["sh", "-c", script])
    }

    func testReadonlyRefusesChangesButReads() throws {
        let dir = try Scratch.directory("ferry-opt")
        try FileManager.default.createDirectory(atPath: dir + "/src", withIntermediateDirectories: true)
        try "kept".write(toFile: dir + "/src/f", atomically: false, encoding: .utf8)
        let server = try FerryServer(source: dir + "/src", mountpoint: dir + "/mnt", arguments: ["--readonly"])
        XCTAssertEqual(try String(contentsOfFile: server.mountpoint + "/f", encoding: .utf8), "kept")
        let write = try sh("echo x > \(server.mountpoint)/f")
        XCTAssertNotEqual(write.status, 0)
        XCTAssertTrue(write.output.contains("Read-only file system"), write.output)
        XCTAssertNotEqual(try sh("mkdir \(server.mountpoint)/d").status, 0)
        XCTAssertEqual(try String(contentsOfFile: server.source + "/f", encoding: .utf8), "kept")
        XCTAssertEqual(server.stop(), 0)
    }

    func testNoXattrAnswersNotSupported() throws {
        let server = try FerryServer(arguments: ["--no-xattr"])
        _ = FileManager.default.createFile(atPath: server.mountpoint + "/f", contents: Data())
        let result = try sh("python3 -c \"import os; os.setxattr('\(server.mountpoint)/f', 'user.a', b'v')\"")
        XCTAssertNotEqual(result.status, 0)
        XCTAssertTrue(result.output.contains("Operation not supported"), result.output)
        XCTAssertEqual(server.stop(), 0)
    }

    func testCacheNeverSeesHostWritesAtOnce() throws {
        let server = try FerryServer(arguments: ["--cache", "never"])
        try "one".write(toFile: server.source + "/f", atomically: false, encoding: .utf8)
        XCTAssertEqual(try String(contentsOfFile: server.mountpoint + "/f", encoding: .utf8), "one")
        try "two, longer".write(toFile: server.source + "/f", atomically: false, encoding: .utf8)
        XCTAssertEqual(try String(contentsOfFile: server.mountpoint + "/f", encoding: .utf8), "two, longer")
        // mmap still works with direct I/O (DIRECT_IO_ALLOW_MMAP).
        let mapped = try sh("python3 -c \"import mmap; f=open('\(server.mountpoint)/f','r+b'); m=mmap.mmap(f.fileno(),0); print(m[:3].decode())\"")
        XCTAssertEqual(mapped.output.trimmingCharacters(in: .whitespacesAndNewlines), "two", mapped.output)
        XCTAssertEqual(server.stop(), 0)
    }

    func testCacheAlwaysWithWritebackKeepsData() throws {
        let server = try FerryServer(arguments: ["--cache", "always", "--writeback"])
        let payload = String(repeating: "0123456789", count: 100_000)
        try payload.write(toFile: server.mountpoint + "/big", atomically: false, encoding: .utf8)
        let append = try sh("printf tail >> \(server.mountpoint)/big && sync \(server.mountpoint)/big")
        XCTAssertEqual(append.status, 0, append.output)
        XCTAssertEqual(try String(contentsOfFile: server.source + "/big", encoding: .utf8), payload + "tail")
        XCTAssertEqual(try String(contentsOfFile: server.mountpoint + "/big", encoding: .utf8), payload + "tail")
        XCTAssertEqual(server.stop(), 0)
    }

    func testInodeFileHandlesNeverKeepsDescriptors() throws {
        let server = try FerryServer(arguments: ["--inode-file-handles", "never"])
        let created = try sh("cd \(server.mountpoint) && for i in $(seq 200); do echo $i > f$i; done && ls -l >/dev/null")
        XCTAssertEqual(created.status, 0, created.output)
        let fds = try FileManager.default.contentsOfDirectory(atPath: "/proc/\(server.serverPID)/fd").count
        XCTAssertGreaterThan(fds, 200, "one O_PATH descriptor per known inode expected")
        XCTAssertEqual(server.stop(), 0)
        // With handles, descriptors do not grow with the files: besides its own ~30, Ferry keeps
        // O_PATH descriptors of the inodes used last, a sixteenth of RLIMIT_NOFILE (64 here).
        let handles = try FerryServer(arguments: ["--inode-file-handles", "mandatory"], prefix: ["prlimit", "--nofile=1024:1024"])
        XCTAssertEqual(try sh("cd \(handles.mountpoint) && for i in $(seq 400); do echo $i > f$i; done && ls -l >/dev/null").status, 0)
        let few = try FileManager.default.contentsOfDirectory(atPath: "/proc/\(handles.serverPID)/fd").count
        XCTAssertLessThan(few, 100 + 64)
        XCTAssertEqual(handles.stop(), 0)
    }

    func testSingleThreadServes() throws {
        let server = try FerryServer(arguments: ["--threads", "1", "--transport", "dev"])   // whatever enable_uring says
        XCTAssertEqual(try sh("cd \(server.mountpoint) && mkdir a && echo x > a/b && cat a/b").output, "x\n")
        XCTAssertTrue(server.log.contains("1 reader thread"), server.log)
        XCTAssertEqual(server.stop(), 0)
    }

    func testNoPosixLocksKeepsLocksInsideTheMount() throws {
        let server = try FerryServer(arguments: ["--no-posix-locks", "--no-flock"])
        _ = FileManager.default.createFile(atPath: server.source + "/f", contents: Data("x".utf8))
        // A host flock does not stop a flock through the mount when locks stay local.
        let script = "flock \(server.source)/f sleep 2 & sleep 0.5; flock -n \(server.mountpoint)/f true && echo local; wait"
        XCTAssertTrue(try sh(script).output.contains("local"))
        XCTAssertEqual(server.stop(), 0)
    }

    func testDebugLogShowsEachRequestOnOneLine() throws {
        let server = try FerryServer(arguments: ["--log-level", "debug", "--no-notify"])   // no negative entries: ENOENT
        _ = FileManager.default.createFile(atPath: server.source + "/present", contents: Data())
        var st = stat()
        XCTAssertEqual(stat(server.mountpoint + "/present", &st), 0)
        XCTAssertEqual(stat(server.mountpoint + "/absent", &st), -1)
        XCTAssertEqual(server.stop(), 0)
        let lines = server.log.split(separator: "\n")
        XCTAssertTrue(lines.contains { $0.contains("LOOKUP node=1") && $0.contains("-> ok") }, server.log)
        XCTAssertTrue(lines.contains { $0.contains("LOOKUP node=1") && $0.contains("No such file") }, server.log)
    }
}
