import CFerrySys
import Glibc

/// A byte-range lock as the host's `struct flock` describes it (whence SEEK_SET).
public struct HostLock: Sendable, Equatable {
    /// F_RDLCK (0), F_WRLCK (1) or F_UNLCK (2).
    public var type: Int16
    public var start: Int64
    /// 0 means "to the end of the file".
    public var length: Int64
    /// The holder's pid for classic locks, -1 for OFD locks (from F_OFD_GETLK).
    public var pid: Int32

    public init(type: Int16, start: Int64, length: Int64, pid: Int32 = 0) {
        self.type = type; self.start = start; self.length = length; self.pid = pid
    }

    public static let read: Int16 = 0, write: Int16 = 1, unlock: Int16 = 2
}

/// Open file description locks and flock.
extension Host {
    /// fcntl commands for OFD locks.
    public enum OFDCommand: Int32, Sendable {
        case get = 36, set = 37, setWait = 38
    }

    /// F_OFD_GETLK / F_OFD_SETLK / F_OFD_SETLKW. F_OFD_SETLKW is not retried on EINTR: the
    /// caller decides whether an interrupted wait goes on.
    public static func ofdLock(_ fd: Int32, _ command: OFDCommand, _ lock: HostLock) throws(Errno) -> HostLock {
        var type = lock.type, start = lock.start, length = lock.length, pid: Int32 = 0
        _ = try checked { ferry_fcntl_lock(fd, command.rawValue, &type, &start, &length, &pid) }
        return HostLock(type: type, start: start, length: length, pid: pid)
    }

    /// flock(2) operations.
    public enum FlockOperation: Int32, Sendable {
        case shared = 1, exclusive = 2, unlock = 8
    }

    /// flock(2); `wait` false adds LOCK_NB (EWOULDBLOCK on conflict). Not retried on EINTR.
    public static func flock(_ fd: Int32, _ operation: FlockOperation, wait: Bool) throws(Errno) {
        _ = try checked { ferry_flock(fd, operation.rawValue | (wait ? 0 : 4)) }
    }
}
