import CFerrySys
import FerrySystem
import Synchronization

/// Hears about what the kernel starts and stops holding: directory nodes (to watch each) and
/// file systems other than the shared root's (mounts below SOURCE, to watch each).
public protocol InodeStoreObserver: Sendable {
    /// A new directory node; `fd` is a descriptor of it, valid only during the call.
    func remembered(directory nodeID: UInt64, fd: Int32)
    /// The kernel forgot the directory node.
    func forgotten(directory nodeID: UInt64)
    /// The first node on file system `device` (not the root's); `fd` is a descriptor on it,
    /// valid only during the call.
    func reached(filesystem device: UInt64, fd: Int32)
}

extension InodeStoreObserver {
    public func remembered(directory nodeID: UInt64, fd: Int32) {}
    public func forgotten(directory nodeID: UInt64) {}
    public func reached(filesystem device: UInt64, fd: Int32) {}
}

/// The node ids the kernel holds, with their lookup counts.
///
/// LOOKUP-like replies add one reference, FORGET and BATCH_FORGET drop them, and at zero the
/// node is gone. Node ids are never reused. Node 1 is the shared root and is never forgotten.
///
/// The table is split into 64 shards, each with its own lock, so request threads rarely meet:
/// a node lives in the shard its key hashes to, and its id carries that shard in the low 6
/// bits, so lookups by key and by id both find it there.
public final class InodeStore: Sendable {
    private struct Entry {
        let inode: Inode
        var lookups: UInt64
        /// The node's entry in `handles`, if indexed.
        var indexedHandle: IndexedHandle? = nil
    }

    private struct Shard {
        var byID: [UInt64: Entry] = [:]
        var byKey: [InodeKey: UInt64] = [:]
        var nextSequence: UInt64 = 1
    }

    /// The root's node id, fixed by the FUSE protocol.
    public static let rootID: UInt64 = 1
    private static let shardBits = 6
    private static let shardCount = 1 << shardBits

    private let shards: [Locked<Shard>]
    private let mountFDs = Mutex<[UInt64: OwnedFD]>([:])
    private let rootMount: (id: UInt64, fd: OwnedFD)
    private let mode: InodeFileHandles
    /// File handle → node, kept when `indexHandles` is on (for change notifications).
    private let handles: HandleIndex?
    /// Who hears about directory nodes and file systems (the host watchers), if anyone.
    private let observers = Mutex<[any InodeStoreObserver]>([])
    private let hasObserver = Atomic<Bool>(false)
    /// File systems below the root's that nodes have been seen on.
    private let otherDevices = Mutex<Set<UInt64>>([])
    /// The shared root.
    public let root: Inode

    /// Creates the store with the shared directory's O_PATH descriptor as node 1; `rootDirectory`
    /// is a readable descriptor of it (open_by_handle_at refuses O_PATH mount descriptors).
    /// With `indexHandles` every node's file handle is recorded, so `nodeID(for:)` works.
    public init(rootFD: OwnedFD, rootDirectory: OwnedFD, rootStat: ferry_statx, mode: InodeFileHandles,
                indexHandles: Bool = false) throws(Errno) {
        self.mode = mode
        handles = indexHandles ? HandleIndex() : nil
        let key = InodeStore.key(of: rootStat)
        root = Inode(nodeID: InodeStore.rootID, key: key, type: .directory, location: .descriptor(rootFD))
        if mode == .mandatory {
            _ = try FileHandle.of(rootFD.rawValue)   // fail at start-up, not on the first lookup
        }
        rootMount = (key.mountID, rootDirectory)
        shards = (0..<InodeStore.shardCount).map { _ in Locked(Shard()) }
        let root = self.root
        let rootHandle = indexHandles ? (try? FileHandle.of(rootFD.rawValue).handle).map {
            IndexedHandle(device: key.device, handle: $0)
        } : nil
        if let rootHandle { handles?.insert(rootHandle, nodeID: InodeStore.rootID) }
        shard(of: key).withLock {
            $0.byID[InodeStore.rootID] = Entry(inode: root, lookups: 1, indexedHandle: rootHandle)
            $0.byKey[key] = InodeStore.rootID
        }
    }

    private func shard(of key: InodeKey) -> Locked<Shard> {
        shards[key.hashValue & (InodeStore.shardCount - 1)]
    }

    private func shard(ofID nodeID: UInt64) -> Locked<Shard> {
        shards[Int(nodeID & UInt64(InodeStore.shardCount - 1))]
    }

    /// The host identity of a statx result.
    public static func key(of stat: ferry_statx) -> InodeKey {
        InodeKey(device: DeviceNumber.make(major: stat.stx_dev_major, minor: stat.stx_dev_minor),
                 inode: stat.stx_ino, mountID: stat.stx_mnt_id)
    }

    /// The inode for `nodeID`; ESTALE when the kernel names a node it has forgotten.
    public func get(_ nodeID: UInt64) throws(Errno) -> Inode {
        if nodeID == InodeStore.rootID { return root }
        guard let inode = shard(ofID: nodeID).withLock({ $0.byID[nodeID]?.inode }) else { throw Errno.stale }
        return inode
    }

    /// Number of nodes the kernel holds (root included).
    public var count: Int { shards.reduce(0) { total, shard in total + shard.withLock { $0.byID.count } } }

    /// The node the kernel holds for file handle `handle` on file system `device`; nil without
    /// `indexHandles`.
    public func nodeID(for handle: FileHandle, device: UInt64) -> UInt64? {
        handles?.nodeID(for: IndexedHandle(device: device, handle: handle))
    }

    /// The node the kernel holds for the host inode `key`, if any.
    public func nodeID(for key: InodeKey) -> UInt64? {
        shard(of: key).withLock { $0.byKey[key] }
    }

    /// Every node the kernel holds (root included), e.g. to invalidate them all.
    public func heldNodeIDs() -> [UInt64] {
        shards.flatMap { shard in shard.withLock { Array($0.byID.keys) } }
    }

    /// Records one more kernel reference to the inode open as `fd` (any descriptor of it,
    /// owned by the caller, who closes it afterwards) and returns its node.
    /// `keepDescriptor` forces an O_PATH descriptor (files that have no name, e.g. O_TMPFILE).
    ///
    /// A known key is the same file only if its file handle matches too: the host reuses inode
    /// numbers, and a node the kernel still holds for a deleted file must not answer for the
    /// new file that got its number (the handle's generation tells them apart).
    public func remember(fd: Int32, stat: ferry_statx, keepDescriptor: Bool = false) throws(Errno) -> (inode: Inode, isNew: Bool) {
        let key = InodeStore.key(of: stat)
        var handle: FileHandle? = nil
        if mode != .never && !keepDescriptor {
            do { handle = try FileHandle.of(fd).handle }
            catch { if mode == .mandatory { throw error } }
        }
        if let known = reference(key, handle: handle) { return (known, false) }
        let location = try makeLocation(fd: fd, key: key, handle: handle)
        let shardIndex = UInt64(key.hashValue & (InodeStore.shardCount - 1))
        let indexed = handles == nil ? nil : (handle ?? (try? FileHandle.of(fd).handle)).map {
            IndexedHandle(device: key.device, handle: $0)
        }
        let (inode, isNew) = shard(of: key).withLock { s -> (Inode, Bool) in
            if let id = s.byKey[key], var entry = s.byID[id], entry.inode.isSameFile(as: handle) {
                if id != InodeStore.rootID {
                    entry.lookups += 1
                    s.byID[id] = entry
                }
                return (entry.inode, false)
            }
            let id = s.nextSequence << UInt64(InodeStore.shardBits) | shardIndex
            s.nextSequence += 1
            let inode = Inode(nodeID: id, key: key, type: FileType(mode: UInt32(stat.stx_mode)), location: location)
            s.byID[id] = Entry(inode: inode, lookups: 1, indexedHandle: indexed)
            if let indexed { handles?.insert(indexed, nodeID: id) }
            s.byKey[key] = id   // a stale node with this key stays reachable by id until forgotten
            return (inode, true)
        }
        if isNew { announce(inode, fd: fd) }
        return (inode, isNew)
    }

    /// Adds a reference to an inode already known (e.g. "." in a lookup).
    public func reference(_ inode: Inode) {
        guard inode.nodeID != InodeStore.rootID else { return }
        shard(ofID: inode.nodeID).withLock { s in
            guard inode.nodeID != InodeStore.rootID, var entry = s.byID[inode.nodeID] else { return }
            entry.lookups += 1
            s.byID[inode.nodeID] = entry
        }
    }

    /// Drops `count` references of `nodeID` (FORGET); the node goes away at zero.
    public func forget(_ nodeID: UInt64, count: UInt64) {
        guard nodeID != InodeStore.rootID else { return }
        let removed: Inode? = shard(ofID: nodeID).withLock { s in
            guard var entry = s.byID[nodeID] else { return nil }
            entry.lookups = entry.lookups > count ? entry.lookups - count : 0
            if entry.lookups > 0 { s.byID[nodeID] = entry; return nil }
            s.byID[nodeID] = nil
            if s.byKey[entry.inode.key] == nodeID { s.byKey[entry.inode.key] = nil }
            if let indexed = entry.indexedHandle { handles?.remove(indexed, nodeID: nodeID) }
            return entry.inode
        }
        if let removed, removed.type == .directory {
            for observer in currentObservers { observer.forgotten(directory: nodeID) }
        }
        _ = removed  // released (and its descriptor closed) outside the lock
    }

    /// Tells `observer` about every directory node and every file system below the root's from
    /// now on (and about the root directory at once).
    public func observe(_ observer: any InodeStoreObserver) {
        observers.withLock { $0.append(observer) }
        hasObserver.store(true, ordering: .releasing)
        observer.remembered(directory: InodeStore.rootID, fd: root.keptDescriptor)
    }

    private var currentObservers: [any InodeStoreObserver] {
        guard hasObserver.load(ordering: .acquiring) else { return [] }
        return observers.withLock { $0 }
    }

    /// Tells the observers about a new node: a directory, or the first node of a file system.
    private func announce(_ inode: Inode, fd: Int32) {
        let observers = currentObservers
        guard !observers.isEmpty else { return }
        if inode.type == .directory {
            for observer in observers { observer.remembered(directory: inode.nodeID, fd: fd) }
        }
        let device = inode.key.device
        if device != root.key.device && otherDevices.withLock({ $0.insert(device).inserted }) {
            for observer in observers { observer.reached(filesystem: device, fd: fd) }
        }
    }

    private func reference(_ key: InodeKey, handle: FileHandle?) -> Inode? {
        shard(of: key).withLock { s in
            guard let id = s.byKey[key], var entry = s.byID[id], entry.inode.isSameFile(as: handle) else { return nil }
            if id != InodeStore.rootID {
                entry.lookups += 1
                s.byID[id] = entry
            }
            return entry.inode
        }
    }

    private func makeLocation(fd: Int32, key: InodeKey, handle: FileHandle?) throws(Errno) -> Inode.Location {
        if let handle, let mount = try mountFD(for: key.mountID, anyFD: fd) {
            return .handle(handle, mount: mount)
        }
        return .descriptor(OwnedFD(try Host.reopen(fd, flags: HostFlags.oPath | HostFlags.oNoFollow)))
    }

    /// A readable descriptor on mount `mountID` for open_by_handle_at, kept for the server's
    /// lifetime. The first directory seen on a mount provides it; until then (nil) inodes of
    /// that mount keep O_PATH descriptors.
    private func mountFD(for mountID: UInt64, anyFD fd: Int32) throws(Errno) -> OwnedFD? {
        if mountID == rootMount.id { return rootMount.fd }
        if let known = mountFDs.withLock({ $0[mountID] }) { return known }
        guard let directory = try? Host.reopen(fd, flags: HostFlags.oRdOnly | HostFlags.oDirectory) else { return nil }
        let owned = OwnedFD(directory)
        return mountFDs.withLock { fds in
            if let known = fds[mountID] { return known }
            fds[mountID] = owned
            return owned
        }
    }
}
