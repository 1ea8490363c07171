import FerryProtocol

/// What INIT settled between the kernel and Ferry.
public struct Negotiated: Sendable, Equatable {
    /// The minor version both sides speak.
    public var minor: UInt32
    /// The INIT flags both sides agreed to.
    public var flags: InitFlags
    /// The kernel's readahead limit.
    public var maxReadahead: UInt32
}

/// INIT: which flags Ferry asks for, and why (protocol/fuse-abi.md lists them).
enum Negotiation {
    /// Flags Ferry asks for in every configuration.
    static let base: InitFlags = [
        .asyncRead,          // concurrent READs on one file
        .atomicOTrunc,       // O_TRUNC handled in OPEN (one round trip, not OPEN + SETATTR)
        .bigWrites,          // WRITEs larger than a page
        .dontMask,           // the umask arrives with each create; applied per thread
        .autoInvalData,      // drop cached pages when size or mtime change
        .doReaddirplus, .readdirplusAuto,  // attributes with directory listings when useful
        .asyncDIO,           // parallel O_DIRECT requests
        .parallelDirops,     // lookups and readdirs of one directory run in parallel
        .maxPages,           // 1 MiB requests (max_pages = 256)
        .hasIoctlDir,        // ioctls on directories (lsattr -d)
        .handleKillprivV2,   // SUID/SGID clearing done by the host, which runs as the caller
        .initExt,            // the second flags word
        .directIOAllowMmap,  // mmap keeps working with --cache never
        .exportSupport,      // file handles of the mount: LOOKUP of "." and ".." (PassthroughFS+Export)
    ]

    /// `fuse_init_out.max_stack_depth` Ferry sends with PASSTHROUGH.
    static let passthroughStackDepth: UInt32 = 1

    /// The flags to ask for under `options`, limited to what the kernel offers.
    static func flags(kernel: InitFlags, options: EngineOptions) -> InitFlags {
        var wanted = base
        if options.writebackCache { wanted.insert(.writebackCache) }
        // A symlink's target never changes (a new target is a new inode, so a new node), so the
        // kernel may keep it in its page cache wherever it caches at all: readlink then costs
        // no round trip. Not with `--cache never`, which promises no caching.
        if options.cache != .never { wanted.insert(.cacheSymlinks) }
        if options.posixLocks { wanted.insert(.posixLocks) }   // fcntl locks become host OFD locks
        if options.flockLocks { wanted.insert(.flockLocks) }   // flock becomes host flock
        if options.posixACLs { wanted.insert(.posixACL) }      // kernel permission checks honour ACLs
        // The kernel's I/O on plain files goes straight to the host file (never with the
        // writeback cache: the kernel refuses the pair).
        if options.passthrough && !options.writebackCache { wanted.insert(.passthrough) }
        if options.overIOUring { wanted.insert(.overIOUring) }   // requests through ring queues
        if options.idmappedMounts {
            // Idmapped bind mounts of this mount (the mount has default_permissions, which the
            // kernel requires). Requests that create no inode then carry no caller, so Ferry
            // runs them with its own rights, and the host would no longer clear SUID/SGID on a
            // write: the kernel does that itself (a SETATTR) without HANDLE_KILLPRIV_V2.
            wanted.insert(.allowIdmap)
            wanted.remove(.handleKillprivV2)
        }
        return wanted.intersection(kernel)
    }

    /// The reply to `request`, or an errno when Ferry cannot speak the kernel's version.
    static func reply(to request: InitIn, options: EngineOptions) -> Result<(InitOut, Negotiated), NegotiationError> {
        guard request.major == FUSEABI.majorVersion || request.major > FUSEABI.majorVersion else {
            return .failure(.unsupportedVersion(major: request.major, minor: request.minor))
        }
        if request.major > FUSEABI.majorVersion {
            // The kernel will send INIT again with our major version.
            let out = InitOut(major: FUSEABI.majorVersion, minor: FUSEABI.maxMinorVersion, maxReadahead: 0, flags: [],
                              maxBackground: 0, congestionThreshold: 0, maxWrite: 0, timeGranularity: 0, maxPages: 0)
            return .success((out, Negotiated(minor: 0, flags: [], maxReadahead: 0)))
        }
        guard request.minor >= FUSEABI.minMinorVersion else {
            return .failure(.unsupportedVersion(major: request.major, minor: request.minor))
        }
        let minor = min(request.minor, FUSEABI.maxMinorVersion)
        let flags = Negotiation.flags(kernel: request.flags, options: options)
        let maxPages = UInt16(options.maxWrite / 4096)
        // Passthrough needs max_stack_depth >= 1: backing files may lie on a file system of
        // stacking depth below it (1: ext4, xfs, tmpfs, btrfs; not overlayfs), and the mount
        // itself gets depth 1, so overlayfs can still use it as a layer (the kernel's limit is 2).
        let out = InitOut(major: FUSEABI.majorVersion, minor: minor, maxReadahead: request.maxReadahead, flags: flags,
                          maxBackground: 64, congestionThreshold: 48, maxWrite: options.maxWrite,
                          timeGranularity: 1, maxPages: maxPages,
                          maxStackDepth: flags.contains(.passthrough) ? Negotiation.passthroughStackDepth : 0)
        return .success((out, Negotiated(minor: minor, flags: flags, maxReadahead: request.maxReadahead)))
    }
}

/// Why INIT failed.
enum NegotiationError: Error, CustomStringConvertible {
    case unsupportedVersion(major: UInt32, minor: UInt32)
    var description: String {
        switch self {
        case let .unsupportedVersion(major, minor):
            return "kernel speaks FUSE \(major).\(minor); Ferry needs 7.\(FUSEABI.minMinorVersion) or later"
        }
    }
}
