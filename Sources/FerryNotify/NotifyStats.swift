import Synchronization

/// Counters of the change-notification pipeline, updated without locks and read as a snapshot
/// (`ferry serve --stats`, SIGUSR1).
public final class NotifyStats: Sendable {
    /// Host events the watcher read.
    let eventsSeen = Atomic<UInt64>(0)
    /// Events caused by this server itself (the kernel already knows; not forwarded).
    let eventsOwn = Atomic<UInt64>(0)
    /// Events about nothing the kernel holds (nothing cached can be stale).
    let eventsDropped = Atomic<UInt64>(0)
    /// Records pushed into the ring.
    let recordsPushed = Atomic<UInt64>(0)
    /// Pushes refused because the ring was full.
    let ringOverflows = Atomic<UInt64>(0)
    /// Overflows the watcher reported (fanotify or inotify queue full).
    let watcherOverflows = Atomic<UInt64>(0)
    /// Times everything was revalidated after an overflow.
    let revalidations = Atomic<UInt64>(0)
    /// Batches the invalidator sent.
    let batches = Atomic<UInt64>(0)
    /// Notifications written, by kind.
    let inodeInvalidations = Atomic<UInt64>(0)
    let entryInvalidations = Atomic<UInt64>(0)
    let deletes = Atomic<UInt64>(0)
    let epochs = Atomic<UInt64>(0)
    /// Notifications the kernel answered with an error (a node or name it had already dropped).
    let refused = Atomic<UInt64>(0)
    /// Refused inode invalidations sent once more (the node's LOOKUP reply may have been in flight).
    let retries = Atomic<UInt64>(0)

    init() {}

    /// The counters at one moment.
    public struct Snapshot: Sendable, CustomStringConvertible {
        public var eventsSeen, eventsOwn, eventsDropped, recordsPushed: UInt64
        public var ringOverflows, watcherOverflows, revalidations, batches: UInt64
        public var inodeInvalidations, entryInvalidations, deletes, epochs, refused, retries: UInt64
        public var ringHighWater, ringCapacity: Int

        public var description: String {
            "events \(eventsSeen) (own \(eventsOwn), not cached \(eventsDropped)); pushed \(recordsPushed); "
                + "ring high-water \(ringHighWater)/\(ringCapacity); overflows \(ringOverflows) ring + \(watcherOverflows) watcher; "
                + "revalidations \(revalidations); batches \(batches); sent \(inodeInvalidations) inode + "
                + "\(entryInvalidations) entry + \(deletes) delete + \(epochs) epoch (\(refused) refused by the kernel, \(retries) retried)"
        }
    }

    func snapshot(ringHighWater: Int, ringCapacity: Int) -> Snapshot {
        Snapshot(eventsSeen: eventsSeen.load(ordering: .relaxed), eventsOwn: eventsOwn.load(ordering: .relaxed),
                 eventsDropped: eventsDropped.load(ordering: .relaxed), recordsPushed: recordsPushed.load(ordering: .relaxed),
                 ringOverflows: ringOverflows.load(ordering: .relaxed), watcherOverflows: watcherOverflows.load(ordering: .relaxed),
                 revalidations: revalidations.load(ordering: .relaxed), batches: batches.load(ordering: .relaxed),
                 inodeInvalidations: inodeInvalidations.load(ordering: .relaxed),
                 entryInvalidations: entryInvalidations.load(ordering: .relaxed), deletes: deletes.load(ordering: .relaxed),
                 epochs: epochs.load(ordering: .relaxed), refused: refused.load(ordering: .relaxed),
                 retries: retries.load(ordering: .relaxed),
                 ringHighWater: ringHighWater, ringCapacity: ringCapacity)
    }
}

extension Atomic where Value == UInt64 {
    /// Adds one (relaxed: counters only).
    func increment(by n: UInt64 = 1) { _ = wrappingAdd(n, ordering: .relaxed) }
}
