import FerrySystem

/// LOOKUP of "." and "..": what the kernel sends, with FUSE_EXPORT_SUPPORT, to decode file
/// handles of the mount (open_by_handle_at, an NFS server re-exporting it, fanotify users).
///
/// A handle of the mount carries a node id and its generation. The kernel asks for
/// LOOKUP(node id, ".") when it no longer holds that node, and for LOOKUP(node id, "..") to
/// connect a directory to its parent. Both replies count as lookups (FORGET follows).
extension PassthroughFS {
    /// LOOKUP(nodeID, "."): the node itself. A node the store no longer holds is found again
    /// from its id when the id was derived from the host file's handle (`PersistentNodeIDs`),
    /// the file still exists, and it provably lies inside the shared directory; anything else
    /// is ESTALE, which the kernel reports as a stale file handle.
    func lookupSelf(_ ctx: ThreadCredentials, nodeID: UInt64) throws(Errno) -> Entry {
        if let inode = try? inodes.get(nodeID) {
            let attributes: HostStat = try withNode(nodeID, ctx) { (_, fd) throws(Errno) in try self.stat(fd: fd) }
            if inodes.reference(inode) { return Entry(inode, stat: attributes) }
            // Forgotten meanwhile: found again below, like any node the kernel no longer holds.
        }
        return try ctx.asRoot { () throws(Errno) -> Entry in try lookupForgotten(nodeID) }
    }

    /// LOOKUP(nodeID, ".."): the parent directory of directory `nodeID`; the root for the
    /// root; ESTALE for a directory whose host parent is not inside the shared directory (moved
    /// out of it on the host).
    func lookupParent(_ ctx: ThreadCredentials, of nodeID: UInt64) throws(Errno) -> Entry {
        try withNode(nodeID, ctx) { (inode, fd) throws(Errno) in
            if inode.nodeID == InodeStore.rootID {
                return Entry(inodes.root, stat: try stat(fd: fd))
            }
            return try ctx.asRoot { () throws(Errno) -> Entry in
                let parent = try Host.openat(fd, CName(".."), flags: HostFlags.oPath | HostFlags.oDirectory)
                defer { Host.close(parent) }
                let stat = try stat(fd: parent)
                if InodeStore.key(of: stat) == inodes.root.key { return Entry(inodes.root, stat: stat) }
                guard containment.verdict(fd: parent, type: .directory) == .inside else {
                    logger.debug("LOOKUP(\(nodeID), \"..\"): the parent is not inside the shared directory; ESTALE")
                    throw Errno.stale
                }
                return try remember(fd: parent)
            }
        }
    }

    /// A node the kernel no longer holds, found again from its derived id (run as root:
    /// open_by_handle_at needs CAP_DAC_READ_SEARCH, the containment walk search permission).
    private func lookupForgotten(_ nodeID: UInt64) throws(Errno) -> Entry {
        let fd = try inodes.openDerived(nodeID, flags: HostFlags.oPath)
        defer { Host.close(fd) }
        let stat = try stat(fd: fd)
        let key = InodeStore.key(of: stat)
        // The file system accepts handles that are not quite its own (ext4 matches any
        // generation when the handle's is 0): the file's real handle must give the same id.
        guard let handle = try? FileHandle.of(fd).handle, inodes.persistentID(of: handle, mountID: key.mountID) == nodeID else {
            logger.debug("LOOKUP(\(nodeID), \".\"): the host file's own handle gives another node id; ESTALE")
            throw Errno.stale
        }
        let type = FileType(mode: UInt32(stat.stx_mode))
        switch containment.verdict(fd: fd, type: type) {
        case .inside:
            break
        case .unknown where type != .directory && inodes.wasHandedOut(nodeID):
            break   // its name is not cached on the host, but this run gave it out from inside
        case .unknown, .outside:
            logger.debug("LOOKUP(\(nodeID), \".\"): the host file is not provably inside the shared directory; ESTALE")
            throw Errno.stale
        }
        let entry = try remember(fd: fd)
        guard entry.nodeID == nodeID else {
            // Its derived id is taken by another node (this run counted it out): the file now
            // has a counted id, and the handle cannot name it.
            inodes.forget(entry.nodeID, count: 1)
            throw Errno.stale
        }
        return entry
    }
}
