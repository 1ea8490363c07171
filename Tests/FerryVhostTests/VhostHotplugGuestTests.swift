import Foundation
import Glibc
import XCTest

/// Memory hot-plug with a real guest: a Debian 6.1 guest under QEMU 7.2 (TCG) with
/// `-m 512M,slots=4,maxmem=2G` mounts a share served by `ferry serve --socket-path` (the
/// binary, sandboxed and under its seccomp filter). QEMU's monitor hot-plugs a 256 MiB
/// memfd DIMM while the queues run; QEMU negotiates CONFIGURE_MEM_SLOTS and sends
/// ADD_MEM_REG for it. The guest onlines the new blocks as ZONE_MOVABLE (which the page
/// cache prefers, so READ and WRITE buffers land in the DIMM), writes 64 MiB and reads a
/// 64 MiB host file; the bytes are checked on the host and the guest's zone counters show the
/// data went through the new memory. Then the DIMM is unplugged (`device_del`: the guest
/// offlines and ejects it, QEMU sends REM_MEM_REG) and the share still works. One boot. Uses
/// the guest harness of Tests/FerryIntegrationTests/scripts/guest; skipped where QEMU or the
/// guest image cannot be had.
final class VhostHotplugGuestTests: XCTestCase {
    static let guestDir = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("FerryIntegrationTests/scripts/guest").path

    /// The ferry binary built beside the test bundle.
    static var ferryBinary: String {
        let bundleDir = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        for candidate in [bundleDir, bundleDir.deletingLastPathComponent()] {
            let path = candidate.appendingPathComponent("ferry").path
            if FileManager.default.isExecutableFile(atPath: path) { return path }
        }
        return Bundle(for: VhostHotplugGuestTests.self).bundleURL.deletingLastPathComponent().appendingPathComponent("ferry").path
    }

    /// Runs `arguments`, returns (status, stdout + stderr).
    @discardableResult
    static func run(_ arguments: [String], environment: [String: String]? = nil) throws -> (Int32, String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = arguments
        if let environment { process.environment = environment }
        let output = Pipe()
        process.standardOutput = output
        process.standardError = output
        try process.run()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: data, as: UTF8.self))
    }

    static func sha256(_ path: String) throws -> String {
        String(try run(["sha256sum", path]).1.prefix(64))
    }

    /// The guest's side: waits for the DIMM, onlines it as ZONE_MOVABLE, does the I/O while
    /// printing the Movable zone's free pages, then waits for the unplug and uses the share again.
    static let guestScript = #"""
        M=/sys/devices/system/memory
        movable_free() { awk '/zone +Movable/ {z=1; next} /zone/ {z=0} z && $1 == "pages" && $2 == "free" {print $3; exit}' /proc/zoneinfo; }
        : > /mnt/ready
        i=0; while [ ! -e /mnt/plugged ] && [ $i -lt 1500 ]; do sleep 0.2; i=$((i+1)); done
        new="" i=0
        while [ -z "$new" ] && [ $i -lt 300 ]; do
          for m in $M/memory*; do [ "$(cat $m/state)" = offline ] && new="$new ${m##*/}"; done
          [ -n "$new" ] || { sleep 0.2; i=$((i+1)); }
        done
        [ -n "$new" ] || { echo "FAIL hotplug: no new memory block appeared"; exit 1; }
        for m in $new; do echo online_movable > $M/$m/state || { echo "FAIL online $m"; exit 1; }; done
        echo "PASS online:$new"
        f0=$(movable_free)
        dd if=/dev/urandom of=/mnt/guest.bin bs=1M count=64 2>/dev/null && sync || { echo "FAIL write"; exit 1; }
        f1=$(movable_free)
        echo "SHA256 guest.bin $(sha256sum < /mnt/guest.bin | cut -d' ' -f1)"
        echo "MOVABLE write $((f0 - f1))"
        echo 3 > /proc/sys/vm/drop_caches
        f2=$(movable_free)
        echo "SHA256 host.bin $(sha256sum < /mnt/host.bin | cut -d' ' -f1)"
        f3=$(movable_free)
        echo "MOVABLE read $((f2 - f3))"
        echo 3 > /proc/sys/vm/drop_caches
        : > /mnt/unplug-now
        last=${new##* }
        i=0; while [ -e $M/$last ] && [ $i -lt 900 ]; do sleep 0.2; i=$((i+1)); done
        [ -e $M/$last ] && { echo "FAIL unplug: $last is still there"; exit 1; }
        echo "PASS unplugged"
        echo after > /mnt/after && [ "$(cat /mnt/after)" = after ] || { echo "FAIL after-unplug"; exit 1; }
        echo "SHA256 host.bin-after $(sha256sum < /mnt/host.bin | cut -d' ' -f1)"
        echo DONE
        """#

    func testMemoryHotplugAndUnplugWithAGuest() throws {
        let (imageStatus, imageOutput) = try Self.run([Self.guestDir + "/build-image.sh"])
        if imageStatus != 0 { throw XCTSkip("guest image unavailable: \(imageOutput.suffix(400))") }
        let base = ProcessInfo.processInfo.environment["FERRY_TEST_DIR"] ?? "/var/tmp"
        var template = Array("\(base)/ferry-hotplug-guest.XXXXXX".utf8CString)
        guard mkdtemp(&template) != nil else { throw XCTSkip("mkdtemp failed") }
        let scratch = String(cString: template)
        defer { _ = try? Self.run(["rm", "-rf", scratch]) }
        let source = scratch + "/src", socket = scratch + "/ferry.sock", monitor = scratch + "/monitor"
        try FileManager.default.createDirectory(atPath: source, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: scratch + "/runs", withIntermediateDirectories: true)
        XCTAssertEqual(try Self.run(["sh", "-c", "head -c 67108864 /dev/urandom > \(source)/host.bin"]).0, 0)
        let hostHash = try Self.sha256(source + "/host.bin")
        try Self.guestScript.write(toFile: scratch + "/hotplug.sh", atomically: false, encoding: .utf8)

        // Ferry, with every vhost-user message logged (debug) to see what QEMU sends.
        let logPath = scratch + "/ferry.log"
        _ = FileManager.default.createFile(atPath: logPath, contents: nil)
        let logHandle = try FileHandle(forWritingTo: URL(fileURLWithPath: logPath))
        let ferry = Process()
        ferry.executableURL = URL(fileURLWithPath: Self.ferryBinary)
        ferry.arguments = ["serve", source, "--socket-path", socket, "--tag", "ferrytest", "--log-level", "debug"]
        ferry.standardOutput = logHandle
        ferry.standardError = logHandle
        try ferry.run()
        defer { if ferry.isRunning { ferry.terminate(); ferry.waitUntilExit() } }
        var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }
        func waitFor(_ seconds: Double, _ condition: () -> Bool) -> Bool {
            let end = Date().addingTimeInterval(seconds)
            while !condition() && Date() < end { usleep(100_000) }
            return condition()
        }
        XCTAssertTrue(waitFor(20) { FileManager.default.fileExists(atPath: socket) }, log)

        // The guest: its own run directory (no collision with other harness users), the
        // harness's memfd backend of 512M (`--mem`) with slots for DIMMs (QEMU merges the second
        // `-m` into the harness's `-m 512M`), and a human monitor on a unix socket.
        var environment = ProcessInfo.processInfo.environment
        if environment["GUEST_ACCEL"] == nil { environment["GUEST_ACCEL"] = "tcg" }   // KVM does not work here
        environment["GUEST_RUN_DIR"] = scratch + "/runs"
        let guest = Process()
        guest.executableURL = URL(fileURLWithPath: Self.guestDir + "/run-guest.sh")
        guest.arguments = ["--socket", socket, "--tag", "ferrytest", "--mem", "512M", "--timeout", "600", "-q",
                           "--copy", scratch + "/hotplug.sh:/harness/hotplug.sh",
                           "--qemu-arg", "-m", "--qemu-arg", "512M,slots=4,maxmem=2G",
                           "--qemu-arg", "-monitor", "--qemu-arg", "unix:\(monitor),server,nowait",
                           "--", "sh /harness/hotplug.sh"]
        guest.environment = environment
        let guestOutput = scratch + "/guest.out"
        _ = FileManager.default.createFile(atPath: guestOutput, contents: nil)
        let guestHandle = try FileHandle(forWritingTo: URL(fileURLWithPath: guestOutput))
        guest.standardOutput = guestHandle
        guest.standardError = guestHandle
        try guest.run()
        defer { if guest.isRunning { guest.terminate(); guest.waitUntilExit() } }
        var output: String { (try? String(contentsOfFile: guestOutput, encoding: .utf8)) ?? "" }
        func qemu(_ command: String) throws {
            _ = try Self.run(["python3", Self.guestDir + "/monitor.py", monitor, command])
        }

        // Plug: the guest is up and has mounted the share.
        XCTAssertTrue(waitFor(300) { FileManager.default.fileExists(atPath: source + "/ready") || !guest.isRunning },
                      output + log)
        try qemu("object_add memory-backend-memfd,id=m1,size=256M,share=on")
        try qemu("device_add pc-dimm,id=d1,memdev=m1")
        XCTAssertTrue(waitFor(60) { log.contains("region [0x100000000, +0x10000000)") }, "no ADD_MEM_REG for the DIMM:\n\(log)")
        FileManager.default.createFile(atPath: source + "/plugged", contents: nil)
        // Unplug once the guest did its I/O in the new memory.
        XCTAssertTrue(waitFor(400) { FileManager.default.fileExists(atPath: source + "/unplug-now") || !guest.isRunning },
                      output + log)
        try qemu("device_del d1")
        guest.waitUntilExit()
        let status = guest.terminationStatus
        XCTAssertTrue(waitFor(30) { !ferry.isRunning }, "ferry did not exit after the guest: \(log)")
        let lines = output.split(separator: "\n").map(String.init)
        print("guest:\n" + lines.filter { !$0.hasPrefix("SHA") }.joined(separator: "\n"))
        XCTAssertEqual(status, 0, "guest failed:\n\(output)\nferry log:\n\(log.suffix(4000))")
        XCTAssertTrue(lines.contains("DONE"), output)
        XCTAssertFalse(lines.contains { $0.hasPrefix("FAIL") }, output)

        // The bytes: the guest's file arrived intact, the host's file read intact (before and
        // after the unplug).
        func guestValue(_ key: String) -> String? {
            lines.first { $0.hasPrefix(key + " ") }.map { String($0.dropFirst(key.count + 1)) }
        }
        XCTAssertEqual(guestValue("SHA256 guest.bin"), try Self.sha256(source + "/guest.bin"))
        XCTAssertEqual(try FileManager.default.attributesOfItem(atPath: source + "/guest.bin")[.size] as? Int, 64 << 20)
        XCTAssertEqual(guestValue("SHA256 host.bin"), hostHash)
        XCTAssertEqual(guestValue("SHA256 host.bin-after"), hostHash)
        // The data went through the hot-plugged memory: the page cache of both files (the
        // buffers of the WRITEs and READs) took at least 48 of their 64 MiB from ZONE_MOVABLE,
        // which only the DIMM provides.
        let movableWrite = Int(guestValue("MOVABLE write") ?? "") ?? 0
        let movableRead = Int(guestValue("MOVABLE read") ?? "") ?? 0
        XCTAssertGreaterThan(movableWrite, 12288, output)
        XCTAssertGreaterThan(movableRead, 12288, output)

        // What QEMU 7.2 sent: CONFIGURE_MEM_SLOTS negotiated (MQ | REPLY_ACK | bit 15), the
        // slot count asked, base memory and DIMM as ADD_MEM_REG (never SET_MEM_TABLE), the
        // unplug as REM_MEM_REG; the running queues switched tables without stopping.
        XCTAssertTrue(log.contains("vhost-user SET_PROTOCOL_FEATURES 0x8009"), log)
        XCTAssertTrue(log.contains("vhost-user GET_MAX_MEM_SLOTS"), log)
        XCTAssertFalse(log.contains("SET_MEM_TABLE"), log)
        XCTAssertTrue(log.contains("vhost-user ADD_MEM_REG [0x100000000, +0x10000000)"), log)
        XCTAssertTrue(log.contains("queue 1: now on the new memory table (2 region(s))"), log)
        XCTAssertTrue(log.contains("vhost-user REM_MEM_REG [0x100000000, +0x10000000)"), log)
        XCTAssertTrue(log.contains("region [0x100000000, +0x10000000)") && log.contains("removed, 1 region(s) left"), log)
        XCTAssertTrue(log.contains("queue 1: now on the new memory table (1 region(s))"), log)
        XCTAssertEqual(log.components(separatedBy: "queue 1 (requests, size 1024) started").count - 1, 1,
                       "the request queue was restarted: \(log)")
        // Every READ and WRITE kept its data in guest memory; Ferry ended cleanly.
        let placement = log.split(separator: "\n").first { $0.contains("queue 1: ") && $0.contains("READ/WRITE with their data in guest memory") }
        XCTAssertNotNil(placement, log)
        XCTAssertTrue(placement?.hasSuffix(", 0 copied") ?? false, log)
        XCTAssertEqual(ferry.terminationStatus, 0, log)
        XCTAssertFalse(log.contains(" error ferry:"), log)
    }
}
