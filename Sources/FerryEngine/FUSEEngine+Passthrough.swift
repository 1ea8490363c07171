import FerryFS
import FerryProtocol
import FerrySystem
import Glibc

/// The open reply of a file: FOPEN_PASSTHROUGH with the node's backing id where the kernel may
/// do the I/O on the host file itself, else the cache mode's flags (protocol/fuse-abi.md).
extension FUSEEngine {
    /// Whether INIT agreed to passthrough.
    var passthroughAgreed: Bool {
        options.passthrough && InitFlags(rawValue: agreedFlags.load(ordering: .acquiring)).contains(.passthrough)
    }

    /// Appends `fuse_open_out` for file handle `fh` of node `nodeID` (OPEN, CREATE, TMPFILE);
    /// `mode` is the file's mode where the caller has just read it (CREATE, TMPFILE).
    ///
    /// Passed through: regular files without set-id bits. A file with S_ISUID/S_ISGID is not:
    /// the kernel writes a backing file with the credentials of the BACKING_OPEN (Ferry's, for
    /// every user of the inode), so the host would not clear those bits on another user's write
    /// (protocol/side-effects.md). Once a node is open in one mode, later opens follow it, so
    /// only a node's first open looks at the mode.
    /// Passthrough replaces KEEP_CACHE (the kernel refuses the pair; the page cache is then the
    /// host's own) and DIRECT_IO of `--cache never` (direct I/O would win over passthrough for
    /// reads and writes, and passthrough already reads the host file every time).
    /// `openFlags` are the request's open flags (whether the file is open for writing).
    func appendFileOpenOut(fh: UInt64, nodeID: UInt64, openFlags: UInt32, mode: UInt32? = nil, ctx: ThreadCredentials,
                           writer: inout WireWriter) {
        guard passthroughAgreed, let file = try? fs.openFiles.get(fh) else {
            writer.appendOpenOut(fh: fh, flags: openReplyFlags(fh: fh, directory: false))
            return
        }
        let eligible = { () -> Bool in
            guard let mode = mode ?? (try? Host.stat(file.fd.rawValue)).map({ UInt32($0.st_mode) }) else { return false }
            return mode & UInt32(S_IFMT) == UInt32(S_IFREG) && mode & SetIDReports.setIDBits == 0
        }
        let writable = openFlags & UInt32(O_ACCMODE) != UInt32(O_RDONLY)
        let opened = backing.opened(fh: fh, nodeID: nodeID, writable: writable, eligible: eligible) { (device) throws(Errno) -> Int32 in
            // Ferry's own credentials, not the caller's: the kernel keeps them for every open
            // of the inode, and opens each later user's backing file with them.
            // The backing id keeps the file it was given for as long as the inode stays open,
            // so it is given the node's own O_PATH descriptor (the kernel takes only its path):
            // given the caller's open file, it would keep that file's flock alive after the
            // caller closed it, and a waiter for the flock would wait forever.
            try ctx.asRoot { () throws(Errno) -> Int32 in
                try fs.withPathDescriptor(of: nodeID, ctx) { (path) throws(Errno) -> Int32 in
                    try FUSEBackingDevice.open(device: device, file: path)
                }
            }
        }
        if let opened {
            if opened.quiet { fs.inodes.passthroughWriters(nodeID, present: true, fd: file.fd.rawValue) }
            writer.appendOpenOut(fh: fh, flags: .passthrough, backingID: opened.id)
        } else {
            writer.appendOpenOut(fh: fh, flags: openReplyFlags(fh: fh, directory: false))
        }
    }
}
