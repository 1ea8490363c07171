import Foundation
import XCTest

/// FUSE passthrough (`--passthrough auto`, the default for a root server): the kernel reads,
/// writes and maps plain files on the host itself, so READ and WRITE never reach Ferry; files
/// with set-id bits, `--writeback`, `--passthrough never` and unprivileged servers go through
/// Ferry, and the log says why.
final class PassthroughTests: XCTestCase {
    /// Requests named `opcode` in a `--log-level debug` log.
    private func requests(_ opcode: String, in log: String) -> Int {
        log.split(separator: "\n").filter { $0.contains(" \(opcode) node=") }.count
    }

    /// Writes, reads (buffered, O_DIRECT where `direct`, mmap) and appends through the mount;
    /// checks the host file has every byte. (O_DIRECT through Ferry's own path is being fixed
    /// separately; with passthrough the host file is opened O_DIRECT and the host's rules apply.)
    private func exerciseData(_ server: FerryServer, file: String = "data", direct: Bool = true) throws {
        let m = server.mountpoint + "/" + file, s = server.source + "/" + file
        let script = """
            set -e
            head -c 3000000 /dev/urandom > \(m)
            cmp \(m) \(s)
            cat \(m) > /dev/null
            \(direct ? "" : ": ")dd if=\(m) of=/dev/null bs=4096 iflag=direct status=none
            \(direct ? "" : ": ")dd if=/dev/zero of=\(m) bs=4096 count=8 seek=2 oflag=direct conv=notrunc status=none
            python3 -c "import mmap; f=open('\(m)','r+b'); mm=mmap.mmap(f.fileno(),0); mm[0:5]=b'HELLO'; mm.flush()"
            printf tail >> \(m)
            cmp \(m) \(s)
            test "$(head -c 5 \(s))" = HELLO
            test "$(tail -c 4 \(s))" = tail
            """
        let result = try runCommand(["sh", "-c", script])
        XCTAssertEqual(result.status, 0, result.output)
    }

    func testReadsAndWritesNoLongerReachTheServer() throws {
        for cache in ["auto", "always", "never"] {
            let server = try FerryServer(arguments: ["--cache", cache, "--log-level", "debug"])
            try exerciseData(server)
            XCTAssertEqual(server.stop(), 0, server.log)
            let log = server.log
            XCTAssertTrue(log.contains("passthrough on:"), log)
            XCTAssertGreaterThan(requests("OPEN", in: log) + requests("CREATE", in: log), 3, "cache \(cache)")
            XCTAssertEqual(requests("READ", in: log), 0, "cache \(cache): READ reached Ferry")
            XCTAssertEqual(requests("WRITE", in: log), 0, "cache \(cache): WRITE reached Ferry")
            XCTAssertTrue(log.contains("0 open file(s) and 0 passthrough backing id(s) were still known"), log)
        }
    }

    /// The control: the same calls with passthrough off reach Ferry as READ and WRITE.
    func testPassthroughNeverServesDataThroughFerry() throws {
        let server = try FerryServer(arguments: ["-o", "passthrough=never", "--log-level", "debug"])
        try exerciseData(server, direct: false)
        XCTAssertEqual(server.stop(), 0, server.log)
        XCTAssertTrue(server.log.contains("passthrough off (--passthrough never"), server.log)
        XCTAssertFalse(server.log.contains("passthrough on"), server.log)
        XCTAssertGreaterThan(requests("READ", in: server.log), 0)
        XCTAssertGreaterThan(requests("WRITE", in: server.log), 0)
    }

    /// A set-id file is read through Ferry (the kernel would write it with Ferry's credentials,
    /// and the host would keep bits it clears for another user's write).
    func testSetIDFilesAreServedThroughFerry() throws {
        let server = try FerryServer(arguments: ["--log-level", "debug"])
        try "#!/bin/sh\n".write(toFile: server.source + "/prog", atomically: false, encoding: .utf8)
        chmod(server.source + "/prog", 0o4755)
        XCTAssertEqual(try String(contentsOfFile: server.mountpoint + "/prog", encoding: .utf8), "#!/bin/sh\n")
        XCTAssertEqual(server.stop(), 0, server.log)
        // At least one: the host's write and chmod just before may reach the watcher after the
        // node exists, and their invalidation drops the page the first READ filled (seen 1 in 8).
        XCTAssertGreaterThanOrEqual(requests("READ", in: server.log), 1, server.log)
    }

    /// The kernel puts an inode in one I/O mode while any file of it is open: later opens follow
    /// the first, even when the set-id bits changed meanwhile; 16 threads opening one file at
    /// once all succeed, and another user's open joins root's (one backing id per inode).
    func testOpensOfAnOpenInodeFollowItsMode() throws {
        let server = try FerryServer()
        let m = server.mountpoint, s = server.source
        chmod(URL(fileURLWithPath: m).deletingLastPathComponent().path, 0o755)   // nobody opens below it
        for name in ["plain", "setid"] {
            try String(repeating: "x", count: 10_000).write(toFile: "\(s)/\(name)", atomically: false, encoding: .utf8)
            chmod("\(s)/\(name)", name == "setid" ? 0o6777 : 0o666)
        }
        let script = """
            import os, threading
            held = [os.open('\(m)/plain', os.O_RDONLY), os.open('\(m)/setid', os.O_RDONLY)]
            os.chmod('\(m)/plain', 0o6777)     # now set-id, but open in passthrough mode
            os.chmod('\(m)/setid', 0o666)      # now plain, but open through Ferry
            errors = []
            def opener(i):
                for _ in range(50):
                    for name in ('plain', 'setid'):
                        try:
                            fd = os.open('\(m)/' + name, os.O_RDWR)
                            os.pwrite(fd, b'y', i)
                            if os.pread(fd, 10000, 0)[i:i+1] != b'y': errors.append(name + ' read back')
                            os.close(fd)
                        except OSError as e: errors.append(f'{name}: {e}')
            threads = [threading.Thread(target=opener, args=(i,)) for i in range(16)]
            [t.start() for t in threads]; [t.join() for t in threads]
            for fd in held: os.close(fd)
            print('errors', len(errors), errors[:3])
            """
        let result = try runCommand(["python3", "-c", script])
        XCTAssertTrue(result.output.contains("errors 0 []"), result.output)
        XCTAssertEqual(result.status, 0, result.output)
        // Another user opening the passed-through file while root holds it open.
        try "z".write(toFile: "\(s)/shared", atomically: false, encoding: .utf8)
        chmod("\(s)/shared", 0o666)
        let shared = try runCommand(["sh", "-c", "exec 3<\(m)/shared; setpriv --reuid=65534 --regid=65534 --clear-groups sh -c 'printf q >> \(m)/shared && cat \(m)/shared'"])
        XCTAssertEqual(shared.output, "zq", shared.output)
        XCTAssertEqual(server.stop(), 0, server.log)
        XCTAssertTrue(server.log.contains("0 passthrough backing id(s) were still known"), server.log)
    }

    /// With passthrough the kernel reads the host file itself: a host write into a file held
    /// open through the mount shows at once, even with day-long caches and no notifications.
    /// (Attributes are still cached: NotifyTests' control keeps its stale sizes.)
    func testHostWritesShowWithoutNotifications() throws {
        let server = try FerryServer(arguments: ["--cache", "always", "--no-notify"])
        let result = try runCommand(["python3", script("notifycheck.py"), "notify", server.source, server.mountpoint,
                                     "write", "append_to_open_file"])
        print(result.output, terminator: "")
        XCTAssertEqual(result.output.split(separator: "\n").filter { $0.hasPrefix("PASS") }.count, 2, result.output)
        XCTAssertEqual(server.stop(), 0, server.log)
    }

    func testWritebackTurnsPassthroughOff() throws {
        let server = try FerryServer(arguments: ["--writeback", "--log-level", "debug"])
        try exerciseData(server, direct: false)
        XCTAssertEqual(server.stop(), 0, server.log)
        XCTAssertTrue(server.log.contains("passthrough off (--writeback was given"), server.log)
        XCTAssertGreaterThan(requests("WRITE", in: server.log), 0)
    }

    /// An ordinary user's server may not register backing files (CAP_SYS_ADMIN): it says so once.
    func testOrdinaryUserServerSaysWhyPassthroughIsOff() throws {
        let user = try OrdinaryUser()
        defer { user.restore() }
        let server = try FerryServer(source: user.directory + "/src", mountpoint: user.directory + "/mnt",
                                     prefix: OrdinaryUser.asUser)
        _ = try runCommand(OrdinaryUser.asUser + ["fusermount3", "-u", server.mountpoint])
        XCTAssertEqual(server.stop(), 0, server.log)
        let lines = server.log.split(separator: "\n").filter { $0.contains("passthrough on") || $0.contains("passthrough off") }
        XCTAssertEqual(lines.count, 1, server.log)
        XCTAssertTrue(lines.first?.contains("passthrough off (the server lacks CAP_SYS_ADMIN") ?? false, server.log)
    }

    func testPassthroughOptionRejectsUnknownValues() throws {
        let result = try runCommand([FerryServer.binary, "serve", "/tmp", "/mnt", "--passthrough", "always"])
        XCTAssertNotEqual(result.status, 0)
        XCTAssertTrue(result.output.contains("passthrough"), result.output)
    }
}
