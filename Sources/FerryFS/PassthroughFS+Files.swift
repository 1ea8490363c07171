import FerrySystem
import Glibc

/// Open files: OPEN, CREATE, TMPFILE, FLUSH, RELEASE, LSEEK, COPY_FILE_RANGE, IOCTL, and the
/// open files that READ, WRITE, FSYNC and FALLOCATE run on (their I/O is the I/O core's).
extension PassthroughFS {
    /// The flags to reopen a file with: the kernel's flags without the ones that only made
    /// sense for the name lookup, adjusted for the writeback cache.
    func hostOpenFlags(_ flags: UInt32) -> Int32 {
        var flags = Int32(bitPattern: flags)
            & ~(HostFlags.oCreat | HostFlags.oExcl | HostFlags.oNoCTTY | HostFlags.oNoFollow | PassthroughFS.execOpenFlag)
        if options.writebackCache {
            // The kernel reads pages of write-only files to fill partial pages, and appends itself.
            if flags & HostFlags.oAccessMode == HostFlags.oWrOnly {
                flags = (flags & ~HostFlags.oAccessMode) | HostFlags.oRdWr
            }
            flags &= ~HostFlags.oAppend
        }
        return flags
    }

    /// Registers `file` as an open file of `nodeID`. A writable open with O_DIRECT gets a
    /// second descriptor of the same file with only the access mode (no O_DIRECT, no O_APPEND)
    /// for the page cache's writes (`OpenFile.pageCacheFD`). It is opened with Ferry's rights:
    /// the caller already holds the file with this access mode (a file created 0444 is writable
    /// only through the creating descriptor). If it cannot be opened (descriptor limit), page
    /// cache writes go through `file` itself.
    func insertOpenFile(_ ctx: ThreadCredentials, _ file: Int32, nodeID: UInt64, flags: Int32) -> UInt64 {
        var twin: Int32?
        if flags & HostFlags.oDirect != 0, flags & HostFlags.oAccessMode != HostFlags.oRdOnly {
            twin = try? ctx.asRoot { () throws(Errno) in
                try Host.reopen(file, flags: flags & HostFlags.oAccessMode)
            }
        }
        return openFiles.insert(fd: file, nodeID: nodeID, pageCacheFD: twin, direct: flags & HostFlags.oDirect != 0)
    }

    func checkOpenAllowed(_ flags: Int32) throws(Errno) {
        if flags & HostFlags.oAccessMode != HostFlags.oRdOnly || flags & HostFlags.oTrunc != 0 {
            try checkWritable()
        }
    }

    /// The kernel's mark on the open that execve(2) makes (__FMODE_EXEC in `f_flags`).
    static let execOpenFlag: Int32 = 0x20

    /// OPEN: returns the file handle.
    public func open(_ ctx: ThreadCredentials, nodeID: UInt64, flags: UInt32) throws(Errno) -> UInt64 {
        let hostFlags = hostOpenFlags(flags)
        try checkOpenAllowed(hostFlags)
        let exec = Int32(bitPattern: flags) & PassthroughFS.execOpenFlag != 0
            && hostFlags & (HostFlags.oAccessMode | HostFlags.oTrunc) == HostFlags.oRdOnly
        return try openFiles.reserving { () throws(Errno) in
            try withNode(nodeID, ctx) { (inode, fd) throws(Errno) in
                guard !inode.isSymlink else { throw Errno.loop }
                if inode.type != .regular && inode.type != .directory { throw refuseSpecialFile("OPEN", inode.type) }
                let file: Int32
                do throws(Errno) {
                    file = try Host.reopen(fd, flags: hostFlags)
                } catch .access where exec && inode.type == .regular {
                    file = try openToExecute(ctx, fd, flags: hostFlags)
                }
                return insertOpenFile(ctx, file, nodeID: nodeID, flags: hostFlags)
            }
        }
    }

    /// The open behind an execve(2) of a file the caller may execute but not read (mode 0711):
    /// the host lets such a caller run it, but a read-only open as the caller fails. Only after
    /// the host confirms the caller's execute permission (its own credentials, the mount's
    /// noexec included) is the file opened read-only with Ferry's rights, for the kernel's exec
    /// to load it; the kernel reads such a file only to run it.
    private func openToExecute(_ ctx: ThreadCredentials, _ fd: Int32, flags: Int32) throws(Errno) -> Int32 {
        do throws(Errno) { try Host.access(fd, mask: X_OK) } catch { throw Errno.access }
        return try ctx.asRoot { () throws(Errno) in try Host.reopen(fd, flags: flags) }
    }

    /// CREATE: creates and opens `name`; returns the entry and the file handle.
    public func create(_ ctx: ThreadCredentials, parent: UInt64, name: [UInt8], flags: UInt32, mode: UInt32,
                       umask: UInt32) throws(Errno) -> (Entry, UInt64) {
        try checkWritable()
        let name = try validName(name)
        let hostFlags = hostOpenFlags(flags) | HostFlags.oCreat | HostFlags.oNoFollow
            | (Int32(bitPattern: flags) & HostFlags.oExcl)
        return try openFiles.reserving { () throws(Errno) in
            try withDirectory(parent, ctx) { (_, dirFD) throws(Errno) in
                ctx.setUmask(umask)
                return try inodes.withRoom { (room) throws(Errno) in
                    let file = try openToCreate(dirFD, name, flags: hostFlags, mode: mode)
                    do throws(Errno) {
                        let entry = try remember(fd: file, room: room)
                        return (entry, insertOpenFile(ctx, file, nodeID: entry.nodeID, flags: hostFlags))
                    } catch {
                        Host.close(file)
                        throw error
                    }
                }
            }
        }
    }

    /// CREATE's open of `name`: a new file is created exclusively. A name that exists already
    /// (the kernel asks only after a negative lookup, so someone else made it meanwhile) is
    /// opened, as open(2) with O_CREAT would, only if it is a regular file: a FIFO's open would
    /// block the worker until a peer came, a device's would touch the device, and the kernel
    /// takes only a regular file from a CREATE (it turns anything else into EIO).
    private func openToCreate(_ dirFD: Int32, _ name: CName, flags: Int32, mode: UInt32) throws(Errno) -> Int32 {
        // Another client may delete the name between the attempts: create it again, a few times.
        var attempts = 0
        while true {
            attempts += 1
            do throws(Errno) {
                return try Host.openat(dirFD, name, flags: flags | HostFlags.oExcl, mode: mode)
            } catch .exists where flags & HostFlags.oExcl == 0 && attempts < 4 {}
            let existing: OwnedFD
            do throws(Errno) {
                existing = OwnedFD(try Host.openat(dirFD, name, flags: PassthroughFS.pathFlags))
            } catch .noEntry where attempts < 4 { continue }
            let type = FileType(mode: UInt32(try stat(fd: existing.rawValue).stx_mode))
            switch type {
            case .regular?:
                return try Host.reopen(existing.rawValue, flags: flags & ~(HostFlags.oCreat | HostFlags.oNoFollow))
            case .symlink?: throw Errno.loop   // what O_CREAT|O_NOFOLLOW meets on a symlink
            case .directory?: throw Errno(rawValue: EISDIR)
            default: throw refuseSpecialFile("CREATE", type)
            }
        }
    }

    /// The error for an open or truncation of a FIFO, device or socket (`specialFileRefusals`),
    /// with a rate-limited log line.
    func refuseSpecialFile(_ operation: String, _ type: FileType?) -> Errno {
        specialFileRefusals.warn { suppressed in
            "\(operation) of a \(type.map { "\($0)" } ?? "file of unknown type") refused (EIO): the kernel opens and "
                + "truncates only regular files through FUSE"
                + (suppressed > 0 ? " (\(suppressed) more since the last such line)" : "")
        }
        return Errno.io
    }

    /// TMPFILE: an unnamed file in directory `parent` (O_TMPFILE); returns the entry and handle.
    public func tmpfile(_ ctx: ThreadCredentials, parent: UInt64, flags: UInt32, mode: UInt32,
                        umask: UInt32) throws(Errno) -> (Entry, UInt64) {
        try checkWritable()
        let hostFlags = (hostOpenFlags(flags) & ~HostFlags.oDirectory) | HostFlags.oTmpfile
        return try openFiles.reserving { () throws(Errno) in
            try withNode(parent, ctx) { (_, dirFD) throws(Errno) in
                ctx.setUmask(umask)
                return try inodes.withRoom { (room) throws(Errno) in
                    let file = try Host.openat(dirFD, CName("."), flags: hostFlags, mode: mode)
                    do throws(Errno) {
                        let entry = try remember(fd: file, keepDescriptor: true, room: room)
                        return (entry, insertOpenFile(ctx, file, nodeID: entry.nodeID, flags: hostFlags))
                    } catch {
                        Host.close(file)
                        throw error
                    }
                }
            }
        }
    }

    /// The open file behind `fh`, for a READ or FSYNC the I/O core runs on it.
    public func openFile(_ fh: UInt64) throws(Errno) -> OpenFileTable.OpenFile {
        try openFiles.get(fh)
    }

    /// The open file behind `fh`, for a WRITE or FALLOCATE (EROFS on a read-only export).
    /// A WRITE that the kernel marks FUSE_WRITE_CACHE goes to `OpenFile.pageCacheFD` if there
    /// is one: the page cache never writes through O_DIRECT.
    public func writableFile(_ fh: UInt64) throws(Errno) -> OpenFileTable.OpenFile {
        try checkWritable()
        return try openFiles.get(fh)
    }

    /// FLUSH (each close(2) of a descriptor): what a local close does, close(dup(fd)).
    public func flush(fh: UInt64) throws(Errno) {
        let file = try openFiles.get(fh)
        try Host.flushByDuplicate(file.fd.rawValue)
    }

    /// RELEASE and RELEASEDIR (last close): drops the handle.
    public func release(fh: UInt64) throws(Errno) {
        guard openFiles.remove(fh) != nil else { throw Errno.badFD }
    }

    /// LSEEK (SEEK_DATA / SEEK_HOLE; the kernel handles SET/CUR/END itself).
    public func lseek(fh: UInt64, offset: UInt64, whence: UInt32) throws(Errno) -> UInt64 {
        let file = try openFiles.get(fh)
        return UInt64(bitPattern: try Host.lseek(file.fd.rawValue, offset: Int64(bitPattern: offset),
                                                 whence: Int32(bitPattern: whence)))
    }

    /// COPY_FILE_RANGE between two open files; returns the bytes copied.
    public func copyFileRange(from fhIn: UInt64, at offsetIn: UInt64, to fhOut: UInt64, at offsetOut: UInt64,
                              length: UInt64, flags: UInt64) throws(Errno) -> Int {
        try checkWritable()
        let input = try openFiles.get(fhIn), output = try openFiles.get(fhOut)
        // The reply carries a 32-bit count: copy at most 1 GiB per request, like the kernel's own cap.
        let length = Int(min(length, 1 << 30))
        guard flags <= UInt64(UInt32.max) else { throw Errno.invalid }
        return try Host.copyFileRange(from: input.fd.rawValue, at: Int64(bitPattern: offsetIn),
                                      to: output.fd.rawValue, at: Int64(bitPattern: offsetOut),
                                      length: length, flags: UInt32(flags))
    }
}
