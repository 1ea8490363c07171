import CFerrySys
import FerrySystem
import Synchronization

/// What identifies a host inode: device, inode number and mount id (a bind mount of the same
/// file system is a different mount, so its inodes are distinct nodes).
public struct InodeKey: Hashable, Sendable {
    public let device: UInt64
    public let inode: UInt64
    public let mountID: UInt64
}

/// A host inode the kernel knows by a node id.
///
/// It holds either an O_PATH descriptor or a file handle; `withPathFD` hands out a descriptor
/// for the duration of one call either way. Lookup counts live in `InodeStore`.
public final class Inode: Sendable {
    /// How the inode is reached again.
    enum Location: Sendable {
        /// An O_PATH descriptor kept open for the inode's lifetime.
        case descriptor(OwnedFD)
        /// A file handle, opened on demand through a descriptor on its mount.
        case handle(FileHandle, mount: OwnedFD)
    }

    /// The FUSE node id.
    public let nodeID: UInt64
    /// The FUSE generation sent with the node id: 0 for the root and for ids derived from host
    /// file handles (the id itself carries the host's generation), a per-start random value for
    /// ids counted out by this run, so that a file handle from an earlier run is stale.
    public let generation: UInt64
    /// The host identity.
    public let key: InodeKey
    /// File type bits from the first lookup (a host inode never changes type).
    public let type: FileType?
    let location: Location
    /// The host version seen at the node's last open (`contentUnchangedSinceLastOpen`).
    let lastOpenedVersion = Mutex<ContentVersion?>(nil)

    init(nodeID: UInt64, generation: UInt64, key: InodeKey, type: FileType?, location: Location) {
        self.nodeID = nodeID; self.generation = generation; self.key = key; self.type = type
        self.location = location
    }

    /// Whether a file with this inode's key and file handle `handle` is this very file. An
    /// inode kept by descriptor pins the host inode, so its number cannot have been reused.
    func isSameFile(as handle: FileHandle?) -> Bool {
        guard case let .handle(mine, _) = location, let handle else { return true }
        return mine == handle
    }

    /// The O_PATH descriptor of an inode kept by descriptor (the root always is); -1 otherwise.
    var keptDescriptor: Int32 {
        if case let .descriptor(fd) = location { return fd.rawValue }
        return -1
    }

    /// Whether the inode is a symbolic link.
    public var isSymlink: Bool { type == .symlink }

    /// Whether the inode is kept as a file handle (opened on demand).
    var isHandle: Bool {
        if case .handle = location { return true }
        return false
    }

    /// Runs `body` with an O_PATH descriptor of the inode. For handle-based inodes the descriptor
    /// is opened (with Ferry's privileges) just for this call, unless `cache` keeps one; a
    /// descriptor opened here is offered to `cache`.
    public func withPathFD<R>(_ credentials: ThreadCredentials, _ body: (Int32) throws(Errno) -> R) throws(Errno) -> R {
        try withPathFD(credentials, cache: nil, body)
    }

    /// statx of a handle inode through the descriptor `cache` keeps of it, when there is one and
    /// the file still has a name: the statx itself is the liveness check `withPathFD` makes
    /// (nlink 0 means deleted on the host). nil otherwise, for the caller to take `withPathFD`'s
    /// way (which then answers ESTALE for a deleted file, as before).
    func statThroughKeptDescriptor(cache: PathDescriptorCache, mask: UInt32) -> HostStat? {
        guard case .handle = location, let kept = cache.descriptor(of: nodeID) else { return nil }
        return withExtendedLifetime(kept) { () -> HostStat? in
            guard let stat = try? Host.statx(kept.rawValue, .empty, flags: HostFlags.atEmptyPath | HostFlags.atSymlinkNoFollow,
                                             mask: mask | HostFlags.statxNlink),
                  stat.stx_nlink > 0 else { return nil }
            return stat
        }
    }

    /// `checkLinked` false uses a kept descriptor without asking whether the file still has a
    /// name (for calls by name in a directory, which fail with ENOENT in a deleted one anyway).
    func withPathFD<R>(_ credentials: ThreadCredentials, cache: PathDescriptorCache?, checkLinked: Bool = true,
                       _ body: (Int32) throws(Errno) -> R) throws(Errno) -> R {
        switch location {
        case let .descriptor(fd):
            return try withExtendedLifetime(fd) { () throws(Errno) -> R in try body(fd.rawValue) }
        case let .handle(handle, mount):
            if let cache, let kept = cache.descriptor(of: nodeID) {
                if !checkLinked || PathDescriptorCache.isLinked(kept.rawValue) {
                    return try withExtendedLifetime(kept) { () throws(Errno) -> R in try body(kept.rawValue) }
                }
                cache.remove(nodeID, only: kept)   // deleted on the host: ESTALE from the handle below
            }
            let fd = try credentials.asRoot { () throws(Errno) -> Int32 in
                try handle.open(mountFD: mount.rawValue, flags: HostFlags.oPath)
            }
            let owned = OwnedFD(fd)
            cache?.store(owned, for: nodeID)
            return try withExtendedLifetime(owned) { () throws(Errno) -> R in try body(fd) }
        }
    }
}
