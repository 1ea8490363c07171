import Glibc
import Synchronization

/// The supplementary groups of callers, read from /proc/TID/status and kept for a short time.
///
/// Reading /proc for every request cost more than the request itself (an ordinary caller's
/// stat spent most of its server time there). The rule:
///
/// - An entry belongs to a thread id *and* the fsuid/fsgid the kernel sent with the request.
///   The usual ways of changing groups (login, su, sudo, setpriv, runuser, newgrp, container
///   runtimes) change the uid or gid in the same step, and root callers (uid 0) are never
///   cached (their groups are not applied), so a process that drops from root to a user with
///   new groups is read afresh at its first request as that user.
/// - An entry is used for at most `maximumAge` (100 ms), then read again. Only a thread that
///   calls setgroups(2) itself without changing its fsuid or fsgid (it needs CAP_SETGID) can
///   be served with its previous groups, and only for that long. Even then the kernel has
///   already checked the request against its cached attributes with the caller's current
///   groups (the mount has `default_permissions`); the host's second check is what may lag.
/// - A thread id reused by a new process within 100 ms with the same uid and gid would get the
///   old process's groups; with pid_max in the millions that does not happen in practice.
///
/// Shared by all request threads; one lock, held only to copy an entry in or out.
public final class CallerGroups: Sendable {
    /// How long an entry is trusted.
    public static let maximumAge: Int64 = 100_000_000   // nanoseconds
    /// Entries kept at most; when full, expired entries go, and if none has, all of them.
    public static let capacity = 4096

    private struct Key: Hashable {
        let tid: UInt32, uid: UInt32, gid: UInt32
    }

    private struct Cached {
        let groups: [UInt32]
        let readAt: Int64
    }

    private let entries = Mutex<[Key: Cached]>([:])
    /// Where the groups come from (replaced in tests).
    private let source: @Sendable (UInt32) -> [UInt32]?

    public init(source: @escaping @Sendable (UInt32) -> [UInt32]? = { ThreadCredentials.supplementaryGroups(ofThread: $0) }) {
        self.source = source
    }

    /// The supplementary groups of thread `tid` calling with `uid`/`gid` (empty if the thread is
    /// gone or not visible). `now` is CLOCK_MONOTONIC in nanoseconds (for tests).
    public func groups(tid: UInt32, uid: UInt32, gid: UInt32, now: Int64 = CallerGroups.now()) -> [UInt32] {
        let key = Key(tid: tid, uid: uid, gid: gid)
        if let cached = entries.withLock({ $0[key] }), now &- cached.readAt < CallerGroups.maximumAge,
           now >= cached.readAt {
            return cached.groups
        }
        guard let fresh = source(tid) else { return [] }   // gone: nothing to remember
        entries.withLock { entries in
            if entries.count >= CallerGroups.capacity && entries[key] == nil {
                entries = entries.filter { now &- $0.value.readAt < CallerGroups.maximumAge }
                if entries.count >= CallerGroups.capacity { entries.removeAll(keepingCapacity: true) }
            }
            entries[key] = Cached(groups: fresh, readAt: now)
        }
        return fresh
    }

    /// Number of entries (for tests).
    public var count: Int { entries.withLock { $0.count } }

    /// CLOCK_MONOTONIC_COARSE in nanoseconds (a vDSO read; a few milliseconds of resolution
    /// are plenty for a 100 ms validity).
    public static func now() -> Int64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC_COARSE, &ts)
        return Int64(ts.tv_sec) * 1_000_000_000 + Int64(ts.tv_nsec)
    }
}
