import FerryProtocol
import FerrySystem
import Synchronization

/// Makes lock answers see every close the kernel queued before them (protocol/locks.md).
///
/// A process's last close of a file ends with RELEASE, which drops the locks held through that
/// open file (its OFD locks, its flock). The kernel queues RELEASE before close(2) returns but
/// does not wait for it, so a lock request that another process sends right after can be read
/// by another request thread and answered while the RELEASE is still unhandled: it would
/// report the dropped lock as a conflict.
///
/// The kernel numbers requests (`unique`) in the order it queues them and hands them out in
/// that order. Readers announce each close they read (`readerStopped`), and a lock request
/// that finds a conflict settles before it answers (`settle`): every reader that might hold an
/// unannounced earlier request is woken and waited for, then every announced close of the node
/// queued before the lock request is waited for, and the lock request runs again. Requests that
/// find no conflict, and every other request, pay nothing but two counter updates per read.
final class CloseOrdering: Sendable {
    /// Closes announced and not yet finished: unique → node.
    private let pending = HostCondition<[UInt64: UInt64]>([:])
    /// Every reader thread's progress.
    private let readers = Mutex<[ReaderProgress]>([])
    /// Lock requests settling now (readers wake them only when there are some).
    private let settling = Atomic<Int>(0)

    /// Whether `opcode` ends locks: FLUSH (POSIX locks of the owner), RELEASE, RELEASEDIR.
    static func isClose(_ opcode: UInt32) -> Bool {
        opcode == Opcode.flush.rawValue || opcode == Opcode.release.rawValue || opcode == Opcode.releasedir.rawValue
    }

    /// Adds a reader thread.
    func add(_ reader: ReaderProgress) { readers.withLock { $0.append(reader) } }

    /// Removes a reader thread that stopped reading for good.
    func remove(_ reader: ReaderProgress) {
        readers.withLock { $0.removeAll { $0 === reader } }
        reader.stopped.store(true, ordering: .sequentiallyConsistent)
        wakeSettlers()
    }

    /// `reader` is about to wait for a request.
    func readerWaiting(_ reader: ReaderProgress) {
        reader.reads.add(1, ordering: .sequentiallyConsistent)   // odd: may hold an unannounced request
    }

    /// `reader` stopped waiting, with request `header` (nil: none, e.g. a kick or EINTR).
    func readerStopped(_ reader: ReaderProgress, with header: InHeader?) {
        if let header, CloseOrdering.isClose(header.opcode) {
            pending.update { $0[header.unique] = header.nodeID }
        }
        reader.reads.add(1, ordering: .sequentiallyConsistent)   // even: everything it read is announced
        wakeSettlers()
    }

    /// `reader` (a ring queue) is about to take what its ring completed: a reap starts.
    func reapStarting(_ reader: ReaderProgress) {
        reader.takesBatches.store(true, ordering: .relaxed)
        reader.reapsStarted.add(1, ordering: .sequentiallyConsistent)
    }

    /// `reader` stopped waiting with several requests (a ring queue's batch).
    func readerStopped(_ reader: ReaderProgress, withAll headers: [InHeader]) {
        record(headers)
        reader.reads.add(1, ordering: .sequentiallyConsistent)
        reapAnnounced(reader)
    }

    /// Records the closes among `headers`, taken by a reader that is busy (a ring queue) in the
    /// reap it started last, which is announced in full now.
    func announce(_ headers: [InHeader], by reader: ReaderProgress) {
        record(headers)
        reapAnnounced(reader)
    }

    private func record(_ headers: [InHeader]) {
        guard headers.contains(where: { CloseOrdering.isClose($0.opcode) }) else { return }
        pending.update { pending in
            for header in headers where CloseOrdering.isClose(header.opcode) { pending[header.unique] = header.nodeID }
        }
    }

    private func reapAnnounced(_ reader: ReaderProgress) {
        reader.reapsAnnounced.store(reader.reapsStarted.load(ordering: .sequentiallyConsistent), ordering: .sequentiallyConsistent)
        wakeSettlers()
    }

    private func wakeSettlers() {
        if settling.load(ordering: .sequentiallyConsistent) > 0 { pending.update { _ in } }
    }

    /// The close `header` is done (whatever its outcome).
    func finished(_ header: InHeader) {
        guard CloseOrdering.isClose(header.opcode) else { return }
        pending.update { _ = $0.removeValue(forKey: header.unique) }
    }

    /// Waits until every close of node `nodeID` queued before request `unique` has been handled.
    /// `me` is the calling reader (it holds nothing unannounced).
    func settle(nodeID: UInt64, unique: UInt64, me: ReaderProgress?) {
        settling.add(1, ordering: .sequentiallyConsistent)
        defer { settling.subtract(1, ordering: .sequentiallyConsistent) }
        // A reader in its waiting phase may have taken an earlier request from the kernel and
        // not announced it yet, or may be asleep with nothing: wake it, and wait until it has
        // gone round once (an asleep reader holds nothing, and whatever it takes later was
        // queued after this request).
        // A ring queue takes requests in batches, and the kernel posts to its ring while it
        // is busy handling the last batch: a close can sit there unannounced, posted before
        // this request was even sent, until its next reap. So every ring queue is a suspect
        // until a reap it started after now is announced (it is woken, in case it sleeps);
        // except one settling itself, which reaps nothing until it is done (two queues waiting
        // for each other would never be).
        me?.settlingNow.store(true, ordering: .sequentiallyConsistent)
        defer { me?.settlingNow.store(false, ordering: .sequentiallyConsistent) }
        let suspects = readers.withLock { $0 }.compactMap { reader -> Suspect? in
            guard reader !== me else { return nil }
            if reader.takesBatches.load(ordering: .relaxed) {
                guard !reader.settlingNow.load(ordering: .sequentiallyConsistent) else { return nil }
                return Suspect(reader: reader, batch: true, mark: reader.reapsStarted.load(ordering: .sequentiallyConsistent))
            }
            let reads = reader.reads.load(ordering: .sequentiallyConsistent)
            return reads & 1 == 1 ? Suspect(reader: reader, batch: false, mark: reads) : nil
        }
        for suspect in suspects { suspect.reader.kick() }
        // A kick by signal (a reader asleep in read(2)) is lost when it lands just before the
        // reader enters the read: kick the readers still suspect again now and then.
        while !pending.wait(until: { closes in
            suspects.allSatisfy(\.cleared) && !closes.contains { $0.key < unique && $0.value == nodeID }
        }, milliseconds: CloseOrdering.kickAgainAfterMilliseconds) {
            for suspect in suspects where !suspect.cleared { suspect.reader.kick() }
        }
    }

    /// How long a settling lock request waits before it kicks the readers still suspect again.
    static let kickAgainAfterMilliseconds = 5

    /// A reader that may hold a close it has not announced, and the mark it must pass.
    private struct Suspect {
        let reader: ReaderProgress
        /// A ring queue (marks count reaps) or a /dev/fuse reader (marks count reads).
        let batch: Bool
        let mark: UInt64

        /// Whether it holds nothing unannounced from before the mark any more.
        var cleared: Bool {
            if reader.gone { return true }
            if batch {   // a reap started after the mark, and announced
                return reader.reapsAnnounced.load(ordering: .sequentiallyConsistent) > mark
            }
            return reader.reads.load(ordering: .sequentiallyConsistent) != mark   // it went round
        }
    }
}

/// One reader thread's place in `CloseOrdering`: how many times it started and stopped waiting
/// for a request (odd while waiting), and how to wake it.
public final class ReaderProgress: Sendable {
    let reads = Atomic<UInt64>(0)
    let stopped = Atomic<Bool>(false)
    /// A ring queue's reaps: started, and the last started one whose closes are all recorded.
    let takesBatches = Atomic<Bool>(false)
    let reapsStarted = Atomic<UInt64>(0)
    let reapsAnnounced = Atomic<UInt64>(0)
    /// In `settle` now (a ring queue then reaps nothing until it returns).
    let settlingNow = Atomic<Bool>(false)
    /// Wakes the reader from its wait for a request.
    let kick: @Sendable () -> Void

    init(kick: @escaping @Sendable () -> Void) { self.kick = kick }

    var gone: Bool { stopped.load(ordering: .sequentiallyConsistent) }
}
