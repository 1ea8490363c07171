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

    init(sink: ChangeSink, inodes: InodeStore, minor: UInt32, send: @escaping NotificationSender, logger: Logger) {
        self.sink = sink; self.inodes = inodes; self.minor = minor; self.send = send; self.logger = logger
    }

    /// Serves until the sink's stop counter is signalled.
    func run() {
        let buffer = MessageBuffer(capacity: FUSENotification.maxSize)
        while true {
            let ready = Host.waitReadable([sink.wake.fd.rawValue, sink.stop.fd.rawValue], timeoutMilliseconds: -1)
            if ready.count > 1 && ready[1] { return }
            sink.wake.drain()
            drain(buffer)
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

    /// Writes one notification if the kernel's protocol version has it; returns the errno.
    private func write(_ notification: FUSENotification, _ buffer: MessageBuffer) -> Int32 {
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
            if error != ENOENT && error != ENOTDIR && error != ENOTEMPTY && error != EBUSY {
                logger.debug("notification \(notification.code) refused: \(Errno(rawValue: error))")
            }
        }
        return error
    }
}
