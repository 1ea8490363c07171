import Foundation
import XCTest

/// A real Linux guest (QEMU, TCG here) mounts a share served by `ferry serve SOURCE
/// --socket-path SOCK` over vhost-user-fs and runs scripts/guest/vhost-checks.sh: file and
/// directory operations as root and as an ordinary user, xattrs, a 64 MiB file written in the
/// guest, a host-written file read in the guest, O_DIRECT, fio with verification, and fcntl/flock
/// locks against a host process (scripts/guest/lock-holder.py). One boot for all of it.
/// Skipped where QEMU or the guest image cannot be had (scripts/guest/build-image.sh installs
/// them from Debian packages).
final class VhostGuestTests: XCTestCase {
    static let guestDir = script("guest")

    /// A `ferry serve SOURCE --socket-path SOCK` process.
    final class VhostServer {
        let process = Process()
        let socket: String
        let logURL: URL

        init(source: String, socket: String, arguments: [String] = []) throws {
            self.socket = socket
            logURL = URL(fileURLWithPath: socket + ".log")
            _ = FileManager.default.createFile(atPath: logURL.path, contents: nil)
            let log = try FileHandle(forWritingTo: logURL)
            process.executableURL = URL(fileURLWithPath: FerryServer.binary)
            process.arguments = ["serve", source, "--socket-path", socket, "--tag", "ferrytest"] + arguments
            process.standardOutput = log
            process.standardError = log
            try process.run()
            let deadline = Date().addingTimeInterval(20)
            while !FileManager.default.fileExists(atPath: socket) {
                guard process.isRunning, Date() < deadline else { throw TestFailure("no socket from ferry: \(self.log)") }
                usleep(20_000)
            }
        }

        var log: String { (try? String(contentsOf: logURL, encoding: .utf8)) ?? "" }

        /// Waits for the exit (the guest disconnected); kills it after `timeout`.
        func waitForExit(timeout: TimeInterval = 20) -> Int32? {
            let deadline = Date().addingTimeInterval(timeout)
            while process.isRunning && Date() < deadline { usleep(50_000) }
            if process.isRunning {
                process.terminate()
                process.waitUntilExit()
                return nil
            }
            return process.terminationStatus
        }

        deinit { if process.isRunning { process.terminate(); process.waitUntilExit() } }
    }

    /// Builds (or reuses) the guest image; skips the test where that is impossible.
    static func requireGuestImage() throws {
        let (status, output) = try runCommand([guestDir + "/build-image.sh"], timeout: 900)
        if status != 0 { throw XCTSkip("guest image unavailable: \(output.suffix(400))") }
    }

    /// A guest booting on `socket` and running `command`.
    final class Guest {
        final class Collected: @unchecked Sendable { var data = Data() }
        let process = Process()
        private let output = Pipe()
        private let collected = Collected()
        private let reader: Thread

        /// `kernel`: the guest kernel's release (one installed under /lib/modules), instead of
        /// the one linux-image-amd64 names.
        init(socket: String, copies: [String], command: String, timeout: Int, extra: [String] = [],
             kernel: String? = nil) throws {
            var environment = ProcessInfo.processInfo.environment
            if environment["GUEST_ACCEL"] == nil { environment["GUEST_ACCEL"] = "tcg" }   // KVM does not work here
            if let kernel { environment["GUEST_KERNEL_VERSION"] = kernel }
            process.executableURL = URL(fileURLWithPath: VhostGuestTests.guestDir + "/run-guest.sh")
            process.arguments = ["--socket", socket, "--tag", "ferrytest", "--timeout", "\(timeout)", "-q"]
                + copies.flatMap { ["--copy", $0] } + extra + ["--", command]
            process.environment = environment
            process.standardOutput = output
            process.standardError = output
            let handle = output.fileHandleForReading, collected = self.collected
            reader = Thread { collected.data = handle.readDataToEndOfFile() }
            try process.run()
            reader.start()
        }

        /// Waits for the guest; returns (status, stdout + stderr).
        func finish() -> (Int32, String) {
            process.waitUntilExit()
            while !reader.isFinished { usleep(10_000) }
            return (process.terminationStatus, String(decoding: collected.data, as: UTF8.self))
        }
    }

    /// Boots a guest on `socket` running `command`; returns (status, stdout + stderr).
    static func boot(socket: String, copies: [String], command: String, timeout: Int = 900, extra: [String] = [],
                     kernel: String? = nil) throws -> (Int32, String) {
        try Guest(socket: socket, copies: copies, command: command, timeout: timeout, extra: extra, kernel: kernel).finish()
    }

    static func sha256(_ path: String) throws -> String {
        let (status, output) = try runCommand(["sha256sum", path])
        guard status == 0 else { throw TestFailure("sha256sum \(path): \(output)") }
        return String(output.prefix(64))
    }

    /// What queue `queue` reported when it stopped: READ/WRITE requests whose data stayed in
    /// guest memory, and those copied (QueueRunner's last log line), summed over its runs.
    static func dataPlacement(_ log: String, queue: Int) -> (inPlace: Int, copied: Int)? {
        let prefix = "queue \(queue): "
        var found = false, inPlace = 0, copied = 0
        for line in log.split(separator: "\n") {
            guard let range = line.range(of: prefix), line.contains("READ/WRITE with their data in guest memory") else { continue }
            let words = line[range.upperBound...].split(separator: " ")
            guard words.count > 8, let a = Int(words[0]), let b = Int(words[8]) else { continue }
            found = true
            inPlace += a
            copied += b
        }
        return found ? (inPlace, copied) : nil
    }

    func testGuestWorkloadThroughFerry() throws {
        try Self.requireGuestImage()
        let scratch = try Scratch.directory("ferry-vhost")
        defer { _ = try? runCommand(["rm", "-rf", scratch]) }
        let source = scratch + "/src"
        try FileManager.default.createDirectory(atPath: source, withIntermediateDirectories: true)
        // A host-written file the guest reads back.
        XCTAssertEqual(try runCommand(["sh", "-c", "head -c 8388608 /dev/urandom > \(source)/host.bin"]).status, 0)
        let hostHash = try Self.sha256(source + "/host.bin")

        // A host process holding flock and an fcntl lock until the guest asks it to let go.
        let holder = Process()
        holder.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        holder.arguments = ["python3", Self.guestDir + "/lock-holder.py", source]
        holder.standardOutput = FileHandle.nullDevice
        try holder.run()
        defer { holder.terminate(); holder.waitUntilExit() }
        let ready = Date().addingTimeInterval(10)
        while !FileManager.default.fileExists(atPath: source + "/holder.ready") && Date() < ready { usleep(20_000) }

        let server = try VhostServer(source: source, socket: scratch + "/ferry.sock")
        let started = Date()
        let (status, output) = try Self.boot(socket: server.socket,
                                             copies: [Self.guestDir + "/guest-locktest.pl:/harness/locktest.pl",
                                                      Self.guestDir + "/vhost-checks.sh:/harness/checks.sh"],
                                             command: "sh /harness/checks.sh /mnt")
        let elapsed = Date().timeIntervalSince(started)
        let exit = server.waitForExit()
        let lines = output.split(separator: "\n").map(String.init)
        print("guest run: \(String(format: "%.1f", elapsed)) s, status \(status)")
        for line in lines where line.hasPrefix("PASS") || line.hasPrefix("FAIL") || line.hasPrefix("INFO") || line.hasPrefix("[run-guest]") {
            print("  " + line)
        }
        XCTAssertEqual(status, 0, "guest checks failed:\n\(output)\nferry log:\n\(server.log.suffix(3000))")
        XCTAssertTrue(lines.contains("DONE"), output)
        XCTAssertFalse(lines.contains { $0.hasPrefix("FAIL") }, output)
        for name in ["create", "rename", "symlink", "hardlink", "chmod", "chown", "user-create", "user-chown-refused",
                     "xattr", "big-readback", "odirect", "fio-verify", "fio-seq"] {
            XCTAssertTrue(lines.contains("PASS \(name)"), "no PASS \(name):\n\(output)")
        }
        for name in ["flock-vs-host", "posix-setlk-vs-host", "posix-getlk-vs-host", "posix-guest-vs-guest",
                     "flock-guest-vs-guest", "posix-setlkw-released-by-host", "flock-blocking-released-by-host"] {
            XCTAssertTrue(lines.contains { $0.hasPrefix("PASS \(name):") }, "no PASS \(name):\n\(output)")
        }
        // Data: the guest's 64 MiB file is byte-identical on the host; the host's file read right.
        func guestHash(_ name: String) -> String? {
            lines.first { $0.hasPrefix("SHA256 \(name) ") }.map { String($0.split(separator: " ")[2]) }
        }
        XCTAssertEqual(guestHash("host.bin"), hostHash)
        XCTAssertEqual(guestHash("big.bin"), try Self.sha256(source + "/big.bin"))
        XCTAssertEqual(try FileManager.default.attributesOfItem(atPath: source + "/big.bin")[.size] as? Int, 64 << 20)
        // What the guest did is there on the host, with the owners and modes it set.
        var st = stat()
        XCTAssertEqual(lstat(source + "/d1/b.txt", &st), 0)
        XCTAssertEqual(st.st_mode & 0o7777, 0o640)
        XCTAssertEqual(st.st_uid, 1000)
        XCTAssertEqual(lstat(source + "/user/mine", &st), 0)
        XCTAssertEqual(st.st_uid, 1000, "a file the guest's uid 1000 created belongs to uid 1000 on the host")
        XCTAssertEqual(try FileManager.default.destinationOfSymbolicLink(atPath: source + "/sl"), "d1/b.txt")
        let (xattrStatus, xattr) = try runCommand(["getfattr", "--absolute-names", "--only-values", "-n", "user.left", source + "/d1/b.txt"])
        if xattrStatus == 0 { XCTAssertEqual(xattr, "for-host") }
        // Every READ and WRITE of all that (buffered, O_DIRECT, fio) ran on guest memory in place.
        let (inPlace, copied) = try XCTUnwrap(Self.dataPlacement(server.log, queue: 1), server.log)
        XCTAssertGreaterThan(inPlace, 64 * 4, "the 64 MiB file alone takes more READs and WRITEs: \(server.log)")
        XCTAssertEqual(copied, 0, server.log)
        // The guest powered off: Ferry released the connection and exited 0 (no --persist).
        XCTAssertEqual(exit, 0, server.log)
        XCTAssertFalse(FileManager.default.fileExists(atPath: server.socket), "socket file left behind")
        XCTAssertFalse(server.log.contains(" error "), server.log)
    }

    /// Options that cannot apply to a VM are refused with one line; SIGTERM ends a waiting server
    /// with status 0 and removes its socket. No guest.
    func testCommandLine() throws {
        let scratch = try Scratch.directory("ferry-vhost-cli")
        defer { _ = try? runCommand(["rm", "-rf", scratch]) }
        let source = scratch + "/src", socket = scratch + "/sock"
        try FileManager.default.createDirectory(atPath: source, withIntermediateDirectories: true)
        let refused: [([String], String)] = [
            ([source, scratch, "--socket-path", socket], "no MOUNTPOINT"),
            ([source, "--socket-path", socket, "--notify"], "--notify"),
            ([source, "--socket-path", socket, "--allow-other"], "--allow-other"),
            ([source, "--socket-path", socket, "-o", "nosuid"], "nosuid"),
            ([source, "--socket-path", socket, "-o", "noatime"], "atime"),
            ([source, "--socket-path", socket, "--threads", "4"], "--threads"),
            ([source, "--socket-path", socket, "--fd", "3"], "not both"),
            ([source, "--persist"], "Missing expected argument"),
            ([source, scratch, "--tag", "x"], "--tag applies only with --socket-path"),
        ]
        for (arguments, message) in refused {
            let (status, output) = try runCommand([FerryServer.binary, "serve"] + arguments)
            XCTAssertNotEqual(status, 0, arguments.joined(separator: " "))
            XCTAssertTrue(output.contains(message), "\(arguments): \(output)")
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: socket))
        let server = try VhostServer(source: source, socket: socket, arguments: ["--persist"])
        usleep(200_000)
        XCTAssertTrue(server.process.isRunning)
        server.process.terminate()
        XCTAssertEqual(server.waitForExit(), 0, server.log)
        XCTAssertFalse(FileManager.default.fileExists(atPath: socket), "socket file left behind")
    }

    /// `--persist`: two guests in a row on one server (a VM restarted), each with a fresh FUSE
    /// session; the second sees what the first wrote. The second device has QEMU's default
    /// queue size (128) and two request queues; 8 MiB written through it buffered and with
    /// O_DIRECT arrive intact. Then SIGTERM ends the server (status 0).
    func testPersistServesTheNextGuest() throws {
        try Self.requireGuestImage()
        let scratch = try Scratch.directory("ferry-vhost-persist")
        defer { _ = try? runCommand(["rm", "-rf", scratch]) }
        let source = scratch + "/src"
        try FileManager.default.createDirectory(atPath: source, withIntermediateDirectories: true)
        let server = try VhostServer(source: source, socket: scratch + "/ferry.sock", arguments: ["--persist"])
        let first = try Self.boot(socket: server.socket, copies: [], command: "echo first > /mnt/boot1 && cat /mnt/boot1", timeout: 300)
        XCTAssertEqual(first.0, 0, first.1 + server.log)
        XCTAssertTrue(first.1.contains("first"), first.1)
        XCTAssertTrue(server.process.isRunning, "ferry exited after the first guest despite --persist: \(server.log)")
        let second = try Self.boot(socket: server.socket, copies: [], command: """
            cat /mnt/boot1 && echo second > /mnt/boot2 && dd if=/dev/urandom of=/tmp/x bs=1M count=8 2>/dev/null \
              && cp /tmp/x /mnt/x && dd if=/tmp/x of=/mnt/y bs=1M oflag=direct 2>/dev/null && sync \
              && echo 3 > /proc/sys/vm/drop_caches && echo "SHA256 $(sha256sum < /tmp/x | cut -d' ' -f1)" \
              && cmp /tmp/x /mnt/x && dd if=/mnt/y of=/tmp/y bs=1M iflag=direct 2>/dev/null && cmp /tmp/x /tmp/y
            """, timeout: 300, extra: ["--queue-size", "128", "--fs-device-opts", ",num-request-queues=2"])
        XCTAssertEqual(second.0, 0, second.1 + server.log)
        XCTAssertTrue(second.1.contains("first"), second.1)
        XCTAssertEqual(try String(contentsOfFile: source + "/boot2", encoding: .utf8), "second\n")
        let guestHash = second.1.split(separator: "\n").first { $0.hasPrefix("SHA256 ") }.map { String($0.dropFirst(7)) }
        XCTAssertNotNil(guestHash, second.1)
        XCTAssertEqual(guestHash, try Self.sha256(source + "/x"))
        XCTAssertEqual(guestHash, try Self.sha256(source + "/y"))
        XCTAssertTrue(server.log.contains("queue 2 (requests, size 128) started"), server.log)
        // The 8 MiB went through guest memory in place, on the first request queue: a Linux 6.1
        // guest sends nothing on the second (virtio_fs.c: "TODO multiqueue"; 6.11 maps CPUs to queues).
        let (inPlace, copied) = try XCTUnwrap(Self.dataPlacement(server.log, queue: 1), server.log)
        XCTAssertGreaterThanOrEqual(inPlace, 16, server.log)
        XCTAssertEqual(copied, 0, server.log)
        XCTAssertNil(Self.dataPlacement(server.log, queue: 2), "a 6.1 guest used the second request queue: \(server.log)")
        XCTAssertEqual(server.log.components(separatedBy: "FUSE 7.").count - 1, 2, "two INITs expected: \(server.log)")
        server.process.terminate()
        XCTAssertEqual(server.waitForExit(), 0, server.log)
        XCTAssertFalse(server.log.contains(" error "), server.log)
    }

    /// Two guests, each on its own Ferry server over one SOURCE: one guest's flock and fcntl
    /// locks conflict with the other's, and the other's blocking waits are granted when the
    /// first unlocks (scripts/guest/guest-crosslock.pl). Both boot at once.
    func testLocksAcrossGuests() throws {
        try Self.requireGuestImage()
        let scratch = try Scratch.directory("ferry-vhost-cross")
        defer { _ = try? runCommand(["rm", "-rf", scratch]) }
        let source = scratch + "/src"
        try FileManager.default.createDirectory(atPath: source, withIntermediateDirectories: true)
        let serverA = try VhostServer(source: source, socket: scratch + "/a.sock")
        let serverB = try VhostServer(source: source, socket: scratch + "/b.sock")
        let script = Self.guestDir + "/guest-crosslock.pl:/harness/crosslock.pl"
        let holder = try Guest(socket: serverA.socket, copies: [script], command: "perl /harness/crosslock.pl holder /mnt", timeout: 400)
        let contender = try Guest(socket: serverB.socket, copies: [script], command: "perl /harness/crosslock.pl contender /mnt", timeout: 400)
        let (statusB, outputB) = contender.finish()
        let (statusA, outputA) = holder.finish()
        print("holder:\n\(outputA)\ncontender:\n\(outputB)")
        XCTAssertEqual(statusA, 0, outputA + serverA.log)
        XCTAssertEqual(statusB, 0, outputB + serverB.log)
        for name in ["flock-guest-vs-other-guest", "posix-guest-vs-other-guest", "posix-getlk-other-guest",
                     "posix-setlkw-released-by-other-guest", "flock-blocking-released-by-other-guest"] {
            XCTAssertTrue(outputB.contains("PASS \(name):"), "no PASS \(name):\n\(outputB)")
        }
        XCTAssertEqual(serverA.waitForExit(), 0, serverA.log)
        XCTAssertEqual(serverB.waitForExit(), 0, serverB.log)
    }

    /// libvirt 9 runs its virtiofs binary with virtiofsd's command line and a listening socket it
    /// passes in (scripts/guest/libvirt-launch.py builds exactly that argument list): Ferry run as
    /// `virtiofsd` (a symlink) serves a guest that way, with the cache mode and a source path
    /// holding a comma. Also `--print-capabilities` and refused options.
    func testVirtiofsdCommandLine() throws {
        let scratch = try Scratch.directory("ferry-vhost-libvirt")
        defer { _ = try? runCommand(["rm", "-rf", scratch]) }
        let link = scratch + "/virtiofsd"
        XCTAssertEqual(symlink(FerryServer.binary, link), 0)
        let (capsStatus, caps) = try runCommand([link, "--print-capabilities"])
        XCTAssertEqual(capsStatus, 0)
        let json = try JSONSerialization.jsonObject(with: Data(caps.utf8)) as? [String: Any]
        XCTAssertEqual(json?["type"] as? String, "fs", caps)
        let (refusedStatus, refused) = try runCommand([link, "--fd=3", "-o", "source=/tmp,xattrmap=:map::"])
        XCTAssertEqual(refusedStatus, 2)
        XCTAssertTrue(refused.contains("xattrmap"), refused)

        try Self.requireGuestImage()
        let source = scratch + "/share,one"
        try FileManager.default.createDirectory(atPath: source, withIntermediateDirectories: true)
        try "from the host\n".write(toFile: source + "/hello", atomically: false, encoding: .utf8)
        let socket = scratch + "/libvirt.sock"
        let log = scratch + "/virtiofsd.log"
        let launcher = Process()
        launcher.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        launcher.arguments = ["python3", Self.guestDir + "/libvirt-launch.py", link, socket, source, "always"]
        _ = FileManager.default.createFile(atPath: log, contents: nil)
        let logHandle = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
        launcher.standardOutput = logHandle
        launcher.standardError = logHandle
        try launcher.run()
        defer { if launcher.isRunning { launcher.terminate(); launcher.waitUntilExit() } }
        let deadline = Date().addingTimeInterval(10)
        while !FileManager.default.fileExists(atPath: socket) && Date() < deadline { usleep(20_000) }
        let (status, output) = try Self.boot(socket: socket, copies: [], command: "cat /mnt/hello && echo guest > /mnt/back", timeout: 300)
        let serverLog = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
        XCTAssertEqual(status, 0, output + serverLog)
        XCTAssertTrue(output.contains("from the host"), output)
        XCTAssertEqual(try String(contentsOfFile: source + "/back", encoding: .utf8), "guest\n")
        XCTAssertTrue(serverLog.contains("cache always"), serverLog)
        let end = Date().addingTimeInterval(20)
        while launcher.isRunning && Date() < end { usleep(50_000) }
        XCTAssertFalse(launcher.isRunning, "ferry did not exit after the guest: \(serverLog)")
        XCTAssertEqual(launcher.terminationStatus, 0, serverLog)
    }

    /// QEMU pauses and resumes a running VM (monitor `stop`/`cont`: the queues stop and start
    /// again at their saved indexes) and then resets it (`system_reset`: the guest reboots and
    /// its queues start at 0) on the same connection. Across the pause the guest's open file and
    /// its flock (a host lock) live on; after the reboot the old boot's lock is gone and the new
    /// boot mounts and works. One VM, two boots.
    func testPauseResumeAndReboot() throws {
        try Self.requireGuestImage()
        let scratch = try Scratch.directory("ferry-vhost-reset")
        defer { _ = try? runCommand(["rm", "-rf", scratch]) }
        let source = scratch + "/src", monitor = scratch + "/monitor"
        try FileManager.default.createDirectory(atPath: source, withIntermediateDirectories: true)
        try "hi\n".write(toFile: source + "/a", atomically: false, encoding: .utf8)
        let server = try VhostServer(source: source, socket: scratch + "/ferry.sock")
        let guest = try Guest(socket: server.socket, copies: [], command: """
            if [ -e /mnt/booted ]; then
              /usr/bin/flock -n /mnt/lockf -c 'echo PASS lock-free-after-reboot' || echo FAIL lock-free-after-reboot
            else
              : > /mnt/booted; exec 3</mnt/a
              /usr/bin/flock /mnt/lockf -c ': > /mnt/pause-now; i=0
                while [ ! -e /mnt/resumed ] && [ $i -lt 600 ]; do sleep 0.2; i=$((i+1)); done
                echo "file: $(cat /mnt/a) fd: $(cat <&3)"; : > /mnt/reset-now; sleep 300'
            fi
            """, timeout: 400, extra: ["--allow-reboot", "--qemu-arg", "-monitor", "--qemu-arg", "unix:\(monitor),server,nowait"])
        func waitFor(_ file: String, _ seconds: Double = 120) -> Bool {
            let end = Date().addingTimeInterval(seconds)
            while !FileManager.default.fileExists(atPath: source + "/" + file) && Date() < end { usleep(50_000) }
            return FileManager.default.fileExists(atPath: source + "/" + file)
        }
        func hostCanLock() throws -> Bool { try runCommand(["flock", "-n", source + "/lockf", "true"]).status == 0 }
        func qemu(_ command: String) throws { _ = try runCommand(["python3", Self.guestDir + "/monitor.py", monitor, command]) }

        XCTAssertTrue(waitFor("pause-now"), server.log)
        XCTAssertFalse(try hostCanLock(), "the guest's flock is not a host lock")
        try qemu("stop")
        usleep(1_000_000)
        try qemu("cont")
        XCTAssertFalse(try hostCanLock(), "the guest's flock was dropped across the pause")
        FileManager.default.createFile(atPath: source + "/resumed", contents: nil)
        XCTAssertTrue(waitFor("reset-now"), server.log)
        XCTAssertFalse(try hostCanLock())
        try qemu("system_reset")
        let (status, output) = guest.finish()
        XCTAssertEqual(status, 0, output + server.log)
        XCTAssertTrue(output.contains("file: hi fd: hi"), "the open file did not survive the pause:\n\(output)")
        XCTAssertTrue(output.contains("PASS lock-free-after-reboot"), output)
        XCTAssertTrue(server.log.contains("same FUSE session"), server.log)
        XCTAssertTrue(server.log.contains("new FUSE session"), server.log)
        XCTAssertEqual(server.waitForExit(), 0, server.log)
        XCTAssertTrue(try hostCanLock())
        XCTAssertFalse(server.log.contains(" error "), server.log)
    }
}
