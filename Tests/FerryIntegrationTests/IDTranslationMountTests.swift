import Foundation
import XCTest

/// `--translate-uid`/`--translate-gid` and `--idmapped-mounts` on a real mount: owners seen
/// through the mount, owners on the host after creates and chowns, supplementary groups,
/// forbidden ids, ACL owners, the start-up table, and idmapped bind mounts compared with the
/// same bind of a host directory.
final class IDTranslationMountTests: XCTestCase {
    private func sh(_ script: String) throws -> (status: Int32, output: String) {
        try runCommand(["sh", "-c", script])
    }

    /// Runs `script` as uid/gid `id` (and `groups`, if any).
    private func sh(as id: UInt32, groups: [UInt32] = [], _ script: String) throws -> (status: Int32, output: String) {
        let groupOption = groups.isEmpty ? "--clear-groups" : "--groups=" + groups.map(String.init).joined(separator: ",")
        return try runCommand(["setpriv", "--reuid=\(id)", "--regid=\(id)", groupOption, "sh", "-c", script])
    }

    /// A server with `arguments` whose mount other users can reach (the scratch directory
    /// holding SOURCE and MOUNTPOINT is made 0755), SOURCE with mode `sourceMode` before the
    /// server starts (a chmod on the host afterwards reaches the kernel's cached root only
    /// through a change notification, which may come after the test's next step).
    private func server(_ arguments: [String], sourceMode: mode_t? = nil) throws -> FerryServer {
        let scratch = try Scratch.directory("ferry-idmap")
        chmod(scratch, 0o755)
        try FileManager.default.createDirectory(atPath: scratch + "/src", withIntermediateDirectories: false)
        if let sourceMode { chmod(scratch + "/src", sourceMode) }
        return try FerryServer(source: scratch + "/src", mountpoint: scratch + "/mnt", arguments: arguments)
    }

    private func owner(_ path: String) throws -> String {
        try sh("stat -c %u:%g \(path)").output.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// Guests 1000-1999 are host 101000-101999 (uids and gids); root stays root.
    private let shifted = ["--translate-uid", "map:1000:101000:1000", "--translate-gid", "map:1000:101000:1000"]

    func testCallersCreateAsTheirHostIdsAndSeeTheirGuestIds() throws {
        let server = try server(shifted)
        defer { server.stop() }
        mkdir(server.source + "/open", 0o777); chmod(server.source + "/open", 0o777)
        let made = try sh(as: 1001, "echo x > \(server.mountpoint)/open/f && mkdir \(server.mountpoint)/open/d")
        XCTAssertEqual(made.status, 0, made.output)
        XCTAssertEqual(try owner(server.source + "/open/f"), "101001:101001", "guest 1001 creates as host 101001")
        XCTAssertEqual(try owner(server.source + "/open/d"), "101001:101001")
        XCTAssertEqual(try owner(server.mountpoint + "/open/f"), "1001:1001", "and sees its own ids")

        // Host files in the range show shifted back; others unchanged.
        _ = FileManager.default.createFile(atPath: server.source + "/host-shifted", contents: nil)
        chown(server.source + "/host-shifted", 101_500, 101_501)
        _ = FileManager.default.createFile(atPath: server.source + "/host-other", contents: nil)
        chown(server.source + "/host-other", 70_000, 70_001)
        XCTAssertEqual(try owner(server.mountpoint + "/host-shifted"), "1500:1501")
        XCTAssertEqual(try owner(server.mountpoint + "/host-other"), "70000:70001")
        XCTAssertTrue(server.log.contains("guest uid 1000-1999 -> host uid 101000-101999   [map:1000:101000:1000]"),
                      "the start-up log prints the table: \(server.log)")
    }

    func testSupplementaryGroupsAreTranslated() throws {
        let server = try server(shifted)
        defer { server.stop() }
        // Only members of guest group 1002 (host 101002) may create here.
        mkdir(server.source + "/team", 0o770)
        chown(server.source + "/team", 0, 101_002)
        chmod(server.source + "/team", 0o770)
        XCTAssertEqual(try owner(server.mountpoint + "/team"), "0:1002")
        let member = try sh(as: 1001, groups: [1002], "touch \(server.mountpoint)/team/by-member")
        XCTAssertEqual(member.status, 0, "the host sees supplementary group 101002: \(member.output)")
        XCTAssertEqual(try owner(server.source + "/team/by-member"), "101001:101001")
        let outsider = try sh(as: 1001, "touch \(server.mountpoint)/team/by-outsider")
        XCTAssertNotEqual(outsider.status, 0)
        XCTAssertTrue(outsider.output.contains("Permission denied"), outsider.output)
    }

    func testChownThroughTheMountIsTranslated() throws {
        let server = try server(shifted)
        defer { server.stop() }
        _ = FileManager.default.createFile(atPath: server.mountpoint + "/f", contents: nil)
        let changed = try sh("chown 1005:1006 \(server.mountpoint)/f")
        XCTAssertEqual(changed.status, 0, changed.output)
        XCTAssertEqual(try owner(server.source + "/f"), "101005:101006", "chown's ids become host ids")
        XCTAssertEqual(try owner(server.mountpoint + "/f"), "1005:1006")
        XCTAssertEqual(try sh("chown 3000:3000 \(server.mountpoint)/f").status, 0)
        XCTAssertEqual(try owner(server.source + "/f"), "3000:3000", "ids outside every rule pass unchanged")
    }

    /// The Incus case: a client allowed exactly uids and gids 1000 and 2000, nothing else.
    func testOnlyTheAllowedIdsGetIn() throws {
        var rules: [String] = []
        for kind in ["uid", "gid"] {
            rules += ["--translate-\(kind)", "forbid-guest:0:1000", "--translate-\(kind)", "map:1000:1000:1",
                      "--translate-\(kind)", "forbid-guest:1001:999", "--translate-\(kind)", "map:2000:2000:1",
                      "--translate-\(kind)", "forbid-guest:2001:4294965295"]
        }
        let server = try server(rules, sourceMode: 0o777)
        defer { server.stop() }
        for allowed: UInt32 in [1000, 2000] {
            let result = try sh(as: allowed, "touch \(server.mountpoint)/by-\(allowed) && ls \(server.mountpoint) >/dev/null")
            XCTAssertEqual(result.status, 0, "uid \(allowed): \(result.output)")
            XCTAssertEqual(try owner(server.source + "/by-\(allowed)"), "\(allowed):\(allowed)")
        }
        for refused: UInt32 in [1500, 3000, 65534] {
            let result = try sh(as: refused, "ls \(server.mountpoint)/by-1000")
            XCTAssertNotEqual(result.status, 0)
            XCTAssertTrue(result.output.contains("Operation not permitted"), "uid \(refused): \(result.output)")
        }
        let root = try sh("stat \(server.mountpoint)/by-1000")
        XCTAssertTrue(root.output.contains("Operation not permitted"), "root is refused too: \(root.output)")
        XCTAssertTrue(server.log.contains("uid 1500 gid 1500 is refused by a forbid-guest rule"), server.log)
        XCTAssertTrue(server.log.contains("guest uid 2001-4294967294 -> refused (EPERM)   [forbid-guest:2001:4294965295]"), server.log)
    }

    func testChownToAForbiddenIdIsEPERM() throws {
        let server = try FerryServer(arguments: ["--translate-uid", "forbid-guest:4000:10", "--translate-gid", "forbid-guest:4000:10"])
        defer { server.stop() }
        _ = FileManager.default.createFile(atPath: server.mountpoint + "/f", contents: nil)
        for target in ["4005", ":4009"] {
            let result = try sh("chown \(target) \(server.mountpoint)/f")
            XCTAssertNotEqual(result.status, 0)
            XCTAssertTrue(result.output.contains("Operation not permitted"), result.output)
        }
        XCTAssertEqual(try owner(server.source + "/f"), "0:0")
    }

    func testACLOwnersAreTranslatedBothWays() throws {
        let server = try server(shifted)
        defer { server.stop() }
        _ = FileManager.default.createFile(atPath: server.mountpoint + "/f", contents: nil)
        let set = try sh("setfacl -m u:1005:r,g:1006:rw,o::- \(server.mountpoint)/f")
        XCTAssertEqual(set.status, 0, set.output)
        let host = try sh("getfacl -n -c \(server.source)/f").output
        XCTAssertTrue(host.contains("user:101005:r--") && host.contains("group:101006:rw-"), "host ACL: \(host)")
        let guest = try sh("getfacl -n -c \(server.mountpoint)/f").output
        XCTAssertTrue(guest.contains("user:1005:r--") && guest.contains("group:1006:rw-"), "guest ACL: \(guest)")
        // The kernel enforces the ACL with the guest ids it was given.
        XCTAssertEqual(try sh(as: 1005, "cat \(server.mountpoint)/f").status, 0)
        XCTAssertNotEqual(try sh(as: 1007, "cat \(server.mountpoint)/f").status, 0)
        // Default ACLs too.
        mkdir(server.mountpoint + "/d", 0o755)
        XCTAssertEqual(try sh("setfacl -d -m u:1010:rwx \(server.mountpoint)/d").status, 0)
        XCTAssertTrue(try sh("getfacl -n -c \(server.source)/d").output.contains("default:user:101010:rwx"))
        XCTAssertTrue(try sh("getfacl -n -c \(server.mountpoint)/d").output.contains("default:user:1010:rwx"))
    }

    func testOverlappingRulesAreRefusedAtStartAndExplainPrintsTheTable() throws {
        let dir = try Scratch.directory("ferry-ids")
        mkdir(dir + "/src", 0o755); mkdir(dir + "/mnt", 0o755)
        let overlap = try runCommand([FerryServer.binary, "serve", dir + "/src", dir + "/mnt",
                                      "--translate-uid", "map:1000:1000:1", "--translate-uid", "forbid-guest:1001:1999",
                                      "--translate-uid", "map:2000:2000:1"])
        XCTAssertNotEqual(overlap.status, 0)
        XCTAssertTrue(overlap.output.contains("--translate-uid map:2000:2000:1 overlaps --translate-uid forbid-guest:1001:1999: both translate guest uids 2000"),
                      overlap.output)
        XCTAssertFalse(FerryServer.isMounted(dir + "/mnt"))
        let explain = try runCommand([FerryServer.binary, "serve", dir + "/src", dir + "/mnt", "--explain",
                                      "--translate-gid", "squash-guest:0:100:4294967295", "--translate-gid", "host:100:1000:1"])
        XCTAssertEqual(explain.status, 0, explain.output)
        XCTAssertTrue(explain.output.contains("guest gid 0-4294967294 -> host gid 100   [squash-guest:0:100:4294967295]"), explain.output)
        XCTAssertTrue(explain.output.contains("host gid 100 -> guest gid 1000   [host:100:1000:1]"), explain.output)
        XCTAssertTrue(explain.output.contains("guest uid 0-4294967294 -> unchanged"), explain.output)
        // The same rules as mount options (`-o translate_uid=...`, as in an fstab line).
        let asOptions = try runCommand([FerryServer.binary, "serve", dir + "/src", dir + "/mnt", "--explain",
                                        "-o", "translate_uid=map:0:100000:65536,idmapped_mounts"])
        XCTAssertTrue(asOptions.output.contains("guest uid 0-65535 -> host uid 100000-165535   [map:0:100000:65536]"),
                      asOptions.output)
        XCTAssertTrue(asOptions.output.contains("idmapped mounts: allowed"), asOptions.output)
    }

    /// `ferry virtiofsd` takes virtiofsd's spelling (`--translate-uid=RULE`) for a VM.
    func testVirtiofsdSpellingReachesTheVhostServer() throws {
        let dir = try Scratch.directory("ferry-ids-vhost")
        mkdir(dir + "/src", 0o755)
        let refused = try runCommand([FerryServer.binary, "virtiofsd", "--socket-path=\(dir)/sock", "--shared-dir=\(dir)/src",
                                      "--translate-uid=map:0:100:10", "--translate-uid", "squash-guest:5:7:1"])
        XCTAssertEqual(refused.status, 2)
        XCTAssertTrue(refused.output.contains("--translate-uid squash-guest:5:7:1 overlaps --translate-uid map:0:100:10"), refused.output)
        let explain = try runCommand([FerryServer.binary, "serve", dir + "/src", "--socket-path", dir + "/sock", "--explain",
                                      "--translate-uid", "map:0:100000:65536"])
        XCTAssertTrue(explain.output.contains("host uid 100000-165535 -> guest uid 0-65535   [map:0:100000:65536]"), explain.output)
    }

    // MARK: idmapped mounts

    /// Idmapped bind mounts of `source` (a host directory) and of a Ferry mount of an identical
    /// copy, with the same user namespace map; returns the two bind targets.
    private func idmappedBind(_ path: String, at target: String, map: String) throws -> (status: Int32, output: String) {
        mkdir(target, 0o755)
        return try runCommand(["python3", script("idmapped_mount.py"), path, target, map])
    }

    func testIdmappedMountIsRefusedUnlessAllowed() throws {
        let server = try FerryServer()
        defer { server.stop() }
        let bind = try idmappedBind(server.mountpoint, at: server.source + "-bind", map: "0:100000:65536")
        XCTAssertNotEqual(bind.status, 0)
        XCTAssertTrue(bind.output.contains("mount_setattr(MOUNT_ATTR_IDMAP): EINVAL"), bind.output)
    }

    /// Skips where the kernel has no FUSE_ALLOW_IDMAP (before Linux 6.12).
    private func requireIdmappableFUSE() throws {
        let release = try runCommand(["uname", "-r"]).output
        let parts = release.split(whereSeparator: { !$0.isNumber }).prefix(2).compactMap { Int($0) }
        if parts.count == 2, (parts[0], parts[1]) < (6, 12) {
            throw XCTSkip("Linux \(release.trimmingCharacters(in: .whitespacesAndNewlines)) has no FUSE_ALLOW_IDMAP (6.12+)")
        }
    }

    func testIdmappedMountMatchesAHostDirectory() throws {
        try requireIdmappableFUSE()
        let dir = try Scratch.directory("ferry-idmap")
        chmod(dir, 0o755)
        // Two identical trees: one shared through Ferry, one used directly.
        for tree in ["host", "src"] {
            let root = dir + "/" + tree
            let made = try sh("""
                mkdir -p \(root)/home \(root)/rootdir && chown 1000:1000 \(root)/home && chmod 755 \(root)/home &&
                echo secret > \(root)/home/private && chown 1000:1000 \(root)/home/private && chmod 600 \(root)/home/private &&
                echo open > \(root)/home/public && chown 1000:1000 \(root)/home/public && chmod 644 \(root)/home/public &&
                mkdir \(root)/home/team && chown 1000:1050 \(root)/home/team && chmod 2775 \(root)/home/team &&
                chmod 755 \(root)/rootdir && echo r > \(root)/rootdir/rootfile && chmod 640 \(root)/rootdir/rootfile
                """)
            XCTAssertEqual(made.status, 0, made.output)
        }
        let server = try FerryServer(source: dir + "/src", mountpoint: dir + "/mnt", arguments: ["--idmapped-mounts"])
        defer { server.stop() }
        let map = "0:100000:65536"
        let hostBind = try idmappedBind(dir + "/host", at: dir + "/host-idmapped", map: map)
        XCTAssertEqual(hostBind.status, 0, hostBind.output)
        defer { _ = try? runCommand(["umount", dir + "/host-idmapped"]) }
        let ferryBind = try idmappedBind(server.mountpoint, at: dir + "/ferry-idmapped", map: map)
        XCTAssertEqual(ferryBind.status, 0, "FUSE_ALLOW_IDMAP lets the kernel idmap the mount: \(ferryBind.output)")
        defer { _ = try? runCommand(["umount", dir + "/ferry-idmapped"]) }

        // The same steps through each bind; every line of output must match.
        func steps(_ base: String) throws -> String {
            let commands: [(UInt32, String)] = [
                (0, "cd \(base) && stat -c '%n %u:%g %a' home home/private home/public home/team rootdir rootdir/rootfile"),
                (101_000, "cat \(base)/home/private"),                 // the mapped owner reads its file
                (1000, "cat \(base)/home/private"),                    // the unmapped id 1000 is nobody here
                (101_000, "echo new > \(base)/home/created && mkdir \(base)/home/dir && ln -s x \(base)/home/link"),
                (101_000, "touch \(base)/home/team/in-team"),          // set-group-id directory: group 1050
                (101_000, "cat \(base)/rootdir/rootfile"),             // root's 640 file: no
                (100_000, "cat \(base)/rootdir/rootfile"),             // the mapped root: yes
                (101_000, "chmod 640 \(base)/home/public && stat -c '%a' \(base)/home/public"),
                (101_000, "chown 101001 \(base)/home/public"),         // not root: refused
                (100_000, "chown 101001:101050 \(base)/home/public"),  // the mapped root has no CAP_CHOWN
                (0, "chown 101001:101050 \(base)/home/public"),        // the host's root has
                (101_000, "touch \(base)/rootdir/nope"),               // no write permission
                (0, "cd \(base) && stat -c '%n %u:%g %a' home/created home/dir home/link home/team/in-team home/public"),
            ]
            var out = ""
            for (id, command) in commands {
                let result = id == 0 ? try sh(command) : try sh(as: id, command)
                let text = result.output.replacingOccurrences(of: base, with: "BASE")
                out += "[\(id)] \(command.replacingOccurrences(of: base, with: "BASE")) -> \(result.status)\n\(text)"
            }
            return out
        }
        let host = try steps(dir + "/host-idmapped")
        let ferry = try steps(dir + "/ferry-idmapped")
        XCTAssertEqual(ferry, host, "Ferry's idmapped mount behaves like the host directory's")
        XCTAssertTrue(host.contains("home 101000:101000 755"), host)
        XCTAssertTrue(host.contains("home/team/in-team 101000:101050"), host)
        for expected in ["[101000] cat BASE/home/private -> 0\nsecret", "[1000] cat BASE/home/private -> 1",
                         "[101000] cat BASE/rootdir/rootfile -> 1", "[100000] cat BASE/rootdir/rootfile -> 0\nr",
                         "[101000] chown 101001 BASE/home/public -> 1", "[100000] chown 101001:101050 BASE/home/public -> 1",
                         "[0] chown 101001:101050 BASE/home/public -> 0", "[101000] touch BASE/rootdir/nope -> 1"] {
            XCTAssertTrue(ferry.contains(expected), "\(expected)\n---\n\(ferry)")
        }
        // And the owners on the host side of each tree are the same, unmapped ids.
        let hostOwners = try sh("cd \(dir)/host/home && stat -c '%n %u:%g' created dir link team/in-team public").output
        let ferryOwners = try sh("cd \(dir)/src/home && stat -c '%n %u:%g' created dir link team/in-team public").output
        XCTAssertEqual(ferryOwners, hostOwners)
        XCTAssertTrue(ferryOwners.contains("created 1000:1000"), ferryOwners)
        XCTAssertTrue(ferryOwners.contains("public 1001:1050"), "\(ferryOwners)\n\(ferry)")
    }
}
