import CFerryVhost
import FerryEngine
import FerrySystem
import Glibc
import Logging
import Synchronization

/// `ferry serve SOURCE --socket-path SOCK`: a vhost-user-fs back-end. Listens on a unix socket,
/// serves one front-end (QEMU) connection at a time, and runs each connection's virtqueues on
/// their own threads through a fresh FUSE engine (so nothing of one guest session survives into
/// the next). See protocol/vhost-user.md.
public final class VhostUserServer: @unchecked Sendable {
    let socketPath: String
    let persist: Bool
    let logger: Logger
    let makeEngine: () throws -> FUSEEngine
    private let listener = Atomic<Int32>(-1)
    private let stopping = Atomic<Bool>(false)
    private let current = Mutex<VhostChannel?>(nil)

    /// `persist`: after a guest's connection ends, wait for the next one instead of exiting.
    public init(socketPath: String, persist: Bool, logger: Logger, makeEngine: @escaping () throws -> FUSEEngine) {
        self.socketPath = socketPath
        self.persist = persist
        self.logger = logger
        self.makeEngine = makeEngine
    }

    /// Whether the socket file is Ferry's own (removed at exit), not a supervisor's.
    private var ownsSocketFile = true

    /// Serves on a listening socket a supervisor (libvirt's `--fd=N`) passed in, instead of
    /// `listen()`; the socket file, if any, stays the supervisor's.
    public func adopt(listeningFD fd: Int32) throws(Errno) {
        var accepting: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        guard getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &accepting, &length) == 0 else { throw Errno.current }
        guard accepting != 0 else { throw Errno(rawValue: EINVAL) }
        _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
        // libvirt hands its descriptors over non-blocking; accept(2) must wait.
        let flags = fcntl(fd, F_GETFL)
        if flags >= 0 { _ = fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) }
        ownsSocketFile = false
        listener.store(fd, ordering: .releasing)
    }

    /// Removes the socket file at exit through `helper` (inside a sandbox its path no longer
    /// names it). Call before `run`.
    public func removeSocketFile(through helper: HostHelper) { socketRemover = helper }

    /// Removes the socket file for a sandboxed server.
    private var socketRemover: HostHelper?

    /// Binds the socket (replacing a stale socket file). Call before `run`.
    public func listen() throws(Errno) {
        var st = stat()
        if lstat(socketPath, &st) == 0, st.st_mode & S_IFMT == S_IFSOCK { unlink(socketPath) }
        let fd = ferry_vhost_listen(socketPath, 1)
        guard fd >= 0 else { throw Errno.current }
        listener.store(fd, ordering: .releasing)
    }

    /// Accepts and serves connections until a guest's connection ends (or, with `persist`,
    /// until `stop`). A connection that breaks the protocol is logged and dropped; Ferry then
    /// waits for the next one.
    public func run(onListening: () -> Void = {}) throws {
        let fd = listener.load(ordering: .acquiring)
        precondition(fd >= 0, "listen() first")
        defer {
            Glibc.close(fd)
            if ownsSocketFile {
                if let socketRemover {
                    socketRemover.removeSocket()
                    socketRemover.finish()
                } else {
                    unlink(socketPath)
                }
            }
        }
        onListening()
        while !stopping.load(ordering: .relaxed) {
            let connection = ferry_vhost_accept(fd)
            if connection < 0 {
                if stopping.load(ordering: .relaxed) { break }
                let error = Errno.current
                if error.rawValue == ECONNABORTED || error.rawValue == EINTR { continue }
                throw error
            }
            logger.info("vhost-user front-end connected")
            let channel = VhostChannel(fd: connection)
            current.withLock { $0 = channel }
            let session = VhostConnection(channel: channel, logger: logger, makeEngine: makeEngine)
            var clean = true
            do {
                try session.serve()
            } catch {
                clean = false
                logger.error("vhost-user connection dropped: \(error)")
            }
            current.withLock { $0 = nil }
            Glibc.close(connection)
            if stopping.load(ordering: .relaxed) { break }
            if clean && session.deviceRan && !persist {
                logger.info("the guest's connection ended; exiting (--persist waits for the next)")
                break
            }
            logger.info("waiting for the next vhost-user connection\(socketPath.isEmpty ? "" : " on \(socketPath)")")
        }
    }

    /// Ends `run` from another thread (a signal): closes the listener and the connection.
    public func stop() {
        guard !stopping.exchange(true, ordering: .relaxed) else { return }
        let fd = listener.load(ordering: .acquiring)
        if fd >= 0 { _ = Glibc.shutdown(fd, Int32(SHUT_RDWR)) }
        current.withLock { $0?.shutdown() }
    }
}
