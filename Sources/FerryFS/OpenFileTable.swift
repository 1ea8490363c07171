import FerrySystem
import Synchronization

/// Files and directories the kernel has open, by FUSE file handle (`fh`).
///
/// The handle is the host descriptor's number, which is unique while it is open; the table
/// checks every `fh` the kernel sends, so a bad one is EBADF, never some other descriptor.
/// Split into 64 shards by handle, each with its own lock. With a bound
/// (`ResourceLimits.maxOpenFiles`), opens past it are refused before any descriptor is opened.
public final class OpenFileTable: Sendable {
    /// One open file or directory.
    public struct OpenFile: Sendable {
        /// The host descriptor.
        public let fd: OwnedFD
        /// The node it was opened from.
        public let nodeID: UInt64
        /// For a writable file opened with O_DIRECT: the same file without O_DIRECT and
        /// O_APPEND, for the page cache's writes (FUSE_WRITE_CACHE). The kernel may flush any
        /// file's dirty pages through any writable handle of it, in page-sized pieces cut at the
        /// end of the file, which an O_DIRECT descriptor would refuse (EINVAL, the data lost).
        public let pageCacheFD: OwnedFD?
        /// Whether `fd` was opened with O_DIRECT (its I/O goes to the device, not the page cache).
        public let direct: Bool

        /// The descriptor for a WRITE: `pageCacheFD` for a page-cache write if there is one.
        public func descriptor(forPageCacheWrite pageCache: Bool) -> Int32 {
            (pageCache ? pageCacheFD : nil)?.rawValue ?? fd.rawValue
        }
    }

    private static let shardCount = 64
    private let shards = (0..<OpenFileTable.shardCount).map { _ in Locked<[UInt64: OpenFile]>([:]) }

    /// The bound on open files and directories, if any.
    public let bound: ResourceBound?

    public init(bound: ResourceBound? = nil) {
        self.bound = bound
    }

    /// Runs `body`, which opens a file and `insert`s it, holding a place in the bound: throws
    /// the bound's errno (and warns) when the table is full, and gives the place back if
    /// `body` throws. Every `insert` must happen inside it; `remove` gives the place back.
    public func reserving<R>(_ body: () throws(Errno) -> R) throws(Errno) -> R {
        try bound?.acquire()
        do { return try body() } catch {
            bound?.release()
            throw error
        }
    }

    private func shard(_ fh: UInt64) -> Locked<[UInt64: OpenFile]> {
        shards[Int(fh % UInt64(OpenFileTable.shardCount))]
    }

    /// Registers a descriptor (and its page-cache twin, if any) the table now owns; returns its
    /// `fh`. Call it inside `reserving`.
    public func insert(fd: Int32, nodeID: UInt64, pageCacheFD: Int32? = nil, direct: Bool = false) -> UInt64 {
        let fh = UInt64(fd)
        let file = OpenFile(fd: OwnedFD(fd), nodeID: nodeID, pageCacheFD: pageCacheFD.map(OwnedFD.init), direct: direct)
        shard(fh).withLock { $0[fh] = file }
        return fh
    }

    /// The open file for `fh`, or EBADF.
    public func get(_ fh: UInt64) throws(Errno) -> OpenFile {
        guard let file = shard(fh).withLock({ $0[fh] }) else { throw Errno.badFD }
        return file
    }

    /// Forgets `fh`; its descriptor closes once no request uses it any more.
    public func remove(_ fh: UInt64) -> OpenFile? {
        let removed = shard(fh).withLock { $0.removeValue(forKey: fh) }
        if removed != nil { bound?.release() }
        return removed
    }

    /// Some open file of node `nodeID`, if the kernel has one open (a linear search: only used
    /// when a file can no longer be reached by its handle).
    public func anyFile(of nodeID: UInt64) -> OpenFile? {
        for shard in shards {
            if let file = shard.withLock({ $0.values.first { $0.nodeID == nodeID } }) { return file }
        }
        return nil
    }

    /// Number of open files and directories.
    public var count: Int { shards.reduce(0) { total, shard in total + shard.withLock { $0.count } } }
}
