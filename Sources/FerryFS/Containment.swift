import FerrySystem

/// Proves that a host file lies inside the shared directory.
///
/// A file opened by handle (open_by_handle_at) can be any file of the file system, and the
/// kernel asks Ferry to open node ids that come from file handles a client supplied: an NFS
/// client or a local process can craft one naming a host file outside SOURCE. Such a file must
/// never become a node, so every file reached that way is checked here first.
struct Containment: Sendable {
    /// What the check found.
    enum Verdict: Equatable {
        /// Reachable from the root without leaving it.
        case inside
        /// Provably not reachable inside the root (or gone).
        case outside
        /// The host does not say: a file opened by handle whose name the host kernel no longer
        /// caches (a disconnected dentry; files, unlike directories, have no ".." to walk).
        case unknown
    }

    /// The shared root (node 1), kept by descriptor.
    let root: Inode
    /// Directories deeper than this below "/" are not walked (answered `unknown`).
    static let maxDepth = 4096

    /// Whether the file open as `fd` (O_PATH, any type) lies inside the root. Call with
    /// Ferry's own privileges: the walk needs search permission everywhere.
    func verdict(fd: Int32, type: FileType?) -> Verdict {
        type == .directory ? directory(fd) : file(fd)
    }

    /// A directory: ".." up from it reaches the root (inside) or the host's "/" (outside).
    private func directory(_ fd: Int32) -> Verdict {
        guard var current = try? Host.openat(fd, CName("."), flags: HostFlags.oPath | HostFlags.oDirectory) else {
            return .unknown
        }
        defer { Host.close(current) }
        guard var key = Containment.key(of: current) else { return .unknown }
        for _ in 0..<Containment.maxDepth {
            if key == root.key { return .inside }
            guard let parent = try? Host.openat(current, CName(".."), flags: HostFlags.oPath | HostFlags.oDirectory) else {
                return .unknown
            }
            Host.close(current)
            current = parent
            guard let parentKey = Containment.key(of: parent) else { return .unknown }
            if parentKey == key { return .outside }   // ".." of "/" is "/" itself
            key = parentKey
        }
        return .unknown
    }

    /// Any other file: the path the host kernel knows for it must lie below the root's path,
    /// and that relative path, resolved from the root without leaving it, without symlinks and
    /// without crossing a mount, must reach this very file.
    private func file(_ fd: Int32) -> Verdict {
        guard let path = try? Host.path(of: fd), let key = Containment.key(of: fd) else { return .unknown }
        if path == [0x2f] { return .unknown }   // disconnected: the host does not know its name
        guard let rootPath = try? Host.path(of: root.keptDescriptor) else { return .unknown }
        let prefix = rootPath == [0x2f] ? rootPath : rootPath + [0x2f]
        guard path.count > prefix.count, path.starts(with: prefix) else { return .outside }
        let resolve = HostFlags.resolveBeneath | HostFlags.resolveNoSymlinks | HostFlags.resolveNoMagicLinks
            | HostFlags.resolveNoXdev
        guard let found = try? Host.openat2(root.keptDescriptor, CName(Array(path[prefix.count...])),
                                            flags: HostFlags.oPath | HostFlags.oNoFollow, resolve: resolve) else {
            return .outside
        }
        defer { Host.close(found) }
        return Containment.key(of: found) == key ? .inside : .outside
    }

    private static func key(of fd: Int32) -> InodeKey? {
        (try? Host.statx(fd, .empty, flags: HostFlags.atEmptyPath | HostFlags.atSymlinkNoFollow,
                         mask: PassthroughFS.statMask)).map(InodeStore.key(of:))
    }
}
