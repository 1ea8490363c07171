import CFerrySys
import Glibc
import Synchronization

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
        /// The descriptor given to `watchCompletions` became readable (it is drained).
        public var completions: Bool
    }

    /// Watches `fuseFD`, which must be non-blocking (the request may go to another reader).
    public init(fuseFD: Int32) throws(Errno) {
        epoll = OwnedFD(try checked { ferry_epoll_create() })
        kicks = try EventCounter()
        _ = try checked { ferry_epoll_add_readable(epoll.rawValue, fuseFD, 1, RequestWait.requestTag) }
        _ = try checked { ferry_epoll_add_readable(epoll.rawValue, kicks.fd.rawValue, 0, RequestWait.kickTag) }
    }

    private static let requestTag: UInt64 = 0, kickTag: UInt64 = 1, completionTag: UInt64 = 2
    /// The eventfd of the reader's I/O engine, if it watches one (-1: none).
    private let completionFD = Atomic<Int32>(-1)

    /// Also ends waits when `eventFD` (an eventfd that an I/O engine signals on completions)
    /// becomes readable. Call once, from the reader thread, before it waits.
    public func watchCompletions(_ eventFD: Int32) throws(Errno) {
        _ = try checked { ferry_epoll_add_readable(epoll.rawValue, eventFD, 0, RequestWait.completionTag) }
        completionFD.store(eventFD, ordering: .relaxed)
    }

    /// Sleeps until a request is ready or a kick arrives; nil on EINTR (a signal).
    public func wait() -> Woken? {
        var tags: (UInt64, UInt64, UInt64) = (0, 0, 0)
        let n = withUnsafeMutablePointer(to: &tags) { pointer in
            pointer.withMemoryRebound(to: UInt64.self, capacity: 3) { ferry_epoll_wait(epoll.rawValue, $0, 3, -1) }
        }
        guard n > 0 else { return nil }
        var woken = Woken(requestReady: false, kicked: false, completions: false)
        for tag in [tags.0, tags.1, tags.2].prefix(Int(n)) {
            switch tag {
            case RequestWait.requestTag: woken.requestReady = true
            case RequestWait.kickTag: woken.kicked = true
            default: woken.completions = true
            }
        }
        if woken.kicked { kicks.drain() }
        if woken.completions { EventCounter.drain(completionFD.load(ordering: .relaxed)) }
        return woken
    }

    /// Wakes the reader (from any thread).
    public func kick() { kicks.signal() }
}

extension Host {
    /// The file status flags of `fd` (F_GETFL: O_NONBLOCK, O_APPEND, ...).
    public static func statusFlags(_ fd: Int32) throws(Errno) -> Int32 {
        try checked { fcntl(fd, F_GETFL) }
    }

    /// Sets the file status flags of `fd` (F_SETFL).
    public static func setStatusFlags(_ fd: Int32, _ flags: Int32) throws(Errno) {
        _ = try checked { fcntl(fd, F_SETFL, flags) }
    }
}
