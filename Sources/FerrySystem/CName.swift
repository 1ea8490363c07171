/// A file name or path as raw bytes, handed to syscalls as a NUL-terminated C string.
/// FUSE names are bytes, not necessarily UTF-8, so Ferry never turns them into `String`.
///
/// The terminator is stored with the bytes, so a name handed to several syscalls is copied
/// once (when it is made), not once per call.
public struct CName: Sendable, Hashable, CustomStringConvertible {
    /// The bytes followed by one NUL.
    private let terminated: [UInt8]

    public init(_ bytes: [UInt8]) {
        var terminated = [UInt8]()
        terminated.reserveCapacity(bytes.count + 1)
        terminated.append(contentsOf: bytes)
        terminated.append(0)
        self.terminated = terminated
    }

    public init(_ string: String) { self.init(Array(string.utf8)) }

    /// The bytes without a terminator.
    public var bytes: [UInt8] { Array(terminated.dropLast()) }

    /// Whether the name is empty (AT_EMPTY_PATH).
    public var isEmpty: Bool { terminated.count == 1 }

    /// The empty name (used with AT_EMPTY_PATH).
    public static let empty = CName([])

    /// Calls `body` with the NUL-terminated bytes (no copy).
    public func withCString<R, E: Error>(_ body: (UnsafePointer<CChar>) throws(E) -> R) throws(E) -> R {
        let result: Result<R, E> = terminated.withUnsafeBytes { raw in
            do throws(E) { return .success(try body(raw.baseAddress!.assumingMemoryBound(to: CChar.self))) }
            catch { return .failure(error) }
        }
        return try result.get()
    }

    public var description: String { String(decoding: terminated.dropLast(), as: UTF8.self) }
}

/// The path under /proc/self/fd that reopens descriptor `fd` (how Ferry turns an O_PATH
/// descriptor into a real open file, with the caller's permissions checked by the kernel).
/// Request paths use `ProcSelfFD`, which names it without building a path.
public func procSelfFD(_ fd: Int32) -> CName { CName("/proc/self/fd/\(fd)") }
