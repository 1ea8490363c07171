/// File attributes as FUSE sends them (`fuse_attr`).
public struct Attributes: Sendable, Equatable {
    public var ino: UInt64 = 0, size: UInt64 = 0, blocks: UInt64 = 0
    public var atime: UInt64 = 0, mtime: UInt64 = 0, ctime: UInt64 = 0
    public var atimeNsec: UInt32 = 0, mtimeNsec: UInt32 = 0, ctimeNsec: UInt32 = 0
    public var mode: UInt32 = 0, nlink: UInt32 = 0, uid: UInt32 = 0, gid: UInt32 = 0
    public var rdev: UInt32 = 0, blksize: UInt32 = 0, flags: UInt32 = 0
    public init() {}
}

/// A cache lifetime as FUSE sends it: seconds plus nanoseconds.
public struct Timeout: Sendable, Equatable {
    public var seconds: UInt64, nanoseconds: UInt32
    public init(seconds: UInt64, nanoseconds: UInt32 = 0) { self.seconds = seconds; self.nanoseconds = nanoseconds }
    public static let zero = Timeout(seconds: 0)
}

/// `fuse_entry_out`: a node id handed to the kernel with its attributes.
public struct EntryOut: Sendable, Equatable {
    public var nodeID: UInt64, generation: UInt64
    public var entryTimeout: Timeout, attrTimeout: Timeout
    public var attributes: Attributes
    public init(nodeID: UInt64, generation: UInt64, entryTimeout: Timeout, attrTimeout: Timeout, attributes: Attributes) {
        self.nodeID = nodeID; self.generation = generation
        self.entryTimeout = entryTimeout; self.attrTimeout = attrTimeout; self.attributes = attributes
    }
}

/// `fuse_init_out`: what Ferry agrees to.
public struct InitOut: Sendable, Equatable {
    public var major: UInt32, minor: UInt32, maxReadahead: UInt32, flags: InitFlags
    public var maxBackground: UInt16, congestionThreshold: UInt16, maxWrite: UInt32, timeGranularity: UInt32
    public var maxPages: UInt16, maxStackDepth: UInt32
    public init(major: UInt32, minor: UInt32, maxReadahead: UInt32, flags: InitFlags, maxBackground: UInt16,
                congestionThreshold: UInt16, maxWrite: UInt32, timeGranularity: UInt32, maxPages: UInt16,
                maxStackDepth: UInt32 = 0) {
        self.major = major; self.minor = minor; self.maxReadahead = maxReadahead; self.flags = flags
        self.maxBackground = maxBackground; self.congestionThreshold = congestionThreshold
        self.maxWrite = maxWrite; self.timeGranularity = timeGranularity; self.maxPages = maxPages
        self.maxStackDepth = maxStackDepth
    }
}

/// `fuse_kstatfs`.
public struct StatfsOut: Sendable, Equatable {
    public var blocks: UInt64, bfree: UInt64, bavail: UInt64, files: UInt64, ffree: UInt64
    public var bsize: UInt32, namelen: UInt32, frsize: UInt32
    public init(blocks: UInt64, bfree: UInt64, bavail: UInt64, files: UInt64, ffree: UInt64,
                bsize: UInt32, namelen: UInt32, frsize: UInt32) {
        self.blocks = blocks; self.bfree = bfree; self.bavail = bavail; self.files = files
        self.ffree = ffree; self.bsize = bsize; self.namelen = namelen; self.frsize = frsize
    }
}

/// `fuse_statx` (inside `fuse_statx_out`).
public struct StatxAttributes: Sendable, Equatable {
    public struct Time: Sendable, Equatable {
        public var seconds: Int64, nanoseconds: UInt32
        public init(seconds: Int64, nanoseconds: UInt32) { self.seconds = seconds; self.nanoseconds = nanoseconds }
    }
    public var mask: UInt32 = 0, blksize: UInt32 = 0, attributes: UInt64 = 0
    public var nlink: UInt32 = 0, uid: UInt32 = 0, gid: UInt32 = 0, mode: UInt16 = 0
    public var ino: UInt64 = 0, size: UInt64 = 0, blocks: UInt64 = 0, attributesMask: UInt64 = 0
    public var atime = Time(seconds: 0, nanoseconds: 0), btime = Time(seconds: 0, nanoseconds: 0)
    public var ctime = Time(seconds: 0, nanoseconds: 0), mtime = Time(seconds: 0, nanoseconds: 0)
    public var rdevMajor: UInt32 = 0, rdevMinor: UInt32 = 0, devMajor: UInt32 = 0, devMinor: UInt32 = 0
    public init() {}
}

/// Reply encoders: each appends one ABI struct to a `WireWriter`.
extension WireWriter {
    /// Appends `fuse_attr` (88 bytes).
    public mutating func append(_ a: Attributes) {
        append(a.ino); append(a.size); append(a.blocks)
        append(a.atime); append(a.mtime); append(a.ctime)
        append(a.atimeNsec); append(a.mtimeNsec); append(a.ctimeNsec)
        append(a.mode); append(a.nlink); append(a.uid); append(a.gid); append(a.rdev); append(a.blksize)
        append(a.flags)
    }

    /// Appends `fuse_entry_out` (128 bytes).
    public mutating func append(_ e: EntryOut) {
        append(e.nodeID); append(e.generation)
        append(e.entryTimeout.seconds); append(e.attrTimeout.seconds)
        append(e.entryTimeout.nanoseconds); append(e.attrTimeout.nanoseconds)
        append(e.attributes)
    }

    /// Appends `fuse_attr_out` (104 bytes).
    public mutating func appendAttrOut(_ a: Attributes, timeout: Timeout) {
        append(timeout.seconds); append(timeout.nanoseconds); append(UInt32(0))
        append(a)
    }

    /// Appends `fuse_open_out` (16 bytes).
    public mutating func appendOpenOut(fh: UInt64, flags: OpenReplyFlags, backingID: Int32 = 0) {
        append(fh); append(flags.rawValue); append(backingID)
    }

    /// Appends `fuse_init_out`: 64 bytes for minor >= 23, the 24-byte compat form before that.
    public mutating func append(_ o: InitOut) {
        append(o.major); append(o.minor); append(o.maxReadahead); append(UInt32(truncatingIfNeeded: o.flags.rawValue))
        append(o.maxBackground); append(o.congestionThreshold); append(o.maxWrite)
        guard o.minor >= 23 else { return }
        append(o.timeGranularity); append(o.maxPages); append(UInt16(0))
        append(UInt32(truncatingIfNeeded: o.flags.rawValue >> 32)); append(o.maxStackDepth)
        append(UInt16(0))     // request_timeout
        appendZeros(22)       // unused[11]
    }

    /// Appends `fuse_statfs_out` (80 bytes).
    public mutating func append(_ s: StatfsOut) {
        append(s.blocks); append(s.bfree); append(s.bavail); append(s.files); append(s.ffree)
        append(s.bsize); append(s.namelen); append(s.frsize); append(UInt32(0))
        appendZeros(24)
    }

    /// Appends `fuse_statx_out` (288 bytes).
    public mutating func appendStatxOut(_ s: StatxAttributes, timeout: Timeout) {
        append(timeout.seconds); append(timeout.nanoseconds); append(UInt32(0)) // flags
        appendZeros(16) // spare[2]
        append(s.mask); append(s.blksize); append(s.attributes)
        append(s.nlink); append(s.uid); append(s.gid); append(s.mode); append(UInt16(0))
        append(s.ino); append(s.size); append(s.blocks); append(s.attributesMask)
        for t in [s.atime, s.btime, s.ctime, s.mtime] { append(t.seconds); append(t.nanoseconds); append(Int32(0)) }
        append(s.rdevMajor); append(s.rdevMinor); append(s.devMajor); append(s.devMinor)
        appendZeros(14 * 8)
    }

    /// Size of one `fuse_dirent` record for a name of `nameLength` bytes, padded to 8.
    public static func direntSize(nameLength: Int) -> Int {
        (FUSEABI.direntHeaderSize + nameLength + 7) & ~7
    }

    /// Appends a `fuse_dirent` (padded to 8 bytes). The caller checks that it fits.
    public mutating func appendDirent(ino: UInt64, offset: UInt64, type: UInt32, name: ByteView) {
        append(ino); append(offset); append(UInt32(name.count)); append(type)
        name.withUnsafeBytes { append(bytes: $0) }
        align(to: 8)
    }
}

/// Builds the complete reply message for `unique` in `writer`'s buffer: the 16-byte
/// `fuse_out_header` at offset 0, then the body the handler appended.
public enum ReplyFraming {
    /// Offset where a reply body starts.
    public static let bodyOffset = FUSEABI.outHeaderSize

    /// Fills in the header for a successful reply with the body written so far.
    public static func finishSuccess(_ writer: inout WireWriter, unique: UInt64) {
        writer.patch(UInt32(writer.count), at: 0)
        writer.patch(Int32(0), at: 4)
        writer.patch(unique, at: 8)
    }

    /// Replaces whatever was written with an error reply (`error` is a positive errno).
    public static func finishError(_ writer: inout WireWriter, unique: UInt64, errno error: Int32) {
        writer.truncate(to: 0)
        writer.append(UInt32(FUSEABI.outHeaderSize))
        writer.append(Int32(-error))
        writer.append(unique)
    }

    /// A whole reply without body: the header alone (`error` a positive errno, 0 for success).
    /// For replies sent later, outside a request's own buffer (a blocking lock granted).
    public static func headerOnly(unique: UInt64, errno error: Int32) -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(FUSEABI.outHeaderSize)
        bytes += withUnsafeBytes(of: UInt32(FUSEABI.outHeaderSize).littleEndian, Array.init)
        bytes += withUnsafeBytes(of: Int32(-error).littleEndian, Array.init)
        bytes += withUnsafeBytes(of: unique.littleEndian, Array.init)
        return bytes
    }

    /// Writes a notification header (unique 0, error = notify code) followed by nothing yet.
    public static func beginNotification(_ writer: inout WireWriter) {
        writer.truncate(to: 0)
        writer.appendZeros(FUSEABI.outHeaderSize)
    }

    /// Fills in a notification header for code `code` with the payload written so far.
    public static func finishNotification(_ writer: inout WireWriter, code: Int32) {
        writer.patch(UInt32(writer.count), at: 0)
        writer.patch(code, at: 4)
        writer.patch(UInt64(0), at: 8)
    }
}
