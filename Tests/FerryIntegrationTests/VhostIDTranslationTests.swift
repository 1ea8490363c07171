import Foundation
import XCTest

/// `--translate-uid`/`--translate-gid` over vhost-user: a real guest (QEMU, TCG) creates,
/// chowns and is refused through a share served with a shifted map and a forbidden id, and the
/// host sees the translated owners (scripts/guest/idmap-checks.sh). Skipped where the guest image
/// cannot be had.
final class VhostIDTranslationTests: XCTestCase {
    func testGuestIdsAreTranslatedOverVhostUser() throws {
        try VhostGuestTests.requireGuestImage()
        let scratch = try Scratch.directory("ferry-vhost-ids")
        defer { _ = try? runCommand(["rm", "-rf", scratch]) }
        let source = scratch + "/src"
        try FileManager.default.createDirectory(atPath: source, withIntermediateDirectories: true)
        _ = FileManager.default.createFile(atPath: source + "/host-made", contents: nil)
        chown(source + "/host-made", 101_500, 101_501)
        var rules: [String] = []
        for kind in ["uid", "gid"] {
            rules += ["--translate-\(kind)", "map:1000:101000:1000", "--translate-\(kind)", "forbid-guest:3000:1"]
        }
        let server = try VhostGuestTests.VhostServer(source: source, socket: scratch + "/ferry.sock", arguments: rules)
        let (status, output) = try VhostGuestTests.boot(
            socket: server.socket, copies: [VhostGuestTests.guestDir + "/idmap-checks.sh:/harness/idmap.sh"],
            command: "sh /harness/idmap.sh /mnt", timeout: 600)
        _ = server.waitForExit()
        let lines = output.split(separator: "\n").map(String.init)
        XCTAssertEqual(status, 0, "guest run failed:\n\(output)\nferry log:\n\(server.log.suffix(3000))")
        XCTAssertTrue(lines.contains("DONE"), output)
        for expected in ["SEEN by-1001 1001:1001", "SEEN dir-1001 1001:1001", "RESULT chown 0", "SEEN chowned 1005:1006",
                         "SEEN host-made 1500:1501"] {
            XCTAssertTrue(lines.contains(expected), "no '\(expected)':\n\(output)")
        }
        for refused in ["RESULT forbidden-ls 1", "RESULT forbidden-chown 1"] {
            let line = lines.first { $0.hasPrefix(refused) }
            XCTAssertTrue(line?.contains("Operation not permitted") == true, "\(refused): \(line ?? "missing")\n\(output)")
        }
        func owner(_ path: String) throws -> String {
            try runCommand(["stat", "-c", "%u:%g", path]).output.trimmingCharacters(in: .whitespacesAndNewlines)
        }
        XCTAssertEqual(try owner(source + "/open/by-1001"), "101001:101001", "guest 1001 created as host 101001")
        XCTAssertEqual(try owner(source + "/open/dir-1001"), "101001:101001")
        XCTAssertEqual(try owner(source + "/chowned"), "101005:101006", "the guest's chown became host ids")
        XCTAssertTrue(server.log.contains("guest uid 1000-1999 -> host uid 101000-101999   [map:1000:101000:1000]"), server.log)
    }
}
