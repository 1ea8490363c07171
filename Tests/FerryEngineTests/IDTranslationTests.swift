import FerryFS
import XCTest

/// `--translate-uid`/`--translate-gid` rules: parsing every form, refusing overlaps and bad
/// ranges, translating in both directions, the table, and the owners inside POSIX ACLs.
final class IDTranslationTests: XCTestCase {
    func rule(_ text: String) throws -> IDRule { try IDRule(parsing: text) }

    func message(_ body: () throws -> Void) -> String {
        do { try body(); return "" } catch { return "\(error)" }
    }

    func testEveryFormParses() throws {
        let cases: [(String, IDRule.Form, UInt32, UInt32, UInt64)] = [
            ("map:0:100000:65536", .map, 0, 100_000, 65_536),
            ("guest:1000:2000:10", .guest, 1000, 2000, 10),
            ("host:2000:1000:10", .host, 2000, 1000, 10),
            ("squash-guest:0:1001:4294967295", .squashGuest, 0, 1001, 4_294_967_295),
            ("squash-host:100000:65534:65536", .squashHost, 100_000, 65_534, 65_536),
            ("forbid-guest:0:1000", .forbidGuest, 0, 0, 1000),
        ]
        for (text, form, from, to, count) in cases {
            let parsed = try rule(text)
            XCTAssertEqual(parsed.form, form, text)
            XCTAssertEqual(parsed.from, from, text)
            XCTAssertEqual(parsed.to, to, text)
            XCTAssertEqual(parsed.count, count, text)
            XCTAssertEqual(parsed.description, text, "a rule prints as it was given")
        }
    }

    func testPrefixCaseAndSeparatorFollowVirtiofsd() throws {
        XCTAssertEqual(try rule("MAP:1:2:3"), try rule("map:1:2:3"))
        XCTAssertEqual(try rule("squash-guest/0/5/10"), try rule("squash-guest:0:5:10"), "any non-name character separates")
        XCTAssertEqual(try rule("forbid-guest,7,1"), try rule("forbid-guest:7:1"))
    }

    func testMalformedRulesAreRefusedWithTheReason() {
        XCTAssertTrue(message { _ = try self.rule("shift:0:1:2") }.contains("unknown form 'shift'"))
        XCTAssertTrue(message { _ = try self.rule("map") }.contains("no numbers"))
        XCTAssertTrue(message { _ = try self.rule("map:0:1") }.contains("expected map:FROM:TO:COUNT (3 numbers), got 2"))
        XCTAssertTrue(message { _ = try self.rule("forbid-guest:0:1:2") }.contains("forbid-guest:GUEST:COUNT (2 numbers), got 3"))
        XCTAssertTrue(message { _ = try self.rule("map:0:x:1") }.contains("'x' is not an id"))
        XCTAssertTrue(message { _ = try self.rule("map:0:1:") }.contains("'' is not an id"))
        XCTAssertTrue(message { _ = try self.rule("map:-1:1:1") }.contains("'-1' is not an id"))
        XCTAssertTrue(message { _ = try self.rule("map:4294967296:1:1") }.contains("is not an id"))
    }

    func testRangeEdgesAreChecked() throws {
        XCTAssertTrue(message { _ = try self.rule("map:0:1:0") }.contains("a count of 0 covers no id"))
        // A source range may reach the last id (4294967295 = 2^32 - 1), not past it.
        XCTAssertNoThrow(try rule("forbid-guest:2001:4294965295"))
        XCTAssertTrue(message { _ = try self.rule("forbid-guest:2001:4294965296") }.contains("ends past 4294967295"))
        XCTAssertTrue(message { _ = try self.rule("forbid-guest:4294967295:2") }.contains("ends past 4294967295"))
        // No target may be (uid_t)-1.
        XCTAssertNoThrow(try rule("map:0:4294967285:10"))
        XCTAssertTrue(message { _ = try self.rule("map:0:4294967286:10") }.contains("(uid_t)-1"))
        XCTAssertTrue(message { _ = try self.rule("squash-guest:0:4294967295:5") }.contains("(uid_t)-1"))
        XCTAssertTrue(message { _ = try self.rule("map:4294967290:100:6") }.contains("the guest range"),
                      "map's guest side is a target too")
        XCTAssertNoThrow(try rule("guest:4294967290:100:6"), "a one-way source range may reach the last id")
    }

    func testOverlapsAreRefusedNamingBothRules() throws {
        func refused(_ rules: [String]) -> String {
            message { _ = try IDTranslation(uidRules: rules, gidRules: []) }
        }
        // The Incus mistake: forbid-guest takes a COUNT, so 1001:1999 reaches 2999 and covers 2000.
        let text = refused(["map:1000:1000:1", "map:2000:2000:1", "forbid-guest:1001:1999"])
        XCTAssertEqual(text, "--translate-uid forbid-guest:1001:1999 overlaps --translate-uid map:2000:2000:1: both translate guest uids 2000")
        // Host side of two map rules.
        XCTAssertEqual(refused(["map:0:100:10", "map:50:105:1"]),
                       "--translate-uid map:50:105:1 overlaps --translate-uid map:0:100:10: both translate host uids 105")
        // host: against map's host side; squash-guest against guest:.
        XCTAssertTrue(refused(["map:0:100:10", "host:109:7:5"]).contains("both translate host uids 109"))
        XCTAssertTrue(refused(["guest:10:0:10", "squash-guest:0:5:11"]).contains("both translate guest uids 10"))
        XCTAssertTrue(message { _ = try IDTranslation(uidRules: [], gidRules: ["squash-host:0:1:10", "squash-host:5:2:1"]) }
            .hasPrefix("--translate-gid squash-host:5:2:1 overlaps --translate-gid squash-host:0:1:10"))
        // Adjacent ranges and the same range in the other direction are fine.
        XCTAssertNoThrow(try IDTranslation(uidRules: ["map:0:100:10", "map:10:110:5", "guest:20:0:1", "host:0:20:1"], gidRules: []))
    }

    func testTheIncusRulesAllowExactly1000And2000() throws {
        let ids = try IDTranslation(uidRules: ["forbid-guest:0:1000", "map:1000:1000:1", "forbid-guest:1001:999",
                                               "map:2000:2000:1", "forbid-guest:2001:4294965295"], gidRules: [])
        for refused: UInt32 in [0, 1, 999, 1001, 1999, 2001, 65534, 4_294_967_294] {
            XCTAssertNil(ids.uids.toHost(refused), "guest uid \(refused) is refused")
        }
        XCTAssertEqual(ids.uids.toHost(1000), 1000)
        XCTAssertEqual(ids.uids.toHost(2000), 2000)
        XCTAssertEqual(ids.uids.toHost(IDRule.noID), IDRule.noID, "(uid_t)-1 is never translated nor refused")
        XCTAssertEqual(ids.uids.toGuest(0), 0, "host ids outside every rule show unchanged")
        XCTAssertEqual(ids.gids.toHost(0), 0, "no gid rules: gids pass unchanged")
    }

    func testTranslationInBothDirections() throws {
        let ids = try IDTranslation(uidRules: ["map:0:100000:65536", "squash-guest:70000:65534:100", "host:170000:70:2",
                                               "squash-host:200000:9:10"],
                                    gidRules: ["guest:10:20:5"])
        let toHost: [(UInt32, UInt32, String)] = [
            (0, 100_000, "map"), (65535, 165_535, "map's last"), (65536, 65536, "just past the range: unchanged"),
            (70000, 65534, "squash-guest"), (70099, 65534, "squash-guest's last"), (70100, 70100, "past it"),
            (170_000, 170_000, "host: rules translate one way only"),
        ]
        for (guest, host, why) in toHost { XCTAssertEqual(ids.uids.toHost(guest), host, "guest \(guest): \(why)") }
        let toGuest: [(UInt32, UInt32, String)] = [
            (100_000, 0, "map"), (165_535, 65535, "map's last"), (99_999, 99_999, "below the range: unchanged"),
            (170_000, 70, "host:"), (170_001, 71, "host:'s last"), (170_002, 170_002, "past it"),
            (200_009, 9, "squash-host"), (200_010, 200_010, "past it"),
        ]
        for (host, guest, why) in toGuest { XCTAssertEqual(ids.uids.toGuest(host), guest, "host \(host): \(why)") }
        XCTAssertEqual(ids.gids.toHost(14), 24)
        XCTAssertEqual(ids.gids.toGuest(24), 24, "guest: rules translate one way only")
        XCTAssertTrue(IDTranslation.identity.isIdentity)
        XCTAssertFalse(ids.isIdentity)
    }

    func testTableCoversEveryIdWithGapsSpelledOut() throws {
        let ids = try IDTranslation(uidRules: ["map:0:100000:65536", "forbid-guest:65536:1"], gidRules: [])
        XCTAssertEqual(ids.uids.table(kind: "uid"), [
            "  guest uid 0-65535 -> host uid 100000-165535   [map:0:100000:65536]",
            "  guest uid 65536 -> refused (EPERM)   [forbid-guest:65536:1]",
            "  guest uid 65537-4294967294 -> unchanged",
            "  host uid 0-99999 -> unchanged",
            "  host uid 100000-165535 -> guest uid 0-65535   [map:0:100000:65536]",
            "  host uid 165536-4294967294 -> unchanged",
        ])
        XCTAssertEqual(IDTranslation.identity.table, ["  none: every uid and gid passes unchanged"])
    }

    /// A version-2 ACL: user::rw-, user:ID1:r--, group::r--, group:ID2:rw-, mask::rw-, other::---.
    func acl(user: UInt32, group: UInt32) -> [UInt8] {
        var bytes: [UInt8] = []
        func u16(_ v: UInt16) { bytes += withUnsafeBytes(of: v.littleEndian, Array.init) }
        func u32(_ v: UInt32) { bytes += withUnsafeBytes(of: v.littleEndian, Array.init) }
        u32(2)
        for (tag, perm, id): (UInt16, UInt16, UInt32) in [(0x01, 6, IDRule.noID), (0x02, 4, user), (0x04, 4, IDRule.noID),
                                                          (0x08, 6, group), (0x10, 6, IDRule.noID), (0x20, 0, IDRule.noID)] {
            u16(tag); u16(perm); u32(id)
        }
        return bytes
    }

    func testACLOwnersTranslateBothWays() throws {
        let ids = try IDTranslation(uidRules: ["map:1000:101000:10"], gidRules: ["map:1000:201000:10", "forbid-guest:0:1"])
        XCTAssertEqual(ids.aclToHost(acl(user: 1001, group: 1002)), acl(user: 101_001, group: 201_002))
        XCTAssertEqual(ids.aclToGuest(acl(user: 101_001, group: 201_002)), acl(user: 1001, group: 1002))
        XCTAssertEqual(ids.aclToGuest(acl(user: 5, group: 6)), acl(user: 5, group: 6), "ids outside every rule unchanged")
        XCTAssertNil(ids.aclToHost(acl(user: 1001, group: 0)), "a forbidden group in an ACL is refused")
        let odd: [UInt8] = [1, 0, 0, 0, 2, 0, 4, 0, 1, 0, 0, 0]
        XCTAssertEqual(ids.aclToHost(odd), odd, "not a version-2 ACL: left for the host to refuse")
        XCTAssertEqual(ids.aclToHost([2, 0, 0, 0, 2, 0]), [2, 0, 0, 0, 2, 0], "a partial entry: left as it is")
        XCTAssertTrue(IDTranslation.isACL(Array("system.posix_acl_access".utf8)))
        XCTAssertTrue(IDTranslation.isACL(Array("system.posix_acl_default".utf8)))
        XCTAssertFalse(IDTranslation.isACL(Array("user.posix_acl_access".utf8)))
    }
}
