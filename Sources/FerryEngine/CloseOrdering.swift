import FerryProtocol
import FerrySystem

/// Makes lock requests see every close the kernel queued before them (protocol/locks.md).
///
/// A process's last close of a file ends with RELEASE (and each close with FLUSH), which drops
/// the locks held through that open file. The kernel queues RELEASE before close(2) returns
/// but does not wait for it, so a lock request that another process sends right after can be
/// read by another request thread and answered first: it would still see the dropped lock.
///
/// The kernel numbers requests (`unique`) in the order it queues them and hands them out in
/// that order. The transport announces each request as it reads it (`arrived`), one reader at
/// a time, so when a lock request is handled every earlier close is already announced; the
/// lock request then waits until those on its node are done (`waitForEarlierCloses`).
final class CloseOrdering: Sendable {
    /// Closes announced and not yet finished: unique → node.
    private let pending = HostCondition<[UInt64: UInt64]>([:])

    /// Whether `opcode` ends locks: FLUSH (POSIX locks of the owner), RELEASE, RELEASEDIR.
    static func isClose(_ opcode: UInt32) -> Bool {
        opcode == Opcode.flush.rawValue || opcode == Opcode.release.rawValue || opcode == Opcode.releasedir.rawValue
    }

    /// Whether `opcode` asks about or takes locks.
    static func isLock(_ opcode: UInt32) -> Bool {
        opcode == Opcode.getlk.rawValue || opcode == Opcode.setlk.rawValue || opcode == Opcode.setlkw.rawValue
    }

    /// A request was read; call it before the next request is read.
    func arrived(_ header: InHeader) {
        guard CloseOrdering.isClose(header.opcode) else { return }
        pending.update { $0[header.unique] = header.nodeID }
    }

    /// The close `header` is done (whatever its outcome).
    func finished(_ header: InHeader) {
        guard CloseOrdering.isClose(header.opcode) else { return }
        pending.update { _ = $0.removeValue(forKey: header.unique) }
    }

    /// Blocks until no close of node `nodeID` queued before request `unique` is pending.
    func waitForEarlierCloses(nodeID: UInt64, unique: UInt64) {
        pending.wait { closes in !closes.contains { $0.key < unique && $0.value == nodeID } }
    }
}
