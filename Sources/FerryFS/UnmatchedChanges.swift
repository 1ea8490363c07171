import Synchronization

/// Tells a new node's registration whether a host watcher may have dropped a change to it.
///
/// A LOOKUP or CREATE takes the new file's attributes, then registers its node. A host change
/// in between is reported to the watcher, which finds no node for it yet and drops it: the
/// reply would then carry stale attributes that nothing invalidates. Watchers wrap each match
/// of a change to nodes in `matching`, which counts the matches in progress and those that
/// found no node; a registration that saw neither since it took its `mark` (before its stat)
/// needs no second stat (PassthroughFS.remember, protocol/notify-ring.md).
public final class UnmatchedChanges: Sendable {
    private let inProgress = Atomic<Int>(0)
    private let missed = Atomic<UInt64>(0)

    public init() {}

    /// Runs a watcher's match of one change; `body` returns its result and whether it found
    /// no node for the changed file.
    public func matching<R>(_ body: () -> (R, missedNode: Bool)) -> R {
        inProgress.add(1, ordering: .sequentiallyConsistent)
        let (result, missedNode) = body()
        if missedNode { missed.add(1, ordering: .sequentiallyConsistent) }
        inProgress.subtract(1, ordering: .sequentiallyConsistent)
        return result
    }

    /// Counts a change no node can be matched to (a watcher's queue overflowed).
    public func lost() { missed.add(1, ordering: .sequentiallyConsistent) }

    /// Taken before a new file's attributes are read.
    public var mark: UInt64 { missed.load(ordering: .sequentiallyConsistent) }

    /// Whether a change may have been dropped since `mark` (call after the node is registered).
    public func mayHaveMissed(since mark: UInt64) -> Bool {
        inProgress.load(ordering: .sequentiallyConsistent) > 0 || missed.load(ordering: .sequentiallyConsistent) != mark
    }
}
