import Foundation
import XCTest

/// The sandbox, capabilities and seccomp filter a root-run Ferry enters after set-up (README
/// "Sandbox, seccomp and capabilities"), seen from the host: /proc/PID/status and ns links of
/// the server, escapes tried through the mount, and a forbidden system call. The rest of the
/// suite runs with the same defaults (sandbox namespace, seccomp kill), which is the real test
/// of the allow-list.
final class SandboxTests: XCTestCase {
    // CAP_CHOWN, DAC_OVERRIDE, DAC_READ_SEARCH, FOWNER, FSETID, SETGID, SETUID,
    // LINUX_IMMUTABLE, MKNOD, SETFCAP: a root server's credential switching.
    static let switching: UInt64 = 0x8800_02df
    static let sysAdmin: UInt64 = 1 << 21

    /// The "Name:\tvalue" fields of /proc/PID/status.
    static func status(_ pid: Int32) throws -> [String: String] {
        let text = try String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)
        var fields: [String: String] = [:]
        for line in text.split(separator: "\n") {
            let parts = line.split(separator: ":", maxSplits: 1)
            if parts.count == 2 { fields[String(parts[0])] = parts[1].trimmingCharacters(in: .whitespaces) }
        }
        return fields
    }

    /// Waits until the server's log shows `line` (the mount is visible before the server has
    /// answered INIT, so before it is sandboxed).
    static func waitForLog(_ log: () -> String, _ line: String) {
        let deadline = Date().addingTimeInterval(10)
        while !log().contains(line) && Date() < deadline { usleep(10_000) }
    }

    /// Waits up to 20 s for `process` to end; fails (and kills it) if it does not.
    static func waitForExit(_ process: Process, log: () -> String) throws {
        let deadline = Date().addingTimeInterval(20)
        while process.isRunning && Date() < deadline { usleep(20_000) }
        guard process.isRunning else { return }
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        throw TestFailure("the server did not end within 20 s: \(log())")
    }

    static func capabilities(_ fields: [String: String], _ name: String) -> UInt64? {
        fields[name].flatMap { UInt64($0, radix: 16) }
    }

    /// The namespace link of `pid` ("mnt:[4026531841]").
    static func namespace(_ pid: String, _ kind: String) -> String {
        (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/ns/\(kind)")) ?? "?"
    }

    /// Checks the sandbox of a running server started as `started`: its server is pid 1 of a
    /// new pid namespace, with seccomp on, `capabilities` exactly in every set, new
    /// mount/ipc/uts/net namespaces, SOURCE as the root; the supervisor left at `started`
    /// holds no capability and no descriptor beyond standard input, output and error.
    func assertSandboxed(pid started: Int32, source: String, capabilities: UInt64, log: @autoclosure () -> String,
                         file: StaticString = #filePath, line: UInt = #line) throws {
        SandboxTests.waitForLog(log, "serving")
        let log = log()
        let pid = FerryServer.serverPID(startedAs: started)
        XCTAssertNotEqual(pid, started, "the server runs in a pid namespace of its own: \(log)", file: file, line: line)
        XCTAssertNotEqual(SandboxTests.namespace("\(pid)", "pid"), SandboxTests.namespace("self", "pid"), file: file, line: line)
        let fields = try SandboxTests.status(pid)
        XCTAssertEqual(fields["NSpid"]?.split(whereSeparator: { $0 == "\t" || $0 == " " }).last, "1",
                       "the server is pid 1 of its namespace: \(fields["NSpid"] ?? "?")", file: file, line: line)
        let supervisor = try SandboxTests.status(started)
        XCTAssertEqual(SandboxTests.capabilities(supervisor, "CapEff"), 0, file: file, line: line)
        XCTAssertEqual(SandboxTests.capabilities(supervisor, "CapPrm"), 0, file: file, line: line)
        XCTAssertEqual(supervisor["NoNewPrivs"], "1", file: file, line: line)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: "/proc/\(started)/fd").sorted(), ["0", "1", "2"],
                       "the supervisor keeps only standard input, output and error", file: file, line: line)
        XCTAssertEqual(fields["Seccomp"], "2", log, file: file, line: line)
        XCTAssertEqual(fields["NoNewPrivs"], "1", file: file, line: line)
        for set in ["CapEff", "CapPrm", "CapBnd"] {
            XCTAssertEqual(SandboxTests.capabilities(fields, set), capabilities, "\(set): \(fields[set] ?? "?")", file: file, line: line)
        }
        XCTAssertEqual(SandboxTests.capabilities(fields, "CapInh"), 0, file: file, line: line)
        XCTAssertEqual(SandboxTests.capabilities(fields, "CapAmb"), 0, file: file, line: line)
        for kind in ["mnt", "ipc", "uts", "net"] {
            XCTAssertNotEqual(SandboxTests.namespace("\(pid)", kind), SandboxTests.namespace("self", kind), kind, file: file, line: line)
        }
        var root = stat(), shared = stat()
        XCTAssertEqual(stat("/proc/\(pid)/root", &root), 0, file: file, line: line)
        XCTAssertEqual(stat(source, &shared), 0, file: file, line: line)
        XCTAssertEqual(root.st_ino, shared.st_ino, "the server's root is SOURCE", file: file, line: line)
        XCTAssertEqual(root.st_dev, shared.st_dev, file: file, line: line)
        XCTAssertTrue(log.contains("sandbox namespace"), log, file: file, line: line)
    }

    func testDefaultsSandboxTheMountServer() throws {
        let server = try FerryServer()
        defer { server.stop() }
        let pid = server.process.processIdentifier
        // Passthrough (if the kernel has it) and whole-file-system fanotify keep CAP_SYS_ADMIN.
        let expected = SandboxTests.switching | SandboxTests.sysAdmin
        try assertSandboxed(pid: pid, source: server.source, capabilities: expected, log: server.log)
        try "shared\n".write(toFile: server.mountpoint + "/file", atomically: false, encoding: .utf8)
        XCTAssertEqual(try String(contentsOfFile: server.source + "/file", encoding: .utf8), "shared\n")
        // The supervisor passes SIGUSR1 on (statistics) and SIGTERM (stop), and exits as the server did.
        kill(pid, SIGUSR1)
        SandboxTests.waitForLog({ server.log }, "stats: bounds")
        XCTAssertTrue(server.log.contains("stats: bounds"), server.log)
        XCTAssertEqual(server.stop(), 0, server.log)
        XCTAssertFalse(FerryServer.isMounted(server.mountpoint), "the mount helper unmounted it")
    }

    func testWithoutPassthroughOrWholeFileSystemWatchesCapSysAdminGoes() throws {
        let server = try FerryServer(arguments: ["--passthrough", "never", "--notify-watcher", "fanotify-directories",
                                                 "--inode-file-handles", "never"])
        defer { server.stop() }
        try assertSandboxed(pid: server.process.processIdentifier, source: server.source,
                            capabilities: SandboxTests.switching, log: server.log)
        XCTAssertEqual(server.stop(), 0, server.log)
    }

    /// SOURCE and MOUNTPOINT as a user types them, relative to the working directory: the
    /// mount is found in /proc/self/mountinfo all the same, so the server is sandboxed, serves
    /// `ls -lR` (a GETXATTR per entry) and unmounts at exit.
    func testRelativePathsAreSandboxedAlike() throws {
        let server = try FerryServer(relativePaths: true)
        defer { server.stop() }
        try assertSandboxed(pid: server.process.processIdentifier, source: server.source,
                            capabilities: SandboxTests.switching | SandboxTests.sysAdmin, log: server.log)
        try FileManager.default.createDirectory(atPath: server.mountpoint + "/d", withIntermediateDirectories: false)
        try "x\n".write(toFile: server.mountpoint + "/d/f", atomically: false, encoding: .utf8)
        let (status, output) = try runCommand(["ls", "-lR", server.mountpoint])
        XCTAssertEqual(status, 0, output)
        XCTAssertTrue(output.contains(" f\n"), output)
        XCTAssertEqual(server.stop(), 0, server.log)
        XCTAssertFalse(FerryServer.isMounted(server.mountpoint))
    }

    /// FUSE-over-io_uring under the defaults: the same sandbox, filter and capabilities, and the
    /// requests really come through the rings (the allow-list has what the ring queues call).
    func testTheUringTransportIsSandboxedAlike() throws {
        try URingParameter.enable()
        defer { URingParameter.restore() }
        let server = try FerryServer(arguments: ["--transport", "uring"])
        defer { server.stop() }
        SandboxTests.waitForLog({ server.log }, "transport io_uring")
        try assertSandboxed(pid: server.process.processIdentifier, source: server.source,
                            capabilities: SandboxTests.switching | SandboxTests.sysAdmin, log: server.log)
        try FileManager.default.createDirectory(atPath: server.mountpoint + "/d", withIntermediateDirectories: false)
        try Data(repeating: 7, count: 1 << 20).write(to: URL(fileURLWithPath: server.mountpoint + "/d/f"))
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: server.source + "/d/f")), Data(repeating: 7, count: 1 << 20))
        let (status, output) = try runCommand(["ls", "-lR", server.mountpoint])
        XCTAssertEqual(status, 0, output)
        XCTAssertTrue(server.process.isRunning, server.log)
        XCTAssertEqual(server.stop(), 0, server.log)
        XCTAssertNil(server.log.range(of: "totals: 0 request(s) through the io_uring queues"), server.log)
        XCTAssertTrue(server.log.contains("request(s) through the io_uring queues"), server.log)
        XCTAssertFalse(FerryServer.isMounted(server.mountpoint))
    }

    /// A root server without a sandbox keeps the default filter, which has no mount calls: the
    /// atime display on the mount and the unmount go through the host helper, so it serves
    /// and exits cleanly instead of dying of SIGSYS once INIT is answered.
    func testAnUnsandboxedRootServerServesUnderTheFilter() throws {
        let server = try FerryServer(arguments: ["--sandbox", "none"])
        defer { server.stop() }
        SandboxTests.waitForLog({ server.log }, "serving with")
        XCTAssertTrue(server.log.contains("sandbox none; seccomp kill"), server.log)
        try "x\n".write(toFile: server.mountpoint + "/f", atomically: false, encoding: .utf8)
        let (status, output) = try runCommand(["ls", "-l", server.mountpoint])
        XCTAssertEqual(status, 0, output)
        XCTAssertTrue(server.process.isRunning, server.log)
        XCTAssertEqual(try SandboxTests.status(server.process.processIdentifier)["Seccomp"], "2")
        XCTAssertEqual(server.serverPID, server.process.processIdentifier, "no sandbox, no pid namespace")
        XCTAssertEqual(server.stop(), 0, server.log)
        XCTAssertFalse(FerryServer.isMounted(server.mountpoint))
    }

    /// Escapes through the mount: symlinks leading out of SOURCE (absolute, "..", /proc/self/root,
    /// Ferry's own /proc/PID/root) are operated on as links, never followed on the host; Ferry's
    /// root is SOURCE and nothing outside has a path there.
    func testNothingOutsideSourceIsReachable() throws {
        let server = try FerryServer()
        defer { server.stop() }
        let scratch = URL(fileURLWithPath: server.source).deletingLastPathComponent().path
        let canary = scratch + "/canary"
        try "outside\n".write(toFile: canary, atomically: false, encoding: .utf8)
        let (status, output) = try runCommand(["python3", script("sandboxcheck.py"), server.source, server.mountpoint,
                                               "\(server.serverPID)", canary])
        XCTAssertEqual(status, 0, output)
        XCTAssertTrue(output.hasSuffix("ok\n"), output)
        XCTAssertEqual(server.stop(), 0, server.log)
    }

    /// The hidden --debug-forbidden-call makes getpgrp(2), which is not allowed: with the default
    /// `kill` the server dies of SIGSYS (its mount left dead, as any killed server's); with `trap` Ferry names
    /// the call; without a filter the call returns and the server keeps serving.
    func testAForbiddenSystemCallKillsTheServer() throws {
        let killed = try FerryServer(arguments: ["--debug-forbidden-call"], waitForMount: false)
        defer { killed.stop() }
        try SandboxTests.waitForExit(killed.process, log: { killed.log })
        XCTAssertEqual(killed.process.terminationReason, .uncaughtSignal, killed.log)
        XCTAssertEqual(killed.process.terminationStatus, SIGSYS, killed.log)
        XCTAssertFalse(killed.log.contains("the forbidden system call returned"), killed.log)
        // Like any killed server, it leaves the mount dead (ENOTCONN), and its helper is gone.
        XCTAssertTrue(FerryServer.isMounted(killed.mountpoint))
        XCTAssertEqual(open(killed.mountpoint, O_RDONLY | O_DIRECTORY), -1, "OPENDIR reaches no server")
        XCTAssertEqual(errno, ENOTCONN)
        XCTAssertEqual(try runCommand(["fusermount3", "-u", killed.mountpoint]).status, 0)
        let (_, helpers) = try runCommand(["pgrep", "-f", "mount-helper \(killed.mountpoint) "])
        XCTAssertEqual(helpers, "", "the mount helper exits with its server")

        let trapped = try FerryServer(arguments: ["--seccomp", "trap", "--debug-forbidden-call"], waitForMount: false)
        defer { trapped.stop() }
        try SandboxTests.waitForExit(trapped.process, log: { trapped.log })
        XCTAssertEqual(trapped.process.terminationStatus, SIGSYS, trapped.log)
        XCTAssertTrue(trapped.log.contains("ferry: seccomp refused system call 111"), trapped.log)
        XCTAssertEqual(try runCommand(["fusermount3", "-u", trapped.mountpoint]).status, 0)

        let unfiltered = try FerryServer(arguments: ["--seccomp", "none", "--debug-forbidden-call"])
        SandboxTests.waitForLog({ unfiltered.log }, "serving with")
        defer { unfiltered.stop() }
        let deadline2 = Date().addingTimeInterval(5)
        while !unfiltered.log.contains("the forbidden system call returned") && Date() < deadline2 { usleep(20_000) }
        XCTAssertTrue(unfiltered.process.isRunning, unfiltered.log)
        XCTAssertEqual(try SandboxTests.status(unfiltered.process.processIdentifier)["Seccomp"], "0")
        XCTAssertEqual(unfiltered.stop(), 0, unfiltered.log)
    }

    func testChrootAndNoneModes() throws {
        let chrooted = try FerryServer(arguments: ["--sandbox", "chroot"])
        defer { chrooted.stop() }
        SandboxTests.waitForLog({ chrooted.log }, "serving with")
        let pid = chrooted.process.processIdentifier
        XCTAssertTrue(chrooted.log.contains("sandbox chroot"), chrooted.log)
        XCTAssertEqual(SandboxTests.namespace("\(pid)", "mnt"), SandboxTests.namespace("self", "mnt"))
        var root = stat(), shared = stat()
        XCTAssertEqual(stat("/proc/\(pid)/root", &root), 0)
        XCTAssertEqual(stat(chrooted.source, &shared), 0)
        XCTAssertEqual(root.st_ino, shared.st_ino)
        try "x".write(toFile: chrooted.mountpoint + "/f", atomically: false, encoding: .utf8)
        XCTAssertEqual(chrooted.stop(), 0, chrooted.log)
        XCTAssertFalse(FerryServer.isMounted(chrooted.mountpoint))

        let plain = try FerryServer(arguments: ["--sandbox", "none", "--seccomp", "none"])
        defer { plain.stop() }
        SandboxTests.waitForLog({ plain.log }, "serving with")
        XCTAssertTrue(plain.log.contains("sandbox none; seccomp none"), plain.log)
        XCTAssertEqual(try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(plain.process.processIdentifier)/root"), "/")
        XCTAssertEqual(plain.stop(), 0, plain.log)
    }

    /// An ordinary user's server runs without a sandbox (saying so), and refuses to start with one.
    func testOrdinaryUsersCannotAskForASandbox() throws {
        let user = try OrdinaryUser()
        defer { user.restore() }
        let refused = try runCommand(OrdinaryUser.asUser + [FerryServer.binary, "serve", user.directory + "/src",
                                                            user.directory + "/mnt", "--sandbox", "namespace"])
        XCTAssertEqual(refused.status, 2, refused.output)
        XCTAssertTrue(refused.output.contains("--sandbox namespace needs root"), refused.output)
        let server = try FerryServer(source: user.directory + "/src", mountpoint: user.directory + "/mnt",
                                     prefix: OrdinaryUser.asUser)
        defer { server.stop() }
        SandboxTests.waitForLog({ server.log }, "serving with")
        XCTAssertTrue(server.log.contains("sandbox none; seccomp kill"), server.log)
        XCTAssertEqual(try SandboxTests.status(server.process.processIdentifier)["Seccomp"], "2")
        let write = try runCommand(OrdinaryUser.asUser + ["sh", "-c", "echo mine > \(server.mountpoint)/file"])
        XCTAssertEqual(write.status, 0, write.output)
        XCTAssertEqual(server.stop(), 0, server.log)
        XCTAssertFalse(FerryServer.isMounted(server.mountpoint))
    }

    /// A VM's server (vhost-user) is sandboxed the same way before QEMU connects; without
    /// passthrough or notifications it keeps no CAP_SYS_ADMIN.
    func testVhostServerIsSandboxedBeforeTheGuestConnects() throws {
        let scratch = try Scratch.directory("ferry-sandbox-vhost")
        try FileManager.default.createDirectory(atPath: scratch + "/src", withIntermediateDirectories: true)
        let server = try VhostGuestTests.VhostServer(source: scratch + "/src", socket: scratch + "/vhost.sock")
        try assertSandboxed(pid: server.process.processIdentifier, source: scratch + "/src",
                            capabilities: SandboxTests.switching, log: server.log)
        server.process.terminate()
        server.process.waitUntilExit()
        XCTAssertEqual(server.process.terminationStatus, 0, server.log)
        XCTAssertFalse(FileManager.default.fileExists(atPath: scratch + "/vhost.sock"), "the host helper removes the socket file")
    }
}

extension SandboxTests {
    /// A VM's server without a sandbox keeps the default filter, which has no unlink: its socket
    /// file goes through the host helper at exit, so SIGTERM ends it with status 0 and no file
    /// left (it died of SIGSYS there before).
    func testAnUnsandboxedVhostServerRemovesItsSocketUnderTheFilter() throws {
        let scratch = try Scratch.directory("ferry-sandbox-vhost-none")
        try FileManager.default.createDirectory(atPath: scratch + "/src", withIntermediateDirectories: true)
        let server = try VhostGuestTests.VhostServer(source: scratch + "/src", socket: scratch + "/vhost.sock",
                                                     arguments: ["--sandbox", "none"])
        SandboxTests.waitForLog({ server.log }, "serving")
        XCTAssertTrue(server.log.contains("sandbox none; seccomp kill"), server.log)
        XCTAssertTrue(FileManager.default.fileExists(atPath: scratch + "/vhost.sock"), server.log)
        server.process.terminate()
        try SandboxTests.waitForExit(server.process, log: { server.log })
        XCTAssertEqual(server.process.terminationReason, .exit, server.log)
        XCTAssertEqual(server.process.terminationStatus, 0, server.log)
        XCTAssertFalse(FileManager.default.fileExists(atPath: scratch + "/vhost.sock"), "the host helper removes the socket file")
    }

    /// `ferry virtiofsd` takes virtiofsd's `--sandbox`, `-o sandbox=` and `--seccomp`.
    func testVirtiofsdSandboxOptions() throws {
        let scratch = try Scratch.directory("ferry-sandbox-virtiofsd")
        try FileManager.default.createDirectory(atPath: scratch + "/src", withIntermediateDirectories: true)
        let link = scratch + "/virtiofsd"
        XCTAssertEqual(symlink(FerryServer.binary, link), 0)
        for (arguments, expected) in [(["-o", "source=\(scratch)/src,sandbox=chroot", "--seccomp=log"], "sandbox chroot (chroot into SOURCE); seccomp log"),
                                      (["--shared-dir=\(scratch)/src", "--sandbox=none", "--seccomp=none"], "sandbox none; seccomp none")] {
            let socket = scratch + "/v.sock"
            let logURL = URL(fileURLWithPath: scratch + "/v.log")
            _ = FileManager.default.createFile(atPath: logURL.path, contents: nil)
            let process = Process()
            process.executableURL = URL(fileURLWithPath: link)
            process.arguments = ["--socket-path=\(socket)"] + arguments
            let log = try FileHandle(forWritingTo: logURL)
            process.standardOutput = log
            process.standardError = log
            try process.run()
            var text = ""
            let deadline = Date().addingTimeInterval(10)
            while process.isRunning && !text.contains("serving") && Date() < deadline {
                usleep(20_000)
                text = (try? String(contentsOf: logURL, encoding: .utf8)) ?? ""
            }
            XCTAssertTrue(text.contains(expected), text)
            process.terminate()
            process.waitUntilExit()
            XCTAssertEqual(process.terminationStatus, 0, text)
            unlink(socket)
        }
    }
}
