/// Constants of the FUSE ABI subset Ferry speaks; see protocol/fuse-abi.md.
public enum FUSEABI {
    /// The major version Ferry speaks.
    public static let majorVersion: UInt32 = 7
    /// The highest minor version Ferry understands (Linux 6.18 offers 7.45).
    public static let maxMinorVersion: UInt32 = 45
    /// The lowest minor version Ferry accepts: 7.12 made every struct Ferry decodes its current size.
    public static let minMinorVersion: UInt32 = 12

    /// Size of `fuse_in_header`.
    public static let inHeaderSize = 40
    /// Size of `fuse_out_header`.
    public static let outHeaderSize = 16
    /// Size of `fuse_attr`.
    public static let attrSize = 88
    /// Size of `fuse_entry_out`.
    public static let entryOutSize = 128
    /// Size of `fuse_attr_out`.
    public static let attrOutSize = 104
    /// Size of `fuse_init_out` since 7.23 (the kernel accepts 24 bytes before that).
    public static let initOutSize = 64
    /// Size of `fuse_open_out`.
    public static let openOutSize = 16
    /// Size of `fuse_kstatfs` (the whole `fuse_statfs_out`).
    public static let statfsOutSize = 80
    /// Size of the fixed part of `fuse_dirent`.
    public static let direntHeaderSize = 24
    /// Size of `fuse_statx_out`.
    public static let statxOutSize = 256 + 32
    /// Size of `fuse_read_in` and `fuse_write_in`.
    public static let ioInSize = 40
    /// Where a WRITE request's data starts: after `fuse_in_header` and `fuse_write_in`.
    public static let writePayloadOffset = inHeaderSize + ioInSize
    /// Where a READ reply's data starts: after `fuse_out_header`.
    public static let readPayloadOffset = outHeaderSize
}

/// `fuse_init_in.flags` / `fuse_init_out.flags` bits (flags2 holds bits 32...63).
public struct InitFlags: OptionSet, Sendable, Hashable {
    public let rawValue: UInt64
    public init(rawValue: UInt64) { self.rawValue = rawValue }
    public static let asyncRead = InitFlags(rawValue: 1 << 0)
    public static let posixLocks = InitFlags(rawValue: 1 << 1)
    public static let fileOps = InitFlags(rawValue: 1 << 2)
    public static let atomicOTrunc = InitFlags(rawValue: 1 << 3)
    public static let exportSupport = InitFlags(rawValue: 1 << 4)
    public static let bigWrites = InitFlags(rawValue: 1 << 5)
    public static let dontMask = InitFlags(rawValue: 1 << 6)
    public static let spliceWrite = InitFlags(rawValue: 1 << 7)
    public static let spliceMove = InitFlags(rawValue: 1 << 8)
    public static let spliceRead = InitFlags(rawValue: 1 << 9)
    public static let flockLocks = InitFlags(rawValue: 1 << 10)
    public static let hasIoctlDir = InitFlags(rawValue: 1 << 11)
    public static let autoInvalData = InitFlags(rawValue: 1 << 12)
    public static let doReaddirplus = InitFlags(rawValue: 1 << 13)
    public static let readdirplusAuto = InitFlags(rawValue: 1 << 14)
    public static let asyncDIO = InitFlags(rawValue: 1 << 15)
    public static let writebackCache = InitFlags(rawValue: 1 << 16)
    public static let noOpenSupport = InitFlags(rawValue: 1 << 17)
    public static let parallelDirops = InitFlags(rawValue: 1 << 18)
    public static let handleKillpriv = InitFlags(rawValue: 1 << 19)
    public static let posixACL = InitFlags(rawValue: 1 << 20)
    public static let abortError = InitFlags(rawValue: 1 << 21)
    public static let maxPages = InitFlags(rawValue: 1 << 22)
    public static let cacheSymlinks = InitFlags(rawValue: 1 << 23)
    public static let noOpendirSupport = InitFlags(rawValue: 1 << 24)
    public static let explicitInvalData = InitFlags(rawValue: 1 << 25)
    public static let mapAlignment = InitFlags(rawValue: 1 << 26)
    public static let submounts = InitFlags(rawValue: 1 << 27)
    public static let handleKillprivV2 = InitFlags(rawValue: 1 << 28)
    public static let setxattrExt = InitFlags(rawValue: 1 << 29)
    public static let initExt = InitFlags(rawValue: 1 << 30)
    public static let securityCtx = InitFlags(rawValue: 1 << 32)
    public static let hasInodeDAX = InitFlags(rawValue: 1 << 33)
    public static let createSuppGroup = InitFlags(rawValue: 1 << 34)
    public static let hasExpireOnly = InitFlags(rawValue: 1 << 35)
    public static let directIOAllowMmap = InitFlags(rawValue: 1 << 36)
    public static let passthrough = InitFlags(rawValue: 1 << 37)
    public static let noExportSupport = InitFlags(rawValue: 1 << 38)
    public static let hasResend = InitFlags(rawValue: 1 << 39)
    public static let allowIdmap = InitFlags(rawValue: 1 << 40)
    public static let overIOUring = InitFlags(rawValue: 1 << 41)
    public static let requestTimeout = InitFlags(rawValue: 1 << 42)
}

/// `fuse_setattr_in.valid` bits.
public struct SetattrValid: OptionSet, Sendable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    public static let mode = SetattrValid(rawValue: 1 << 0)
    public static let uid = SetattrValid(rawValue: 1 << 1)
    public static let gid = SetattrValid(rawValue: 1 << 2)
    public static let size = SetattrValid(rawValue: 1 << 3)
    public static let atime = SetattrValid(rawValue: 1 << 4)
    public static let mtime = SetattrValid(rawValue: 1 << 5)
    public static let fh = SetattrValid(rawValue: 1 << 6)
    public static let atimeNow = SetattrValid(rawValue: 1 << 7)
    public static let mtimeNow = SetattrValid(rawValue: 1 << 8)
    public static let lockOwner = SetattrValid(rawValue: 1 << 9)
    public static let ctime = SetattrValid(rawValue: 1 << 10)
    public static let killSuidGid = SetattrValid(rawValue: 1 << 11)
}

/// `fuse_open_out.open_flags` bits.
public struct OpenReplyFlags: OptionSet, Sendable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    public static let directIO = OpenReplyFlags(rawValue: 1 << 0)
    public static let keepCache = OpenReplyFlags(rawValue: 1 << 1)
    public static let nonSeekable = OpenReplyFlags(rawValue: 1 << 2)
    public static let cacheDir = OpenReplyFlags(rawValue: 1 << 3)
    public static let stream = OpenReplyFlags(rawValue: 1 << 4)
    public static let noFlush = OpenReplyFlags(rawValue: 1 << 5)
    public static let parallelDirectWrites = OpenReplyFlags(rawValue: 1 << 6)
    public static let passthrough = OpenReplyFlags(rawValue: 1 << 7)
}

/// Flag values carried inside individual requests.
public enum RequestFlags {
    /// `fuse_getattr_in.getattr_flags`: `fh` is valid.
    public static let getattrFH: UInt32 = 1 << 0
    /// `fuse_fsync_in.fsync_flags`: data only (fdatasync).
    public static let fsyncDataOnly: UInt32 = 1 << 0
    /// `fuse_write_in.write_flags`: the write comes from the page cache (writeback).
    public static let writeCache: UInt32 = 1 << 0
    /// `fuse_write_in.write_flags`: the `lock_owner` field is valid.
    public static let writeLockOwner: UInt32 = 1 << 1
    /// `fuse_write_in.write_flags`: clear SUID/SGID (HANDLE_KILLPRIV_V2).
    public static let writeKillSuidGid: UInt32 = 1 << 2
    /// `fuse_open_in.open_flags` / `fuse_create_in.open_flags`: clear SUID/SGID on O_TRUNC.
    public static let openKillSuidGid: UInt32 = 1 << 0
    /// `fuse_release_in.release_flags`: also drop the flock lock.
    public static let releaseFlockUnlock: UInt32 = 1 << 1
    /// `fuse_lk_in.lk_flags`: the lock is a flock, not a POSIX lock.
    public static let lockFlock: UInt32 = 1 << 0
    /// `fuse_ioctl_in.flags`: 32-bit compat ioctl.
    public static let ioctlCompat: UInt32 = 1 << 0
    /// `fuse_ioctl_in.flags`: unrestricted (CUSE only).
    public static let ioctlUnrestricted: UInt32 = 1 << 1
    /// `fuse_ioctl_in.flags`: issued on a directory.
    public static let ioctlDir: UInt32 = 1 << 4
}
