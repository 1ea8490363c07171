/// A file name or path as raw bytes, handed to syscalls as a NUL-terminated C string.
/// FUSE names are bytes, not necessarily UTF-8, so Ferry never turns them into `String`.
public struct CName: Sendable, Hashable, CustomStringConvertible {
    /// The bytes without a terminator.
    public let bytes: [UInt8]
    public init(_ bytes: [UInt8]) { self.bytes = bytes }
    public init(_ string: String) { self.bytes = Array(string.utf8) }

    /// The empty name (used with AT_EMPTY_PATH).
    public static let empty = CName([])

    /// Calls `body` with a NUL-terminated copy.
    
    public func withCString<R, E: Error>(_ body: (UnsafePointer<CChar>) throws(E) -> R) throws(E) -> R {
        var terminated = bytes
        terminated.append(0)
        let result: Result<R, E> = terminated.withUnsafeBytes { raw in
            do throws(E) { return .success(try body(raw.baseAddress!.assumingMemoryBound(to: CChar.self))) }
            catch { return .failure(error) }
        }
        return try result.get()
    }

    public var description: String { String(decoding: bytes, as: UTF8.self) }
}

/// The path under /proc/self/fd that reopens descriptor `fd` (how Ferry turns an O_PATH
/// descriptor into a real open file, with the caller's permissions checked by the kernel).
public func procSelfFD(_ fd: Int32) -> CName { CName("/proc/self/fd/\(fd)") }
