import Glibc
import Synchronization

/// A small process left outside the sandbox, on the host, that does for a sandboxed server the
/// few things that need the host's paths and privileges: unmount its FUSE mount (on stop and at
/// exit), stat the mount's root (which makes the kernel load the root's attributes before
/// notifications start), statfs it from a given CPU (the io_uring transport's nudges), and
/// remove a VM server's socket file at exit. An ordinary user's server under seccomp uses it
/// too: no_new_privs keeps the set-user-id fusermount3 from working in the server itself.
///
/// It is started before the sandbox with posix_spawn (no fork of a multithreaded process) and
/// reached through a socket pair on its descriptor 3; it exits when the server's end closes,
/// and then does nothing else: a server that died leaves its mount dead (ENOTCONN), as any
/// killed server does. Before unmounting it checks that the mount at MOUNTPOINT is still this
/// connection's (its device minor), and before removing the socket file that it is still the
/// same file, so it never touches what was made later at the same place.
public final class HostHelper: Sendable {
    /// What the helper looks after.
    public struct Targets: Sendable {
        /// The FUSE mount and its connection number (device minor).
        public var mountpoint: String?
        public var connection: UInt32?
        /// A vhost-user socket file to remove at exit.
        public var socket: String?
        public init(mountpoint: String? = nil, connection: UInt32? = nil, socket: String? = nil) {
            self.mountpoint = mountpoint
            self.connection = connection
            self.socket = socket
        }

        /// The helper's command-line options for these targets.
        public var arguments: [String] {
            var words: [String] = []
            if let mountpoint, let connection { words += ["--mountpoint", mountpoint, "--connection", String(connection)] }
            if let socket { words += ["--socket", socket] }
            return words
        }
    }

    /// The helper's process id.
    public let pid: pid_t
    private let channel: OwnedFD
    private let turn = Mutex<Void>(())

    /// Requests, one byte each (a nudge is followed by the CPU number as two bytes).
    enum Request: UInt8 {
        case unmount = 0x75        // "u"
        case stat = 0x73           // "s"
        case nudge = 0x6e          // "n"
        case removeSocket = 0x72   // "r"
        case showAtime = 0x61      // "a", then the atime mode's index and nodiratime (0 or 1)
    }

    /// Starts `executable` with `arguments` (which must run `HostHelper.serve` on descriptor 3).
    public init(executable: String, arguments: [String]) throws(Errno) {
        var ends: [Int32] = [-1, -1]
        let type = Int32(SOCK_SEQPACKET.rawValue) | Int32(SOCK_CLOEXEC.rawValue)
        _ = try checked { socketpair(AF_UNIX, type, 0, &ends) }
        let mine = OwnedFD(ends[0]), theirs = OwnedFD(ends[1])
        pid = try HostProcess.spawn(executable, arguments: arguments, descriptors: [3: theirs.rawValue],
                                    newSession: true, directory: "/")
        channel = mine
    }

    /// Asks the helper to unmount the mount (lazily, like `umount -l`) and waits until it did.
    public func unmount() { _ = call(.unmount) }

    /// Asks the helper to stat the mount's root and waits for it.
    public func statRoot() { _ = call(.stat) }

    /// Asks the helper to set the mount's atime flags (mount_setattr; for display, as
    /// HostMount.setAttributes(path:)) and waits; false if that failed.
    public func showAtime(_ mode: AtimeMode, noDirAtime: Bool) -> Bool {
        let index = AtimeMode.allCases.firstIndex(of: mode) ?? 0
        return call(.showAtime, [UInt8(index), noDirAtime ? 1 : 0])
    }

    /// Asks the helper to remove the socket file and waits for it.
    public func removeSocket() { _ = call(.removeSocket) }

    /// Asks the helper to statfs the mount from `cpu` (one short thread pinned there); does not wait.
    public func nudge(cpu: Int) {
        turn.withLock { _ in
            let message: [UInt8] = [Request.nudge.rawValue, UInt8(cpu & 0xff), UInt8((cpu >> 8) & 0xff)]
            _ = message.withUnsafeBytes { send(channel.rawValue, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        }
    }

    /// Closes the channel (the helper exits) and reaps the helper.
    public func finish() {
        turn.withLock { _ in _ = shutdown(channel.rawValue, Int32(SHUT_RDWR)) }
        _ = try? HostProcess.wait(pid)
    }

    /// Sends `request` (with `payload`) and waits for the reply; true for "done".
    private func call(_ request: Request, _ payload: [UInt8] = []) -> Bool {
        turn.withLock { _ in
            let message = [request.rawValue] + payload
            let sent = message.withUnsafeBytes { send(channel.rawValue, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            guard sent == message.count else { return false }
            var reply: UInt8 = 0
            while true {
                let n = recv(channel.rawValue, &reply, 1, 0)
                if n == 1 { return reply == HostHelper.done }
                if n < 0 && errno == EINTR { continue }
                return false
            }
        }
    }

    /// Replies: done, or failed.
    static let done: UInt8 = 0x64     // "d"
    static let failed: UInt8 = 0x65   // "e"

    /// The helper's side: serves requests on `channel` for `targets` until the server's end
    /// closes. Signals that would end it early (a terminal's SIGINT) are ignored.
    public static func serve(channel: Int32, targets: Targets) {
        for signal in [SIGINT, SIGTERM, SIGHUP, SIGPIPE] { Glibc.signal(signal, SIG_IGN) }
        var socketFile = stat()
        let socketKnown = targets.socket.map { lstat($0, &socketFile) == 0 } ?? false
        var message = [UInt8](repeating: 0, count: 16)
        while true {
            let n = message.withUnsafeMutableBytes { recv(channel, $0.baseAddress, $0.count, 0) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0, let request = Request(rawValue: message[0]) else { return }
            var reply = done
            switch request {
            case .unmount:
                if let mountpoint = targets.mountpoint, let connection = targets.connection {
                    unmountIfOurs(mountpoint, connection: connection)
                }
            case .stat:
                var attributes = stat()
                if let mountpoint = targets.mountpoint { _ = stat(mountpoint, &attributes) }
            case .removeSocket:
                var now = stat()
                if let socket = targets.socket, socketKnown, lstat(socket, &now) == 0,
                   now.st_dev == socketFile.st_dev, now.st_ino == socketFile.st_ino, now.st_mode & S_IFMT == S_IFSOCK {
                    unlink(socket)
                }
            case .showAtime:
                let modes = AtimeMode.allCases
                guard let mountpoint = targets.mountpoint, n >= 3, Int(message[1]) < modes.count else { reply = failed; break }
                let attributes = MountAttributes(atime: modes[Int(message[1])], noDirAtime: message[2] != 0)
                do { try HostMount.setAttributes(path: mountpoint, attributes) } catch { reply = failed }
            case .nudge:
                guard let mountpoint = targets.mountpoint else { continue }
                let cpu = n >= 3 ? Int(message[1]) | Int(message[2]) << 8 : 0
                _ = try? HostThread.spawn(name: "ferry-nudge", stackSize: 64 << 10) {
                    try? HostThread.pinCurrent(toCPU: cpu)
                    let fd = Glibc.open(mountpoint, HostFlags.oPath | O_DIRECTORY | O_CLOEXEC)
                    if fd >= 0 {
                        _ = try? Host.statfs(fd)
                        Glibc.close(fd)
                    }
                }.detach()
                continue   // no reply
            }
            _ = send(channel, &reply, 1, Int32(MSG_NOSIGNAL))
        }
    }

    /// Unmounts `mountpoint` lazily if the newest mount there is FUSE connection `connection`:
    /// umount2(MNT_DETACH) as root, `fusermount3 -u -z` for an ordinary user.
    static func unmountIfOurs(_ mountpoint: String, connection: UInt32) {
        guard let entry = MountTable.entries().last(where: { $0.mountpoint == mountpoint }),
              entry.minor == connection else { return }
        if geteuid() == 0 {
            _ = Glibc.umount2(mountpoint, Int32(MNT_DETACH))
        } else {
            HostProcess.runSearchingPath("fusermount3", arguments: ["fusermount3", "-u", "-z", "-q", mountpoint])
        }
    }
}
