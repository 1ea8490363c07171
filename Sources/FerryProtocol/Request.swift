/// `fuse_in_header`: who asks what about which node.
public struct InHeader: Sendable, Equatable {
    public var length: UInt32
    public var opcode: UInt32
    public var unique: UInt64
    public var nodeID: UInt64
    public var uid: UInt32
    public var gid: UInt32
    public var pid: UInt32
    /// Length of the extension area after the arguments, in units of 8 bytes (7.38+).
    public var totalExtensionLength: UInt16

    public init(length: UInt32, opcode: UInt32, unique: UInt64, nodeID: UInt64,
                uid: UInt32, gid: UInt32, pid: UInt32, totalExtensionLength: UInt16 = 0) {
        self.length = length; self.opcode = opcode; self.unique = unique; self.nodeID = nodeID
        self.uid = uid; self.gid = gid; self.pid = pid; self.totalExtensionLength = totalExtensionLength
    }
}

/// A decoded request: the header plus its typed arguments.
public struct Request {
    public var header: InHeader
    public var operation: Operation
}

/// Arguments of `FUSE_INIT` (`fuse_init_in`).
public struct InitIn: Sendable, Equatable {
    public var major: UInt32, minor: UInt32, maxReadahead: UInt32
    /// flags | flags2 << 32 (flags2 only when INIT_EXT is set).
    public var flags: InitFlags
}

/// Arguments of `FUSE_SETATTR` (`fuse_setattr_in`).
public struct SetattrIn: Sendable, Equatable {
    public var valid: SetattrValid
    public var fh: UInt64, size: UInt64, lockOwner: UInt64
    public var atime: UInt64, mtime: UInt64, ctime: UInt64
    public var atimeNsec: UInt32, mtimeNsec: UInt32, ctimeNsec: UInt32
    public var mode: UInt32, uid: UInt32, gid: UInt32
}

/// Arguments of `FUSE_READ` and `FUSE_WRITE` (`fuse_read_in` / `fuse_write_in`).
public struct IOIn: Sendable, Equatable {
    public var fh: UInt64, offset: UInt64, size: UInt32, ioFlags: UInt32, lockOwner: UInt64, openFlags: UInt32
}

/// Arguments of `FUSE_COPY_FILE_RANGE` (`fuse_copy_file_range_in`).
public struct CopyFileRangeIn: Sendable, Equatable {
    public var fhIn: UInt64, offsetIn: UInt64, nodeIDOut: UInt64, fhOut: UInt64, offsetOut: UInt64
    public var length: UInt64, flags: UInt64
}

/// Arguments of `FUSE_IOCTL` (`fuse_ioctl_in`) plus its input data.
public struct IoctlIn: Sendable {
    public var fh: UInt64, flags: UInt32, command: UInt32, argument: UInt64, inSize: UInt32, outSize: UInt32
    public var data: ByteView
}

/// Arguments of `FUSE_STATX` (`fuse_statx_in`).
public struct StatxIn: Sendable, Equatable {
    public var getattrFlags: UInt32, fh: UInt64, statxFlags: UInt32, mask: UInt32
}

/// A lock description (`fuse_file_lock`).
public struct FileLock: Sendable, Equatable {
    public var start: UInt64, end: UInt64, type: UInt32, pid: UInt32
    public init(start: UInt64, end: UInt64, type: UInt32, pid: UInt32) {
        self.start = start; self.end = end; self.type = type; self.pid = pid
    }
}

/// Arguments of `FUSE_GETLK`, `FUSE_SETLK`, `FUSE_SETLKW` (`fuse_lk_in`).
public struct LockIn: Sendable, Equatable {
    public var fh: UInt64, owner: UInt64, lock: FileLock, lockFlags: UInt32
}

/// Every request Ferry decodes, with typed arguments. Names are raw bytes without the NUL.
public enum Operation {
    case initialize(InitIn)
    case destroy
    case lookup(name: [UInt8])
    case forget(nlookup: UInt64)
    case batchForget([(nodeID: UInt64, nlookup: UInt64)])
    case getattr(flags: UInt32, fh: UInt64)
    case setattr(SetattrIn)
    case statx(StatxIn)
    case readlink
    case symlink(name: [UInt8], target: [UInt8])
    case mknod(name: [UInt8], mode: UInt32, rdev: UInt32, umask: UInt32)
    case mkdir(name: [UInt8], mode: UInt32, umask: UInt32)
    case unlink(name: [UInt8])
    case rmdir(name: [UInt8])
    case rename(newParent: UInt64, flags: UInt32, name: [UInt8], newName: [UInt8])
    case link(oldNodeID: UInt64, newName: [UInt8])
    case open(flags: UInt32, openFlags: UInt32)
    case create(name: [UInt8], flags: UInt32, mode: UInt32, umask: UInt32, openFlags: UInt32)
    case tmpfile(flags: UInt32, mode: UInt32, umask: UInt32, openFlags: UInt32)
    case read(IOIn)
    case write(IOIn, data: ByteView)
    case flush(fh: UInt64, lockOwner: UInt64)
    case release(fh: UInt64, flags: UInt32, releaseFlags: UInt32, lockOwner: UInt64)
    case fsync(fh: UInt64, flags: UInt32)
    case opendir(flags: UInt32)
    case readdir(IOIn)
    case readdirplus(IOIn)
    case releasedir(fh: UInt64)
    case fsyncdir(fh: UInt64, flags: UInt32)
    case statfs
    case setxattr(name: [UInt8], value: ByteView, flags: UInt32)
    case getxattr(name: [UInt8], size: UInt32)
    case listxattr(size: UInt32)
    case removexattr(name: [UInt8])
    case access(mask: UInt32)
    case fallocate(fh: UInt64, offset: UInt64, length: UInt64, mode: UInt32)
    case lseek(fh: UInt64, offset: UInt64, whence: UInt32)
    case copyFileRange(CopyFileRangeIn)
    case interrupt(unique: UInt64)
    case syncfs
    case ioctl(IoctlIn)
    case getlk(LockIn)
    case setlk(LockIn, blocking: Bool)
    /// An opcode Ferry knows of but does not serve, or does not know; answered with ENOSYS.
    case unsupported(opcode: UInt32)

    /// Whether the request moves or syncs file data (READ, WRITE, FSYNC, FSYNCDIR, FALLOCATE):
    /// the requests the I/O core runs.
    public var isData: Bool {
        switch self {
        case .read, .write, .fsync, .fsyncdir, .fallocate: return true
        default: return false
        }
    }
}

/// Turns request bytes into a `Request`. Pure and total: any input yields a request or a
/// `DecodeError`, never a trap.
public enum RequestDecoder {
    /// Decodes only the header (so that even a bad body can be answered by `unique`).
    /// `detached`: bytes of the request that are not in `bytes` (a WRITE's data left in guest
    /// memory); `fuse_in_header.len` counts them.
    public static func header(_ bytes: ByteView, detached: Int = 0) throws(DecodeError) -> InHeader {
        var r = WireReader(bytes)
        let header = InHeader(
            length: try r.read(), opcode: try r.read(), unique: try r.read(), nodeID: try r.read(),
            uid: try r.read(), gid: try r.read(), pid: try r.read(), totalExtensionLength: try r.read())
        try r.skip(2)  // padding
        guard detached >= 0, Int(header.length) - detached == bytes.count else {
            throw .lengthMismatch(header: header.length, received: bytes.count)
        }
        return header
    }

    /// Decodes a whole request. `setxattrExt` says whether SETXATTR carries the 16-byte argument
    /// struct (FUSE_SETXATTR_EXT negotiated) instead of the 8-byte one.
    /// `detached`: the bytes of a WRITE's data that are not in `bytes` but elsewhere (guest
    /// memory, see `header`); only a WRITE without extensions may have them.
    public static func decode(_ bytes: ByteView, setxattrExt: Bool = false, detached: Int = 0) throws(DecodeError) -> Request {
        let header = try header(bytes, detached: detached)
        if detached > 0 {
            guard header.opcode == Opcode.write.rawValue else { throw .invalidField("detached data of a request that is no WRITE") }
            guard header.totalExtensionLength == 0 else { throw .invalidField("total_extlen with detached data") }
        }
        let extLength = Int(header.totalExtensionLength) * 8
        guard extLength <= bytes.count - FUSEABI.inHeaderSize else { throw .invalidField("total_extlen") }
        let body = bytes.slice(FUSEABI.inHeaderSize, bytes.count - FUSEABI.inHeaderSize - extLength)!
        var r = WireReader(body)
        let operation: Operation
        guard let opcode = Opcode(rawValue: header.opcode) else {
            return Request(header: header, operation: .unsupported(opcode: header.opcode))
        }
        switch opcode {
        case .`init`:
            let major: UInt32 = try r.read(), minor: UInt32 = try r.read()
            let readahead: UInt32 = try r.read(), flags: UInt32 = try r.read()
            var all = UInt64(flags)
            if InitFlags(rawValue: all).contains(.initExt), r.remaining >= 4 {
                all |= UInt64(try r.read(UInt32.self)) << 32
            }
            operation = .initialize(InitIn(major: major, minor: minor, maxReadahead: readahead,
                                           flags: InitFlags(rawValue: all)))
        case .destroy: operation = .destroy
        case .lookup: operation = .lookup(name: try r.cString())
        case .forget: operation = .forget(nlookup: try r.read())
        case .batchForget:
            let count: UInt32 = try r.read()
            try r.skip(4)
            guard Int(count) <= r.remaining / 16 else { throw .invalidField("batch_forget count") }
            var items: [(nodeID: UInt64, nlookup: UInt64)] = []
            items.reserveCapacity(Int(count))
            for _ in 0..<count { items.append((try r.read(), try r.read())) }
            operation = .batchForget(items)
        case .getattr:
            let flags: UInt32 = try r.read()
            try r.skip(4)
            operation = .getattr(flags: flags, fh: try r.read())
        case .setattr:
            let valid: UInt32 = try r.read()
            try r.skip(4)
            let fh: UInt64 = try r.read(), size: UInt64 = try r.read(), owner: UInt64 = try r.read()
            let atime: UInt64 = try r.read(), mtime: UInt64 = try r.read(), ctime: UInt64 = try r.read()
            let an: UInt32 = try r.read(), mn: UInt32 = try r.read(), cn: UInt32 = try r.read()
            let mode: UInt32 = try r.read()
            try r.skip(4)
            let uid: UInt32 = try r.read(), gid: UInt32 = try r.read()
            try r.skip(4)  // unused5
            operation = .setattr(SetattrIn(
                valid: SetattrValid(rawValue: valid), fh: fh, size: size, lockOwner: owner,
                atime: atime, mtime: mtime, ctime: ctime, atimeNsec: an, mtimeNsec: mn, ctimeNsec: cn,
                mode: mode, uid: uid, gid: gid))
        case .statx:
            let flags: UInt32 = try r.read()
            try r.skip(4)
            let fh: UInt64 = try r.read()
            operation = .statx(StatxIn(getattrFlags: flags, fh: fh, statxFlags: try r.read(), mask: try r.read()))
        case .readlink: operation = .readlink
        case .symlink:
            let name = try r.cString()
            operation = .symlink(name: name, target: try r.cString())
        case .mknod:
            let mode: UInt32 = try r.read(), rdev: UInt32 = try r.read(), umask: UInt32 = try r.read()
            try r.skip(4)
            operation = .mknod(name: try r.cString(), mode: mode, rdev: rdev, umask: umask)
        case .mkdir:
            let mode: UInt32 = try r.read(), umask: UInt32 = try r.read()
            operation = .mkdir(name: try r.cString(), mode: mode, umask: umask)
        case .unlink: operation = .unlink(name: try r.cString())
        case .rmdir: operation = .rmdir(name: try r.cString())
        case .rename:
            let newParent: UInt64 = try r.read()
            let name = try r.cString()
            operation = .rename(newParent: newParent, flags: 0, name: name, newName: try r.cString())
        case .rename2:
            let newParent: UInt64 = try r.read(), flags: UInt32 = try r.read()
            try r.skip(4)
            let name = try r.cString()
            operation = .rename(newParent: newParent, flags: flags, name: name, newName: try r.cString())
        case .link:
            let old: UInt64 = try r.read()
            operation = .link(oldNodeID: old, newName: try r.cString())
        case .open:
            operation = .open(flags: try r.read(), openFlags: try r.read())
        case .opendir:
            let flags: UInt32 = try r.read()
            operation = .opendir(flags: flags)
        case .create, .tmpfile:
            let flags: UInt32 = try r.read(), mode: UInt32 = try r.read()
            let umask: UInt32 = try r.read(), openFlags: UInt32 = try r.read()
            if opcode == .create {
                operation = .create(name: try r.cString(), flags: flags, mode: mode, umask: umask, openFlags: openFlags)
            } else {
                operation = .tmpfile(flags: flags, mode: mode, umask: umask, openFlags: openFlags)
            }
        case .read, .write, .readdir, .readdirplus:
            let io = IOIn(fh: try r.read(), offset: try r.read(), size: try r.read(), ioFlags: try r.read(),
                          lockOwner: try r.read(), openFlags: try r.read())
            try r.skip(4)
            switch opcode {
            case .read: operation = .read(io)
            case .readdir: operation = .readdir(io)
            case .readdirplus: operation = .readdirplus(io)
            default:
                guard Int(io.size) == r.remaining + detached else {
                    throw .invalidField("write size \(io.size) vs \(r.remaining + detached) bytes")
                }
                operation = .write(io, data: r.rest())
            }
        case .flush:
            let fh: UInt64 = try r.read()
            try r.skip(8)
            operation = .flush(fh: fh, lockOwner: try r.read())
        case .release, .releasedir:
            let fh: UInt64 = try r.read(), flags: UInt32 = try r.read(), releaseFlags: UInt32 = try r.read()
            let owner: UInt64 = try r.read()
            operation = opcode == .release
                ? .release(fh: fh, flags: flags, releaseFlags: releaseFlags, lockOwner: owner)
                : .releasedir(fh: fh)
        case .fsync, .fsyncdir:
            let fh: UInt64 = try r.read(), flags: UInt32 = try r.read()
            try r.skip(4)
            operation = opcode == .fsync ? .fsync(fh: fh, flags: flags) : .fsyncdir(fh: fh, flags: flags)
        case .statfs: operation = .statfs
        case .setxattr:
            let size: UInt32 = try r.read(), flags: UInt32 = try r.read()
            if setxattrExt { try r.skip(8) }
            let name = try r.cString()
            operation = .setxattr(name: name, value: try r.bytes(Int(size)), flags: flags)
        case .getxattr:
            let size: UInt32 = try r.read()
            try r.skip(4)
            operation = .getxattr(name: try r.cString(), size: size)
        case .listxattr:
            let size: UInt32 = try r.read()
            try r.skip(4)
            operation = .listxattr(size: size)
        case .removexattr: operation = .removexattr(name: try r.cString())
        case .access:
            let mask: UInt32 = try r.read()
            try r.skip(4)
            operation = .access(mask: mask)
        case .fallocate:
            let fh: UInt64 = try r.read(), off: UInt64 = try r.read(), len: UInt64 = try r.read()
            let mode: UInt32 = try r.read()
            try r.skip(4)
            operation = .fallocate(fh: fh, offset: off, length: len, mode: mode)
        case .lseek:
            let fh: UInt64 = try r.read(), off: UInt64 = try r.read()
            let whence: UInt32 = try r.read()
            try r.skip(4)
            operation = .lseek(fh: fh, offset: off, whence: whence)
        case .copyFileRange:
            operation = .copyFileRange(CopyFileRangeIn(
                fhIn: try r.read(), offsetIn: try r.read(), nodeIDOut: try r.read(), fhOut: try r.read(),
                offsetOut: try r.read(), length: try r.read(), flags: try r.read()))
        case .interrupt: operation = .interrupt(unique: try r.read())
        case .syncfs: operation = .syncfs
        case .ioctl:
            let fh: UInt64 = try r.read(), flags: UInt32 = try r.read(), cmd: UInt32 = try r.read()
            let arg: UInt64 = try r.read(), inSize: UInt32 = try r.read(), outSize: UInt32 = try r.read()
            operation = .ioctl(IoctlIn(fh: fh, flags: flags, command: cmd, argument: arg,
                                       inSize: inSize, outSize: outSize, data: try r.bytes(Int(inSize))))
        case .getlk, .setlk, .setlkw:
            let fh: UInt64 = try r.read(), owner: UInt64 = try r.read()
            let lock = FileLock(start: try r.read(), end: try r.read(), type: try r.read(), pid: try r.read())
            let lockIn = LockIn(fh: fh, owner: owner, lock: lock, lockFlags: try r.read())
            try r.skip(4)
            operation = opcode == .getlk ? .getlk(lockIn) : .setlk(lockIn, blocking: opcode == .setlkw)
        case .bmap, .poll, .notifyReply, .setupMapping, .removeMapping, .copyFileRange64:
            operation = .unsupported(opcode: header.opcode)
        }
        return Request(header: header, operation: operation)
    }
}
