import FerryFS
import FerryProtocol
import FerrySystem
import Glibc

/// The opcode switch: each case calls the filesystem and encodes its answer.
extension FUSEEngine {
    func dispatch(_ request: Request, worker: Worker, writer: inout WireWriter) throws(Errno) -> Outcome {
        let h = request.header
        let ctx = worker.credentials
        switch request.operation {
        case let .initialize(initIn):
            return initialize(initIn, writer: &writer)
        case .destroy:
            logger.info("kernel sent DESTROY: the file system is being unmounted")
            return .replied
        case let .forget(n):
            fs.forget(h.nodeID, count: n)
            return .silent
        case let .batchForget(items):
            for item in items { fs.forget(item.nodeID, count: item.nlookup) }
            return .silent
        case let .interrupt(unique):
            // Only lock waits block; everything else completes promptly and needs no cancelling.
            fs.locks.interrupt(unique: unique)
            return .silent
        default:
            break
        }
        guard initialized.load(ordering: .acquiring) else {
            logger.error("#\(h.unique): request before INIT")
            throw Errno.io
        }
        try becomeCaller(h, worker)
        if !request.operation.isData {
            worker.data.io.flush()   // queued reads start before this request's own syscalls
        }
        let timeout = options.cache.timeout
        switch request.operation {
        case let .lookup(name):
            do {
                writer.append(entry(try fs.lookup(ctx, parent: h.nodeID, name: name)))
            } catch .noEntry where options.cachesMissingNames {
                // A negative entry: the kernel remembers the name is absent (node id 0) until a
                // change notification for the name, or the timeout, drops it.
                writer.append(EntryOut(nodeID: 0, generation: 0, entryTimeout: timeout, attrTimeout: .zero,
                                       attributes: Attributes()))
            }
        case let .getattr(flags, fh):
            let stat = try fs.getattr(ctx, nodeID: h.nodeID, fh: flags & RequestFlags.getattrFH != 0 ? fh : nil)
            writer.appendAttrOut(attributes(of: h.nodeID, stat), timeout: timeout)
        case let .setattr(s):
            let stat = try fs.setattr(ctx, nodeID: h.nodeID, changes: try hostChanges(Conversions.changes(s), h))
            writer.appendAttrOut(attributes(of: h.nodeID, stat), timeout: timeout)
        case let .statx(s):
            let mask = s.mask | HostFlags.statxBasicStats | HostFlags.statxMntID
            let stat = try fs.getattr(ctx, nodeID: h.nodeID, fh: s.getattrFlags & RequestFlags.getattrFH != 0 ? s.fh : nil,
                                      mask: mask)
            setIDReports.reporting(nodeID: h.nodeID, mode: UInt32(stat.stx_mode))
            writer.appendStatxOut(guestStatx(stat), timeout: timeout)
        case .readlink:
            writer.append(bytes: try fs.readlink(ctx, nodeID: h.nodeID))
        case let .symlink(name, target):
            let e = try fs.symlink(ctx, parent: h.nodeID, name: name, target: target)
            writer.append(entry(try givingOwner(e, h, parent: h.nodeID, ctx: ctx)))
        case let .mknod(name, mode, rdev, umask):
            let e = try fs.mknod(ctx, parent: h.nodeID, name: name, mode: mode, rdev: rdev, umask: umask)
            writer.append(entry(try givingOwner(e, h, parent: h.nodeID, ctx: ctx)))
        case let .mkdir(name, mode, umask):
            let e = try fs.mkdir(ctx, parent: h.nodeID, name: name, mode: mode, umask: umask)
            writer.append(entry(try givingOwner(e, h, parent: h.nodeID, ctx: ctx)))
        case let .unlink(name):
            try fs.remove(ctx, parent: h.nodeID, name: name, directory: false)
        case let .rmdir(name):
            try fs.remove(ctx, parent: h.nodeID, name: name, directory: true)
        case let .rename(newParent, flags, name, newName):
            try fs.rename(ctx, parent: h.nodeID, name: name, newParent: newParent, newName: newName, flags: flags)
        case let .link(oldNodeID, newName):
            writer.append(entry(try fs.link(ctx, nodeID: oldNodeID, parent: h.nodeID, name: newName)))
        case let .open(flags, _):
            let fh = try fs.open(ctx, nodeID: h.nodeID, flags: flags)
            appendFileOpenOut(fh: fh, nodeID: h.nodeID, openFlags: flags, ctx: ctx, writer: &writer)
        case let .create(name, flags, mode, umask, _):
            let (e, fh) = try create(h, name: name, flags: flags, mode: mode, umask: umask, ctx: ctx)
            writer.append(entry(e))
            appendFileOpenOut(fh: fh, nodeID: e.nodeID, openFlags: flags, mode: UInt32(e.stat.stx_mode), ctx: ctx, writer: &writer)
        case let .tmpfile(flags, mode, umask, _):
            let (created, fh) = try fs.tmpfile(ctx, parent: h.nodeID, flags: flags, mode: mode, umask: umask)
            let e = try owningOpened(created, fh: fh, h, ctx: ctx)
            writer.append(entry(e))
            appendFileOpenOut(fh: fh, nodeID: e.nodeID, openFlags: flags, mode: UInt32(e.stat.stx_mode), ctx: ctx, writer: &writer)
        case .read, .write, .fsync, .fsyncdir, .fallocate:
            return try submitData(request, worker: worker)
        case let .flush(fh, lockOwner):
            if options.posixLocks { fs.locks.flush(nodeID: h.nodeID, owner: lockOwner) }
            try fs.flush(fh: fh)
        case let .release(fh, _, _, _), let .releasedir(fh):
            if options.posixLocks { fs.locks.release(fh: fh) }
            // Before the descriptor (and so the number fh) is freed; it still names the file.
            if let quietNode = backing.released(fh: fh), let file = try? fs.openFiles.get(fh) {
                fs.inodes.passthroughWriters(quietNode, present: false, fd: file.fd.rawValue)
            }
            try fs.release(fh: fh)
        case .opendir:
            let fh = try fs.opendir(ctx, nodeID: h.nodeID)
            writer.appendOpenOut(fh: fh, flags: openReplyFlags(fh: fh, directory: true))
        case let .readdir(io):
            try readdir(io, plus: false, ctx: ctx, writer: &writer)
        case let .readdirplus(io):
            try readdir(io, plus: true, ctx: ctx, writer: &writer)
        case .statfs:
            writer.append(Conversions.statfs(try fs.statfs(ctx, nodeID: h.nodeID)))
        case let .setxattr(name, value, flags):
            if let translated = try hostXattrValue(name: name, value: value, h) {
                try translated.withUnsafeBytes { raw in
                    Result { () throws(Errno) in try fs.setxattr(ctx, nodeID: h.nodeID, name: name, value: raw, flags: flags) }
                }.get()
                return .replied
            }
            try value.withUnsafeBytes { raw in
                Result { () throws(Errno) in try fs.setxattr(ctx, nodeID: h.nodeID, name: name, value: raw, flags: flags) }
            }.get()
        case let .getxattr(name, size):
            let result = try fs.getxattr(ctx, nodeID: h.nodeID, name: name, size: size)
            if size == 0 { writer.append(UInt32(result.size)); writer.append(UInt32(0)) }
            else { writer.append(bytes: guestXattrValue(name: name, value: result.value)) }
        case let .listxattr(size):
            let result = try fs.listxattr(ctx, nodeID: h.nodeID, size: size)
            if size == 0 { writer.append(UInt32(result.size)); writer.append(UInt32(0)) }
            else { writer.append(bytes: result.names) }
        case let .removexattr(name):
            try fs.removexattr(ctx, nodeID: h.nodeID, name: name)
        case let .access(mask):
            try fs.access(ctx, nodeID: h.nodeID, mask: mask)
        case let .lseek(fh, offset, whence):
            writer.append(try fs.lseek(fh: fh, offset: offset, whence: whence))
        case let .copyFileRange(c):
            let copied = try fs.copyFileRange(from: c.fhIn, at: c.offsetIn, to: c.fhOut, at: c.offsetOut,
                                              length: c.length, flags: c.flags)
            writer.append(UInt32(copied)); writer.append(UInt32(0))
        case .syncfs:
            try fs.syncfs()
        case let .ioctl(i):
            guard i.flags & RequestFlags.ioctlUnrestricted == 0 else { throw Errno.noSys }
            let out = try fs.ioctl(fh: i.fh, command: i.command, input: i.data.bytes, outSize: i.outSize)
            writer.append(Int32(0)); writer.append(UInt32(0)); writer.append(UInt32(0)); writer.append(UInt32(0))
            writer.append(bytes: out)
        case let .getlk(l):
            let query = { () throws(Errno) in
                try self.fs.getlk(ctx, nodeID: h.nodeID, fh: l.fh, owner: l.owner, lock: self.lockRange(l.lock))
            }
            var (conflict, pid) = try query()
            if conflict.type != UInt32(HostLock.unlock) {
                // The conflict may be a lock an earlier close already dropped: ask again after it.
                closeOrdering.settle(nodeID: h.nodeID, unique: h.unique, me: worker.progress)
                (conflict, pid) = try query()
            }
            writer.append(conflict.start); writer.append(conflict.end); writer.append(conflict.type); writer.append(pid)
        case let .setlk(l, blocking):
            let isFlock = l.lockFlags & RequestFlags.lockFlock != 0
            guard isFlock ? options.flockLocks : options.posixLocks else { throw Errno.noSys }
            let unique = h.unique, sink = worker.deferredReplies
            let attempt = { (blocking: Bool) -> LockManager.Outcome in
                self.fs.setlk(ctx, nodeID: h.nodeID, fh: l.fh, owner: l.owner, pid: l.lock.pid,
                              lock: self.lockRange(l.lock), flock: isFlock, blocking: blocking, unique: unique) {
                    [self] error in self.sendDeferredReply(unique: unique, error: error, sink: sink)
                }
            }
            var outcome = attempt(false)
            if case let .done(error?) = outcome, error.rawValue == EAGAIN {
                // The conflict may be a lock an earlier close already dropped: try again after it,
                // and only then wait (SETLKW) or give up (SETLK).
                closeOrdering.settle(nodeID: h.nodeID, unique: h.unique, me: worker.progress)
                outcome = attempt(blocking)
            }
            switch outcome {
            case .waiting: return .deferred
            case let .done(error?): throw error
            case .done(nil): break
            }
        case let .unsupported(opcode):
            logger.debug("#\(h.unique): opcode \(opcode) is not implemented; answering ENOSYS")
            throw Errno.noSys
        case .initialize, .destroy, .forget, .batchForget, .interrupt:
            break  // handled above
        }
        return .replied
    }

    func lockRange(_ l: FileLock) -> LockRange {
        LockRange(start: l.start, end: l.end, type: l.type)
    }

    /// A LOOKUP-style reply for `e` with the configured timeouts.
    func entry(_ e: Entry) -> EntryOut {
        let timeout = options.cache.timeout
        return EntryOut(nodeID: e.nodeID, generation: e.generation, entryTimeout: timeout, attrTimeout: timeout,
                        attributes: attributes(of: e.nodeID, e.stat))
    }

    /// The wire attributes of node `nodeID`, noting set-id bits the kernel is about to cache.
    func attributes(of nodeID: UInt64, _ stat: HostStat) -> Attributes {
        setIDReports.reporting(nodeID: nodeID, mode: UInt32(stat.stx_mode))
        return guestAttributes(stat)
    }

    /// The cache mode's flags for the open of file handle `fh`.
    ///
    /// With `auto` the kernel keeps a file's page cache across opens only while the host file is
    /// unchanged since the node's previous open (close-to-open consistency with a validator,
    /// protocol/fuse-abi.md "Cache modes"); otherwise it drops it, as at every open before.
    /// Directories keep no listing in `auto`: a cached listing carries no attributes, so after
    /// the 1 s entry timeout `ls -l` would look up each name instead of one READDIRPLUS.
    func openReplyFlags(fh: UInt64, directory: Bool) -> OpenReplyFlags {
        switch options.cache {
        // Direct I/O files may take writes to one file in parallel (the kernel still serialises
        // appends and writes past the end); each WRITE is one positioned host write.
        case .never: return directory ? [] : [.directIO, .parallelDirectWrites]
        case .auto: return !directory && fs.contentUnchangedSinceLastOpen(fh: fh) ? .keepCache : []
        case .always: return directory ? [.keepCache, .cacheDir] : .keepCache
        }
    }

    private func readdir(_ io: IOIn, plus: Bool, ctx: ThreadCredentials, writer: inout WireWriter) throws(Errno) {
        let limit = ReplyFraming.bodyOffset + min(Int(io.size), writer.buffer.capacity - ReplyFraming.bodyOffset)
        var out = writer
        let recordExtra = plus ? FUSEABI.entryOutSize : 0
        // The client's size, capped at the reply buffer: it sizes Ferry's getdents buffer too.
        try fs.readdir(ctx, fh: io.fh, offset: io.offset, size: limit - ReplyFraming.bodyOffset, plus: plus, fits: { nameLength in
            out.count + recordExtra + WireWriter.direntSize(nameLength: nameLength) <= limit
        }, add: { dirent, node in
            if plus {
                if let node {
                    out.append(entry(node))
                } else {
                    var attributes = Attributes()
                    attributes.ino = dirent.ino
                    attributes.mode = dirent.type << 12
                    out.append(EntryOut(nodeID: 0, generation: 0, entryTimeout: .zero, attrTimeout: .zero,
                                        attributes: attributes))
                }
            }
            dirent.name.withUnsafeBytes { raw in
                out.appendDirent(ino: dirent.ino, offset: dirent.nextOffset, type: dirent.type, name: ByteView(raw))
            }
        })
        writer = out
    }

    private func initialize(_ request: InitIn, writer: inout WireWriter) -> Outcome {
        switch Negotiation.reply(to: request, options: options) {
        case let .failure(error):
            logger.error("INIT failed: \(error)")
            return .failed(Errno(rawValue: EPROTO))
        case let .success((out, agreed)):
            writer.append(out)
            if agreed.minor > 0 {
                negotiated.withLock { $0 = agreed }
                agreedFlags.store(agreed.flags.rawValue, ordering: .releasing)
                initialized.store(true, ordering: .releasing)
                logger.info("FUSE \(request.major).\(request.minor) from the kernel; speaking 7.\(agreed.minor), flags 0x\(String(agreed.flags.rawValue, radix: 16))")
                if options.idmappedMounts {
                    if agreed.flags.contains(.allowIdmap) {
                        logger.info("idmapped mounts allowed (FUSE_ALLOW_IDMAP): the kernel checks permissions, requests without a caller run with Ferry's rights")
                    } else {
                        logger.warning("idmapped mounts unavailable: the kernel does not offer FUSE_ALLOW_IDMAP (Linux 6.12+); every request runs as its caller")
                    }
                }
                if options.passthrough {
                    logger.info(agreed.flags.contains(.passthrough)
                        ? "passthrough on: the kernel reads, writes and maps plain files on the host directly (max_stack_depth \(Negotiation.passthroughStackDepth))"
                        : "passthrough off: the kernel does not offer FUSE_PASSTHROUGH (FUSE 7.40, Linux 6.9, CONFIG_FUSE_PASSTHROUGH)")
                }
            }
            return .replied
        }
    }
}
