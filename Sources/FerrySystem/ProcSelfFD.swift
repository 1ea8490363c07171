import CFerrySys
import Glibc
import Synchronization

/// Names a descriptor through /proc/self/fd without building a path: a descriptor of that
/// directory, kept for the process's lifetime, and the descriptor's number formatted on the
/// stack. Lookups start there instead of at "/" (no walk through "/proc" and the "self" link),
/// and nothing is allocated. The entry is a magic link to the descriptor's own file; calls
/// that follow it reach that file and go no further (for an O_NOFOLLOW descriptor of a
/// symlink, the symlink itself).
///
/// The kernel lets a process look into its own /proc/PID/fd whatever its fsuid, so this works
/// with a caller's credentials applied, as the full path did.
public enum ProcSelfFD {
    /// /proc/self/fd of this process (O_PATH), or -1 if /proc is not mounted. "self" is
    /// resolved when it is opened: a child forked later reopens it (`reopenInChild`).
    private static let descriptor = Atomic<Int32>(openDirectory())
    static var directory: Int32 { descriptor.load(ordering: .relaxed) }

    private static func openDirectory() -> Int32 {
        ferry_openat(HostFlags.atFDCWD, "/proc/self/fd", HostFlags.oPath | HostFlags.oDirectory | HostFlags.oCloexec, 0)
    }

    /// In a child just forked (one thread, before the sandbox): the inherited descriptor names
    /// the parent's /proc/PID/fd, so open the child's own in its place.
    public static func reopenInChild() -> Bool {
        let fresh = openDirectory()
        guard fresh >= 0 else { return false }
        let inherited = descriptor.exchange(fresh, ordering: .relaxed)
        if inherited >= 0 { Glibc.close(inherited) }
        return true
    }

    /// Calls `body` with a directory descriptor and a name relative to it that together name
    /// `fd`: (/proc/self/fd, "N"), or (AT_FDCWD, "/proc/self/fd/N") without the directory.
    public static func with<R, E: Error>(_ fd: Int32, _ body: (Int32, UnsafePointer<CChar>) throws(E) -> R) throws(E) -> R {
        let dir = directory
        let prefix: StaticString = "/proc/self/fd/"
        let result: Result<R, E> = withUnsafeTemporaryAllocation(of: CChar.self, capacity: 40) { buffer in
            var length = 0
            if dir < 0 {
                prefix.withUTF8Buffer { utf8 in
                    for byte in utf8 { buffer[length] = CChar(bitPattern: byte); length += 1 }
                }
            }
            var digits = UInt32(bitPattern: fd)
            let start = length
            repeat {
                buffer[length] = CChar(48 + digits % 10); length += 1
                digits /= 10
            } while digits > 0
            var (i, j) = (start, length - 1)
            while i < j { buffer.swapAt(i, j); i += 1; j -= 1 }
            buffer[length] = 0
            do throws(E) { return .success(try body(dir < 0 ? HostFlags.atFDCWD : dir, buffer.baseAddress!)) }
            catch { return .failure(error) }
        }
        return try result.get()
    }

    /// Opens the directory now (with Ferry's own credentials), not at the first request.
    /// Returns false when /proc is not mounted (the full paths are used then, and fail too).
    @discardableResult
    public static func prepare() -> Bool { directory >= 0 }

    /// Set once the working directory is /proc/self/fd (`becomeWorkingDirectory`).
    private static let isWorkingDirectory = Atomic<Bool>(false)

    /// Makes /proc/self/fd the process's working directory (the sandbox does, before any thread
    /// starts), so calls that take a path and no directory descriptor (inotify_add_watch) can
    /// name a descriptor as "N" once "/proc" is no longer reachable by path.
    public static func becomeWorkingDirectory() throws(Errno) {
        guard directory >= 0 else { throw Errno.noEntry }
        _ = try checked { Glibc.fchdir(directory) }
        isWorkingDirectory.store(true, ordering: .relaxed)
    }

    /// A path naming `fd` for calls without a directory descriptor: "N" relative to the working
    /// directory after `becomeWorkingDirectory`, else "/proc/self/fd/N".
    public static func path(of fd: Int32) -> String {
        isWorkingDirectory.load(ordering: .relaxed) ? String(fd) : "/proc/self/fd/\(fd)"
    }

    /// Whether the kernel has the *xattrat calls (Linux 6.13); cleared at the first ENOSYS.
    static let hasXattrAt = Atomic<Bool>(true)
}
