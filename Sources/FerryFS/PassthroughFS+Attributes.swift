import FerrySystem
import CFerrySys
import Glibc

/// The requested attribute changes of a SETATTR, in host terms.
public struct AttributeChanges: Sendable {
    public var mode: UInt32?
    public var uid: UInt32?
    public var gid: UInt32?
    public var size: UInt64?
    /// nil: unchanged; `.now`: the current time; `.at`: the given time.
    public var atime: TimeChange?
    public var mtime: TimeChange?
    /// An open file to act through (ftruncate needs one the caller opened for writing).
    public var fh: UInt64?
    /// The kernel sent a ctime too (the host cannot set one): the mark of a writeback-cache flush.
    public var ctimeGiven = false
    public init() {}
}

/// A new timestamp for SETATTR.
public enum TimeChange: Sendable {
    case now
    case at(seconds: Int64, nanoseconds: UInt32)
}

/// Attributes: GETATTR, SETATTR, STATX, ACCESS, READLINK, STATFS.
extension PassthroughFS {
    /// GETATTR (through the open file `fh` when the kernel gives one: works for unlinked files).
    public func getattr(_ ctx: ThreadCredentials, nodeID: UInt64, fh: UInt64?, mask: UInt32? = nil) throws(Errno) -> HostStat {
        let mask = mask ?? PassthroughFS.statMask
        if let fh, let file = try? openFiles.get(fh), file.nodeID == nodeID {
            return try stat(fd: file.fd.rawValue, mask: mask)
        }
        // One statx where the path descriptor cache keeps the node's descriptor (no separate
        // liveness check first).
        if let kept = try inodes.get(nodeID).statThroughKeptDescriptor(cache: inodes.pathDescriptors, mask: mask) {
            return kept
        }
        return try withNode(nodeID, ctx) { (_, fd) throws(Errno) in try stat(fd: fd, mask: mask) }
    }

    /// SETATTR: mode, owner, size and times, each with the host's own permission rules, in the
    /// order chmod, chown, truncate, utimes. Returns the new attributes.
    public func setattr(_ ctx: ThreadCredentials, nodeID: UInt64, changes: AttributeChanges) throws(Errno) -> HostStat {
        try checkWritable()
        let file = changes.fh.flatMap { try? openFiles.get($0) }.flatMap { $0.nodeID == nodeID ? $0 : nil }
        return try withNode(nodeID, ctx) { (inode, fd) throws(Errno) in
            if let mode = changes.mode {
                if let file { try Host.fchmod(file.fd.rawValue, mode: mode) }
                else if inode.isSymlink { throw Errno.notSupported }
                else { try Host.chmod(pathFD: fd, mode: mode) }
            }
            if changes.uid != nil || changes.gid != nil {
                try Host.chown(fd, uid: changes.uid ?? UInt32.max, gid: changes.gid ?? UInt32.max)
            }
            if let size = changes.size {
                guard size <= UInt64(Int64.max) else { throw Errno.invalid }
                if let file {
                    try Host.truncate(file.fd.rawValue, size: Int64(size))
                } else {
                    guard inode.type != .directory else { throw Errno(rawValue: EISDIR) }
                    // What truncate(2) says of a FIFO, device, socket or symlink; opening a
                    // FIFO to truncate it would block the worker until a reader came.
                    guard inode.type == .regular else { throw Errno.invalid }
                    let writable = try Host.reopen(fd, flags: HostFlags.oWrOnly)
                    defer { Host.close(writable) }
                    try Host.truncate(writable, size: Int64(size))
                }
            }
            if changes.atime != nil || changes.mtime != nil {
                try setTimes(ctx, fd, changes)
            }
            return try stat(fd: file?.fd.rawValue ?? fd)
        }
    }

    /// Sets atime/mtime. With the writeback cache the kernel keeps mtime and ctime itself and
    /// sends them later as explicit times (with a ctime, which only it sends), under whichever
    /// caller made the change — a writer or an xattr setter who does not own the file, whom the
    /// host refuses explicit times. The kernel has already checked that caller (the mount has
    /// default_permissions), so such an update is retried with Ferry's own rights.
    private func setTimes(_ ctx: ThreadCredentials, _ fd: Int32, _ changes: AttributeChanges) throws(Errno) {
        let access = timespec(changes.atime), modification = timespec(changes.mtime)
        do {
            try Host.setTimes(fd, access: access, modification: modification)
        } catch .permission where changes.ctimeGiven {
            try ctx.asRoot { () throws(Errno) in try Host.setTimes(fd, access: access, modification: modification) }
        }
    }

    /// ACCESS: the host's own check with the caller's credentials.
    public func access(_ ctx: ThreadCredentials, nodeID: UInt64, mask: UInt32) throws(Errno) {
        try withNode(nodeID, ctx) { (_, fd) throws(Errno) in
            if mask & UInt32(W_OK) != 0 { try checkWritable() }
            try Host.access(fd, mask: Int32(bitPattern: mask))
        }
    }

    /// READLINK.
    public func readlink(_ ctx: ThreadCredentials, nodeID: UInt64) throws(Errno) -> [UInt8] {
        try withNode(nodeID, ctx) { (inode, fd) throws(Errno) in
            guard inode.isSymlink else { throw Errno.invalid }
            return try Host.readlink(fd)
        }
    }

    /// STATFS of the file system holding `nodeID`.
    public func statfs(_ ctx: ThreadCredentials, nodeID: UInt64) throws(Errno) -> CFerrySys.statfs {
        try withNode(nodeID, ctx) { (_, fd) throws(Errno) in try Host.statfs(fd) }
    }

    private func timespec(_ change: TimeChange?) -> Glibc.timespec {
        switch change {
        case nil: return Glibc.timespec(tv_sec: 0, tv_nsec: 0x3fff_fffe)
        case .now?: return Glibc.timespec(tv_sec: 0, tv_nsec: 0x3fff_ffff)
        case let .at(seconds, nanoseconds)?: return Glibc.timespec(tv_sec: Int(seconds), tv_nsec: Int(nanoseconds))
        }
    }
}
