import FerrySystem

/// File handle → node id for the nodes the kernel holds, so a host change reported by file
/// handle (fanotify) finds its node without touching the file. Kept only while change
/// notifications are on. Split into shards by the handle's hash, each behind its own lock.
final class HandleIndex: Sendable {
    private static let shardCount = 16
    private let shards = (0..<HandleIndex.shardCount).map { _ in Locked<[FileHandle: UInt64]>([:]) }

    private func shard(_ handle: FileHandle) -> Locked<[FileHandle: UInt64]> {
        shards[handle.hashValue & (HandleIndex.shardCount - 1)]
    }

    /// Records that `handle` names `nodeID` (a newer node for the same handle replaces it).
    func insert(_ handle: FileHandle, nodeID: UInt64) {
        shard(handle).withLock { $0[handle] = nodeID }
    }

    /// Forgets `handle` if it still names `nodeID`.
    func remove(_ handle: FileHandle, nodeID: UInt64) {
        shard(handle).withLock { map in
            if map[handle] == nodeID { map[handle] = nil }
        }
    }

    /// The node `handle` names, if the kernel holds one.
    func nodeID(for handle: FileHandle) -> UInt64? {
        shard(handle).withLock { $0[handle] }
    }
}
