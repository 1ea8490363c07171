import CFerrySys
import Glibc

/// Linux capabilities by number (<linux/capability.h>), the ones Ferry names.
public enum Capability: Int32, Sendable, CaseIterable, CustomStringConvertible {
    case chown = 0, dacOverride = 1, dacReadSearch = 2, fowner = 3, fsetid = 4, kill = 5
    case setgid = 6, setuid = 7, setpcap = 8, linuxImmutable = 9, ipcLock = 14, sysChroot = 18
    case sysPtrace = 19, sysAdmin = 21, sysResource = 24, mknod = 27, lease = 28, setfcap = 31

    /// The name as in capabilities(7) and /proc/PID/status tools ("CAP_SYS_ADMIN").
    public var description: String {
        switch self {
        case .chown: "CAP_CHOWN"
        case .dacOverride: "CAP_DAC_OVERRIDE"
        case .dacReadSearch: "CAP_DAC_READ_SEARCH"
        case .fowner: "CAP_FOWNER"
        case .fsetid: "CAP_FSETID"
        case .kill: "CAP_KILL"
        case .setgid: "CAP_SETGID"
        case .setuid: "CAP_SETUID"
        case .setpcap: "CAP_SETPCAP"
        case .linuxImmutable: "CAP_LINUX_IMMUTABLE"
        case .ipcLock: "CAP_IPC_LOCK"
        case .sysChroot: "CAP_SYS_CHROOT"
        case .sysPtrace: "CAP_SYS_PTRACE"
        case .sysAdmin: "CAP_SYS_ADMIN"
        case .sysResource: "CAP_SYS_RESOURCE"
        case .mknod: "CAP_MKNOD"
        case .lease: "CAP_LEASE"
        case .setfcap: "CAP_SETFCAP"
        }
    }

    /// The bit of this capability in a 64-bit set (as /proc/PID/status prints CapEff).
    public var bit: UInt64 { 1 << UInt64(rawValue) }
}

/// The calling thread's capability sets, and the process-wide bounding and ambient sets.
/// Capability sets are per thread: threads started later inherit the creator's.
public enum HostCapabilities {
    /// The calling thread's effective and permitted sets.
    public static func current() throws(Errno) -> (effective: UInt64, permitted: UInt64) {
        var effective: UInt64 = 0, permitted: UInt64 = 0, inheritable: UInt64 = 0
        _ = try checked { ferry_capget(&effective, &permitted, &inheritable) }
        return (effective, permitted)
    }

    /// Keeps only `kept` (a bit set) in the calling thread's effective and permitted sets and
    /// clears the inheritable set. Capabilities can only be dropped this way, never regained.
    public static func limit(to kept: UInt64) throws(Errno) {
        let (_, permitted) = try current()
        let remaining = permitted & kept
        _ = try checked { ferry_capset(remaining, remaining, 0) }
    }

    /// Removes every capability not in `kept` from the bounding set (PR_CAPBSET_DROP, which
    /// needs CAP_SETPCAP), so no exec can bring them back. Stops at the first number the kernel
    /// does not know.
    public static func dropBounding(keeping kept: UInt64) throws(Errno) {
        let capbsetDrop: Int32 = 24   // PR_CAPBSET_DROP
        for number in 0..<64 where kept & (1 << UInt64(number)) == 0 {
            if ferry_prctl(capbsetDrop, UInt(number), 0) != 0 {
                if errno == EINVAL { return }   // past CAP_LAST_CAP
                throw Errno.current
            }
        }
    }

    /// Clears the ambient set (PR_CAP_AMBIENT_CLEAR_ALL).
    public static func clearAmbient() throws(Errno) {
        let capAmbient: Int32 = 47, clearAll: UInt = 4   // PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL
        _ = try checked { ferry_prctl(capAmbient, clearAll, 0) }
    }

    /// PR_SET_NO_NEW_PRIVS: no exec can gain privileges from now on (required for a seccomp
    /// filter without CAP_SYS_ADMIN, and inherited by every thread started later).
    public static func setNoNewPrivileges() throws(Errno) {
        let noNewPrivs: Int32 = 38   // PR_SET_NO_NEW_PRIVS
        _ = try checked { ferry_prctl(noNewPrivs, 1, 0) }
    }

    /// Names of the capabilities in `set`, for the log ("CAP_CHOWN, CAP_SETUID").
    public static func names(_ set: UInt64) -> String {
        let named = Capability.allCases.filter { set & $0.bit != 0 }.map(\.description)
        let unnamed = (0..<64).filter { n in set & (1 << UInt64(n)) != 0 && Capability(rawValue: Int32(n)) == nil }
        let all = named + unnamed.map { "cap \($0)" }
        return all.isEmpty ? "none" : all.joined(separator: ", ")
    }
}
