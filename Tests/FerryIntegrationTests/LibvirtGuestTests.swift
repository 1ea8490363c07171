import Foundation
import XCTest

/// A real libvirtd (Debian 12's libvirt 9.0, QEMU driver, qemu:///system) starts Ferry as the
/// virtiofs back-end of a transient domain (scripts/libvirt/domain.xml: TCG, memfd shared
/// memory, the guest harness's kernel and initramfs, `<binary path=.../>` naming
/// scripts/libvirt/ferry-virtiofsd, which records its arguments and execs `ferry virtiofsd`).
/// The guest mounts the tag, reads a host file, writes 1 MiB and waits until the host has
/// looked at the running Ferry, then powers off. Checked: the exact argument list libvirt
/// passed, that the process libvirt started is Ferry, the bytes on both sides, Ferry's log (which
/// libvirt keeps in /var/log/libvirt/qemu/NAME-fs0-virtiofsd.log) and that Ferry exited when
/// the domain stopped. One boot. Starts virtlogd and libvirtd when they are not running (and
/// stops what it started); skipped where libvirt is not installed (.ci/setup installs it).
final class LibvirtGuestTests: XCTestCase {
    static let libvirtDir = script("libvirt")
    static let uri = "qemu:///system"

    /// Daemons this test started (pid files of `virtlogd -d` and `libvirtd -d`), stopped at the end.
    private var started: [String] = []

    static func virsh(_ arguments: [String], timeout: TimeInterval = 120) throws -> (status: Int32, output: String) {
        try runCommand(["virsh", "-q", "-c", uri] + arguments, timeout: timeout)
    }

    static func pid(in file: String) -> pid_t? {
        guard let text = try? String(contentsOfFile: file, encoding: .utf8) else { return nil }
        return pid_t(text.trimmingCharacters(in: .whitespacesAndNewlines))
    }

    static func alive(_ pid: pid_t) -> Bool { kill(pid, 0) == 0 || errno != ESRCH }

    /// Runs `PATH -d` (a daemon that forks into the background) and returns its wait status.
    /// Not through Process or runCommand: the daemon would keep the descriptors they hand the
    /// child (the output pipe, and corelibs Foundation's socket that tells when the child has
    /// ended), and they would wait forever. So: posix_spawn with /dev/null as 0, 1 and 2 and
    /// every other descriptor closed, then waitpid.
    static func spawnDaemon(_ path: String) throws -> Int32 {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        for fd: Int32 in 0...2 {
            posix_spawn_file_actions_addopen(&actions, fd, "/dev/null", fd == 0 ? O_RDONLY : O_WRONLY, 0)
        }
        let open = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []
        for fd in open.compactMap({ Int32($0) }) where fd > 2 {
            posix_spawn_file_actions_addclose(&actions, fd)
        }
        let argv: [UnsafeMutablePointer<CChar>?] = [strdup(path), strdup("-d"), nil]
        defer { argv.forEach { free($0) } }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, path, &actions, nil, argv, environ)
        guard rc == 0 else { throw TestFailure("posix_spawn \(path): \(String(cString: strerror(rc)))") }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        return status
    }

    /// Connects to libvirtd's QEMU driver, starting virtlogd (libvirt sends QEMU's and the
    /// virtiofs back-end's output through it) and libvirtd when no daemon answers.
    func requireLibvirt() throws {
        guard geteuid() == 0 else { throw XCTSkip("needs root (qemu:///system)") }
        for tool in ["/usr/bin/virsh", "/usr/sbin/libvirtd", "/usr/sbin/virtlogd"] where !FileManager.default.isExecutableFile(atPath: tool) {
            throw XCTSkip("libvirt is not installed (\(tool)): .ci/setup installs libvirt-daemon-system")
        }
        if try Self.virsh(["uri"], timeout: 30).status == 0 { return }
        for (daemon, pidFile) in [("virtlogd", "/run/virtlogd.pid"), ("libvirtd", "/run/libvirtd.pid")] {
            if let pid = Self.pid(in: pidFile), Self.alive(pid) { continue }
            let status = try Self.spawnDaemon("/usr/sbin/" + daemon)
            guard status == 0 else { throw TestFailure("\(daemon) -d exited with status \(status)") }
            started.append(pidFile)
        }
        let deadline = Date().addingTimeInterval(30)
        var last = ""
        while Date() < deadline {
            let (status, output) = try Self.virsh(["uri"], timeout: 30)
            if status == 0 { return }
            last = output
            usleep(200_000)
        }
        throw TestFailure("libvirtd does not answer on \(Self.uri): \(last)")
    }

    override func tearDown() {
        for pidFile in started.reversed() {
            guard let pid = Self.pid(in: pidFile) else { continue }
            kill(pid, SIGTERM)
            let deadline = Date().addingTimeInterval(15)
            while Self.alive(pid) && Date() < deadline { usleep(50_000) }
        }
        started = []
    }

    func testLibvirtdStartsFerryForADomain() throws {
        try requireLibvirt()
        let (imageStatus, imageOutput) = try runCommand([VhostGuestTests.guestDir + "/build-image.sh", "--quiet"], timeout: 900)
        guard imageStatus == 0, let image = imageOutput.split(separator: "\n").last.map(String.init),
              FileManager.default.fileExists(atPath: image + "/initramfs.cpio") else {
            throw XCTSkip("guest image unavailable: \(imageOutput.suffix(400))")
        }
        let kernel = FileManager.default.fileExists(atPath: image + "/vmlinux") ? image + "/vmlinux" : image + "/vmlinuz"

        let scratch = try Scratch.directory("ferry-libvirt")
        let name = "ferry-test-" + (scratch as NSString).lastPathComponent.replacingOccurrences(of: ".", with: "-")
        let backendLog = "/var/log/libvirt/qemu/\(name)-fs0-virtiofsd.log"
        defer {
            _ = try? Self.virsh(["destroy", name], timeout: 60)
            _ = try? runCommand(["rm", "-f", backendLog, "/var/log/libvirt/qemu/\(name).log"])
        }

        // The back-end: the wrapper script next to a link to the binary under test.
        let wrapper = scratch + "/ferry-virtiofsd"
        _ = try runCommand(["cp", Self.libvirtDir + "/ferry-virtiofsd", wrapper])
        XCTAssertEqual(symlink(FerryServer.binary, scratch + "/ferry"), 0)

        // The share (a comma in its path: libvirt doubles it in -o source=).
        let source = scratch + "/share,one"
        try FileManager.default.createDirectory(atPath: source, withIntermediateDirectories: true)
        try "from the host\n".write(toFile: source + "/hello", atomically: false, encoding: .utf8)

        // The guest: the harness's base initramfs plus an overlay with /harness/{config,cmd.sh}
        // (guest-init.sh mounts the tag at /mnt, runs cmd.sh with its output on the two
        // virtio-serial ports, prints its status on the console and powers off).
        let overlay = scratch + "/overlay"
        try FileManager.default.createDirectory(atPath: overlay + "/harness", withIntermediateDirectories: true)
        try """
            HARNESS_MOUNTS='ferrytest /mnt '
            HARNESS_CWD='/mnt'
            HARNESS_UMOUNT=1
            HARNESS_TOOLS=0

            """.write(toFile: overlay + "/harness/config", atomically: false, encoding: .utf8)
        try """
            set -e
            cat /mnt/hello
            dd if=/dev/urandom of=/mnt/guest.bin bs=64k count=16 2>/dev/null
            sha256sum /mnt/guest.bin
            : > /mnt/written
            i=0
            while [ ! -e /mnt/go ] && [ $i -lt 1200 ]; do usleep 100000; i=$((i+1)); done
            [ -e /mnt/go ] && echo go seen

            """.write(toFile: overlay + "/harness/cmd.sh", atomically: false, encoding: .utf8)
        let (cpioStatus, cpioOutput) = try runCommand(["sh", "-c", """
            cd "$1" && find . -mindepth 1 | cpio --quiet -o -H newc -R 0:0 > "$2/overlay.cpio" &&
            cat "$3/initramfs.cpio" "$2/overlay.cpio" > "$2/initrd"
            """, "sh", overlay, scratch, image])
        XCTAssertEqual(cpioStatus, 0, cpioOutput)

        var xml = try String(contentsOfFile: Self.libvirtDir + "/domain.xml", encoding: .utf8)
        for (key, value) in [("@NAME@", name), ("@DIR@", scratch), ("@KERNEL@", kernel), ("@INITRD@", scratch + "/initrd"),
                             ("@SOURCE@", source), ("@WRAPPER@", wrapper)] {
            let escaped = value.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
                .replacingOccurrences(of: "'", with: "&apos;")
            xml = xml.replacingOccurrences(of: key, with: escaped)
        }
        try xml.write(toFile: scratch + "/domain.xml", atomically: false, encoding: .utf8)

        let start = Date()
        let (createStatus, createOutput) = try Self.virsh(["create", scratch + "/domain.xml"])
        func backend() -> String { (try? String(contentsOfFile: backendLog, encoding: .utf8)) ?? "(no \(backendLog))" }
        guard createStatus == 0 else {
            XCTFail("virsh create failed: \(createOutput)\n\(backend())")
            return
        }

        // What libvirt passed, and the process it started.
        let argv = ((try? String(contentsOfFile: scratch + "/argv", encoding: .utf8)) ?? "").split(separator: "\n").map(String.init)
        XCTAssertEqual(argv.count, 4, "\(argv)")
        if argv.count == 4 {
            XCTAssertTrue(argv[0].hasPrefix("--fd=") && Int(argv[0].dropFirst(5)) != nil, "\(argv)")
            XCTAssertEqual(Array(argv[1...]), ["-o", "source=\(scratch)/share,,one,cache=none,xattr,flock,posix_lock",
                                               "--thread-pool-size=16"])
        }
        let ferryPid = Self.pid(in: scratch + "/pid")
        XCTAssertNotNil(ferryPid, "the wrapper did not run")
        if let ferryPid {
            let exe = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(ferryPid)/exe")
            XCTAssertEqual(exe, URL(fileURLWithPath: FerryServer.binary).resolvingSymlinksInPath().path, backend())
            let cmdline = (try? Data(contentsOf: URL(fileURLWithPath: "/proc/\(ferryPid)/cmdline"))) ?? Data()
            let words = cmdline.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
            XCTAssertEqual(Array(words.dropFirst()), ["virtiofsd"] + argv, "\(words)")
        }

        // Let the guest finish once it has written its file (Ferry is serving it meanwhile).
        let deadline = Date().addingTimeInterval(300)
        func running() throws -> Bool { try Self.virsh(["domstate", name], timeout: 30).status == 0 }
        var polls = 0
        while !FileManager.default.fileExists(atPath: source + "/written") && Date() < deadline {
            polls += 1
            if polls % 10 == 0, !(try running()) { break }   // the guest gave up (see its console below)
            usleep(100_000)
        }
        if let ferryPid, FileManager.default.fileExists(atPath: source + "/written") {
            XCTAssertTrue(Self.alive(ferryPid), "ferry is gone while the guest runs: \(backend())")
        }
        _ = FileManager.default.createFile(atPath: source + "/go", contents: nil)
        while Date() < deadline, try running() { usleep(200_000) }
        XCTAssertFalse(try running(), "the domain did not stop within 300 s")
        let stopped = Date()

        let console = (try? String(contentsOfFile: scratch + "/console.log", encoding: .utf8)) ?? ""
        let stdout = (try? String(contentsOfFile: scratch + "/stdout", encoding: .utf8)) ?? ""
        let stderr = (try? String(contentsOfFile: scratch + "/stderr", encoding: .utf8)) ?? ""
        let all = "console:\n\(console.suffix(2000))\nstdout:\n\(stdout)\nstderr:\n\(stderr)\nferry:\n\(backend())"
        XCTAssertTrue(console.contains("@@HARNESS@@ status=0"), all)
        XCTAssertTrue(stdout.contains("from the host"), all)
        XCTAssertTrue(stdout.contains("go seen"), all)
        let guestSum = stdout.split(separator: "\n").first { $0.hasSuffix("/mnt/guest.bin") }.map { String($0.prefix(64)) }
        XCTAssertNotNil(guestSum, all)
        XCTAssertEqual(try? VhostGuestTests.sha256(source + "/guest.bin"), guestSum, all)
        let attributes = try? FileManager.default.attributesOfItem(atPath: source + "/guest.bin")
        XCTAssertEqual((attributes?[.size] as? NSNumber)?.intValue, 1 << 20)

        // Ferry exited with the domain, cleanly.
        if let ferryPid {
            let end = Date().addingTimeInterval(20)
            while Self.alive(ferryPid) && Date() < end { usleep(50_000) }
            XCTAssertFalse(Self.alive(ferryPid), "ferry (pid \(ferryPid)) still runs after the domain stopped")
        }
        let log = backend()
        XCTAssertTrue(log.contains("serving \(source) to a VM on fd \(argv.first?.dropFirst(5) ?? "?") (cache never)"), log)
        XCTAssertTrue(log.contains("the guest's connection ended; exiting"), log)
        XCTAssertTrue(log.contains("[ferry] exiting"), log)
        XCTAssertFalse(log.contains(" error "), log)
        print("LibvirtGuestTests: domain ran \(String(format: "%.1f", stopped.timeIntervalSince(start))) s; libvirt ran: ferry virtiofsd \(argv.joined(separator: " "))")
    }
}
