import Foundation
import XCTest

/// Start-up errors, clean exits on signals and unmounts, and what a killed server leaves.
final class LifecycleTests: XCTestCase {
    /// Runs `ferry serve` expecting it to refuse to start; returns its output.
    private func refuse(_ source: String, _ mountpoint: String, alreadyMounted: Bool = false,
                        file: StaticString = #filePath, line: UInt = #line) throws -> String {
        let before = mountCount(mountpoint)
        let result = try runCommand([FerryServer.binary, "serve", source, mountpoint], timeout: 30)
        XCTAssertNotEqual(result.status, 0, "ferry started: \(result.output)", file: file, line: line)
        let lines = result.output.split(separator: "\n")
        XCTAssertEqual(lines.count, 1, "expected one line, got: \(result.output)", file: file, line: line)
        XCTAssertEqual(mountCount(mountpoint), before, "left a mount behind", file: file, line: line)
        XCTAssertEqual(before, alreadyMounted ? 1 : 0, file: file, line: line)
        return result.output
    }

    private func mountCount(_ mountpoint: String) -> Int {
        let mounts = procText("/proc/self/mounts") ?? ""
        return mounts.split(separator: "\n").filter { $0.split(separator: " ").dropFirst().first.map(String.init) == mountpoint }.count
    }

    func testMissingSourceIsOneLineError() throws {
        let dir = try Scratch.directory("ferry-life")
        try FileManager.default.createDirectory(atPath: dir + "/mnt", withIntermediateDirectories: true)
        let output = try refuse(dir + "/nope", dir + "/mnt")
        XCTAssertTrue(output.contains("source \(dir)/nope") && output.contains("No such file"), output)
    }

    func testSourceThatIsAFileIsRefused() throws {
        let dir = try Scratch.directory("ferry-life")
        _ = FileManager.default.createFile(atPath: dir + "/file", contents: Data())
        try FileManager.default.createDirectory(atPath: dir + "/mnt", withIntermediateDirectories: true)
        XCTAssertTrue(try refuse(dir + "/file", dir + "/mnt").contains("is not a directory"))
    }

    func testMountpointThatIsMissingOrAFileIsRefused() throws {
        let dir = try Scratch.directory("ferry-life")
        try FileManager.default.createDirectory(atPath: dir + "/src", withIntermediateDirectories: true)
        _ = FileManager.default.createFile(atPath: dir + "/file", contents: Data())
        XCTAssertTrue(try refuse(dir + "/src", dir + "/file").contains("is not a directory"))
        XCTAssertTrue(try refuse(dir + "/src", dir + "/missing").contains("No such file"))
    }

    func testMountpointInsideSourceIsRefused() throws {
        let dir = try Scratch.directory("ferry-life")
        try FileManager.default.createDirectory(atPath: dir + "/src/mnt", withIntermediateDirectories: true)
        XCTAssertTrue(try refuse(dir + "/src", dir + "/src/mnt").contains("inside source"))
        XCTAssertTrue(try refuse(dir + "/src", dir + "/src").contains("inside source"))
    }

    func testBusyMountpointIsRefused() throws {
        let server = try FerryServer()
        let output = try refuse(server.source, server.mountpoint, alreadyMounted: true)
        XCTAssertTrue(output.contains("busy"), output)
        XCTAssertEqual(server.stop(), 0)
    }

    func testSigtermAndSigintUnmountAndExitZero() throws {
        for signal in [SIGTERM, SIGINT] {
            let server = try FerryServer()
            try "x".write(toFile: server.mountpoint + "/f", atomically: false, encoding: .utf8)
            XCTAssertEqual(server.stop(signal: signal), 0, server.log)
            XCTAssertFalse(FerryServer.isMounted(server.mountpoint))
            XCTAssertEqual(try String(contentsOfFile: server.source + "/f", encoding: .utf8), "x")
        }
    }

    func testExternalUnmountEndsTheServer() throws {
        for tool in [["fusermount3", "-u"], ["umount"]] {
            let server = try FerryServer()
            // Right after INIT Ferry's own start-up (the notifier's first stat of the root, the
            // atime display) may hold the mount for a moment: a plain unmount is then EBUSY, as
            // for any mount in use. Wait for the start-up to end; retry only on "busy".
            SandboxTests.waitForLog({ server.log }, "serving with")
            var unmounted = try runCommand(tool + [server.mountpoint])
            let retryUntil = Date().addingTimeInterval(3)
            while unmounted.status != 0 && unmounted.output.contains("busy") && Date() < retryUntil {
                usleep(50_000)
                unmounted = try runCommand(tool + [server.mountpoint])
            }
            XCTAssertEqual(unmounted.status, 0, "\(tool): \(unmounted.output)" + server.log)
            let deadline = Date().addingTimeInterval(10)
            while server.process.isRunning && Date() < deadline { usleep(20_000) }
            XCTAssertFalse(server.process.isRunning, "ferry still running after \(tool[0])")
            if server.process.isRunning { server.stop(); continue }   // terminationStatus traps while it runs
            XCTAssertEqual(server.process.terminationStatus, 0, server.log)
        }
    }

    func testStopWithFilesHeldOpenStillExits() throws {
        let server = try FerryServer()
        let holder = open(server.mountpoint + "/held", O_CREAT | O_RDWR, 0o644)
        XCTAssertGreaterThanOrEqual(holder, 0)
        let started = Date()
        XCTAssertEqual(server.stop(signal: SIGTERM, timeout: 15), 0, server.log)
        XCTAssertLessThan(Date().timeIntervalSince(started), 10, "took too long to give up the connection")
        XCTAssertFalse(FerryServer.isMounted(server.mountpoint))
        var st = stat()
        XCTAssertEqual(fstat(holder, &st), -1, "the held file still works after the server left")
        close(holder)
    }

    func testKilledServerLeavesEnotconnAndFsyncedData() throws {
        let server = try FerryServer()
        let fd = open(server.mountpoint + "/durable", O_CREAT | O_WRONLY, 0o644)
        XCTAssertGreaterThanOrEqual(fd, 0)
        XCTAssertEqual(write(fd, "committed", 9), 9)
        XCTAssertEqual(fsync(fd), 0)
        kill(server.process.processIdentifier, SIGKILL)
        server.process.waitUntilExit()
        var st = stat()
        XCTAssertEqual(stat(server.mountpoint + "/durable", &st), -1)
        XCTAssertEqual(errno, ENOTCONN)
        close(fd)
        XCTAssertEqual(try String(contentsOfFile: server.source + "/durable", encoding: .utf8), "committed")
        // A new server on the dead mount says how to clean up; the documented cleanup works.
        let output = try runCommand([FerryServer.binary, "serve", server.source, server.mountpoint]).output
        XCTAssertTrue(output.contains("dead FUSE mount") && output.contains("fusermount3 -u"), output)
        XCTAssertEqual(try runCommand(["fusermount3", "-u", server.mountpoint]).status, 0)
        XCTAssertFalse(FerryServer.isMounted(server.mountpoint))
    }

    func testOrdinaryUserServesWithOwnRights() throws {
        let user = try OrdinaryUser()
        defer { user.restore() }
        let dir = user.directory
        var st = stat()
        let server = try FerryServer(source: dir + "/src", mountpoint: dir + "/mnt",
                                     prefix: ["setpriv", "--reuid=2001", "--regid=2001", "--clear-groups"])
        let write = try runCommand(["setpriv", "--reuid=2001", "--regid=2001", "--clear-groups",
                                    "sh", "-c", "umask 027; echo hi > \(dir)/mnt/mine && stat -c %u:%g:%a \(dir)/mnt/mine"])
        XCTAssertEqual(write.output.trimmingCharacters(in: .whitespacesAndNewlines), "2001:2001:640", write.output)
        // Nodes below the root stay reachable after the kernel's cache expires (an unprivileged
        // server cannot reopen file handles, so it keeps descriptors).
        let later = try runCommand(["setpriv", "--reuid=2001", "--regid=2001", "--clear-groups", "sh", "-c",
                                    "mkdir \(dir)/mnt/d && echo deep > \(dir)/mnt/d/f && sleep 1.5 && cat \(dir)/mnt/d/f && ls \(dir)/mnt/d"])
        XCTAssertEqual(later.output, "deep\nf\n", later.output)
        XCTAssertEqual(stat(dir + "/src/mine", &st), 0)
        XCTAssertEqual(st.st_uid, 2001)
        XCTAssertTrue(server.log.contains("not root"), server.log)
        // The mount is private to its user (no allow_other): root is refused by the kernel.
        XCTAssertEqual(stat(dir + "/mnt/mine", &st), -1)
        let unmount = try runCommand(["setpriv", "--reuid=2001", "--regid=2001", "--clear-groups",
                                      "fusermount3", "-u", dir + "/mnt"])
        XCTAssertEqual(unmount.status, 0, unmount.output)
        let deadline = Date().addingTimeInterval(10)
        while server.process.isRunning && Date() < deadline { usleep(20_000) }
        XCTAssertEqual(server.process.terminationStatus, 0, server.log)
    }
}
