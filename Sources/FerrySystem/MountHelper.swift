import Glibc
import Synchronization

/// A small process left outside the sandbox, in the host's mount namespace, that does for a
/// sandboxed server the few things that need the host's paths to the FUSE mount: unmount it
/// (on stop, at exit, and when the server dies without doing so), stat its root (which makes
/// the kernel load the root's attributes before notifications start) and statfs it from a
/// given CPU (the io_uring transport's nudges). It is started before the sandbox with
/// posix_spawn (no fork of a multithreaded process) and reached through a socket pair; it
/// exits when the server's end closes, after unmounting the mount if it is still there.
///
/// The helper checks each time that the mount at MOUNTPOINT is still this connection's (its
/// device minor) before unmounting, so it never removes a mount made later at the same place.
public final class MountHelper: Sendable {
    /// The helper's process id.
    public let pid: pid_t
    private let channel: OwnedFD
    private let turn = Mutex<Void>(())

    /// Requests, one byte each (a nudge is followed by the CPU number as two bytes).
    enum Request: UInt8 {
        case unmount = 0x75   // "u"
        case stat = 0x73      // "s"
        case nudge = 0x6e     // "n"
    }

    /// Starts `executable` with `arguments` (which must run `MountHelper.serve` on descriptor 3).
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

    /// Asks the helper to statfs the mount from `cpu` (one short thread pinned there); does not wait.
    public func nudge(cpu: Int) {
        turn.withLock { _ in
            let message: [UInt8] = [Request.nudge.rawValue, UInt8(cpu & 0xff), UInt8((cpu >> 8) & 0xff)]
            _ = message.withUnsafeBytes { send(channel.rawValue, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        }
    }

    /// Closes the channel (the helper unmounts if needed and exits) and reaps the helper.
    public func finish() {
        turn.withLock { _ in _ = shutdown(channel.rawValue, Int32(SHUT_RDWR)) }
        _ = try? HostProcess.wait(pid)
    }

    private func call(_ request: Request) -> Bool {
        turn.withLock { _ in
            var byte = request.rawValue
            guard send(channel.rawValue, &byte, 1, Int32(MSG_NOSIGNAL)) == 1 else { return false }
            var reply: UInt8 = 0
            while true {
                let n = recv(channel.rawValue, &reply, 1, 0)
                if n == 1 { return true }
                if n < 0 && errno == EINTR { continue }
                return false
            }
        }
    }

    /// The helper's side: serves requests on `channel` for the FUSE mount at `mountpoint` with
    /// device minor `connection`, until the server's end closes; then unmounts if the mount is
    /// still there. Signals that would end it early (a terminal's SIGINT) are ignored.
    public static func serve(channel: Int32, mountpoint: String, connection: UInt32) {
        for signal in [SIGINT, SIGTERM, SIGHUP, SIGPIPE] { Glibc.signal(signal, SIG_IGN) }
        var message = [UInt8](repeating: 0, count: 16)
        while true {
            let n = message.withUnsafeMutableBytes { recv(channel, $0.baseAddress, $0.count, 0) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0, let request = Request(rawValue: message[0]) else { break }
            switch request {
            case .unmount: unmountIfOurs(mountpoint, connection: connection)
            case .stat:
                var attributes = stat()
                _ = stat(mountpoint, &attributes)
            case .nudge:
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
            var done: UInt8 = 0x64   // "d"
            _ = send(channel, &done, 1, Int32(MSG_NOSIGNAL))
        }
        unmountIfOurs(mountpoint, connection: connection)
    }

    /// umount2(MNT_DETACH) of `mountpoint` if the newest mount there is FUSE connection `connection`.
    static func unmountIfOurs(_ mountpoint: String, connection: UInt32) {
        guard let entry = MountTable.entries().last(where: { $0.mountpoint == mountpoint }),
              entry.minor == connection else { return }
        _ = Glibc.umount2(mountpoint, Int32(MNT_DETACH))
    }
}
