import CFUSE
import FerrySystem
import Glibc

/// A mounted FUSE file system, created through libfuse3 (which runs fusermount3 for ordinary
/// users). libfuse only mounts: Ferry reads and writes the /dev/fuse descriptor itself.
public final class FUSEMount: @unchecked Sendable {
    /// Where the file system is mounted.
    public let mountpoint: String
    /// The session's /dev/fuse descriptor (owned by libfuse until `close`).
    public let fd: Int32
    /// The connection number under /sys/fs/fuse/connections (the mount's device minor).
    public let connection: UInt32?
    private let session: OpaquePointer
    private var closed = false
    /// The process that unmounts for a sandboxed server (set by `keepReachable` before the sandbox).
    public private(set) var helper: HostHelper?
    /// /sys/fs/fuse/connections/N/abort, opened by `keepReachable` (-1: open it when needed).
    private var abortFD: Int32 = -1

    /// Mount options for libfuse's `-o` (e.g. "allow_other", "ro", "fsname=...").
    public init(mountpoint given: String, options: [String]) throws(MountError) {
        // Absolute: /proc/self/mountinfo (the connection number) and the unmount after a
        // sandbox changed the working directory know the mount only by its full path.
        let mountpoint = Host.canonicalPath(given) ?? given
        var arguments = ["ferry"]
        if !options.isEmpty { arguments += ["-o", options.joined(separator: ",")] }
        var cArgs: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) }
        defer { cArgs.forEach { free($0) } }
        var ops = fuse_lowlevel_ops()
        let created: OpaquePointer? = cArgs.withUnsafeMutableBufferPointer { argv in
            var args = fuse_args(argc: Int32(arguments.count), argv: argv.baseAddress, allocated: 0)
            defer { fuse_opt_free_args(&args) }
            return fuse_session_new(&args, &ops, MemoryLayout<fuse_lowlevel_ops>.size, nil)
        }
        guard let created else { throw MountError("libfuse refused the mount options \(options.joined(separator: ","))") }
        guard fuse_session_mount(created, mountpoint) == 0 else {
            fuse_session_destroy(created)
            throw MountError("mounting \(mountpoint) failed (see libfuse's message above)")
        }
        self.session = created
        self.mountpoint = mountpoint
        self.fd = fuse_session_fd(created)
        // Not stat(mountpoint): that would wait for INIT, which nobody answers yet.
        self.connection = FUSEMount.connectionNumber(mountpoint: mountpoint)
    }

    /// Detaches the mount from the namespace (lazily, like `umount -l`), without touching the
    /// descriptor readers are blocked on: they see ENODEV once the kernel drops the connection.
    public func detach() {
        if let helper {
            helper.unmount()
            return
        }
        if geteuid() == 0 {
            if umount2(mountpoint, Int32(MNT_DETACH)) == 0 { return }
        }
        HostProcess.runSearchingPath("fusermount3", arguments: ["fusermount3", "-u", "-z", "-q", mountpoint])
    }

    /// Aborts the connection through /sys/fs/fuse/connections (root only): every pending and
    /// future request fails and readers see ENODEV.
    public func abortConnection() {
        if abortFD >= 0 {
            _ = write(abortFD, "1", 1)
            return
        }
        guard let connection else { return }
        let fd = open("/sys/fs/fuse/connections/\(connection)/abort", O_WRONLY | O_CLOEXEC)
        guard fd >= 0 else { return }
        _ = write(fd, "1", 1)
        Glibc.close(fd)
    }

    /// Prepares for a sandbox in which MOUNTPOINT and /sys have no path, or for a seccomp filter
    /// under which an ordinary user's server can no longer run the set-user-id fusermount3
    /// (no_new_privs): unmounting goes through `helper` (a process started before either), and
    /// the connection's abort file is opened now. Call on the main thread before the threads start.
    public func keepReachable(through helper: HostHelper) throws(Errno) {
        try DevFuseDevice.prepare()
        self.helper = helper
        if let connection, geteuid() == 0 {
            abortFD = open("/sys/fs/fuse/connections/\(connection)/abort", O_WRONLY | O_CLOEXEC)
        }
    }

    /// Unmounts (if still mounted) and frees the session; closes the session descriptor.
    public func close() {
        guard !closed else { return }
        closed = true
        if let helper {
            // libfuse's unmount would look MOUNTPOINT (and /etc/mtab) up inside the sandbox.
            helper.unmount()
            helper.finish()
        } else {
            fuse_session_unmount(session)
        }
        fuse_session_destroy(session)
        if abortFD >= 0 { Glibc.close(abortFD) }
    }

    /// The device minor of the mount at `mountpoint` (the newest, if stacked).
    static func connectionNumber(mountpoint: String) -> UInt32? {
        MountTable.entries().last { $0.mountpoint == mountpoint }?.minor
    }
}

/// A mount that could not be made; the message names the problem.
public struct MountError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}
