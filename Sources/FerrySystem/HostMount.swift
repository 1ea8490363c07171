import CFerrySys
import Glibc

/// How a mount updates access times (the kernel keeps exactly one of these per mount).
public enum AtimeMode: String, Sendable, CaseIterable {
    /// Update atime when it is not newer than mtime or ctime, or older than a day (the default).
    case relatime
    /// Never update atime.
    case noatime
    /// Update atime on every access.
    case strictatime
}

/// The per-mount attributes Ferry sets with mount_setattr(2); nil leaves a setting as it is.
public struct MountAttributes: Sendable, Equatable {
    public var readOnly: Bool?
    public var atime: AtimeMode?
    /// Directories' atime never updated (on top of `atime`).
    public var noDirAtime: Bool?

    public init(readOnly: Bool? = nil, atime: AtimeMode? = nil, noDirAtime: Bool? = nil) {
        self.readOnly = readOnly
        self.atime = atime
        self.noDirAtime = noDirAtime
    }

    // MOUNT_ATTR_* from <linux/mount.h>.
    static let rdonly: UInt64 = 0x1, atimeMask: UInt64 = 0x70, noatime: UInt64 = 0x10
    static let strictatime: UInt64 = 0x20, nodiratime: UInt64 = 0x80

    /// The `attr_set` and `attr_clr` words of struct mount_attr.
    var words: (set: UInt64, clear: UInt64) {
        var set: UInt64 = 0, clear: UInt64 = 0
        if let readOnly { if readOnly { set |= Self.rdonly } else { clear |= Self.rdonly } }
        if let atime {
            clear |= Self.atimeMask   // the atime mode is replaced as a whole
            switch atime {
            case .relatime: break        // MOUNT_ATTR_RELATIME is 0
            case .noatime: set |= Self.noatime
            case .strictatime: set |= Self.strictatime
            }
        }
        if let noDirAtime { if noDirAtime { set |= Self.nodiratime } else { clear |= Self.nodiratime } }
        return (set, clear)
    }
}

/// Mount-level calls: private copies of a mount tree, mount attributes, remounts.
public enum HostMount {
    static let openTreeClone: UInt32 = 1          // OPEN_TREE_CLONE
    static let atRecursive: UInt32 = 0x8000       // AT_RECURSIVE

    /// A detached copy of the mount tree at `path` (open_tree(2) with OPEN_TREE_CLONE and
    /// AT_RECURSIVE, so mounts below `path` come along) with `attributes` applied to every mount
    /// in it. Returns an O_PATH descriptor of its root; the copy disappears with the last
    /// descriptor into it. Needs CAP_SYS_ADMIN.
    public static func detachedClone(of path: String, attributes: MountAttributes) throws(Errno) -> Int32 {
        let fd = try CName(path).withCString { (p) throws(Errno) in
            try checked { ferry_open_tree(HostFlags.atFDCWD, p, openTreeClone | atRecursive | UInt32(HostFlags.oCloexec)) }
        }
        do {
            try setAttributes(fd: fd, attributes, recursive: true)
        } catch {
            Host.close(fd)
            throw error
        }
        return fd
    }

    /// mount_setattr(2) on the mount `fd` refers to (AT_EMPTY_PATH).
    public static func setAttributes(fd: Int32, _ attributes: MountAttributes, recursive: Bool) throws(Errno) {
        let (set, clear) = attributes.words
        let flags = UInt32(HostFlags.atEmptyPath) | (recursive ? atRecursive : 0)
        _ = try checked { ferry_mount_setattr(fd, "", flags, set, clear) }
    }

    /// mount_setattr(2) on the mount at `path` (not below it).
    public static func setAttributes(path: String, _ attributes: MountAttributes) throws(Errno) {
        let (set, clear) = attributes.words
        _ = try CName(path).withCString { (p) throws(Errno) in
            try checked { ferry_mount_setattr(HostFlags.atFDCWD, p, 0, set, clear) }
        }
    }

    /// mount(2) with MS_REMOUNT: the superblock's read-only state and the mount's flags become
    /// `flags` (MS_RDONLY, MS_NOSUID, ...; flags left out are cleared). Needs CAP_SYS_ADMIN.
    public static func remount(_ mountpoint: String, flags: UInt) throws(Errno) {
        _ = try CName(mountpoint).withCString { (p) throws(Errno) in
            try checked { Glibc.mount(nil, p, nil, flags | UInt(MS_REMOUNT), nil) }
        }
    }
}
