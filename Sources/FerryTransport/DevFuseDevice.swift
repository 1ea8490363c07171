import CFerrySys
import FerryProtocol
import FerrySystem
import Glibc

/// Reading and writing FUSE messages on a /dev/fuse descriptor.
enum DevFuseDevice {
    /// FUSE_DEV_IOC_CLONE = _IOR(229, 0, uint32_t).
    static let cloneRequest: UInt = 0x8004_e500

    /// Opens a new /dev/fuse descriptor attached to the session `sessionFD` (FUSE_DEV_IOC_CLONE),
    /// so another thread can read requests without sharing a queue position.
    static func clone(_ sessionFD: Int32) throws(Errno) -> Int32 {
        let fd = node >= 0 ? try Host.reopen(node, flags: O_RDWR) : Glibc.open("/dev/fuse", O_RDWR | O_CLOEXEC)
        guard fd >= 0 else { throw Errno.current }
        var master = UInt32(bitPattern: sessionFD)
        guard ferry_ioctl_ptr(fd, cloneRequest, &master) == 0 else {
            let error = Errno.current
            Glibc.close(fd)
            throw error
        }
        return fd
    }

    /// /dev/fuse as an O_PATH descriptor, opened by `prepare` before the sandbox (where /dev
    /// has no path): clones reopen it through /proc/self/fd. -1 until then.
    nonisolated(unsafe) static var node: Int32 = -1

    /// Opens /dev/fuse (O_PATH) for later clones; call once, on the main thread, before the
    /// reader threads start.
    static func prepare() throws(Errno) {
        guard node < 0 else { return }
        node = try Host.openat(HostFlags.atFDCWD, CName("/dev/fuse"), flags: HostFlags.oPath)
    }

    /// What a read from /dev/fuse produced.
    enum ReadResult {
        case request(Int)
        /// Nothing to do (EINTR, EAGAIN, or ENOENT: the request was interrupted before we read it).
        case retry
        /// The connection is gone (unmounted or aborted).
        case closed

        var isRetry: Bool {
            if case .retry = self { return true }
            return false
        }
    }

    /// Reads one request into `buffer`.
    static func read(_ fd: Int32, into buffer: MessageBuffer) -> ReadResult {
        let bytes = buffer.mutableBytes
        let n = Glibc.read(fd, bytes.baseAddress, bytes.count)
        if n > 0 { return .request(n) }
        if n == 0 { return .closed }
        switch errno {
        case EINTR, EAGAIN, ENOENT: return .retry
        default: return .closed
        }
    }

    /// Writes one reply or notification; false when the connection is gone. ENOENT (the
    /// request was interrupted and is no longer waited for) is not an error.
    static func write(_ fd: Int32, _ message: ByteView) -> Bool {
        send(fd, message) != ENODEV
    }

    /// Writes one message, retrying on EINTR; returns 0 or the errno. For a reply ENOENT means
    /// the request is no longer waited for; for a notification, a node or name the kernel
    /// does not have.
    static func send(_ fd: Int32, _ message: ByteView) -> Int32 {
        while true {
            let n = message.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
            if n >= 0 { return 0 }
            if errno != EINTR { return errno }
        }
    }
}
