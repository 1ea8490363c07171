import CFerrySys
import CSeccomp
import FerrySystem
import Glibc

/// `--seccomp kill|log|trap|none`: what happens to a system call outside the allow-list.
public enum SeccompMode: String, Sendable, CaseIterable {
    /// The whole process is killed (SIGSYS), as virtiofsd's default.
    case kill
    /// The call runs and the kernel logs it (audit type 1326, `dmesg`): for finding what a
    /// new feature needs.
    case log
    /// SIGSYS is raised: Ferry writes "ferry: seccomp refused system call N" to its log, then
    /// dies of the signal.
    case trap
    /// No filter.
    case none
}

/// A seccomp filter built from `SyscallAllowList` with libseccomp and loaded for the process.
public enum SeccompFilter {
    /// Builds the filter and loads it (with no_new_privs set). Returns the
    /// number of calls allowed. Run on the main thread before other threads start: a filter
    /// applies to the thread that loads it and to the threads it starts later.
    public static func install(_ mode: SeccompMode) throws(SandboxError) -> Int {
        guard mode != .none else { return 0 }
        let defaultAction: UInt32
        switch mode {
        case .kill: defaultAction = ferry_scmp_act_kill_process
        case .log: defaultAction = ferry_scmp_act_log
        case .trap: defaultAction = ferry_scmp_act_trap
        case .none: return 0
        }
        guard let context = seccomp_init(defaultAction) else {
            throw SandboxError("seccomp: libseccomp could not create a filter")
        }
        defer { seccomp_release(context) }
        // A binary tree over the syscall numbers instead of a linear chain: every call Ferry
        // makes pays for the filter, on the request path too.
        _ = seccomp_attr_set(context, SCMP_FLTATR_CTL_OPTIMIZE, 2)
        var allowed = 0
        for group in SyscallAllowList.groups {
            for name in group.names {
                let number = seccomp_syscall_resolve_name(name)
                guard number != __NR_SCMP_ERROR else {
                    throw SandboxError("seccomp: libseccomp does not know the system call \(name) (allow-list group: \(group.reason))")
                }
                try allow(context, number, name: name)
                allowed += 1
            }
            for (name, number) in group.numbered {
                try allow(context, number, name: name)
                allowed += 1
            }
        }
        let unshare = seccomp_syscall_resolve_name("unshare")
        let result = ferry_seccomp_allow_if_arg0(context, ferry_scmp_act_allow, unshare, SyscallAllowList.unshareFlags)
        guard result == 0 else { throw SandboxError("seccomp: cannot allow unshare(CLONE_FS): \(Errno(rawValue: -result))") }
        let clone = seccomp_syscall_resolve_name("clone")
        let cloned = ferry_seccomp_allow_if_arg0_clear(context, ferry_scmp_act_allow, clone, SyscallAllowList.cloneForbiddenFlags)
        guard cloned == 0 else { throw SandboxError("seccomp: cannot allow clone for threads: \(Errno(rawValue: -cloned))") }
        let clone3 = seccomp_syscall_resolve_name("clone3")
        let refused = ferry_seccomp_allow(context, ferry_scmp_act_errno(UInt16(ENOSYS)), clone3)
        guard refused == 0 else { throw SandboxError("seccomp: cannot make clone3 answer ENOSYS: \(Errno(rawValue: -refused))") }
        allowed += 2
        if mode == .trap && ferry_install_sigsys_reporter() != 0 {
            throw SandboxError("seccomp: cannot install the SIGSYS handler: \(Errno.current)")
        }
        do { try HostCapabilities.setNoNewPrivileges() } catch {
            throw SandboxError("seccomp: prctl(PR_SET_NO_NEW_PRIVS) failed: \(error)")
        }
        let loaded = seccomp_load(context)
        guard loaded == 0 else { throw SandboxError("seccomp: loading the filter failed: \(Errno(rawValue: -loaded))") }
        return allowed
    }

    private static func allow(_ context: scmp_filter_ctx, _ number: Int32, name: String) throws(SandboxError) {
        let result = ferry_seccomp_allow(context, ferry_scmp_act_allow, number)
        // -EEXIST: listed twice (an alias); harmless.
        guard result == 0 || result == -EEXIST else {
            throw SandboxError("seccomp: cannot allow \(name): \(Errno(rawValue: -result))")
        }
    }
}

extension SeccompFilter {
    /// getpgrp(2), which is not on the allow-list and changes nothing: the tests' proof that the
    /// filter is installed (`--seccomp kill` ends the process, `trap` logs the number 111).
    public static func makeForbiddenCall() {
        _ = ferry_raw_syscall0(111)   // SYS_getpgrp on x86_64
    }
}
