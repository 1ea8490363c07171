import CFerrySys
import FerrySystem
import Glibc
import Logging

/// Host attributes of a file, as statx(2) reports them.
public typealias HostStat = ferry_statx

/// A node handed to the kernel: its id and current attributes.
public struct Entry: Sendable {
    public let nodeID: UInt64
    /// The FUSE generation of the node (`Inode.generation`).
    public let generation: UInt64
    public let stat: HostStat

    init(_ inode: Inode, stat: HostStat) {
        nodeID = inode.nodeID; generation = inode.generation; self.stat = stat
    }

    private init(nodeID: UInt64, generation: UInt64, stat: HostStat) {
        self.nodeID = nodeID; self.generation = generation; self.stat = stat
    }

    /// The same node with newer attributes (after a change the engine made to it).
    public func with(stat: HostStat) -> Entry {
        Entry(nodeID: nodeID, generation: generation, stat: stat)
    }
}

/// The passthrough of one host directory: every operation is an *at() call relative to an
/// inode's descriptor, with O_NOFOLLOW, so nothing outside the shared directory is reachable.
///
/// Methods run on the calling request thread with the caller's credentials already applied
/// to `credentials` (the engine does that); they throw `Errno` for the reply.
public final class PassthroughFS: Sendable {
    /// The inodes the kernel holds.
    public let inodes: InodeStore
    /// Open files and directories.
    public let openFiles: OpenFileTable
    /// POSIX and flock locks on host OFD locks.
    public let locks: LockManager
    /// Settings.
    public let options: FSOptions
    /// A real (not O_PATH) descriptor of the root, for syncfs and for watching the host.
    public let rootDirectory: OwnedFD
    /// Proves that files reached by handle lie inside the shared directory.
    let containment: Containment
    let logger: Logger
    /// Warns (rate-limited) about requests refused for their size, e.g. an oversized SETXATTR.
    let oversizedRequests: RateLimitedWarning
    /// Warns (rate-limited) about OPEN, CREATE or truncation of a FIFO, device or socket, which
    /// the kernel never asks for (it handles such files itself): opening a FIFO would block a
    /// worker until a peer opened the other end, opening a device would touch it.
    let specialFileRefusals: RateLimitedWarning

    static let statMask = HostFlags.statxBasicStats | HostFlags.statxMntID
    static let pathFlags = HostFlags.oPath | HostFlags.oNoFollow

    /// Opens `source` (which must be a directory) as the shared root: itself, or the root of a
    /// detached copy of its mount tree when `options.hostMount` is set.
    public init(source: String, options: FSOptions, logger: Logger) throws(Errno) {
        self.options = options
        self.logger = logger
        self.oversizedRequests = RateLimitedWarning(logger: logger, intervalSeconds: ResourceBound.warningInterval)
        self.specialFileRefusals = RateLimitedWarning(logger: logger, intervalSeconds: ResourceBound.warningInterval)
        let limits = options.limits
        self.locks = LockManager(logger: logger, waiters: ResourceBound(
            name: "blocked lock requests", limit: limits.maxLockWaiters, refusal: Errno(rawValue: ENOLCK),
            option: "--max-lock-waiters", logger: logger))
        self.openFiles = OpenFileTable(bound: ResourceBound(
            name: "open files", limit: limits.maxOpenFiles, refusal: Errno(rawValue: ENFILE),
            option: "--max-open-files", logger: logger))
        ProcSelfFD.prepare()
        let fd: Int32
        if let attributes = options.hostMount {
            fd = try HostMount.detachedClone(of: source, attributes: attributes)
        } else {
            fd = try Host.openat(HostFlags.atFDCWD, CName(source), flags: HostFlags.oPath | HostFlags.oDirectory)
        }
        let rootFD = OwnedFD(fd)
        let stat = try Host.statx(fd, .empty, flags: HostFlags.atEmptyPath, mask: PassthroughFS.statMask)
        rootDirectory = OwnedFD(try Host.reopen(fd, flags: HostFlags.oRdOnly | HostFlags.oDirectory))
        var mode = options.inodeFileHandles
        if mode != .never, let (handle, _) = try? FileHandle.of(fd) {
            // Reopening by handle needs CAP_DAC_READ_SEARCH, which an unprivileged server lacks.
            do {
                Host.close(try handle.open(mountFD: rootDirectory.rawValue, flags: HostFlags.oPath))
            } catch {
                guard mode == .prefer, error == .permission else { throw error }
                logger.notice("file handles cannot be reopened without CAP_DAC_READ_SEARCH (\(error)); inodes keep an O_PATH descriptor each")
                mode = .never
            }
        }
        inodes = try InodeStore(rootFD: rootFD, rootDirectory: rootDirectory, rootStat: stat, mode: mode,
                                 indexHandles: options.indexHandles,
                                 bound: ResourceBound(name: "inodes", limit: limits.maxInodes, refusal: Errno(rawValue: ENOMEM),
                                                      option: "--max-inodes", logger: logger))
        containment = Containment(root: inodes.root)
    }

    /// The connection's resource bounds (inodes, open files, lock waiters), for reports.
    public var bounds: [ResourceBound] { [inodes.bound, openFiles.bound, locks.waiters].compactMap { $0 } }

    // MARK: Shared helpers

    /// Rejects names that could leave the directory or are not names at all.
    func validName(_ name: [UInt8]) throws(Errno) -> CName {
        guard !name.isEmpty, name != [0x2e], name != [0x2e, 0x2e] else { throw Errno.invalid }
        guard !name.contains(0x2f) else { throw Errno.invalid }
        guard name.count <= 255 else { throw Errno.nameTooLong }
        return CName(name)
    }

    func checkWritable() throws(Errno) {
        if options.readOnly { throw Errno.readOnly }
    }

    /// statx of the inode behind `fd` (a descriptor of it, O_PATH or not).
    func stat(fd: Int32, mask: UInt32 = PassthroughFS.statMask) throws(Errno) -> HostStat {
        try Host.statx(fd, .empty, flags: HostFlags.atEmptyPath | HostFlags.atSymlinkNoFollow, mask: mask)
    }

    /// Looks `name` up in the directory `dirFD` and records one kernel reference to it.
    /// The descriptor opened for the lookup is kept for the requests that usually follow on a
    /// new node (GETXATTR, GETATTR, OPEN) when the inode is a file handle.
    /// `room` is the place reserved for it when the caller just created it.
    /// `mayBeHeld` false skips the attempt to find a held node first (READDIRPLUS knows from the
    /// entry's inode number that no node has it).
    func lookupChild(dirFD: Int32, name: CName, room: InodeStore.Room? = nil, mayBeHeld: Bool = true) throws(Errno) -> Entry {
        if room == nil && mayBeHeld, let known = try lookupHeldChild(dirFD: dirFD, name: name) { return known }
        let fd = OwnedFD(try Host.openat(dirFD, name, flags: PassthroughFS.pathFlags))
        return try remember(fd: fd.rawValue, offering: fd, room: room)
    }

    /// The common LOOKUP: `name` is a file the kernel already holds a node for (a revalidation,
    /// a `stat` of a listed file). Two system calls by name, statx and name_to_handle_at, and no
    /// descriptor opened. nil when no held node matches both (a new file, a file whose handle
    /// cannot be taken): the caller opens the name and remembers it. Throws statx's errno
    /// (ENOENT for a missing name).
    ///
    /// Both calls resolve the name separately, so a host rename in between could pair one
    /// file's attributes with another's handle: a node matches only if its inode key (from the
    /// statx) and its file handle both agree, which two different files never do. Without file
    /// handles every node keeps a descriptor, which pins its inode number, so the key suffices.
    func lookupHeldChild(dirFD: Int32, name: CName) throws(Errno) -> Entry? {
        let stat = try Host.statx(dirFD, name, flags: HostFlags.atSymlinkNoFollow, mask: PassthroughFS.statMask)
        let key = InodeStore.key(of: stat)
        guard inodes.holdsNode(for: key) else { return nil }   // a new file: no handle needed here
        var handle: FileHandle? = nil
        if inodes.keepsFileHandles {
            guard let taken = try? FileHandle.of(dirFD, name).handle else { return nil }
            handle = taken
        }
        guard let inode = inodes.referenceKnown(key, handle: handle) else { return nil }
        return Entry(inode, stat: stat)
    }

    /// Records one kernel reference to the inode open as `fd`.
    /// `offering` is an O_PATH descriptor of the same file the path descriptor cache may keep;
    /// `room` the place in the inode bound reserved before the file was created.
    func remember(fd: Int32, keepDescriptor: Bool = false, offering: OwnedFD? = nil,
                  room: InodeStore.Room? = nil) throws(Errno) -> Entry {
        let mark = inodes.unmatchedChanges.mark
        let first = try stat(fd: fd)
        let (inode, isNew) = try inodes.remember(fd: fd, stat: first, keepDescriptor: keepDescriptor, room: room)
        if let offering, inode.isHandle { inodes.pathDescriptors.store(offering, for: inode.nodeID) }
        // With change notifications, a host change between that stat and the node's
        // registration would find no node and be dropped, leaving the reply's attributes stale:
        // where a watcher dropped or is matching a change meanwhile, answer with attributes
        // taken after the registration (protocol/notify-ring.md).
        if isNew && options.indexHandles && inodes.unmatchedChanges.mayHaveMissed(since: mark),
           let fresh = try? stat(fd: fd) {
            return Entry(inode, stat: fresh)
        }
        return Entry(inode, stat: first)
    }

    /// Runs `body` with an O_PATH descriptor of `nodeID` (kept by the inode or its cache, or
    /// opened for the call), e.g. for the kernel to take its own reference to.
    public func withPathDescriptor<R>(of nodeID: UInt64, _ ctx: ThreadCredentials,
                                      _ body: (Int32) throws(Errno) -> R) throws(Errno) -> R {
        try inodes.get(nodeID).withPathFD(ctx, cache: inodes.pathDescriptors, body)
    }

    /// Runs `body` with the O_PATH descriptor of `nodeID`. A handle-based inode whose file was
    /// deleted on the host (ESTALE) is still reachable while the kernel has it open: then one of
    /// its open descriptors stands in, as it would for a local file that is open but unlinked.
    func withNode<R>(_ nodeID: UInt64, _ ctx: ThreadCredentials, checkLinked: Bool = true,
                     _ body: (Inode, Int32) throws(Errno) -> R) throws(Errno) -> R {
        let inode = try inodes.get(nodeID)
        do {
            return try inode.withPathFD(ctx, cache: inodes.pathDescriptors, checkLinked: checkLinked) { (fd) throws(Errno) in
                try body(inode, fd)
            }
        } catch {
            guard error == .stale, let file = openFiles.anyFile(of: nodeID) else { throw error }
            return try withExtendedLifetime(file) { () throws(Errno) -> R in try body(inode, file.fd.rawValue) }
        }
    }

    /// `withNode` for a directory whose descriptor serves calls by name (LOOKUP, CREATE, MKDIR,
    /// UNLINK, RENAME...). A descriptor the path cache keeps is used without first asking
    /// whether the directory still has a name: in a directory deleted on the host those calls
    /// fail with ENOENT, as in a local one (ESTALE came only from reopening its handle).
    func withDirectory<R>(_ nodeID: UInt64, _ ctx: ThreadCredentials,
                          _ body: (Inode, Int32) throws(Errno) -> R) throws(Errno) -> R {
        try withNode(nodeID, ctx, checkLinked: false, body)
    }
}
