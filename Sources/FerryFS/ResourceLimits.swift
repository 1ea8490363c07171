import FerrySystem
import Glibc

/// The bounds on what one client connection (a FUSE mount, or a VM over vhost-user) may make
/// Ferry hold. A guest is not trusted: without them it could make Ferry remember millions of
/// inodes, keep every descriptor the host allows, or start a thread per blocked lock request.
///
/// Each bound is a `ResourceBound`: at the bound, the request that would go past it is refused
/// with the errno below and a warning is logged (at most once per 10 s, with the number of
/// refusals since the last line); other requests go on being served. The README's "Resource
/// bounds" section and protocol/resource-bounds.md say what a client sees.
public struct ResourceLimits: Sendable, Equatable {
    /// Inodes the client may hold at once (nodes with a lookup count above zero, the root not
    /// counted): `--max-inodes`. A LOOKUP, CREATE, MKDIR, MKNOD, SYMLINK or TMPFILE that would
    /// add one more is answered ENOMEM; READDIRPLUS then returns the names without their
    /// inodes. An inode costs memory (a few hundred bytes with file handles) and, with
    /// `--inode-file-handles never` (or without CAP_DAC_READ_SEARCH), a descriptor each.
    /// The kernel forgets inodes only when it reclaims its caches, so a client that reaches the
    /// bound stays near it until memory pressure (or `echo 2 > /proc/sys/vm/drop_caches`)
    /// makes it FORGET some.
    public var maxInodes: Int
    /// Files and directories the client may have open at once: `--max-open-files`. An OPEN,
    /// OPENDIR, CREATE or TMPFILE past it is answered ENFILE (the table is shared by every
    /// process of the client, like the system-wide file table, so not EMFILE, which tells a
    /// process its own table is full). Each open file holds one host descriptor (two for a
    /// writable O_DIRECT file), plus one per lock owner that locks through it.
    public var maxOpenFiles: Int
    /// Blocking lock requests (F_SETLKW, F_OFD_SETLKW, blocking flock) that may wait at once:
    /// `--max-lock-waiters`. Each waits in a thread of its own (and, with FUSE-over-io_uring,
    /// holds a ring entry). Past the bound the request is answered ENOLCK, which fcntl(2) and
    /// flock(2) document for "no room for more lock records": programs report it as a failure
    /// to lock, while EAGAIN from a blocking request would be read as "retry at once" and spin.
    public var maxLockWaiters: Int

    /// The largest extended attribute value Linux lets a caller set or get (XATTR_SIZE_MAX):
    /// a bigger SETXATTR is answered E2BIG, as the host would.
    public static let xattrValueMax = 65_536
    /// The largest list of extended attribute names (XATTR_LIST_MAX): a LISTXATTR or GETXATTR
    /// asking for more room gets a buffer of this size.
    public static let xattrListMax = 65_536
    /// The longest extended attribute name (XATTR_NAME_MAX): a longer one is ERANGE.
    public static let xattrNameMax = 255

    /// Default `--max-inodes`: a million (a few hundred MB at most with file handles).
    public static let defaultMaxInodes = 1_000_000
    /// Default `--max-lock-waiters`: more than real programs wait on at once (a thousand
    /// waiting processes is a lot), and at most 1,024 threads of 64 KiB stack each.
    public static let defaultMaxLockWaiters = 1024
    /// Descriptors kept out of every budget: the transport, watchers, mount descriptors, the
    /// I/O rings and the kept O_PATH descriptors of hot inodes.
    public static let descriptorReserve = 1024

    public init(maxInodes: Int, maxOpenFiles: Int, maxLockWaiters: Int) {
        self.maxInodes = maxInodes
        self.maxOpenFiles = maxOpenFiles
        self.maxLockWaiters = maxLockWaiters
    }

    /// The defaults for a process whose RLIMIT_NOFILE is `descriptorLimit`: open files get
    /// half of what is left after `descriptorReserve` (an open file may need a second
    /// descriptor, for the page cache or a lock owner); when inodes keep a descriptor each
    /// (`inodesUseDescriptors`), the inodes get the other half, and the open files a quarter.
    public static func defaults(descriptorLimit: Int, inodesUseDescriptors: Bool) -> ResourceLimits {
        let usable = max(descriptorLimit - descriptorReserve, descriptorLimit / 2, 64)
        if inodesUseDescriptors {
            return ResourceLimits(maxInodes: min(defaultMaxInodes, usable / 2), maxOpenFiles: max(usable / 4, 16),
                                  maxLockWaiters: defaultMaxLockWaiters)
        }
        return ResourceLimits(maxInodes: defaultMaxInodes, maxOpenFiles: max(usable / 2, 16),
                              maxLockWaiters: defaultMaxLockWaiters)
    }

    /// Generous bounds for tests and tools that build a filesystem without a command line.
    public static let unbounded = ResourceLimits(maxInodes: Int.max / 2, maxOpenFiles: Int.max / 2,
                                                 maxLockWaiters: 4096)

    /// Descriptors these bounds may make Ferry hold at most (for the start-up check against
    /// RLIMIT_NOFILE).
    public func descriptorsNeeded(inodesUseDescriptors: Bool) -> Int {
        2 * maxOpenFiles + (inodesUseDescriptors ? maxInodes : 0) + ResourceLimits.descriptorReserve
    }
}
