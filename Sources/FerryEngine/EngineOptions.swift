import FerryFS
import FerryIO
import FerryProtocol

/// How long the kernel may cache names, attributes and data.
public enum CacheMode: String, Sendable, CaseIterable {
    /// No caching: timeouts 0 and direct I/O (every read and write reaches the host).
    case never
    /// Short timeouts (1 s); page cache dropped when size or mtime change.
    case auto
    /// Long timeouts (1 day) and the page cache kept across opens.
    case always

    /// Entry and attribute timeout for this mode.
    public var timeout: Timeout {
        switch self {
        case .never: return .zero
        case .auto: return Timeout(seconds: 1)
        case .always: return Timeout(seconds: 86_400)
        }
    }
}

/// Settings of the protocol engine (what it negotiates and how it answers).
public struct EngineOptions: Sendable {
    /// Caching policy.
    public var cache = CacheMode.auto
    /// Ask for the kernel's writeback cache.
    public var writebackCache = false
    /// Forward fcntl record locks to the host (POSIX_LOCKS).
    public var posixLocks = true
    /// Forward flock to the host (FLOCK_LOCKS).
    public var flockLocks = true
    /// Let the kernel check POSIX ACLs itself (POSIX_ACL; needs xattrs). The mount always has
    /// `default_permissions`, so the kernel checks every access, path search included, from
    /// attributes (and ACLs) the host gave it; the host checks again as the caller.
    public var posixACLs = true
    /// Host changes are pushed into the kernel's caches (change notifications run), so the
    /// kernel may also cache that a name does not exist.
    public var notifications = false
    /// Offer FUSE passthrough (INIT flag PASSTHROUGH): plain files are opened with a backing
    /// file, and the kernel reads, writes and maps the host file itself. Set only when the
    /// server may register backing files (CAP_SYS_ADMIN) and the writeback cache is off; the
    /// kernel may still decline it at INIT.
    public var passthrough = false
    /// The I/O core's engine for READ, WRITE, FSYNC and FALLOCATE (falls back to sync where
    /// io_uring cannot be set up).
    public var ioEngine = IOEngineKind.sync
    /// Data requests each reader thread keeps in flight on its I/O engine.
    public var ioDepth = 16
    /// Ask for FUSE-over-io_uring at INIT (OVER_IO_URING): requests then come through ring
    /// queues (protocol/fuse-uring.md). The kernel offers it only with the fuse module's
    /// enable_uring parameter on.
    public var overIOUring = false
    /// Largest WRITE (and READ) payload Ferry accepts: 1 MiB.
    public var maxWrite: UInt32 = 1 << 20
    /// Whether a request's pid names a host process (/dev/fuse), whose supplementary groups
    /// /proc gives. A VM guest's pids mean nothing on the host (vhost-user): its callers then
    /// act with their uid and gid only.
    public var callerPIDsAreHostPIDs = true
    /// uid/gid translation between the client's ids and the host's (`--translate-uid`,
    /// `--translate-gid`; protocol/id-translation.md).
    public var ids = IDTranslation.identity
    /// Offer FUSE_ALLOW_IDMAP (Linux 6.12+), so the mount can be bind-mounted with an idmapping
    /// (mount_setattr(MOUNT_ATTR_IDMAP)). The kernel then names the caller only in requests that
    /// create inodes and is the only permission checker of all others, which Ferry runs with
    /// its own rights (protocol/id-translation.md, "Idmapped mounts").
    public var idmappedMounts = false
    public init() {}

    /// Whether LOOKUP answers a missing name with a cacheable negative entry (only when
    /// notifications can drop it again once the host creates the name).
    public var cachesMissingNames: Bool { notifications && cache != .never }

    /// Bytes a transport must be able to read in one request: the payload plus headers.
    public var requestBufferSize: Int { Int(maxWrite) + 64 * 1024 }
    /// Bytes a reply can take: a full READ plus the header.
    public var replyBufferSize: Int { Int(maxWrite) + 4096 }
}
