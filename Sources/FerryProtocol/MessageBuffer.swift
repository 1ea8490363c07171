/// Memory a transport owns for one request or reply at a time: reused, never reallocated. Each
/// reader thread has its own, so nothing here is shared.
///
/// A message's data payload sits behind its headers (a WRITE request's bytes at offset 80, a
/// READ reply's at offset 16). Host files opened with O_DIRECT accept only block-aligned
/// memory, so a buffer is placed with the byte at `alignedOffset` on a page boundary: the
/// message starts `alignedOffset` bytes before a page, and the payload is page-aligned while
/// the whole message stays contiguous for the decoder (protocol/fuse-abi.md, "Buffer layout").
public final class MessageBuffer: @unchecked Sendable {
    /// The alignment given to the payload: a page on x86-64 and arm64, and a multiple of every
    /// logical block size a host device uses (512 or 4096).
    public static let pageSize = 4096

    /// Capacity in bytes.
    public let capacity: Int
    /// Offset from the start of the message that lies on a page boundary.
    public let alignedOffset: Int
    /// The allocation, page-aligned; the message starts inside its first page.
    private let allocation: UnsafeMutableRawPointer
    private let start: UnsafeMutableRawPointer

    /// Allocates `capacity` bytes placed so that byte `alignedOffset` of the message falls on a
    /// page boundary (0: the message itself starts on one).
    public init(capacity: Int, alignedAt alignedOffset: Int = 0) {
        precondition(capacity >= 0 && alignedOffset >= 0 && alignedOffset < MessageBuffer.pageSize)
        self.capacity = capacity
        self.alignedOffset = alignedOffset
        let lead = (MessageBuffer.pageSize - alignedOffset) % MessageBuffer.pageSize
        allocation = UnsafeMutableRawPointer.allocate(byteCount: lead + capacity, alignment: MessageBuffer.pageSize)
        start = allocation + lead
    }

    deinit { allocation.deallocate() }

    /// The whole buffer, for a read(2) or recv into it.
    public var mutableBytes: UnsafeMutableRawBufferPointer {
        UnsafeMutableRawBufferPointer(start: start, count: capacity)
    }

    /// The first `count` bytes as a read-only view.
    public func view(count: Int) -> ByteView {
        ByteView(UnsafeRawBufferPointer(start: start, count: min(count, capacity)))
    }
}

/// Appends little-endian values to a `MessageBuffer`; used to encode replies and notifications.
///
/// Writes past the capacity are refused (the writer records an overflow); encoders size their
/// output from request limits, so an overflow is a bug that the engine turns into an EIO reply.
public struct WireWriter {
    /// The buffer written into.
    public let buffer: MessageBuffer
    /// Bytes written so far.
    public private(set) var count: Int
    /// Set when a write did not fit.
    public private(set) var overflowed = false

    /// Starts writing at `offset` (e.g. after a header to be filled in later).
    public init(_ buffer: MessageBuffer, offset: Int = 0) {
        self.buffer = buffer
        self.count = offset
    }

    /// Bytes still free.
    public var available: Int { buffer.capacity - count }

    /// Appends an integer in little-endian order.
    
    public mutating func append<T: FixedWidthInteger>(_ value: T) {
        let size = MemoryLayout<T>.size
        guard size <= available else { overflowed = true; return }
        buffer.mutableBytes.storeBytes(of: value.littleEndian, toByteOffset: count, as: T.self)
        count += size
    }

    /// Appends `n` zero bytes.
    public mutating func appendZeros(_ n: Int) {
        guard n >= 0, n <= available else { overflowed = true; return }
        let dest = UnsafeMutableRawBufferPointer(rebasing: buffer.mutableBytes[count..<(count + n)])
        dest.initializeMemory(as: UInt8.self, repeating: 0)
        count += n
    }

    /// Appends the bytes of `data`.
    public mutating func append<C: Collection>(bytes data: C) where C.Element == UInt8 {
        guard data.count <= available else { overflowed = true; return }
        let dest = UnsafeMutableRawBufferPointer(rebasing: buffer.mutableBytes[count..<(count + data.count)])
        dest.copyBytes(from: data)
        count += data.count
    }

    /// Pads with zeros up to a multiple of `alignment`.
    public mutating func align(to alignment: Int) {
        let pad = (alignment - count % alignment) % alignment
        appendZeros(pad)
    }

    /// Lets `body` write up to `limit` bytes in place (e.g. pread straight into the reply);
    /// `body` returns how many it wrote.
    public mutating func appendInPlace<E: Error>(
        upTo limit: Int, _ body: (UnsafeMutableRawBufferPointer) throws(E) -> Int
    ) throws(E) {
        let n = min(limit, available)
        let dest = UnsafeMutableRawBufferPointer(rebasing: buffer.mutableBytes[count..<(count + n)])
        let written = try body(dest)
        precondition(written >= 0 && written <= n)
        count += written
    }

    /// Overwrites an integer at an earlier `offset` (to fill in a header).
    public mutating func patch<T: FixedWidthInteger>(_ value: T, at offset: Int) {
        precondition(offset >= 0 && offset + MemoryLayout<T>.size <= count)
        buffer.mutableBytes.storeBytes(of: value.littleEndian, toByteOffset: offset, as: T.self)
    }

    /// Drops everything after `offset` (undo a partially written record).
    public mutating func truncate(to offset: Int) {
        precondition(offset >= 0 && offset <= count)
        count = offset
    }

    /// The bytes written, as a view.
    public var written: ByteView { buffer.view(count: count) }
}
