/// One data operation on a host file descriptor, as the I/O core runs it.
///
/// The memory an operation names (the buffer of a read or write) must stay valid and untouched
/// until its completion is reaped: an engine may still be reading or writing it. Values only;
/// nothing here allocates.
public enum IOOperation {
    /// pread(2): up to `buffer.count` bytes at `offset` into `buffer`.
    case read(fd: Int32, offset: Int64, buffer: UnsafeMutableRawBufferPointer)
    /// pwrite(2) of all of `data` at `offset` (short writes continue where they stopped).
    /// `cached`: the descriptor writes through the page cache (not O_DIRECT).
    case write(fd: Int32, offset: Int64, data: UnsafeRawBufferPointer, cached: Bool)
    /// preadv(2): up to `vectors.totalLength` bytes at `offset` into the buffers `vectors`
    /// names, in order (a short read is the end of the file, as for `read`).
    case readv(fd: Int32, offset: Int64, vectors: IOVectors)
    /// pwritev(2) of all the bytes `vectors` names, in order (short writes continue where they
    /// stopped). `cached` as for `write`.
    case writev(fd: Int32, offset: Int64, vectors: IOVectors, cached: Bool)
    /// fsync(2), or fdatasync(2) when `dataOnly`.
    case fsync(fd: Int32, dataOnly: Bool)
    /// fallocate(2) with any mode.
    case fallocate(fd: Int32, mode: Int32, offset: Int64, length: Int64)
}

/// The end of one operation: which slot it was submitted for and its result (bytes moved, 0
/// for fsync and fallocate, or a negative errno).
public struct IOCompletion: Sendable {
    /// The slot given to `IOEngine.submit`.
    public var slot: Int
    /// Bytes read or written, 0, or -errno.
    public var result: Int32

    public init(slot: Int, result: Int32) {
        self.slot = slot
        self.result = result
    }
}
