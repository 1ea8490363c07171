import Foundation
import XCTest

/// A `ferry serve` process on a scratch SOURCE and MOUNTPOINT, for tests that need a real mount.
final class FerryServer {
    let source: String
    let mountpoint: String
    let process = Process()
    let logURL: URL

    /// The ferry binary built beside the test bundle.
    static var binary: String {
        let bundleDir = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        for candidate in [bundleDir, bundleDir.deletingLastPathComponent()] {
            let path = candidate.appendingPathComponent("ferry").path
            if FileManager.default.isExecutableFile(atPath: path) { return path }
        }
        return Bundle(for: FerryServer.self).bundleURL.deletingLastPathComponent().appendingPathComponent("ferry").path
    }

    /// Starts ferry on `source` (created if missing) and waits until the mount is up.
    /// `prefix` runs ferry under another command (e.g. prlimit or setpriv). `relativePaths`
    /// starts it in the scratch directory with SOURCE and MOUNTPOINT given as "src" and "mnt".
    init(source: String? = nil, mountpoint: String? = nil, arguments: [String] = [], prefix: [String] = [],
         waitForMount: Bool = true, relativePaths: Bool = false) throws {
        let scratch = try Scratch.directory("ferry-test")
        self.source = source ?? scratch + "/src"
        self.mountpoint = mountpoint ?? scratch + "/mnt"
        try FileManager.default.createDirectory(atPath: self.source, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: self.mountpoint, withIntermediateDirectories: true)
        logURL = URL(fileURLWithPath: scratch + "/ferry.log")
        _ = FileManager.default.createFile(atPath: logURL.path, contents: nil)
        let log = try FileHandle(forWritingTo: logURL)
        let paths = relativePaths ? ["src", "mnt"] : [self.source, self.mountpoint]
        if relativePaths {
            precondition(source == nil && mountpoint == nil, "relative paths are the scratch directory's src and mnt")
            process.currentDirectoryURL = URL(fileURLWithPath: scratch)
        }
        let command = prefix + [FerryServer.binary, "serve"] + paths + arguments
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = command
        process.standardOutput = log
        process.standardError = log
        try process.run()
        if waitForMount { try waitUntilMounted() }
    }

    /// Whether `mountpoint` is a ferry FUSE mount right now.
    static func isMounted(_ mountpoint: String) -> Bool {
        guard let mounts = procText("/proc/self/mounts") else { return false }
        return mounts.split(separator: "\n").contains { line in
            let fields = line.split(separator: " ")
            return fields.count > 2 && fields[1] == mountpoint && fields[2].hasPrefix("fuse")
        }
    }

    func waitUntilMounted(timeout: TimeInterval = 20) throws {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if FerryServer.isMounted(mountpoint) {
                waitUntilServing(until: deadline)
                return
            }
            if !process.isRunning { throw TestFailure("ferry exited early (\(process.terminationStatus)): \(log)") }
            usleep(20_000)
        }
        throw TestFailure("mount did not appear within \(timeout) s: \(log)")
    }

    /// Waits (at most until `deadline`, without failing) for the log line that says the reader
    /// threads run. The mount is listed as soon as it is made, while the server is still setting
    /// up (the sandbox, INIT): an unmount in that window can find the mount busy.
    private func waitUntilServing(until deadline: Date) {
        while Date() < deadline && process.isRunning && !log.contains("[FerryTransport] serving") { usleep(5_000) }
    }

    /// The process that serves: under `--sandbox namespace` the child in Ferry's pid
    /// namespace (its supervisor keeps the pid this test started), else that process itself.
    var serverPID: Int32 { FerryServer.serverPID(startedAs: process.processIdentifier) }

    /// The server behind the process a test started as `pid`: its child in another pid
    /// namespace if it has one, else `pid`.
    static func serverPID(startedAs pid: Int32) -> Int32 {
        let own = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/ns/pid")
        let children = (try? String(contentsOfFile: "/proc/\(pid)/task/\(pid)/children", encoding: .utf8)) ?? ""
        for child in children.split(separator: " ").compactMap({ Int32($0) }) {
            let namespace = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(child)/ns/pid")
            if let namespace, namespace != own { return child }
        }
        return pid
    }

    /// Everything ferry logged so far.
    var log: String { (try? String(contentsOf: logURL, encoding: .utf8)) ?? "" }

    /// Sends `signal` and waits for the exit; returns the exit status.
    @discardableResult
    func stop(signal: Int32 = SIGTERM, timeout: TimeInterval = 15) -> Int32 {
        if process.isRunning { kill(process.processIdentifier, signal) }
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline { usleep(20_000) }
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
        if FerryServer.isMounted(mountpoint) { _ = try? runCommand(["umount", "-l", mountpoint]) }
        return process.terminationStatus
    }

    deinit { stop() }
}

/// The whole text of a /proc file, read until end of file. String(contentsOfFile:) stops
/// after the first page of files such as /proc/self/mounts (their size is 0), which loses the
/// newest mounts once a host has more than about 60.
func procText(_ path: String) -> String? {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if n < 0 && errno == EINTR { continue }
        guard n > 0 else { break }
        bytes += chunk[0..<n]
    }
    return String(decoding: bytes, as: UTF8.self)
}

/// Runs a command to completion; returns (status, stdout+stderr).
@discardableResult
func runCommand(_ command: [String], timeout: TimeInterval = 600) throws -> (status: Int32, output: String) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    process.arguments = command
    let pipe = Pipe()
    process.standardOutput = pipe
    process.standardError = pipe
    try process.run()
    final class Collected: @unchecked Sendable { var data = Data() }
    let collected = Collected()
    let reader = Thread { collected.data = pipe.fileHandleForReading.readDataToEndOfFile() }
    reader.start()
    let deadline = Date().addingTimeInterval(timeout)
    while process.isRunning && Date() < deadline { usleep(10_000) }
    if process.isRunning {
        // SIGTERM first; a process stuck in an uninterruptible wait (a vfork whose child waits
        // for the file system under test) only ends on SIGKILL.
        process.terminate()
        let grace = Date().addingTimeInterval(5)
        while process.isRunning && Date() < grace { usleep(10_000) }
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
        throw TestFailure("timed out after \(timeout) s: \(command.joined(separator: " "))")
    }
    while !reader.isFinished { usleep(1000) }
    return (process.terminationStatus, String(decoding: collected.data, as: UTF8.self))
}

/// An ordinary user (uid/gid 2001) for tests of an unprivileged server: a passwd entry
/// (fusermount3 asks for one), /dev/fuse opened up while the test runs, and a scratch directory
/// with `src` and `mnt` owned by the user.
struct OrdinaryUser {
    static let uid: UInt32 = 2001
    /// Prefix that runs a command as the user.
    static let asUser = ["setpriv", "--reuid=2001", "--regid=2001", "--clear-groups"]
    let directory: String
    private let devFuseMode: mode_t

    init() throws {
        _ = try runCommand(["useradd", "-M", "-u", "2001", "ferrytest"])
        var st = stat()
        guard stat("/dev/fuse", &st) == 0 else { throw TestFailure("no /dev/fuse") }
        devFuseMode = st.st_mode & 0o7777
        chmod("/dev/fuse", 0o666)
        directory = try Scratch.directory("ferry-user")
        chmod(directory, 0o755)
        for sub in ["src", "mnt"] {
            mkdir(directory + "/" + sub, 0o755)
            chown(directory + "/" + sub, OrdinaryUser.uid, OrdinaryUser.uid)
        }
    }

    /// Puts /dev/fuse's mode back.
    func restore() { chmod("/dev/fuse", devFuseMode) }
}

/// Path of a helper script shipped with the tests.
func script(_ name: String) -> String {
    URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("scripts/\(name)").path
}

struct TestFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
