/// FUSE request opcodes (`enum fuse_opcode` in the kernel's uapi/linux/fuse.h).
public enum Opcode: UInt32, Sendable, CustomStringConvertible {
    case lookup = 1, forget = 2, getattr = 3, setattr = 4, readlink = 5, symlink = 6
    case mknod = 8, mkdir = 9, unlink = 10, rmdir = 11, rename = 12, link = 13
    case open = 14, read = 15, write = 16, statfs = 17, release = 18
    case fsync = 20, setxattr = 21, getxattr = 22, listxattr = 23, removexattr = 24
    case flush = 25, `init` = 26, opendir = 27, readdir = 28, releasedir = 29, fsyncdir = 30
    case getlk = 31, setlk = 32, setlkw = 33, access = 34, create = 35, interrupt = 36
    case bmap = 37, destroy = 38, ioctl = 39, poll = 40, notifyReply = 41, batchForget = 42
    case fallocate = 43, readdirplus = 44, rename2 = 45, lseek = 46, copyFileRange = 47
    case setupMapping = 48, removeMapping = 49, syncfs = 50, tmpfile = 51, statx = 52
    case copyFileRange64 = 53

    /// The kernel's name for the opcode (FUSE_ prefix dropped).
    public var description: String { Opcode.names[Int(rawValue) - 1] }

    private static let names: [String] = [
        "LOOKUP", "FORGET", "GETATTR", "SETATTR", "READLINK", "SYMLINK", "_", "MKNOD", "MKDIR", "UNLINK", "RMDIR", "RENAME", "LINK", "OPEN", "READ", "WRITE", "STATFS", "RELEASE", "_", "FSYNC", "SETXATTR", "GETXATTR", "LISTXATTR", "REMOVEXATTR", "FLUSH", "INIT", "OPENDIR", "READDIR", "RELEASEDIR", "FSYNCDIR", "GETLK", "SETLK", "SETLKW", "ACCESS", "CREATE", "INTERRUPT", "BMAP", "DESTROY", "IOCTL", "POLL", "NOTIFY_REPLY", "BATCH_FORGET", "FALLOCATE", "READDIRPLUS", "RENAME2", "LSEEK", "COPY_FILE_RANGE", "SETUPMAPPING", "REMOVEMAPPING", "SYNCFS", "TMPFILE", "STATX", "COPY_FILE_RANGE_64",
    ]
}
