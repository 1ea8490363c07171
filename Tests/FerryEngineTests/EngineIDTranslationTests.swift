import FerryEngine
import FerryFS
import FerryProtocol
import FerrySystem
import Foundation
import Glibc
import XCTest

/// Ids on the request path (FUSEEngine+IDs.swift), through raw requests on a scratch directory:
/// replies show guest owners, callers and chown targets become host ids, forbidden ids are
/// EPERM, ACL owners are translated both ways, and idmapped mounts' contract.
extension EngineTests {
    /// Engine options with `uid` and `gid` rules.
    func translating(uids: [String], gids: [String], idmapped: Bool = false) throws -> EngineOptions {
        var options = EngineOptions()
        options.ids = try IDTranslation(uidRules: uids, gidRules: gids)
        options.idmappedMounts = idmapped
        return options
    }

    /// A request whose header carries `uid` and `gid` (the harness's `request` sets both to one value).
    func request(_ m: Message, _ opcode: UInt32, node: UInt64, uid: UInt32, gid: UInt32) -> [UInt8] {
        var bytes = m.request(opcode, unique: 40, node: node, uid: uid)
        withUnsafeBytes(of: gid.littleEndian) { bytes.replaceSubrange(28..<32, with: $0) }
        return bytes
    }

    /// The owner in an entry reply (fuse_entry_out: 40 bytes, then fuse_attr with uid at 68).
    func owner(ofEntry body: [UInt8]) -> (uid: UInt32, gid: UInt32) {
        body.withUnsafeBytes { ($0.loadUnaligned(fromByteOffset: 108, as: UInt32.self),
                                $0.loadUnaligned(fromByteOffset: 112, as: UInt32.self)) }
    }

    func hostOwner(_ path: String) -> (uid: UInt32, gid: UInt32) {
        var st = stat()
        XCTAssertEqual(lstat(path, &st), 0, path)
        return (st.st_uid, st.st_gid)
    }

    func makeDirectory(_ name: String, parent: UInt64 = 1, uid: UInt32, gid: UInt32) -> Reply {
        var m = Message(); m.u32(0o755); m.u32(0); m.name(name)
        return send(request(m, 9, node: parent, uid: uid, gid: gid))
    }

    func testRepliesShowGuestOwnersAndCallersActAsHostOwners() throws {
        restart(options: try translating(uids: ["map:0:100000:65536"], gids: ["map:0:200000:65536"]))
        chmod(source, 0o777)
        _ = FileManager.default.createFile(atPath: source + "/shifted", contents: nil)
        chown(source + "/shifted", 100_005, 200_006)
        let found = lookup("shifted")
        XCTAssertEqual(found.error, 0)
        XCTAssertTrue(owner(ofEntry: found.body) == (5, 6), "host 100005:200006 shows as guest 5:6")

        let made = makeDirectory("by-guest-7", uid: 7, gid: 8)
        XCTAssertEqual(made.error, 0)
        XCTAssertTrue(hostOwner(source + "/by-guest-7") == (100_007, 200_008), "guest 7:8 creates as host 100007:200008")
        XCTAssertTrue(owner(ofEntry: made.body) == (7, 8), "and sees its own ids")

        worker.credentials.becomeRoot()   // the engine switched this very thread to the caller
        _ = FileManager.default.createFile(atPath: source + "/outside", contents: nil)
        chown(source + "/outside", 70_000, 70_001)
        let outside = lookup("outside")
        XCTAssertEqual(outside.error, 0)
        let shown = owner(ofEntry: outside.body)
        XCTAssertTrue(shown == (70_000, 70_001), "host ids outside every rule pass unchanged, not \(shown)")
    }

    func testForbiddenCallersAndOwnersAreRefused() throws {
        restart(options: try translating(uids: ["map:1000:101000:1000", "forbid-guest:7:1"], gids: ["forbid-guest:9:1"]))
        _ = FileManager.default.createFile(atPath: source + "/file", contents: nil)
        var m = Message(); m.name("file")
        XCTAssertEqual(send(request(m, 1, node: 1, uid: 7, gid: 0)).error, -EPERM, "a forbidden uid")
        XCTAssertEqual(send(request(m, 1, node: 1, uid: 0, gid: 9)).error, -EPERM, "a forbidden gid")
        XCTAssertEqual(send(request(m, 1, node: 1, uid: IDRule.noID, gid: IDRule.noID)).error, -EPERM,
                       "no caller (FUSE_INVALID_UIDGID) without idmapped mounts agreed")
        let found = lookup("file")
        XCTAssertEqual(found.error, 0)
        let node = found.body.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }

        // SETATTR chown: guest 1005:1006 -> host 101005:1006 (no gid rule covers 1006).
        func chownRequest(uid: UInt32, gid: UInt32) -> Reply {
            var s = Message()
            s.u32((1 << 1) | (1 << 2)); s.u32(0)              // valid: FATTR_UID | FATTR_GID
            for _ in 0..<6 { s.u64(0) }                        // fh, size, lock_owner, atime, mtime, ctime
            for _ in 0..<5 { s.u32(0) }                        // atimensec, mtimensec, ctimensec, mode, unused4
            s.u32(uid); s.u32(gid); s.u32(0)
            return send(s.request(4, unique: 41, node: node))
        }
        let changed = chownRequest(uid: 1005, gid: 1006)
        XCTAssertEqual(changed.error, 0)
        XCTAssertTrue(hostOwner(source + "/file") == (101_005, 1006))
        let attrUID = changed.body.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 16 + 68, as: UInt32.self) }
        XCTAssertEqual(attrUID, 1005, "the attr reply shows the guest uid")
        XCTAssertEqual(chownRequest(uid: 7, gid: 1006).error, -EPERM, "chown to a forbidden uid")
        XCTAssertEqual(chownRequest(uid: 1005, gid: 9).error, -EPERM, "chown to a forbidden gid")
        XCTAssertTrue(hostOwner(source + "/file") == (101_005, 1006), "unchanged by the refused chowns")
    }

    func testACLOwnersAreTranslatedInAndOut() throws {
        restart(options: try translating(uids: ["map:1000:101000:10"], gids: ["map:1000:201000:10", "forbid-guest:5:1"]))
        _ = FileManager.default.createFile(atPath: source + "/acl", contents: nil)
        let found = lookup("acl")
        let node = found.body.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }
        let name = "system.posix_acl_access"
        func value(user: UInt32, group: UInt32) -> [UInt8] {
            var v = Message(); v.u32(2)
            for (tag, perm, id): (UInt32, UInt32, UInt32) in [(0x01, 6, IDRule.noID), (0x02, 4, user), (0x04, 4, IDRule.noID),
                                                              (0x08, 6, group), (0x10, 6, IDRule.noID), (0x20, 0, IDRule.noID)] {
                v.u32(tag | perm << 16); v.u32(id)
            }
            return v.bytes
        }
        func set(_ bytes: [UInt8]) -> Int32 {
            var m = Message(); m.u32(UInt32(bytes.count)); m.u32(0); m.name(name); m.bytes += bytes
            return send(m.request(21, unique: 42, node: node)).error
        }
        XCTAssertEqual(set(value(user: 1001, group: 1002)), 0)
        let fd = open(source + "/acl", O_RDONLY)
        defer { close(fd) }
        let host = try Host.getxattr(fd, CName(name), size: 256)
        XCTAssertEqual(Array(host.value.prefix(host.size)), value(user: 101_001, group: 201_002), "written with host owners")

        var g = Message(); g.u32(256); g.u32(0); g.name(name)
        let read = send(g.request(22, unique: 43, node: node))
        XCTAssertEqual(read.error, 0)
        XCTAssertEqual(read.body, value(user: 1001, group: 1002), "read back with guest owners")
        XCTAssertEqual(set(value(user: 1001, group: 5)), -EPERM, "an ACL naming a forbidden gid")
    }

    /// Both features together: the mapped owner an idmapped creation names is translated too.
    func testIdmappedCreationsAreTranslated() throws {
        restart(options: try translating(uids: ["map:1234:51234:1"], gids: ["squash-guest:4000:54000:1000"], idmapped: true),
                kernelFlags: [.allowIdmap])
        let made = makeDirectory("both", uid: 1234, gid: 4321)
        XCTAssertEqual(made.error, 0)
        worker.credentials.becomeRoot()
        XCTAssertTrue(hostOwner(source + "/both") == (51234, 54000))
        XCTAssertTrue(owner(ofEntry: made.body) == (1234, 54000), "54000 has no host -> guest rule: shown unchanged")
    }

    func testIdmappedMountsContract() throws {
        restart(options: try translating(uids: [], gids: [], idmapped: true),
                kernelFlags: [.allowIdmap, .handleKillprivV2, .posixACL])
        let agreed = try XCTUnwrap(engine.session?.flags)
        XCTAssertTrue(agreed.contains(.allowIdmap))
        XCTAssertFalse(agreed.contains(.handleKillprivV2), "the kernel clears SUID/SGID itself when Ferry writes as root")

        // A request without a caller runs with Ferry's rights (the kernel checked it).
        _ = FileManager.default.createFile(atPath: source + "/private", contents: nil)
        chmod(source + "/private", 0o600)
        var m = Message(); m.name("private")
        XCTAssertEqual(send(request(m, 1, node: 1, uid: IDRule.noID, gid: IDRule.noID)).error, 0)

        // A creation names the mapped caller, who becomes the owner even where the host alone
        // would refuse them (the parent is root's 0755: the kernel's check is the one that counts).
        chmod(source, 0o755)
        let made = makeDirectory("mapped", uid: 1234, gid: 4321)
        XCTAssertEqual(made.error, 0)
        XCTAssertTrue(hostOwner(source + "/mapped") == (1234, 4321))
        XCTAssertTrue(owner(ofEntry: made.body) == (1234, 4321))

        // In a set-group-id directory the new inode keeps the directory's group, as on the host.
        worker.credentials.becomeRoot()
        XCTAssertEqual(Glibc.mkdir(source + "/shared", 0o755), 0)
        chown(source + "/shared", 0, 50)
        chmod(source + "/shared", 0o2775)
        let shared = lookup("shared").body.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }
        XCTAssertEqual(makeDirectory("inner", parent: shared, uid: 1234, gid: 4321).error, 0)
        XCTAssertTrue(hostOwner(source + "/shared/inner") == (1234, 50))

        // CREATE of a name the host made since the kernel's lookup: opened as the caller (the
        // host refuses root's 0600 file to uid 1234), never chowned to it; with O_EXCL, EEXIST.
        worker.credentials.becomeRoot()
        _ = FileManager.default.createFile(atPath: source + "/raced", contents: nil)
        chmod(source + "/raced", 0o600)
        func create(_ flags: Int32) -> Int32 {
            var m = Message(); m.u32(UInt32(flags)); m.u32(0o644); m.u32(0); m.u32(0); m.name("raced")
            return send(request(m, 35, node: 1, uid: 1234, gid: 4321)).error
        }
        XCTAssertEqual(create(O_RDWR), -EACCES)
        XCTAssertEqual(create(O_RDWR | O_EXCL), -EEXIST)
        worker.credentials.becomeRoot()
        XCTAssertTrue(hostOwner(source + "/raced") == (0, 0), "an existing file is never taken over")
        var fresh = Message(); fresh.u32(UInt32(O_RDWR)); fresh.u32(0o644); fresh.u32(0); fresh.u32(0); fresh.name("fresh")
        XCTAssertEqual(send(request(fresh, 35, node: 1, uid: 1234, gid: 4321)).error, 0)
        XCTAssertTrue(hostOwner(source + "/fresh") == (1234, 4321), "a new file is the caller's")
    }
}
