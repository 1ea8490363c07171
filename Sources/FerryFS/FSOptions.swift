import FerrySystem

/// How inodes are remembered between LOOKUP and FORGET.
public enum InodeFileHandles: String, Sendable, CaseIterable {
    /// Always an O_PATH descriptor per inode (costs one fd per known file).
    case never
    /// A file handle where the file system supports it, else a descriptor.
    case prefer
    /// File handles only; a file system without them is an error.
    case mandatory
}

/// Settings of the passthrough filesystem.
public struct FSOptions: Sendable {
    /// Refuse every change with EROFS.
    public var readOnly = false
    /// Serve extended attributes (else the xattr operations answer ENOSYS).
    public var xattr = true
    /// Inode bookkeeping mode.
    public var inodeFileHandles = InodeFileHandles.prefer
    /// The kernel caches writes (FUSE writeback cache): files must be opened readable, and
    /// O_APPEND is handled by the kernel.
    public var writebackCache = false
    /// Keep a file handle → node index, so host changes reported by handle find their node
    /// (on when change notifications run).
    public var indexHandles = false
    /// When set, SOURCE is reached through a private, detached copy of its mount tree carrying
    /// these attributes (e.g. noatime), so Ferry's own host accesses behave as on a host mount
    /// with those options. Needs CAP_SYS_ADMIN. Nil: SOURCE's own mount.
    public var hostMount: MountAttributes?
    /// The bounds on what the client may make Ferry hold (`--max-inodes`, `--max-open-files`,
    /// `--max-lock-waiters`).
    public var limits = ResourceLimits.unbounded
    public init() {}
}
