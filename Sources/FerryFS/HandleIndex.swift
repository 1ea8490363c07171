import FerrySystem

/// A file handle with the file system it belongs to (handles are unique per file system only).
struct IndexedHandle: Hashable, Sendable {
    let device: UInt64
    let handle: FileHandle
}

/// File handle → node id for the nodes the kernel holds, so a host change reported by file
/// handle (fanotify) finds its node without touching the file. Kept only while change
/// notifications are on. Split into shards by the handle's hash, each behind its own lock.
final class HandleIndex: Sendable {
    private static let shardCount = 16
    private let shards = (0..<HandleIndex.shardCount).map { _ in Locked<[IndexedHandle: UInt64]>([:]) }

    private func shard(_ handle: IndexedHandle) -> Locked<[IndexedHandle: UInt64]> {
        shards[handle.hashValue & (HandleIndex.shardCount - 1)]
    }

    /// Records that `handle` names `nodeID` (a newer node for the same handle replaces it).
    func insert(_ handle: IndexedHandle, nodeID: UInt64) {
        shard(handle).withLock { $0[handle] = nodeID }
    }

    /// Forgets `handle` if it still names `nodeID`.
    func remove(_ handle: IndexedHandle, nodeID: UInt64) {
        shard(handle).withLock { map in
            if map[handle] == nodeID { map[handle] = nil }
        }
    }

    /// The node `handle` names, if the kernel holds one.
    func nodeID(for handle: IndexedHandle) -> UInt64? {
        shard(handle).withLock { $0[handle] }
    }
}
