import Glibc

/// A host error number, thrown by every wrapper in this module.
public struct Errno: Error, Equatable, Hashable, Sendable, CustomStringConvertible {
    /// The positive errno value.
    public let rawValue: Int32
    public init(rawValue: Int32) { self.rawValue = rawValue }

    /// The calling thread's current `errno`.
    public static var current: Errno { Errno(rawValue: Glibc.errno) }

    public var description: String {
        guard let message = strerror(rawValue) else { return "errno \(rawValue)" }
        return "\(String(cString: message)) (errno \(rawValue))"
    }

    public static let noEntry = Errno(rawValue: ENOENT)
    public static let invalid = Errno(rawValue: EINVAL)
    public static let io = Errno(rawValue: EIO)
    public static let badFD = Errno(rawValue: EBADF)
    public static let notSupported = Errno(rawValue: EOPNOTSUPP)
    public static let noSys = Errno(rawValue: ENOSYS)
    public static let permission = Errno(rawValue: EPERM)
    public static let access = Errno(rawValue: EACCES)
    public static let range = Errno(rawValue: ERANGE)
    public static let notTTY = Errno(rawValue: ENOTTY)
    public static let loop = Errno(rawValue: ELOOP)
    public static let readOnly = Errno(rawValue: EROFS)
    public static let interrupted = Errno(rawValue: EINTR)
    public static let stale = Errno(rawValue: ESTALE)
    public static let nameTooLong = Errno(rawValue: ENAMETOOLONG)
    public static let notDirectory = Errno(rawValue: ENOTDIR)
    public static let noData = Errno(rawValue: ENODATA)
    public static let exists = Errno(rawValue: EEXIST)
}

/// Runs a syscall returning -1 on failure and retries it on EINTR.

func retrying<T: BinaryInteger>(_ body: () -> T) throws(Errno) -> T {
    while true {
        let result = body()
        if result >= 0 { return result }
        let error = Errno.current
        if error.rawValue != EINTR { throw error }
    }
}

/// Runs a syscall returning -1 on failure (no retry: for calls where EINTR must surface).

func checked<T: BinaryInteger>(_ body: () -> T) throws(Errno) -> T {
    let result = body()
    if result < 0 { throw Errno.current }
    return result
}
