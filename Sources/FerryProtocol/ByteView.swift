/// A read-only view of bytes owned by someone else (a transport's request buffer).
///
/// It is valid only while the request it came from is being handled: the transport reuses the
/// memory for the next request. Every read is bounds-checked; this file and `MessageBuffer.swift`
/// are the only places in the protocol module that touch raw pointers.
public struct ByteView: @unchecked Sendable {
    let base: UnsafeRawPointer?
    /// Number of bytes in view.
    public let count: Int

    /// Wraps `buffer` without copying.
    
    public init(_ buffer: UnsafeRawBufferPointer) {
        self.base = buffer.baseAddress
        self.count = buffer.count
    }

    /// An empty view.
    public static let empty = ByteView(UnsafeRawBufferPointer(start: nil, count: 0))

    /// The bytes `range`, or nil when the range is outside the view.
    
    public func slice(_ offset: Int, _ length: Int) -> ByteView? {
        guard offset >= 0, length >= 0, offset <= count, length <= count - offset else { return nil }
        guard let base else { return length == 0 ? .empty : nil }
        return ByteView(UnsafeRawBufferPointer(start: base + offset, count: length))
    }

    /// Loads a little-endian integer at `offset`, or nil when it does not fit.
    
    public func load<T: FixedWidthInteger>(_ type: T.Type, at offset: Int) -> T? {
        guard offset >= 0, offset <= count - MemoryLayout<T>.size, let base else { return nil }
        return T(littleEndian: base.loadUnaligned(fromByteOffset: offset, as: T.self))
    }

    /// The byte at `offset` (which must be in range).
    
    public subscript(offset: Int) -> UInt8 {
        precondition(offset >= 0 && offset < count)
        return base!.load(fromByteOffset: offset, as: UInt8.self)
    }

    /// Index of the first zero byte, if any.
    public func firstZero() -> Int? {
        guard let base, count > 0 else { return nil }
        let buffer = UnsafeRawBufferPointer(start: base, count: count)
        return buffer.firstIndex(of: 0)
    }

    /// A copy of the bytes.
    public var bytes: [UInt8] {
        guard let base, count > 0 else { return [] }
        return Array(UnsafeRawBufferPointer(start: base, count: count))
    }

    /// Calls `body` with the raw bytes (for handing to a syscall such as pwrite).
    
    public func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try body(UnsafeRawBufferPointer(start: base, count: count))
    }
}

/// Sequential, bounds-checked reading of a request body.
public struct WireReader {
    /// The bytes being read.
    public let view: ByteView
    /// Offset of the next unread byte.
    public private(set) var offset: Int = 0

    /// Reads from the start of `view`.
    public init(_ view: ByteView) { self.view = view }

    /// Bytes not yet read.
    public var remaining: Int { view.count - offset }

    /// Reads a little-endian integer.
    
    public mutating func read<T: FixedWidthInteger>(_ type: T.Type = T.self) throws(DecodeError) -> T {
        guard let value = view.load(T.self, at: offset) else { throw .truncated }
        offset += MemoryLayout<T>.size
        return value
    }

    /// Skips `n` bytes (padding or fields Ferry does not use).
    public mutating func skip(_ n: Int) throws(DecodeError) {
        guard n >= 0, n <= remaining else { throw .truncated }
        offset += n
    }

    /// Reads a NUL-terminated byte string (without the NUL).
    public mutating func cString() throws(DecodeError) -> [UInt8] {
        guard let rest = view.slice(offset, remaining), let end = rest.firstZero() else {
            throw .missingTerminator
        }
        let value = rest.slice(0, end)!.bytes
        offset += end + 1
        return value
    }

    /// Reads `n` bytes as a view into the request.
    public mutating func bytes(_ n: Int) throws(DecodeError) -> ByteView {
        guard let value = view.slice(offset, n) else { throw .truncated }
        offset += n
        return value
    }

    /// The unread rest of the request as a view.
    public mutating func rest() -> ByteView {
        let value = view.slice(offset, remaining)!
        offset = view.count
        return value
    }
}

/// Why a request could not be decoded. The engine answers such a request with EINVAL or EIO.
public enum DecodeError: Error, Sendable, Equatable, CustomStringConvertible {
    /// Shorter than the header or the opcode's fixed arguments.
    case truncated
    /// The header's length field disagrees with the bytes received.
    case lengthMismatch(header: UInt32, received: Int)
    /// A name or value that must end in NUL does not.
    case missingTerminator
    /// A field holds a value the ABI does not allow (e.g. an oversized count).
    case invalidField(String)

    public var description: String {
        switch self {
        case .truncated: return "request truncated"
        case let .lengthMismatch(header, received): return "header says \(header) bytes, received \(received)"
        case .missingTerminator: return "string without NUL terminator"
        case let .invalidField(what): return "invalid field: \(what)"
        }
    }
}
