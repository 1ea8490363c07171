import CFerrySys
import Glibc

/// Where a FUSE reader thread sleeps until its /dev/fuse descriptor has a request, or until
/// another thread kicks it awake: an epoll instance watching the descriptor (EPOLLEXCLUSIVE,
/// so one request wakes one reader, as a blocking read(2) does) and an eventfd.
///
/// A kick is never lost: the eventfd stays readable until the reader drains it, so a kick sent
/// just before the reader goes to sleep ends that sleep at once (a signal could arrive in the
/// gap before a blocking read(2) and be lost).
public final class RequestWait: Sendable {
    private let epoll: OwnedFD
    private let kicks: EventCounter

    /// What ended a wait.
    public struct Woken: Sendable {
        /// The /dev/fuse descriptor has a request (or an error: the connection ended).
        public var requestReady: Bool
        /// Another thread called `kick`.
        public var kicked: Bool
    }

    /// Watches `fuseFD`, which must be non-blocking (the request may go to another reader).
    public init(fuseFD: Int32) throws(Errno) {
        epoll = OwnedFD(try checked { ferry_epoll_create() })
        kicks = try EventCounter()
        _ = try checked { ferry_epoll_add_readable(epoll.rawValue, fuseFD, 1, RequestWait.requestTag) }
        _ = try checked { ferry_epoll_add_readable(epoll.rawValue, kicks.fd.rawValue, 0, RequestWait.kickTag) }
    }

    private static let requestTag: UInt64 = 0, kickTag: UInt64 = 1

    /// Sleeps until a request is ready or a kick arrives; nil on EINTR (a signal).
    public func wait() -> Woken? {
        var tags: (UInt64, UInt64) = (0, 0)
        let n = withUnsafeMutablePointer(to: &tags) { pointer in
            pointer.withMemoryRebound(to: UInt64.self, capacity: 2) { ferry_epoll_wait(epoll.rawValue, $0, 2, -1) }
        }
        guard n > 0 else { return nil }
        var woken = Woken(requestReady: false, kicked: false)
        for tag in [tags.0, tags.1].prefix(Int(n)) {
            if tag == RequestWait.requestTag { woken.requestReady = true } else { woken.kicked = true }
        }
        if woken.kicked { kicks.drain() }
        return woken
    }

    /// Wakes the reader (from any thread).
    public func kick() { kicks.signal() }
}

extension Host {
    /// Makes `fd` non-blocking (O_NONBLOCK).
    public static func setNonBlocking(_ fd: Int32) throws(Errno) {
        let flags = try checked { fcntl(fd, F_GETFL) }
        _ = try checked { fcntl(fd, F_SETFL, flags | O_NONBLOCK) }
    }
}
