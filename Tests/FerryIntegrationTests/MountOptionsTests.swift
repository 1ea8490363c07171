import Foundation
import XCTest

/// The standard mount options (`-o ro,nosuid,nodev,noexec,noatime,relatime,strictatime,nodiratime`):
/// each operation through a Ferry mount given the option behaves as on a host bind mount of the
/// same directory given the same option. Then `mount -t fuse.ferry`, an fstab line and
/// `mount -o remount`, each inside a private mount namespace where `ferry` is on mount.fuse3's
/// PATH (so nothing is installed on the host).
final class MountOptionsTests: XCTestCase {
    /// Mounts to take down at the end of the test (newest first), even when it fails.
    private var mounted: [String] = []

    override func tearDown() {
        for path in mounted.reversed() { _ = try? runCommand(["umount", "-l", path]) }
        mounted = []
        super.tearDown()
    }

    private func sh(_ script: String) throws -> (status: Int32, output: String) {
        try runCommand(["sh", "-c", script], timeout: 60)
    }

    /// A scratch directory that every user may traverse, with `src` in it.
    private func scratch() throws -> String {
        let dir = try Scratch.directory("ferry-mo")
        chmod(dir, 0o755)
        try FileManager.default.createDirectory(atPath: dir + "/src", withIntermediateDirectories: true)
        return dir
    }

    /// Bind-mounts `source` at `target` with `options` (`mount --bind`, then
    /// `mount -o remount,bind,OPTIONS`), as the host reference.
    private func bind(_ source: String, at target: String, options: String) throws {
        try FileManager.default.createDirectory(atPath: target, withIntermediateDirectories: true)
        let bound = try runCommand(["mount", "--bind", source, target])
        XCTAssertEqual(bound.status, 0, bound.output)
        mounted.append(target)
        let remounted = try runCommand(["mount", "-o", "remount,bind,\(options)", target])
        XCTAssertEqual(remounted.status, 0, remounted.output)
    }

    /// Runs `script` (with `{}` standing for the directory) on the host bind mount and on the
    /// Ferry mount; returns both outcomes with the directory names taken out.
    private func both(_ host: String, _ ferry: String, _ script: String, asNobody: Bool = false,
                      file: StaticString = #filePath, line: UInt = #line) throws {
        func run(_ dir: String) throws -> String {
            let command = script.replacingOccurrences(of: "{}", with: dir)
            let prefix = asNobody ? "setpriv --reuid=65534 --regid=65534 --clear-groups " : ""
            let result = try sh(prefix + "sh -c '\(command)'")
            return "\(result.status): " + result.output.replacingOccurrences(of: dir, with: "DIR")
        }
        XCTAssertEqual(try run(ferry), try run(host), "through Ferry vs host bind mount: \(script)", file: file, line: line)
    }

    // MARK: ro, nosuid, nodev, noexec

    func testReadOnlyMatchesReadOnlyBindMount() throws {
        let dir = try scratch()
        try "kept\n".write(toFile: dir + "/src/f", atomically: false, encoding: .utf8)
        try bind(dir + "/src", at: dir + "/host", options: "ro")
        let server = try FerryServer(source: dir + "/src", mountpoint: dir + "/mnt", arguments: ["-o", "ro"])
        defer { server.stop() }
        for script in ["cat {}/f", "echo x >> {}/f", "echo x > {}/new", "mkdir {}/d", "touch {}/f", "rm {}/f",
                       "chmod 600 {}/f", "ln -s f {}/l", "mv {}/f {}/g"] {
            try both(dir + "/host", server.mountpoint, script)
        }
        XCTAssertEqual(try String(contentsOfFile: dir + "/src/f", encoding: .utf8), "kept\n")
        XCTAssertTrue(try mountOptions(server.mountpoint).contains("ro"))
    }

    func testNoSuidMatchesNoSuidBindMount() throws {
        let dir = try scratch()
        // A set-uid-root copy of id: run by nobody it prints 0 where set-id bits are honoured.
        XCTAssertEqual(try sh("cp /usr/bin/id \(dir)/src/id && chmod 4755 \(dir)/src/id").status, 0)
        try bind(dir + "/src", at: dir + "/host", options: "nosuid")
        let server = try FerryServer(source: dir + "/src", mountpoint: dir + "/mnt", arguments: ["-o", "nosuid"])
        defer { server.stop() }
        try both(dir + "/host", server.mountpoint, "{}/id -u", asNobody: true)
        XCTAssertEqual(try sh("setpriv --reuid=65534 --regid=65534 --clear-groups \(server.mountpoint)/id -u").output, "65534\n")
        // Without the option the set-uid bit works through Ferry as on SOURCE.
        XCTAssertEqual(try sh("setpriv --reuid=65534 --regid=65534 --clear-groups \(dir)/src/id -u").output, "0\n")
        XCTAssertTrue(try mountOptions(server.mountpoint).contains("nosuid"))
    }

    func testNoDevMatchesNoDevBindMount() throws {
        let dir = try scratch()
        XCTAssertEqual(try sh("mknod \(dir)/src/null c 1 3 && chmod 666 \(dir)/src/null").status, 0)
        try bind(dir + "/src", at: dir + "/host", options: "nodev")
        let server = try FerryServer(source: dir + "/src", mountpoint: dir + "/mnt", arguments: ["-o", "nodev"])
        defer { server.stop() }
        try both(dir + "/host", server.mountpoint, "echo x > {}/null")
        try both(dir + "/host", server.mountpoint, "cat {}/null")
        try both(dir + "/host", server.mountpoint, "stat -c %F {}/null")
        XCTAssertTrue(try mountOptions(server.mountpoint).contains("nodev"))
    }

    func testNoExecMatchesNoExecBindMount() throws {
        let dir = try scratch()
        XCTAssertEqual(try sh("printf '#!/bin/sh\\necho ran\\n' > \(dir)/src/script && chmod 755 \(dir)/src/script && cp /usr/bin/true \(dir)/src/true").status, 0)
        try bind(dir + "/src", at: dir + "/host", options: "noexec")
        let server = try FerryServer(source: dir + "/src", mountpoint: dir + "/mnt", arguments: ["-o", "noexec"])
        defer { server.stop() }
        try both(dir + "/host", server.mountpoint, "{}/script")
        try both(dir + "/host", server.mountpoint, "{}/true")
        try both(dir + "/host", server.mountpoint, "sh {}/script")   // reading a script still works
        XCTAssertNotEqual(try sh("\(server.mountpoint)/true").status, 0)
    }

    // MARK: atime

    /// Which of four atimes a read or listing moves: a file read whose atime is newer than its
    /// mtime and ctime (relatime leaves it: an hour ahead, since setting it moves ctime to now),
    /// a file whose atime is older than its mtime (relatime moves it), and the same two cases
    /// for directories listed.
    private func atimeMoves(_ dir: String, prefix: String) throws -> [Bool] {
        let names = ["\(prefix)-recent", "\(prefix)-stale", "\(prefix)-dir", "\(prefix)-staledir"]
        let src = dir + "/src"
        let setup = """
            cd \(src) && echo data > \(names[0]) && echo data > \(names[1]) && mkdir -p \(names[2]) \(names[3]) \
            && touch \(names[2])/entry \(names[3])/entry \
            && touch -m -d '-3 hours' \(names[0]) \(names[2]) && touch -a -d '+1 hour' \(names[0]) \(names[2]) \
            && touch -m -d '-1 hour' \(names[1]) \(names[3]) && touch -a -d '-3 hours' \(names[1]) \(names[3])
            """
        let made = try sh(setup)
        XCTAssertEqual(made.status, 0, made.output)
        let before = try names.map { try sh("stat -c %X.%x \(src)/\($0)").output }
        return try zip(names, before).map { name, old in
            let target = "\(dir)/\(prefix)/\(name)"
            let touched = try sh(name.hasSuffix("dir") ? "ls \(target) >/dev/null" : "cat \(target) >/dev/null")
            XCTAssertEqual(touched.status, 0, touched.output)
            return try sh("stat -c %X.%x \(src)/\(name)").output != old
        }
    }

    /// SOURCE (`src`) is itself mounted with `base`, so that Ferry serving it unchanged would
    /// behave differently from `option`; then reads and listings through a host bind mount with
    /// `option` and through Ferry with `-o option` must move the same atimes (and `expected`).
    private func compareAtime(option: String, base: String, expected: [Bool],
                              file: StaticString = #filePath, line: UInt = #line) throws {
        let dir = try scratch()
        try bind(dir + "/src", at: dir + "/src", options: base)
        try bind(dir + "/src", at: dir + "/host", options: option)
        let server = try FerryServer(source: dir + "/src", mountpoint: dir + "/mnt", arguments: ["-o", option])
        defer { server.stop() }
        let host = try atimeMoves(dir, prefix: "host")
        let ferry = try atimeMoves(dir, prefix: "mnt")
        XCTAssertEqual(host, expected, "host bind mount with \(option) (recent file, stale file, recent dir, stale dir)", file: file, line: line)
        XCTAssertEqual(ferry, host, "Ferry -o \(option) vs host bind mount with \(option)", file: file, line: line)
        XCTAssertTrue(server.log.contains("through a private mount of SOURCE"), server.log, file: file, line: line)
    }

    func testNoAtimeMatchesNoAtimeBindMount() throws {
        try compareAtime(option: "noatime", base: "strictatime", expected: [false, false, false, false])
    }

    func testRelatimeMatchesRelatimeBindMount() throws {
        try compareAtime(option: "relatime", base: "strictatime", expected: [false, true, false, true])
    }

    func testStrictAtimeMatchesStrictAtimeBindMount() throws {
        try compareAtime(option: "strictatime", base: "noatime", expected: [true, true, true, true])
    }

    func testNoDirAtimeMatchesNoDirAtimeBindMount() throws {
        try compareAtime(option: "nodiratime", base: "strictatime", expected: [false, true, false, false])
    }

    // MARK: mount -t fuse.ferry, fstab, remount

    /// Runs `script` in a private mount namespace in which the built `ferry` is in
    /// /usr/local/sbin (mount(8) clears PATH; mount.fuse3's /bin/sh then searches its default
    /// PATH), so `mount -t fuse.ferry` finds it and nothing changes on the host. `mountpoint` is
    /// unmounted when the script ends, however it ends.
    private func inMountNamespace(_ script: String, mountpoint: String) throws -> (status: Int32, output: String) {
        let bin = try Scratch.directory("ferry-bin")
        try FileManager.default.createSymbolicLink(atPath: bin + "/ferry", withDestinationPath: FerryServer.binary)
        let full = """
            set -e
            mount --bind \(bin) /usr/local/sbin
            trap 'umount -l \(mountpoint) 2>/dev/null || true' EXIT
            \(script)
            """
        return try runCommand(["unshare", "--mount", "--propagation", "private", "sh", "-c", full], timeout: 60)
    }

    /// Waits (up to 5 s) until no ferry process serves `mountpoint`.
    private func assertServerGone(_ mountpoint: String, file: StaticString = #filePath, line: UInt = #line) throws {
        for _ in 0..<100 {
            if try runCommand(["pgrep", "-f", "ferry serve .* \(mountpoint) "]).status != 0 { return }
            usleep(50_000)
        }
        let pids = try runCommand(["pgrep", "-f", "ferry serve .* \(mountpoint) "]).output.split(separator: "\n")
        XCTFail("a ferry server for \(mountpoint) is still running: \(pids)", file: file, line: line)
        for pid in pids { if let pid = Int32(pid) { kill(pid, SIGKILL) } }
    }

    func testMountTypeFuseFerryServesInTheBackground() throws {
        let dir = try scratch()
        let mp = dir + "/mnt"
        try FileManager.default.createDirectory(atPath: mp, withIntermediateDirectories: true)
        // A file whose atime is older than its mtime: a relatime read (SOURCE's own) would move it.
        XCTAssertEqual(try sh("echo hello > \(dir)/src/f && touch -m -d '-1 hour' \(dir)/src/f && touch -a -d '-2 hours' \(dir)/src/f").status, 0)
        let before = try sh("stat -c %X.%x \(dir)/src/f").output
        let result = try inMountNamespace("""
            mount -t fuse.ferry \(dir)/src \(mp) -o cache=always,noatime
            grep " \(mp) " /proc/self/mountinfo
            cat \(mp)/f
            ls \(mp)
            umount \(mp)
            echo unmounted
            """, mountpoint: mp)
        XCTAssertEqual(result.status, 0, result.output)
        let lines = result.output.split(separator: "\n").map(String.init)
        XCTAssertTrue(lines.contains { $0.contains("fuse.ferry") && $0.contains("noatime") }, result.output)
        XCTAssertTrue(lines.contains("hello"), result.output)
        XCTAssertEqual(lines.last, "unmounted", result.output)
        XCTAssertEqual(try sh("stat -c %X.%x \(dir)/src/f").output, before, "noatime: the read moved atime")
        try assertServerGone(mp)
    }

    func testFstabLineMountsWithItsOptions() throws {
        let dir = try scratch()
        let mp = dir + "/mnt"
        try FileManager.default.createDirectory(atPath: mp, withIntermediateDirectories: true)
        try "from fstab\n".write(toFile: dir + "/src/f", atomically: false, encoding: .utf8)
        let fstab = "\(dir)/src \(mp) fuse.ferry noatime,nosuid,nodev,cache=never,no_xattr,nofail,_netdev,x-systemd.automount,comment=ferry 0 0\n"
        try fstab.write(toFile: dir + "/fstab", atomically: false, encoding: .utf8)
        let result = try inMountNamespace("""
            mount -T \(dir)/fstab \(mp)
            grep " \(mp) " /proc/self/mountinfo
            cat \(mp)/f
            setfattr -n user.x -v 1 \(mp)/f 2>&1 || echo setfattr refused
            umount \(mp)
            echo unmounted
            """, mountpoint: mp)
        XCTAssertEqual(result.status, 0, result.output)
        let entry = result.output.split(separator: "\n").first { $0.contains("fuse.ferry") }.map(String.init) ?? ""
        let options = entry.split(separator: " ").dropFirst(5).first?.split(separator: ",").map(String.init) ?? []
        for option in ["noatime", "nosuid", "nodev"] { XCTAssertTrue(options.contains(option), "\(option) missing: \(entry)") }
        XCTAssertTrue(result.output.contains("from fstab"), result.output)
        XCTAssertTrue(result.output.contains("setfattr refused"), "no_xattr from fstab not applied: \(result.output)")
        XCTAssertTrue(result.output.hasSuffix("unmounted\n"), result.output)
        try assertServerGone(mp)
    }

    func testRemountReadOnlyAndBack() throws {
        let dir = try scratch()
        let mp = dir + "/mnt"
        try FileManager.default.createDirectory(atPath: mp, withIntermediateDirectories: true)
        let result = try inMountNamespace("""
            mount -t fuse.ferry \(dir)/src \(mp) -o noatime
            echo one > \(mp)/f
            mount -o remount,ro \(mp)
            grep " \(mp) " /proc/self/mountinfo | cut -d' ' -f6
            echo two > \(mp)/f 2>&1 || echo write refused
            mount -o remount,rw \(mp)
            grep " \(mp) " /proc/self/mountinfo | cut -d' ' -f6
            echo three > \(mp)/f
            mount -o remount,strictatime \(mp) 2>&1 || echo atime change refused
            umount \(mp)
            echo unmounted
            """, mountpoint: mp)
        XCTAssertEqual(result.status, 0, result.output)
        let lines = result.output.split(separator: "\n").map(String.init)
        XCTAssertTrue(lines.contains { $0.hasPrefix("ro,") && $0.contains("noatime") }, result.output)
        XCTAssertTrue(lines.contains { $0.contains("Read-only file system") }, result.output)
        XCTAssertTrue(lines.contains("write refused"), result.output)
        XCTAssertTrue(lines.contains { $0.hasPrefix("rw,") && $0.contains("noatime") }, result.output)
        XCTAssertTrue(lines.contains { $0.contains("cannot be changed on a running mount") }, result.output)
        XCTAssertTrue(lines.contains("atime change refused"), result.output)
        XCTAssertEqual(lines.last, "unmounted", result.output)
        XCTAssertEqual(try String(contentsOfFile: dir + "/src/f", encoding: .utf8), "three\n")
        try assertServerGone(mp)
    }

    func testStartupErrorsAreOneLineAndMountNothing() throws {
        let dir = try scratch()
        let mp = dir + "/mnt"
        try FileManager.default.createDirectory(atPath: mp, withIntermediateDirectories: true)
        for (arguments, expected) in [([dir + "/src", mp, "-o", "noatime,bogus"], "unknown mount option 'bogus'"),
                                      ([dir + "/src", mp, "-o", "cache=sometimes"], "cache=sometimes"),
                                      ([dir + "/missing", mp, "-o", "noatime"], "missing"),
                                      (["serve", dir + "/src", mp, "-o", "bogus"], "bogus")] {
            let result = try runCommand([FerryServer.binary] + arguments, timeout: 30)
            XCTAssertNotEqual(result.status, 0, result.output)
            XCTAssertTrue(result.output.contains(expected), result.output)
            if arguments[0] != "serve" {
                XCTAssertEqual(result.output.split(separator: "\n").count, 1, "one line expected: \(result.output)")
            }
            XCTAssertFalse(FerryServer.isMounted(mp))
        }
    }

    func testOrdinaryUserServerRefusesAnAtimeModeSourceLacks() throws {
        let user = try OrdinaryUser()
        defer { user.restore() }
        // The scratch directory's file system is not mounted strictatime,nodiratime (it is
        // relatime here): that would need a private mount, which an ordinary user cannot make.
        let result = try runCommand(OrdinaryUser.asUser + [FerryServer.binary, "serve", user.directory + "/src",
                                                          user.directory + "/mnt", "-o", "strictatime,nodiratime"], timeout: 30)
        XCTAssertEqual(result.status, 2, result.output)
        XCTAssertTrue(result.output.contains("strictatime,nodiratime needs root"), result.output)
        XCTAssertFalse(FerryServer.isMounted(user.directory + "/mnt"))
    }

    /// The mount's own options in /proc/self/mountinfo.
    private func mountOptions(_ mountpoint: String) throws -> [String] {
        let info = try XCTUnwrap(procText("/proc/self/mountinfo"))
        let line = info.split(separator: "\n").last { $0.split(separator: " ").dropFirst(4).first.map(String.init) == mountpoint }
        return line?.split(separator: " ").dropFirst(5).first?.split(separator: ",").map(String.init) ?? []
    }
}
