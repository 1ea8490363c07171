import FerryFS
import FerryProtocol
import FerrySystem
import Glibc

/// Host side effects the kernel does not see (protocol/side-effects.md has the whole table).
///
/// Most replies either carry the attributes the host has after the request (LOOKUP, CREATE,
/// MKNOD, MKDIR, SYMLINK, LINK, SETATTR, GETATTR, STATX), or the kernel drops what the request
/// changed itself (size, times, link counts, a directory's attributes after a change in it).
/// What remains is listed here: the engine sends FUSE_NOTIFY_INVAL_INODE (attributes only) for
/// each node below before the reply, so by the time the caller's system call returns the
/// kernel will ask again. This does not depend on change notifications (whose host watcher
/// skips Ferry's own changes) or on the cache mode.
extension FUSEEngine {
    /// The nodes whose cached attributes `request` made stale on the host, once it succeeded.
    func nodesWithHiddenChanges(_ request: Request) -> [UInt64] {
        let node = request.header.nodeID
        switch request.operation {
        case let .write(io, _):
            // The host clears S_ISUID/S_ISGID on a write by a caller without CAP_FSETID.
            return setIDMayHaveDropped(fh: io.fh)
        case let .fallocate(fh, _, _, _):
            return setIDMayHaveDropped(fh: fh)
        case let .copyFileRange(c):
            return setIDMayHaveDropped(fh: c.fhOut)
        case let .open(flags, _) where Int32(bitPattern: flags) & HostFlags.oTrunc != 0:
            // Truncation at open (ATOMIC_O_TRUNC): the kernel updates size and times only.
            return setIDReports.mayHoldSetID(node) ? [node] : []
        case let .ioctl(i) where PassthroughFS.ioctlChangesInode(i.command):
            // FS_IOC_SETFLAGS / FS_IOC_FSSETXATTR: new ctime and inode flags.
            return [node]
        default:
            return []
        }
    }

    private func setIDMayHaveDropped(fh: UInt64) -> [UInt64] {
        guard let file = try? fs.openFiles.get(fh), setIDReports.mayHoldSetID(file.nodeID) else { return [] }
        return [file.nodeID]
    }

    /// Drops the kernel's cached attributes of `nodes` (not their data) through `worker`'s
    /// channel. Safe inside a handler: an attributes-only invalidation takes no page lock.
    func invalidateAttributes(_ nodes: [UInt64], worker: Worker) {
        for node in nodes {
            let message = FUSENotification.invalidateInode(node: node, offset: -1, length: 0)
            let error = worker.sendNotification(message)
            if error != 0 && error != ENOENT {
                logger.warning("invalidating the attributes of node \(node) failed: \(Errno(rawValue: error))")
            }
        }
    }
}
