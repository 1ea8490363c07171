import FerrySystem
import Glibc

/// Name operations: lookup, create, remove, rename, link.
extension PassthroughFS {
    /// LOOKUP: `name` in directory `parent`. "." is the node itself and ".." its parent
    /// directory (never above the shared root); the kernel sends them only to decode file
    /// handles of the mount (PassthroughFS+Export.swift).
    public func lookup(_ ctx: ThreadCredentials, parent: UInt64, name: [UInt8]) throws(Errno) -> Entry {
        if name == [0x2e] { return try lookupSelf(ctx, nodeID: parent) }
        if name == [0x2e, 0x2e] { return try lookupParent(ctx, of: parent) }
        return try withDirectory(parent, ctx) { (_, dirFD) throws(Errno) in
            try lookupChild(dirFD: dirFD, name: try validName(name))
        }
    }

    /// FORGET / BATCH_FORGET.
    public func forget(_ nodeID: UInt64, count: UInt64) {
        inodes.forget(nodeID, count: count)
    }

    /// MKDIR.
    public func mkdir(_ ctx: ThreadCredentials, parent: UInt64, name: [UInt8], mode: UInt32, umask: UInt32) throws(Errno) -> Entry {
        try checkWritable()
        let name = try validName(name)
        return try withDirectory(parent, ctx) { (_, dirFD) throws(Errno) in
            ctx.setUmask(umask)
            return try inodes.withRoom { (room) throws(Errno) in
                try Host.mkdir(dirFD, name, mode: mode)
                return try lookupChild(dirFD: dirFD, name: name, room: room)
            }
        }
    }

    /// MKNOD: regular files, fifos, sockets and device nodes (`rdev` in FUSE's 32-bit encoding).
    public func mknod(_ ctx: ThreadCredentials, parent: UInt64, name: [UInt8], mode: UInt32, rdev: UInt32,
                      umask: UInt32) throws(Errno) -> Entry {
        try checkWritable()
        let name = try validName(name)
        let (major, minor) = DeviceNumber.decode32(rdev)
        return try withDirectory(parent, ctx) { (_, dirFD) throws(Errno) in
            ctx.setUmask(umask)
            return try inodes.withRoom { (room) throws(Errno) in
                try Host.mknod(dirFD, name, mode: mode, device: DeviceNumber.make(major: major, minor: minor))
                return try lookupChild(dirFD: dirFD, name: name, room: room)
            }
        }
    }

    /// SYMLINK: `name` in `parent` pointing at `target` (stored as given, never followed here).
    public func symlink(_ ctx: ThreadCredentials, parent: UInt64, name: [UInt8], target: [UInt8]) throws(Errno) -> Entry {
        try checkWritable()
        let name = try validName(name)
        return try withDirectory(parent, ctx) { (_, dirFD) throws(Errno) in
            return try inodes.withRoom { (room) throws(Errno) in
                try Host.symlink(target: CName(target), dirFD, name)
                return try lookupChild(dirFD: dirFD, name: name, room: room)
            }
        }
    }

    /// LINK: a new name for `nodeID` in `parent`.
    public func link(_ ctx: ThreadCredentials, nodeID: UInt64, parent: UInt64, name: [UInt8]) throws(Errno) -> Entry {
        try checkWritable()
        let name = try validName(name)
        return try withNode(nodeID, ctx) { (_, fd) throws(Errno) in
            try withDirectory(parent, ctx) { (_, dirFD) throws(Errno) in
                try Host.link(fd, dirFD, name)
                return try lookupChild(dirFD: dirFD, name: name)
            }
        }
    }

    /// UNLINK and RMDIR.
    public func remove(_ ctx: ThreadCredentials, parent: UInt64, name: [UInt8], directory: Bool) throws(Errno) {
        try checkWritable()
        let name = try validName(name)
        try withDirectory(parent, ctx) { (_, dirFD) throws(Errno) in
            try Host.unlink(dirFD, name, directory: directory)
        }
    }

    /// RENAME and RENAME2 (flags NOREPLACE, EXCHANGE, WHITEOUT as the host allows).
    public func rename(_ ctx: ThreadCredentials, parent: UInt64, name: [UInt8], newParent: UInt64,
                       newName: [UInt8], flags: UInt32) throws(Errno) {
        try checkWritable()
        let name = try validName(name), newName = try validName(newName)
        let known = HostFlags.renameNoReplace | HostFlags.renameExchange | HostFlags.renameWhiteout
        guard flags & ~known == 0 else { throw Errno.invalid }
        try withDirectory(parent, ctx) { (_, oldDir) throws(Errno) in
            try withDirectory(newParent, ctx) { (_, newDir) throws(Errno) in
                try Host.rename(oldDir, name, newDir, newName, flags: flags)
            }
        }
    }
}
