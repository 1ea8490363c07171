import Foundation
import XCTest

/// A guest whose kernel spreads requests over several request queues (Linux 6.11 and later map
/// CPUs to virtio-fs request queues; 6.1 uses the first only): with `num-request-queues=2`,
/// writers pinned to each of its two CPUs send requests on both queues, both queue threads
/// serve them with the data in guest memory, and the files arrive byte for byte. Skipped
/// unless such a kernel is installed on the host (Debian 12: linux-image-6.12.*-amd64-unsigned).
extension VhostGuestTests {
    /// The newest kernel under /lib/modules at 6.11 or later, with its image in /boot.
    static func multiqueueKernel() -> String? {
        let releases = (try? FileManager.default.contentsOfDirectory(atPath: "/lib/modules")) ?? []
        let versioned = releases.compactMap { release -> ([Int], String)? in
            let numbers = release.split(whereSeparator: { !$0.isNumber }).prefix(2).compactMap { Int($0) }
            guard numbers.count == 2, numbers[0] > 6 || (numbers[0] == 6 && numbers[1] >= 11),
                  FileManager.default.fileExists(atPath: "/boot/vmlinuz-" + release) else { return nil }
            return (numbers, release)
        }
        return versioned.max { $0.0.lexicographicallyPrecedes($1.0) }?.1
    }

    func testTwoRequestQueuesWithAMultiqueueGuest() throws {
        guard let kernel = Self.multiqueueKernel() else {
            throw XCTSkip("no guest kernel 6.11 or later installed (/lib/modules, /boot)")
        }
        try Self.requireGuestImage()
        let scratch = try Scratch.directory("ferry-vhost-mq")
        defer { _ = try? runCommand(["rm", "-rf", scratch]) }
        let source = scratch + "/src"
        try FileManager.default.createDirectory(atPath: source, withIntermediateDirectories: true)
        let server = try VhostServer(source: source, socket: scratch + "/ferry.sock")
        // Per CPU: 4 MiB written buffered and 4 MiB with O_DIRECT, then read back with O_DIRECT.
        let (status, output) = try Self.boot(socket: server.socket, copies: [], command: """
            echo "KERNEL $(uname -r)"; for c in 1 2; do ( taskset $c dd if=/dev/urandom of=/tmp/w$c bs=64k count=64 2>/dev/null \
              && taskset $c cp /tmp/w$c /mnt/b$c && taskset $c dd if=/tmp/w$c of=/mnt/d$c bs=64k oflag=direct 2>/dev/null \
              && taskset $c dd if=/mnt/d$c of=/tmp/r$c bs=64k iflag=direct 2>/dev/null && cmp /tmp/w$c /tmp/r$c \
              && echo "SHA256 $c $(sha256sum < /tmp/w$c | cut -d' ' -f1)" ) & done; wait; sync
            """, timeout: 300, extra: ["--fs-device-opts", ",num-request-queues=2"], kernel: kernel)
        let exit = server.waitForExit()
        XCTAssertEqual(status, 0, output + server.log)
        XCTAssertTrue(output.contains("KERNEL \(kernel)"), output)
        for c in 1...2 {
            let hash = output.split(separator: "\n").first { $0.hasPrefix("SHA256 \(c) ") }.map { String($0.split(separator: " ")[2]) }
            XCTAssertNotNil(hash, "CPU \(c)'s writer did not finish: \(output)")
            XCTAssertEqual(hash, try Self.sha256(source + "/b\(c)"), "buffered file of CPU \(c)")
            XCTAssertEqual(hash, try Self.sha256(source + "/d\(c)"), "O_DIRECT file of CPU \(c)")
        }
        // Both request queues carried READs and WRITEs, all with their data in guest memory.
        for queue in 1...2 {
            let (inPlace, copied) = try XCTUnwrap(Self.dataPlacement(server.log, queue: queue), "queue \(queue) served no data: \(server.log)")
            XCTAssertGreaterThan(inPlace, 0, server.log)
            XCTAssertEqual(copied, 0, server.log)
        }
        XCTAssertEqual(exit, 0, server.log)
        XCTAssertFalse(server.log.contains(" error "), server.log)
    }
}
