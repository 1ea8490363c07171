import FerrySystem

/// Where watchers put what they see: the change ring, plus the wake-up for the invalidator and
/// the counters. Shared by every producer; nothing here takes a lock.
final class ChangeSink: Sendable {
    let ring: ChangeRing<ChangeRecord>
    let stats: NotifyStats
    /// Signalled after a producer has pushed a batch, so the invalidator wakes.
    let wake: EventCounter
    /// Signalled once when the pipeline stops; every thread of it polls this too.
    let stop: EventCounter

    init(ring: ChangeRing<ChangeRecord>, stats: NotifyStats) throws(Errno) {
        self.ring = ring
        self.stats = stats
        wake = try EventCounter()
        stop = try EventCounter()
    }

    /// Pushes one record; a full ring raises its overflow flag (the change is then covered by
    /// revalidating everything).
    func push(_ record: ChangeRecord) {
        if ring.push(record) { stats.recordsPushed.increment() } else { stats.ringOverflows.increment() }
    }

    /// The watcher lost events (its own queue overflowed): revalidate everything.
    func watcherOverflowed() {
        stats.watcherOverflows.increment()
        ring.raiseOverflow()
    }

    /// Wakes the invalidator after a batch of pushes.
    func flush() { wake.signal() }
}
