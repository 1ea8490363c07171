import FerryFS
import FerryProtocol
import FerrySystem
import Glibc
import Logging
import Synchronization

/// Sends one encoded notification to the kernel; returns 0 or the errno the write failed with.
public typealias NotificationSender = @Sendable (ByteView) -> Int32

/// The ring's one consumer: drains records in batches, coalesces them and writes the
/// invalidations to the kernel; after an overflow it revalidates everything the kernel holds.
/// It runs on its own thread, never inside a request handler.
final class Invalidator: Sendable {
    /// Records taken from the ring before a batch is sent.
    static let batchLimit = 1024

    let sink: ChangeSink
    let inodes: InodeStore
    let minor: UInt32
    let send: NotificationSender
    let logger: Logger
    /// When the last overflow was logged, and how many happened since (one line per 10 s at most).
    private let overflowLog = Mutex<(last: UInt64, unlogged: Int)>((0, 0))
    /// Inode invalidations the kernel refused (ENOENT), to be sent once more: a node whose
    /// LOOKUP reply is still on its way is not known to the kernel yet.
    private let retries = Mutex<[(due: ContinuousClock.Instant, notification: FUSENotification)]>([])
    /// How long a refused inode invalidation waits before its one retry.
    static let retryDelay = Duration.milliseconds(20)

    init(sink: ChangeSink, inodes: InodeStore, minor: UInt32, send: @escaping NotificationSender, logger: Logger) {
        self.sink = sink; self.inodes = inodes; self.minor = minor; self.send = send; self.logger = logger
    }

    /// Serves until the sink's stop counter is signalled.
    func run() {
        let buffer = MessageBuffer(capacity: FUSENotification.maxSize)
        while true {
            let ready = Host.waitReadable([sink.wake.fd.rawValue, sink.stop.fd.rawValue], timeoutMilliseconds: retryTimeout())
            if ready.count > 1 && ready[1] { return }
            if ready[0] {
                sink.wake.drain()
                drain(buffer)
            }
            sendDueRetries(buffer)
        }
    }

    /// Milliseconds until the earliest retry is due (-1: none pending).
    private func retryTimeout() -> Int32 {
        guard let due = retries.withLock({ $0.first?.due }) else { return -1 }
        let left = ContinuousClock.now.duration(to: due)
        guard left > .zero else { return 0 }
        let (seconds, attoseconds) = left.components
        return Int32(min(seconds * 1000 + attoseconds / 1_000_000_000_000_000 + 1, 60_000))
    }

    private func sendDueRetries(_ buffer: MessageBuffer) {
        let now = ContinuousClock.now
        let due = retries.withLock { pending -> [FUSENotification] in
            let split = pending.firstIndex { $0.due > now } ?? pending.count
            defer { pending.removeFirst(split) }
            return pending[0..<split].map(\.notification)
        }
        for notification in due {
            sink.stats.retries.increment()
            _ = write(notification, buffer, retryIfRefused: false)
        }
    }

    /// Empties the ring, sending a batch every `batchLimit` records; an overflow seen at any
    /// point ends with everything revalidated.
    func drain(_ buffer: MessageBuffer) {
        var overflow = sink.ring.takeOverflow()
        var batch = InvalidationBatch()
        while let record = sink.ring.pop() {
            batch.add(record)
            if batch.recordCount >= Invalidator.batchLimit {
                if !overflow { deliver(batch, buffer) }
                batch = InvalidationBatch()
                overflow = overflow || sink.ring.takeOverflow()
            }
        }
        overflow = overflow || sink.ring.takeOverflow()
        if overflow {
            revalidateEverything(buffer)
        } else if !batch.isEmpty {
            deliver(batch, buffer)
        }
    }

    private func deliver(_ batch: InvalidationBatch, _ buffer: MessageBuffer) {
        sink.stats.batches.increment()
        for notification in batch.notifications() {
            let error = write(notification, buffer)
            if case let .delete(parent, _, name) = notification, error != 0 {
                // The kernel had no such entry for that child, or a non-empty directory there:
                // dropping the name is still right.
                _ = write(.invalidateEntry(parent: parent, name: name), buffer)
            }
        }
    }

    /// After lost changes: every cached name must be looked up again (INC_EPOCH, FUSE 7.44)
    /// and every held node's attributes and data are dropped.
    private func revalidateEverything(_ buffer: MessageBuffer) {
        sink.stats.revalidations.increment()
        let nodes = inodes.heldNodeIDs()
        let now = UInt64(time(nil))
        let (log, skipped) = overflowLog.withLock { state -> (Bool, Int) in
            guard state.last == 0 || now >= state.last + 10 else { state.unlogged += 1; return (false, 0) }
            let skipped = state.unlogged
            state = (now, 0)
            return (true, skipped)
        }
        if log {
            let more = skipped > 0 ? " (\(skipped) more overflow(s) since the last report)" : ""
            logger.notice("change notifications overflowed; revalidating all \(nodes.count) cached node(s)\(more)")
        }
        if minor >= FUSENotification.incrementEpoch.minimumMinor {
            _ = write(.incrementEpoch, buffer)
        }
        for node in nodes {
            _ = write(.invalidateInode(node: node, offset: 0, length: 0), buffer)
        }
    }

    /// Writes one notification if the kernel's protocol version has it; returns the errno. A
    /// refused inode invalidation is queued for one retry.
    private func write(_ notification: FUSENotification, _ buffer: MessageBuffer, retryIfRefused: Bool = true) -> Int32 {
        guard minor >= notification.minimumMinor else { return ENOSYS }
        let error = send(notification.encode(into: buffer))
        switch notification {
        case .invalidateInode: sink.stats.inodeInvalidations.increment()
        case .invalidateEntry: sink.stats.entryInvalidations.increment()
        case .delete: sink.stats.deletes.increment()
        case .incrementEpoch: sink.stats.epochs.increment()
        }
        if error != 0 {
            sink.stats.refused.increment()
            if error == ENOENT, retryIfRefused, case .invalidateInode = notification {
                let due = ContinuousClock.now.advanced(by: Invalidator.retryDelay)
                retries.withLock { $0.append((due, notification)) }
            }
            if error != ENOENT && error != ENOTDIR && error != ENOTEMPTY && error != EBUSY {
                logger.debug("notification \(notification.code) refused: \(Errno(rawValue: error))")
            }
        }
        return error
    }
}
