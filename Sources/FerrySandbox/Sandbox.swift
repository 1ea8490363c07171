import FerrySystem
import Glibc

/// `--sandbox namespace|chroot|none`, with virtiofsd's names and meanings.
public enum SandboxMode: String, Sendable, CaseIterable {
    /// New pid (`PidNamespace`), mount, IPC, UTS and network namespaces; every mount private;
    /// SOURCE becomes the root (pivot_root) and the old root is detached. The default as root.
    case namespace
    /// chroot(2) into SOURCE only, for where namespaces are not allowed (some containers).
    case chroot
    /// No sandbox (the default for an ordinary user, who cannot create the namespaces).
    case none
}

/// Why the sandbox, the capability drop or the seccomp filter could not be set up.
public struct SandboxError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// Moves the set-up server into its sandbox, in the order that works: the new root (needs
/// CAP_SYS_ADMIN and CAP_SYS_CHROOT), then the capability drop (needs CAP_SETPCAP for the
/// bounding set), then the seccomp filter (needs nothing once no_new_privs is set).
///
/// All of it acts on the calling thread and is inherited by threads started later, so it runs
/// on the main thread while it is the only thread: after everything that needs the host's
/// paths was opened (SOURCE, the FUSE mount or the vhost-user socket, the watchers, /proc and
/// /proc/self/fd, /dev/fuse), before the first request thread starts.
///
/// The pid namespace comes first, before this (`PidNamespace`, which forks).
public enum Sandbox {
    /// Enters `mode` with SOURCE at `source` (whose root directory is open as `sourceFD`, to
    /// check the new root is the same directory). Fails if another thread already runs.
    /// `hostMounts` (the FUSE mount) are unmounted from the new mount namespace if set-up stops
    /// half-way, so that copy does not keep the connection alive after the host unmounts it.
    public static func enter(_ mode: SandboxMode, source: String, sourceFD: Int32, hostMounts: [String]) throws(SandboxError) {
        guard mode != .none else { return }
        if let threads = HostNamespaces.threadCount(), threads != 1 {
            throw SandboxError("\(threads) threads run already; the sandbox must be entered while the server has one thread")
        }
        guard ProcSelfFD.prepare(), ProcRoot.prepare() else {
            throw SandboxError("/proc is not mounted; the sandbox needs descriptors of /proc and /proc/self/fd")
        }
        var expected = stat()
        guard fstat(sourceFD, &expected) == 0 else { throw SandboxError("cannot stat SOURCE: \(Errno.current)") }
        switch mode {
        case .namespace:
            do {
                try HostNamespaces.unshare([.mount, .ipc, .uts, .network])
            } catch {
                throw SandboxError("unshare(CLONE_NEWNS|CLONE_NEWIPC|CLONE_NEWUTS|CLONE_NEWNET) failed: \(error)")
            }
            do {
                try HostNamespaces.makeMountsPrivate()
            } catch {
                throw SandboxError("making the new namespace's mounts private failed: \(error)")
            }
            do {
                try HostNamespaces.bindOntoItself(source)
                try HostNamespaces.changeDirectory(source)
                try checkSame(expected)
                try HostNamespaces.pivotIntoWorkingDirectory()
            } catch {
                for path in hostMounts { _ = umount2(path, Int32(MNT_DETACH)) }
                if let error = error as? SandboxError { throw error }
                throw SandboxError("pivot_root into \(source) failed: \(error)")
            }
        case .chroot:
            do {
                try HostNamespaces.changeDirectory(source)
                try checkSame(expected)
                try HostNamespaces.changeRoot(".")
            } catch let error as SandboxError {
                throw error
            } catch {
                throw SandboxError("chroot into \(source) failed: \(error)")
            }
        case .none:
            return
        }
        // Calls that take a path but no directory descriptor (inotify_add_watch) name
        // descriptors relative to /proc/self/fd.
        do { try ProcSelfFD.becomeWorkingDirectory() } catch {
            throw SandboxError("cannot make /proc/self/fd the working directory: \(error)")
        }
    }

    /// Keeps only `kept` in every capability set of the process (effective, permitted,
    /// inheritable, ambient, bounding). Returns the effective set afterwards.
    public static func limitCapabilities(to kept: UInt64) throws(SandboxError) -> UInt64 {
        do {
            let (_, permitted) = try HostCapabilities.current()
            try HostCapabilities.clearAmbient()
            if permitted & Capability.setpcap.bit != 0 { try HostCapabilities.dropBounding(keeping: kept) }
            try HostCapabilities.limit(to: kept)
            return try HostCapabilities.current().effective
        } catch {
            throw SandboxError("dropping capabilities failed: \(error)")
        }
    }

    /// The working directory (SOURCE, just entered) must be the directory SOURCE was opened as.
    private static func checkSame(_ expected: stat) throws(SandboxError) {
        var here = stat()
        guard stat(".", &here) == 0 else { throw SandboxError("cannot stat SOURCE: \(Errno.current)") }
        guard here.st_dev == expected.st_dev && here.st_ino == expected.st_ino else {
            throw SandboxError("SOURCE changed since it was opened (another directory is at its path now)")
        }
    }
}
