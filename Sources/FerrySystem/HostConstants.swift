import Glibc

/// Linux flag values Ferry passes to syscalls (x86_64/aarch64 generic ABI), spelled out because
/// several are hidden behind _GNU_SOURCE in the C headers Swift imports.
public enum HostFlags {
    public static let oPath: Int32 = 0o10000000
    /// statfs `f_flags` bits (enum values in glibc, so not imported).
    public static let stNoSuid = 2, stNoDev = 4, stNoExec = 8
    public static let stNoAtime = 1024, stNoDirAtime = 2048, stRelatime = 4096
    public static let oNoFollow: Int32 = 0o400000
    public static let oDirectory: Int32 = 0o200000
    public static let oCloexec: Int32 = 0o2000000
    public static let oTmpfile: Int32 = 0o20000000 | oDirectory
    public static let oCreat: Int32 = 0o100
    public static let oExcl: Int32 = 0o200
    public static let oNoCTTY: Int32 = 0o400
    public static let oTrunc: Int32 = 0o1000
    public static let oAppend: Int32 = 0o2000
    public static let oDirect: Int32 = 0o40000
    public static let oAccessMode: Int32 = 0o3
    public static let oRdOnly: Int32 = 0, oWrOnly: Int32 = 1, oRdWr: Int32 = 2

    public static let atFDCWD: Int32 = -100
    public static let atSymlinkNoFollow: Int32 = 0x100
    public static let atRemoveDir: Int32 = 0x200
    public static let atEAccess: Int32 = 0x200
    public static let atSymlinkFollow: Int32 = 0x400
    public static let atEmptyPath: Int32 = 0x1000

    public static let statxBasicStats: UInt32 = 0x7ff
    public static let statxNlink: UInt32 = 0x4
    public static let statxBtime: UInt32 = 0x800
    public static let statxMntID: UInt32 = 0x1000

    public static let renameNoReplace: UInt32 = 1, renameExchange: UInt32 = 2, renameWhiteout: UInt32 = 4

    /// openat2 `resolve` bits: stay on one mount, follow no symlink (nor /proc magic link), never
    /// leave the starting directory.
    public static let resolveNoXdev: UInt64 = 0x01, resolveNoMagicLinks: UInt64 = 0x02
    public static let resolveNoSymlinks: UInt64 = 0x04, resolveBeneath: UInt64 = 0x08
}

/// File type bits of `st_mode`.
public enum FileType: UInt32, Sendable {
    case fifo = 0o010000, character = 0o020000, directory = 0o040000, block = 0o060000
    case regular = 0o100000, symlink = 0o120000, socket = 0o140000

    /// The type encoded in `mode`, if any.
    public init?(mode: UInt32) { self.init(rawValue: mode & 0o170000) }

    /// The `d_type` value of a directory entry of this type.
    public var direntType: UInt32 { rawValue >> 12 }
}
