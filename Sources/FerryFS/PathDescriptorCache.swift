import FerrySystem
import Glibc

/// O_PATH descriptors of recently used inodes that are kept as file handles.
///
/// A file-handle inode costs no descriptor while the kernel merely holds it, but every request
/// on it used to open it (open_by_handle_at, with two credential switches around it) and close
/// it again. This table keeps the descriptors of the inodes used last, within a fixed share of
/// RLIMIT_NOFILE (`capacity(forDescriptorLimit:)`), so hot directories and files just looked
/// up are reached without a syscall.
///
/// Two-way set associative: each node id has a pair of slots (by a hash of the id); a new
/// descriptor takes a free slot of its pair, else replaces the one of the two used less recently.
/// 64 shards, each behind its own lock. Descriptors are `OwnedFD` objects: one taken out stays
/// open while the request uses it, even if it is evicted meanwhile.
///
/// A node id always names the same host file (ids counted out are never reused in a run;
/// derived ids come from the file's own handle), so a slot can only be stale in one way: the
/// file was deleted on the host. `PathDescriptorCache.isLinked` tells, and the caller then
/// opens by handle as before, which fails with ESTALE as it always did.
final class PathDescriptorCache: Sendable {
    private struct Slot {
        var nodeID: UInt64 = 0
        var fd: OwnedFD? = nil
        /// Used more recently than the other slot of its pair.
        var recent = false
    }

    private static let shardCount = 64
    private let shards: [Locked<[Slot]>]
    private let slotsPerShard: Int
    /// Descriptors kept at most.
    let capacity: Int

    /// Room for `capacity` descriptors (rounded down to a multiple of 128; 0 keeps none).
    init(capacity: Int) {
        slotsPerShard = max(0, capacity) / (2 * PathDescriptorCache.shardCount) * 2
        self.capacity = slotsPerShard * PathDescriptorCache.shardCount
        let perShard = slotsPerShard
        shards = (0..<PathDescriptorCache.shardCount).map { _ in Locked([Slot](repeating: Slot(), count: perShard)) }
    }

    /// The share of the descriptor limit the cache may use: a sixteenth, at most 16,384 (64
    /// under the common 1,024; 16,384 under the 1,048,576 Ferry raises itself to as root). Each
    /// kept descriptor holds the host inode in memory (about a kilobyte of kernel memory).
    static func capacity(forDescriptorLimit limit: Int) -> Int {
        min(16384, limit / 16)
    }

    /// The cache for this process's RLIMIT_NOFILE.
    static func forThisProcess() -> PathDescriptorCache {
        PathDescriptorCache(capacity: capacity(forDescriptorLimit: DescriptorLimit.current))
    }

    /// The shard and the first slot of the pair that may hold `nodeID`.
    func place(_ nodeID: UInt64) -> (shard: Int, pair: Int) {
        let mixed = nodeID &* 0x9E37_79B9_7F4A_7C15
        return (Int(mixed >> 58), Int((mixed >> 20) % UInt64(slotsPerShard / 2)) * 2)
    }

    /// The kept descriptor of `nodeID`, if any.
    func descriptor(of nodeID: UInt64) -> OwnedFD? {
        guard slotsPerShard > 0 else { return nil }
        let (shard, pair) = place(nodeID)
        return shards[shard].withLock { slots in
            for slot in pair...pair + 1 where slots[slot].nodeID == nodeID && slots[slot].fd != nil {
                slots[slot].recent = true
                slots[slot ^ 1].recent = false
                return slots[slot].fd
            }
            return nil
        }
    }

    /// Keeps `fd` (an O_PATH descriptor of `nodeID`'s file): in place of `nodeID`'s previous
    /// one, else in a free slot of its pair, else in place of the pair's less recently used.
    func store(_ fd: OwnedFD, for nodeID: UInt64) {
        guard slotsPerShard > 0 else { return }
        let (shard, pair) = place(nodeID)
        let evicted = shards[shard].withLock { slots -> OwnedFD? in
            let slot = (pair...pair + 1).first { slots[$0].nodeID == nodeID && slots[$0].fd != nil }
                ?? (pair...pair + 1).first { slots[$0].fd == nil }
                ?? (slots[pair].recent ? pair + 1 : pair)
            let old = slots[slot].fd
            slots[slot] = Slot(nodeID: nodeID, fd: fd, recent: true)
            slots[slot ^ 1].recent = false
            return old
        }
        _ = evicted   // closed outside the lock (unless a request still uses it)
    }

    /// Drops `nodeID`'s descriptor (the kernel forgot the node, or its file is gone); with
    /// `only`, only if the slot still holds that very descriptor.
    func remove(_ nodeID: UInt64, only: OwnedFD? = nil) {
        guard slotsPerShard > 0 else { return }
        let (shard, pair) = place(nodeID)
        let evicted = shards[shard].withLock { slots -> OwnedFD? in
            guard let slot = (pair...pair + 1).first(where: { slots[$0].nodeID == nodeID && slots[$0].fd != nil }),
                  only == nil || slots[slot].fd === only else { return nil }
            let old = slots[slot].fd
            slots[slot] = Slot()
            return old
        }
        _ = evicted
    }

    /// Descriptors kept right now (for tests).
    var count: Int { shards.reduce(0) { total, shard in total + shard.withLock { $0.filter { $0.fd != nil }.count } } }

    /// Whether the file behind `fd` still has a name on the host (open_by_handle_at refuses a
    /// deleted file with ESTALE, and a kept descriptor must not outlive that answer).
    static func isLinked(_ fd: Int32) -> Bool {
        guard let links = try? Host.linkCount(fd) else { return false }
        return links > 0
    }
}
