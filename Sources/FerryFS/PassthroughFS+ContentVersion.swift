import FerrySystem
import Glibc
import Synchronization

/// What the kernel's cached pages (or cached listing) of a node were read from: the host
/// file's modification time, change time and size at an open. Any write, truncate or entry
/// change on the host moves the change time (Linux 6.13+ gives a queried inode a distinct,
/// fine-grained change time on its next change, so two versions cannot share a timestamp).
struct ContentVersion: Equatable, Sendable {
    let mtimeSeconds: Int, mtimeNanoseconds: Int
    let ctimeSeconds: Int, ctimeNanoseconds: Int
    let size: Int64

    init(_ st: Glibc.stat) {
        mtimeSeconds = st.st_mtim.tv_sec; mtimeNanoseconds = st.st_mtim.tv_nsec
        ctimeSeconds = st.st_ctim.tv_sec; ctimeNanoseconds = st.st_ctim.tv_nsec
        size = Int64(st.st_size)
    }
}

extension PassthroughFS {
    /// Whether open file (or directory) `fh`'s host content is unchanged since the previous
    /// open of its node: the same modification time, change time and size. The version seen
    /// now is remembered for the next open.
    ///
    /// This is close-to-open consistency with a validator, as NFS has: the engine lets the
    /// kernel keep its page cache (and directory listing) across opens only when this holds,
    /// so a change on the host between two opens is always seen by the second one, with or
    /// without change notifications. The first open of a node, and any open whose host
    /// version cannot be read, answers false (the kernel drops what it has).
    public func contentUnchangedSinceLastOpen(fh: UInt64) -> Bool {
        guard let file = try? openFiles.get(fh), let inode = try? inodes.get(file.nodeID),
              let st = try? withExtendedLifetime(file, { () throws(Errno) in try Host.stat(file.fd.rawValue) })
        else { return false }
        let now = ContentVersion(st)
        return inode.lastOpenedVersion.withLock { last in
            defer { last = now }
            return last == now
        }
    }
}
