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
    /// Node `nodeID` got its first passed-through file open for writing (`present`), or lost
    /// its last passed-through file. `fd` is a descriptor of it, valid only during the call.
    func passthroughWriters(_ nodeID: UInt64, present: Bool, fd: Int32)
}

extension InodeStoreObserver {
    public func remembered(directory nodeID: UInt64, fd: Int32) {}
    public func forgotten(directory nodeID: UInt64) {}
    public func reached(filesystem device: UInt64, fd: Int32) {}
    public func passthroughWriters(_ nodeID: UInt64, present: Bool, fd: Int32) {}
}

/// The node ids the kernel holds, with their lookup counts.
///
/// LOOKUP-like replies add one reference, FORGET and BATCH_FORGET drop them, and at zero the
/// node is gone. Node 1 is the shared root and is never forgotten.
///
/// Node ids: a file on the root's own mount whose file handle fits `PersistentNodeIDs` gets
/// the id derived from that handle (generation 0), the same id in every run, so file handles
/// of the mount outlive the kernel's cache, remounts and restarts. Every other file (another
/// file system below SOURCE, a handle that does not fit, `--inode-file-handles never`, or a
/// derived id already taken by another node) gets an id counted out by this run, never reused
/// within it, with `allocatedGeneration`, random per start.
///
/// Two sharded tables, each shard behind its own lock, so request threads rarely meet:
/// node id → node (sharded by a hash of the id) and host inode → node id (sharded by the key).
/// A key shard is always locked before a node shard.
public final class InodeStore: Sendable {
    private struct Entry {
        let inode: Inode
        var lookups: UInt64
        /// The node's entry in `handles`, if indexed.
        var indexedHandle: IndexedHandle? = nil
    }

    private struct NodeShard {
        var entries: [UInt64: Entry] = [:]
        /// Derived ids of non-directories this run handed out (bounded; see `wasHandedOut`).
        var handedOut: Set<UInt64> = []

        /// Remembers that derived id `nodeID` was handed out, dropping an arbitrary older one
        /// when full.
        mutating func recordHandedOut(_ nodeID: UInt64) {
            if handedOut.count >= InodeStore.handedOutPerShard, !handedOut.contains(nodeID) {
                handedOut.remove(at: handedOut.startIndex)
            }
            handedOut.insert(nodeID)
        }
    }

    /// The root's node id, fixed by the FUSE protocol.
    public static let rootID: UInt64 = 1
    private static let shardCount = 64
    /// How many handed-out ids each node shard remembers (1,048,576 in all).
    private static let handedOutPerShard = 16_384

    private let nodeShards: [Locked<NodeShard>]
    private let keyShards: [Locked<[InodeKey: UInt64]>]
    /// The next id to count out (ids 0 and 1 are never counted out).
    private let nextAllocated = Atomic<UInt64>(2)
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
    /// How node ids derive from host file handles; nil when they cannot (no file handles, or
    /// the root's handle does not fit a node id): then every id is counted out.
    public let persistentIDs: PersistentNodeIDs?
    /// O_PATH descriptors of the file-handle inodes used last (none when every inode keeps a
    /// descriptor anyway).
    let pathDescriptors: PathDescriptorCache
    /// The FUSE generation of ids counted out by this run: random, never 0.
    public let allocatedGeneration = UInt64(UInt32.random(in: 1...UInt32.max))
    /// The bound on nodes held (the root not counted; `ResourceLimits.maxInodes`), if any.
    public let bound: ResourceBound?
    /// Host changes the watchers could not match to a node (see `UnmatchedChanges`).
    public let unmatchedChanges = UnmatchedChanges()

    /// Creates the store with the shared directory's O_PATH descriptor as node 1; `rootDirectory`
    /// is a readable descriptor of it (open_by_handle_at refuses O_PATH mount descriptors).
    /// With `indexHandles` every node's file handle is recorded, so `nodeID(for:)` works.
    /// `bound` limits how many nodes (the root aside) may be held at once: `remember` refuses a
    /// new one past it with the bound's errno.
    public init(rootFD: OwnedFD, rootDirectory: OwnedFD, rootStat: ferry_statx, mode: InodeFileHandles,
                indexHandles: Bool = false, bound: ResourceBound? = nil) throws(Errno) {
        self.mode = mode
        self.bound = bound
        pathDescriptors = mode == .never ? PathDescriptorCache(capacity: 0) : PathDescriptorCache.forThisProcess()
        handles = indexHandles ? HandleIndex() : nil
        let key = InodeStore.key(of: rootStat)
        root = Inode(nodeID: InodeStore.rootID, generation: 0, key: key, type: .directory, location: .descriptor(rootFD))
        if mode == .mandatory {
            _ = try FileHandle.of(rootFD.rawValue)   // fail at start-up, not on the first lookup
        }
        let rootHandle = try? FileHandle.of(rootFD.rawValue).handle
        persistentIDs = mode == .never ? nil : rootHandle.flatMap { PersistentNodeIDs(rootHandle: $0) }
        rootMount = (key.mountID, rootDirectory)
        nodeShards = (0..<InodeStore.shardCount).map { _ in Locked(NodeShard()) }
        keyShards = (0..<InodeStore.shardCount).map { _ in Locked([:]) }
        let root = self.root
        let rootIndexed = indexHandles ? rootHandle.map { IndexedHandle(device: key.device, handle: $0) } : nil
        if let rootIndexed { handles?.insert(rootIndexed, nodeID: InodeStore.rootID) }
        nodeShard(InodeStore.rootID).withLock {
            $0.entries[InodeStore.rootID] = Entry(inode: root, lookups: 1, indexedHandle: rootIndexed)
        }
        keyShard(key).withLock { $0[key] = InodeStore.rootID }
    }

    private func keyShard(_ key: InodeKey) -> Locked<[InodeKey: UInt64]> {
        keyShards[key.hashValue & (InodeStore.shardCount - 1)]
    }

    /// Derived ids put the host's inode number in the low or the high half, so the id is mixed
    /// (Fibonacci hashing) and its top bits pick the shard.
    private func nodeShard(_ nodeID: UInt64) -> Locked<NodeShard> {
        nodeShards[Int((nodeID &* 0x9E37_79B9_7F4A_7C15) >> 58)]
    }

    /// The host identity of a statx result.
    public static func key(of stat: ferry_statx) -> InodeKey {
        InodeKey(device: DeviceNumber.make(major: stat.stx_dev_major, minor: stat.stx_dev_minor),
                 inode: stat.stx_ino, mountID: stat.stx_mnt_id)
    }

    /// The inode for `nodeID`; ESTALE when the kernel names a node it has forgotten.
    public func get(_ nodeID: UInt64) throws(Errno) -> Inode {
        if nodeID == InodeStore.rootID { return root }
        guard let inode = nodeShard(nodeID).withLock({ $0.entries[nodeID]?.inode }) else { throw Errno.stale }
        return inode
    }

    /// Number of nodes the kernel holds (root included).
    public var count: Int { nodeShards.reduce(0) { total, shard in total + shard.withLock { $0.entries.count } } }

    /// The node the kernel holds for file handle `handle` on file system `device`; nil without
    /// `indexHandles`.
    public func nodeID(for handle: FileHandle, device: UInt64) -> UInt64? {
        handles?.nodeID(for: IndexedHandle(device: device, handle: handle))
    }

    /// The node the kernel holds for the host inode `key`, if any.
    public func nodeID(for key: InodeKey) -> UInt64? {
        keyShard(key).withLock { $0[key] }
    }

    /// Every node the kernel holds (root included), e.g. to invalidate them all.
    public func heldNodeIDs() -> [UInt64] {
        nodeShards.flatMap { shard in shard.withLock { Array($0.entries.keys) } }
    }

    /// The id derived from `handle` for a file on mount `mountID`, if it has one: only files
    /// on the root's own mount do (handles are unique per file system, and a node id must name
    /// one file wherever the kernel asks for it).
    public func persistentID(of handle: FileHandle, mountID: UInt64) -> UInt64? {
        guard mountID == rootMount.id else { return nil }
        return persistentIDs?.nodeID(for: handle)
    }

    /// Opens the host file a derived node id names, through the root's mount, with `flags`
    /// (typically O_PATH). Needs CAP_DAC_READ_SEARCH (run it as root). ESTALE when `nodeID`
    /// is not a derived id or its file is gone. The file may lie anywhere on the file system:
    /// the caller must check that it is inside the shared directory.
    public func openDerived(_ nodeID: UInt64, flags: Int32) throws(Errno) -> Int32 {
        guard let handle = persistentIDs?.handle(for: nodeID) else { throw Errno.stale }
        do {
            return try handle.open(mountFD: rootMount.fd.rawValue, flags: flags)
        } catch .permission {
            throw Errno.stale
        } catch .invalid {
            throw Errno.stale   // a handle the file system cannot even parse
        }
    }

    /// Whether this run handed out derived id `nodeID` for a non-directory (in a reply, so the
    /// file was inside the shared directory then). Remembers the last 1,048,576 or so.
    public func wasHandedOut(_ nodeID: UInt64) -> Bool {
        nodeShard(nodeID).withLock { $0.handedOut.contains(nodeID) }
    }

    /// Records one more kernel reference to the inode open as `fd` (any descriptor of it,
    /// owned by the caller, who closes it afterwards) and returns its node.
    /// `keepDescriptor` forces an O_PATH descriptor (files that have no name, e.g. O_TMPFILE).
    ///
    /// A known key is the same file only if its file handle matches too: the host reuses inode
    /// numbers, and a node the kernel still holds for a deleted file must not answer for the
    /// new file that got its number (the handle's generation tells them apart).
    /// `room`, taken by `withRoom` before the file was created, is used for a new node.
    public func remember(fd: Int32, stat: ferry_statx, keepDescriptor: Bool = false,
                         room: Room? = nil) throws(Errno) -> (inode: Inode, isNew: Bool) {
        let key = InodeStore.key(of: stat)
        var handle: FileHandle? = nil
        if mode != .never && !keepDescriptor {
            do { handle = try FileHandle.of(fd).handle }
            catch { if mode == .mandatory { throw error } }
        }
        if let known = reference(key, handle: handle) { return (known, false) }
        // One place in the bound, given back below unless a new node is added, else by `forget`.
        if let room, room.held { room.held = false } else { try bound?.acquire() }
        let location: Inode.Location
        do { location = try makeLocation(fd: fd, key: key, handle: handle) } catch {
            bound?.release()
            throw error
        }
        let indexed = handles == nil ? nil : (handle ?? (try? FileHandle.of(fd).handle)).map {
            IndexedHandle(device: key.device, handle: $0)
        }
        let type = FileType(mode: UInt32(stat.stx_mode))
        let derived = handle.flatMap { persistentID(of: $0, mountID: key.mountID) }
        let (inode, isNew) = keyShard(key).withLock { keys -> (Inode, Bool) in
            if let id = keys[key], let known = referenceHeld(id, if: { $0.isSameFile(as: handle) }) {
                return (known, false)
            }
            var candidate = derived
            while true {
                let id = candidate ?? nextAllocated.wrappingAdd(1, ordering: .relaxed).oldValue
                let inode = Inode(nodeID: id, generation: candidate == nil ? allocatedGeneration : 0, key: key,
                                  type: type, location: location)
                let added = nodeShard(id).withLock { shard -> Bool in
                    guard shard.entries[id] == nil else { return false }   // taken by another file
                    shard.entries[id] = Entry(inode: inode, lookups: 1, indexedHandle: indexed)
                    if candidate != nil && type != .directory { shard.recordHandedOut(id) }
                    return true
                }
                if added {
                    if let indexed { handles?.insert(indexed, nodeID: id) }
                    keys[key] = id   // a stale node with this key stays reachable by id until forgotten
                    return (inode, true)
                }
                candidate = nil
            }
        }
        if isNew { announce(inode, fd: fd) } else { bound?.release() }
        return (inode, isNew)
    }

    /// A place for one new node in the bound, taken before a host file is created and handed
    /// to `remember`, which then counts the node against it instead of taking another.
    public final class Room {
        /// Still the caller's (not yet handed to a node).
        fileprivate var held = true
    }

    /// Runs `body` with a place for one new node reserved: throws the bound's errno (with its
    /// warning) before `body` runs if there is none, so that a client at the bound gets its
    /// error before anything changes on the host. A place `body` did not use is given back.
    public func withRoom<R>(_ body: (Room) throws(Errno) -> R) throws(Errno) -> R {
        try bound?.acquire()
        let room = Room()
        defer { if room.held { bound?.release() } }
        return try body(room)
    }

    /// Adds a reference to an inode already known (e.g. "." in a lookup); false if the kernel
    /// has forgotten it meanwhile (the root always stays).
    @discardableResult
    public func reference(_ inode: Inode) -> Bool {
        guard inode.nodeID != InodeStore.rootID else { return true }
        return referenceHeld(inode.nodeID, if: { $0 === inode }) != nil
    }

    /// Drops `count` references of `nodeID` (FORGET); the node goes away at zero.
    public func forget(_ nodeID: UInt64, count: UInt64) {
        guard nodeID != InodeStore.rootID,
              let key = nodeShard(nodeID).withLock({ $0.entries[nodeID]?.inode.key }) else { return }
        // The key shard first (lock order), so no lookup of the same file can see the key
        // still naming this node while it goes away.
        let removed: Inode? = keyShard(key).withLock { keys in
            let removed = nodeShard(nodeID).withLock { shard -> Entry? in
                guard var entry = shard.entries[nodeID] else { return nil }
                entry.lookups = entry.lookups > count ? entry.lookups - count : 0
                if entry.lookups > 0 { shard.entries[nodeID] = entry; return nil }
                shard.entries[nodeID] = nil
                return entry
            }
            guard let removed else { return nil }
            if keys[removed.inode.key] == nodeID { keys[removed.inode.key] = nil }
            if let indexed = removed.indexedHandle { handles?.remove(indexed, nodeID: nodeID) }
            return removed.inode
        }
        if removed != nil {
            pathDescriptors.remove(nodeID)
            bound?.release()
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

    /// Tells the observers that node `nodeID` got its first, or lost its last, file that the
    /// kernel writes through a passthrough backing file (`fd`: a descriptor of it).
    public func passthroughWriters(_ nodeID: UInt64, present: Bool, fd: Int32) {
        for observer in currentObservers { observer.passthroughWriters(nodeID, present: present, fd: fd) }
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

    /// Whether some node is held for host inode `key` (which may still be another file that
    /// reused the number: `referenceKnown` tells).
    func holdsNode(for key: InodeKey) -> Bool {
        keyShard(key).withLock { $0[key] != nil }
    }

    /// Whether nodes may be kept as file handles (then a held node is matched by its handle).
    var keepsFileHandles: Bool { mode != .never }

    /// One more reference to the node already held for host inode `key` with file handle
    /// `handle` (nil only when `keepsFileHandles` is off); nil when no such node is held.
    func referenceKnown(_ key: InodeKey, handle: FileHandle?) -> Inode? {
        if handle == nil && keepsFileHandles { return nil }   // a handle node cannot be told apart
        return reference(key, handle: handle)
    }

    /// One more reference to the node of `key`, if the store holds one for this very file.
    private func reference(_ key: InodeKey, handle: FileHandle?) -> Inode? {
        keyShard(key).withLock { keys in keys[key].flatMap { referenceHeld($0, if: { $0.isSameFile(as: handle) }) } }
    }

    /// One more reference to node `nodeID` if it is held and its inode passes `accept`; the
    /// root's count stays 1.
    private func referenceHeld(_ nodeID: UInt64, if accept: (Inode) -> Bool) -> Inode? {
        nodeShard(nodeID).withLock { shard in
            guard var entry = shard.entries[nodeID], accept(entry.inode) else { return nil }
            if nodeID != InodeStore.rootID {
                entry.lookups += 1
                shard.entries[nodeID] = entry
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
