import CFerrySys
import Glibc

/// The host's /proc, kept as a descriptor opened at start-up, for what Ferry reads there while
/// it serves (a caller's /proc/TID/status for its supplementary groups). Inside the sandbox
/// "/proc" no longer has a path; the descriptor still reaches the host's procfs, whose pid
/// numbers are the ones FUSE requests carry.
public enum ProcRoot {
    /// /proc (O_PATH), or -1 if it is not mounted.
    static let directory: Int32 = ferry_openat(HostFlags.atFDCWD, "/proc",
                                               HostFlags.oPath | HostFlags.oDirectory | HostFlags.oCloexec, 0)

    /// Opens the descriptor now, before the sandbox. Returns false when /proc is not mounted.
    @discardableResult
    public static func prepare() -> Bool { directory >= 0 }

    /// Opens `name` (relative to /proc, e.g. "1234/status") read-only; -1 with errno on failure.
    static func open(_ name: String) -> Int32 {
        let dir = directory
        guard dir >= 0 else { return ferry_openat(HostFlags.atFDCWD, "/proc/" + name, O_RDONLY | O_CLOEXEC, 0) }
        return ferry_openat(dir, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW, 0)
    }
}
