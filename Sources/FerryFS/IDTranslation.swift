/// uid/gid translation between the ids a client (a VM guest, a container) uses and the ids on the
/// host: `--translate-uid` and `--translate-gid`, with virtiofsd's syntax and meanings
/// (protocol/id-translation.md). Pure: no system calls.
///
/// Two directions, each its own table: guest -> host for the ids Ferry acts with (the caller's
/// credentials, chown, the owners written into POSIX ACLs) and host -> guest for the ids it
/// reports (attributes, statx, the owners read from POSIX ACLs). An id that no rule of a
/// direction covers passes unchanged, as in virtiofsd. Rules of one direction may not overlap.
public struct IDRule: Sendable, Equatable, CustomStringConvertible {
    /// The rule's form (its prefix on the command line).
    public enum Form: String, Sendable, CaseIterable {
        /// `map:GUEST:HOST:COUNT`: both directions, 1:1.
        case map
        /// `guest:GUEST:HOST:COUNT`: guest -> host only, 1:1.
        case guest
        /// `host:HOST:GUEST:COUNT`: host -> guest only, 1:1.
        case host
        /// `squash-guest:GUEST:HOST:COUNT`: every guest id of the range -> one host id.
        case squashGuest = "squash-guest"
        /// `squash-host:HOST:GUEST:COUNT`: every host id of the range -> one guest id.
        case squashHost = "squash-host"
        /// `forbid-guest:GUEST:COUNT`: guest ids of the range are refused (EPERM).
        case forbidGuest = "forbid-guest"

        /// Whether the source range holds guest ids (else host ids).
        var translatesGuestIDs: Bool { self != .host && self != .squashHost }
    }

    /// The form.
    public let form: Form
    /// The first id of the source range (a guest id, or a host id for `host` and `squash-host`).
    public let from: UInt32
    /// The first target id (1:1 forms) or the single target (squash forms); 0 for `forbid-guest`.
    public let to: UInt32
    /// How many ids the source range holds (1 ... 2^32 - from).
    public let count: UInt64

    /// The id no rule translates: `(uid_t)-1` means "no id" (chown's "leave unchanged", the
    /// kernel's FUSE_INVALID_UIDGID, ACL_UNDEFINED_ID); no file can be owned by it.
    public static let noID = UInt32.max

    /// Parses one rule as virtiofsd does: a prefix (letters, digits, `-`, `_`; any case), then
    /// numbers separated by the first other character (normally `:`).
    public init(parsing text: String) throws(IDRuleError) {
        let chars = Array(text.unicodeScalars)
        var prefix = ""
        var index = 0
        while index < chars.count, chars[index].properties.isAlphabetic || ("0"..."9").contains(chars[index])
                || chars[index] == "-" || chars[index] == "_" {
            prefix.unicodeScalars.append(chars[index])
            index += 1
        }
        guard let form = Form(rawValue: prefix.lowercased()) else {
            throw IDRuleError("\(text): unknown form '\(prefix)' (map, guest, host, squash-guest, squash-host, forbid-guest)")
        }
        guard index < chars.count else { throw IDRuleError("\(text): no numbers after '\(prefix)'") }
        let separator = chars[index]
        let fields = String(String.UnicodeScalarView(chars[(index + 1)...])).split(separator: Character(separator),
                                                                                   omittingEmptySubsequences: false)
        let expected = form == .forbidGuest ? 2 : 3
        guard fields.count == expected else {
            let shape = form == .forbidGuest ? "forbid-guest:GUEST:COUNT" : "\(form.rawValue):FROM:TO:COUNT"
            throw IDRuleError("\(text): expected \(shape) (\(expected) numbers), got \(fields.count)")
        }
        var numbers: [UInt64] = []
        for field in fields {
            guard !field.isEmpty, field.allSatisfy({ $0.isASCII && $0.isNumber }), let value = UInt64(field),
                  value <= UInt64(UInt32.max) else {
                throw IDRuleError("\(text): '\(field)' is not an id or count (0 ... 4294967295)")
            }
            numbers.append(value)
        }
        if form == .forbidGuest {
            try self.init(form, from: UInt32(numbers[0]), to: 0, count: numbers[1], text: text)
        } else {
            try self.init(form, from: UInt32(numbers[0]), to: UInt32(numbers[1]), count: numbers[2], text: text)
        }
    }

    /// A rule from its parts; checks that the ranges fit and that no target is `(uid_t)-1`.
    public init(_ form: Form, from: UInt32, to: UInt32, count: UInt64, text: String? = nil) throws(IDRuleError) {
        self.form = form; self.from = from; self.to = to; self.count = count
        let name = text ?? description
        guard count > 0 else { throw IDRuleError("\(name): a count of 0 covers no id") }
        guard UInt64(from) + count <= 1 << 32 else {
            throw IDRuleError("\(name): the range \(from) + \(count) ends past 4294967295")
        }
        switch form {
        case .map, .guest, .host:
            guard UInt64(to) + count <= UInt64(IDRule.noID) else {
                throw IDRuleError("\(name): the target range \(to) + \(count) reaches 4294967295, which is (uid_t)-1 and no id")
            }
            // map's guest range is the target of its host -> guest half.
            guard form != .map || UInt64(from) + count <= UInt64(IDRule.noID) else {
                throw IDRuleError("\(name): the guest range \(from) + \(count) reaches 4294967295, which is (uid_t)-1 and no id")
            }
        case .squashGuest, .squashHost:
            guard to != IDRule.noID else { throw IDRuleError("\(name): the target 4294967295 is (uid_t)-1, not an id") }
        case .forbidGuest:
            break
        }
    }

    /// What the rule does to the ids of its source range.
    var sourceAction: IDMap.Action {
        switch form {
        case .map, .guest, .host: return .shift(to: to)
        case .squashGuest, .squashHost: return .squash(to: to)
        case .forbidGuest: return .forbid
        }
    }

    /// The rule as given on the command line.
    public var description: String {
        form == .forbidGuest ? "forbid-guest:\(from):\(count)" : "\(form.rawValue):\(from):\(to):\(count)"
    }
}

/// A rule that cannot be parsed, or rules that contradict each other.
public struct IDRuleError: Error, Sendable, Equatable, CustomStringConvertible {
    /// One line naming the rule (or both rules) and what is wrong.
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// The translation of one kind of id (uids or gids) in both directions.
public struct IDMap: Sendable, Equatable {
    /// What one range of source ids becomes.
    public enum Action: Sendable, Equatable {
        /// 1:1 onto the range starting at this id.
        case shift(to: UInt32)
        /// All onto this one id.
        case squash(to: UInt32)
        /// Refused (EPERM).
        case forbid
    }

    /// One source range of one direction and the rule it came from.
    public struct Range: Sendable, Equatable {
        /// First source id.
        public let start: UInt64
        /// One past the last source id (at most 2^32).
        public let end: UInt64
        /// What the range's ids become.
        public let action: Action
        /// The rule the range came from (for the table and error messages).
        public let rule: IDRule

        func translate(_ id: UInt32) -> UInt32? {
            switch action {
            case let .shift(to): return UInt32(UInt64(to) + (UInt64(id) - start))
            case let .squash(to): return to
            case .forbid: return nil
            }
        }
    }

    /// Guest -> host ranges, sorted by start.
    public let toHostRanges: [Range]
    /// Host -> guest ranges, sorted by start.
    public let toGuestRanges: [Range]

    /// No rules: every id passes unchanged.
    public static let identity = IDMap(toHost: [], toGuest: [])

    private init(toHost: [Range], toGuest: [Range]) {
        toHostRanges = toHost
        toGuestRanges = toGuest
    }

    /// The translation `rules` describe; refuses two rules whose source ranges of one direction
    /// overlap, naming both. `kind` ("uid" or "gid") is for the messages.
    public init(rules: [IDRule], kind: String) throws(IDRuleError) {
        var toHost: [Range] = [], toGuest: [Range] = []
        func add(_ range: Range, to list: inout [Range], direction: String) throws(IDRuleError) {
            if let other = list.first(where: { $0.start < range.end && range.start < $0.end }) {
                let lo = max(other.start, range.start), hi = min(other.end, range.end) - 1
                throw IDRuleError("--translate-\(kind) \(range.rule) overlaps --translate-\(kind) \(other.rule): both translate \(direction) \(kind)s \(lo == hi ? "\(lo)" : "\(lo)-\(hi)")")
            }
            list.append(range)
        }
        for rule in rules {
            let range = Range(start: UInt64(rule.from), end: UInt64(rule.from) + rule.count, action: rule.sourceAction,
                              rule: rule)
            if rule.form.translatesGuestIDs {
                try add(range, to: &toHost, direction: "guest")
            } else {
                try add(range, to: &toGuest, direction: "host")
            }
            if rule.form == .map {   // and back: HOST+k -> GUEST+k
                try add(Range(start: UInt64(rule.to), end: UInt64(rule.to) + rule.count, action: .shift(to: rule.from),
                              rule: rule), to: &toGuest, direction: "host")
            }
        }
        self.init(toHost: toHost.sorted { $0.start < $1.start }, toGuest: toGuest.sorted { $0.start < $1.start })
    }

    /// Whether every id passes unchanged.
    public var isIdentity: Bool { toHostRanges.isEmpty && toGuestRanges.isEmpty }

    /// The host id for guest id `id`; nil when a `forbid-guest` rule refuses it. `(uid_t)-1`
    /// passes unchanged.
    public func toHost(_ id: UInt32) -> UInt32? {
        guard id != IDRule.noID, let range = IDMap.find(id, in: toHostRanges) else { return id }
        return range.translate(id)
    }

    /// The guest id for host id `id` (never refused: a host id no rule covers is shown as it is).
    public func toGuest(_ id: UInt32) -> UInt32 {
        guard id != IDRule.noID, let range = IDMap.find(id, in: toGuestRanges) else { return id }
        return range.translate(id) ?? id
    }

    /// The range holding `id` (binary search over sorted, disjoint ranges).
    private static func find(_ id: UInt32, in ranges: [Range]) -> Range? {
        let key = UInt64(id)
        var lo = 0, hi = ranges.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if ranges[mid].end <= key { lo = mid + 1 } else { hi = mid }
        }
        return lo < ranges.count && ranges[lo].start <= key ? ranges[lo] : nil
    }

    /// Both directions as a table covering every id 0 ... 4294967294, gaps included (they pass
    /// unchanged), one line per range: what the start-up log and `--explain` print.
    public func table(kind: String) -> [String] {
        func lines(_ ranges: [Range], from source: String, to destination: String) -> [String] {
            var out: [String] = [], next: UInt64 = 0
            let last = UInt64(IDRule.noID)   // (uid_t)-1 is never translated
            func span(_ a: UInt64, _ b: UInt64) -> String { a + 1 == b ? "\(a)" : "\(a)-\(b - 1)" }
            func gap(upTo end: UInt64) {
                if next < end { out.append("  \(source) \(kind) \(span(next, end)) -> unchanged") }
            }
            for range in ranges {
                gap(upTo: range.start)
                let end = min(range.end, last)
                guard range.start < end else { continue }
                let target: String
                switch range.action {
                case let .shift(to): target = "\(destination) \(kind) \(span(UInt64(to), UInt64(to) + end - range.start))"
                case let .squash(to): target = "\(destination) \(kind) \(to)"
                case .forbid: target = "refused (EPERM)"
                }
                out.append("  \(source) \(kind) \(span(range.start, end)) -> \(target)   [\(range.rule)]")
                next = range.end
            }
            gap(upTo: last)
            return out
        }
        return lines(toHostRanges, from: "guest", to: "host") + lines(toGuestRanges, from: "host", to: "guest")
    }
}

/// Translation of uids and gids, and of the owners inside POSIX ACL xattrs.
public struct IDTranslation: Sendable, Equatable {
    /// The `--translate-uid` rules.
    public let uids: IDMap
    /// The `--translate-gid` rules (supplementary groups and ACL_GROUP entries included).
    public let gids: IDMap

    /// No translation.
    public static let identity = IDTranslation(uids: .identity, gids: .identity)

    public init(uids: IDMap, gids: IDMap) {
        self.uids = uids
        self.gids = gids
    }

    /// Parses `--translate-uid` and `--translate-gid` values (in the order given).
    public init(uidRules: [String], gidRules: [String]) throws(IDRuleError) {
        var parsedUIDs: [IDRule] = [], parsedGIDs: [IDRule] = []
        for text in uidRules { parsedUIDs.append(try IDRule(parsing: text)) }
        for text in gidRules { parsedGIDs.append(try IDRule(parsing: text)) }
        self.init(uids: try IDMap(rules: parsedUIDs, kind: "uid"), gids: try IDMap(rules: parsedGIDs, kind: "gid"))
    }

    /// Whether every id passes unchanged.
    public var isIdentity: Bool { uids.isIdentity && gids.isIdentity }

    /// The table of both maps (see `IDMap.table`).
    public var table: [String] {
        isIdentity ? ["  none: every uid and gid passes unchanged"] : uids.table(kind: "uid") + gids.table(kind: "gid")
    }

    /// Whether `name` is a POSIX ACL xattr, whose value holds uids and gids.
    public static func isACL(_ name: [UInt8]) -> Bool {
        name == PosixACL.accessName || name == PosixACL.defaultName
    }

    /// A POSIX ACL xattr value with its ACL_USER and ACL_GROUP ids translated guest -> host;
    /// nil when one of them is refused. A value that is not a well-formed ACL is returned as it
    /// is (the host refuses it with its own errno).
    public func aclToHost(_ value: [UInt8]) -> [UInt8]? {
        var failed = false
        let out = PosixACL.rewrite(value) { tag, id in
            let mapped = tag == PosixACL.user ? uids.toHost(id) : gids.toHost(id)
            if mapped == nil { failed = true }
            return mapped ?? id
        }
        return failed ? nil : out
    }

    /// A POSIX ACL xattr value with its ACL_USER and ACL_GROUP ids translated host -> guest.
    public func aclToGuest(_ value: [UInt8]) -> [UInt8] {
        PosixACL.rewrite(value) { tag, id in tag == PosixACL.user ? uids.toGuest(id) : gids.toGuest(id) }
    }
}

/// The kernel's POSIX ACL xattr format (include/uapi/linux/posix_acl_xattr.h): a little-endian
/// `u32 version` (2), then entries `{ u16 tag; u16 perm; u32 id }`; only ACL_USER (2) and
/// ACL_GROUP (8) entries carry an id.
enum PosixACL {
    static let accessName = Array("system.posix_acl_access".utf8)
    static let defaultName = Array("system.posix_acl_default".utf8)
    static let version: UInt32 = 2
    static let user: UInt16 = 0x02
    static let group: UInt16 = 0x08
    static let headerSize = 4, entrySize = 8

    /// `value` with the id of each ACL_USER and ACL_GROUP entry replaced by `map(tag, id)`;
    /// unchanged when it is not a version-2 ACL of whole entries.
    static func rewrite(_ value: [UInt8], _ map: (UInt16, UInt32) -> UInt32) -> [UInt8] {
        guard value.count >= headerSize, (value.count - headerSize) % entrySize == 0,
              load32(value, 0) == version else { return value }
        var out = value
        var offset = headerSize
        while offset < out.count {
            let tag = UInt16(out[offset]) | UInt16(out[offset + 1]) << 8
            if tag == user || tag == group {
                store32(&out, offset + 4, map(tag, load32(out, offset + 4)))
            }
            offset += entrySize
        }
        return out
    }

    private static func load32(_ bytes: [UInt8], _ at: Int) -> UInt32 {
        UInt32(bytes[at]) | UInt32(bytes[at + 1]) << 8 | UInt32(bytes[at + 2]) << 16 | UInt32(bytes[at + 3]) << 24
    }

    private static func store32(_ bytes: inout [UInt8], _ at: Int, _ value: UInt32) {
        for i in 0..<4 { bytes[at + i] = UInt8(truncatingIfNeeded: value >> (8 * UInt32(i))) }
    }
}
