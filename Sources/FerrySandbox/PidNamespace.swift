import FerrySystem
import Glibc

/// The pid namespace of `--sandbox namespace`. unshare(CLONE_NEWPID) moves no one, only the
/// next child, so entering it takes a fork while the server has one thread: the child is pid 1
/// of the new namespace and goes on as the server; the parent stays behind as its supervisor,
/// keeping the pid the user started (signals, exit status, `kill`).
///
/// The server sees no process outside its namespace (kill, ptrace and /proc by pid reach nothing
/// of the host's). It keeps what it opened before: the host's /proc descriptor still numbers
/// processes as the host does, as FUSE requests carry them; only /proc/self/fd is reopened,
/// since "self" was resolved when the parent opened it.
///
/// The supervisor closes every descriptor but standard input, output and error, drops every
/// capability, sets no_new_privs and runs nothing but a loop: signals in `forwarded` go to the
/// server; when the server ends, the supervisor ends the same way (its exit status, or the
/// same signal). If the supervisor is killed, the kernel kills the server (PR_SET_PDEATHSIG),
/// as if the server itself had been.
public enum PidNamespace {
    /// Enters a new pid namespace. Returns in the child (the server, pid 1 there); the parent
    /// never returns. Fails, with nothing changed, when the namespace or the fork is refused;
    /// must be called while the process has one thread.
    public static func enter(forwarding forwarded: [Int32]) throws(SandboxError) {
        if let threads = HostNamespaces.threadCount(), threads != 1 {
            throw SandboxError("\(threads) threads run already; the pid namespace must be entered while the server has one thread")
        }
        do { try HostNamespaces.unshare(.pid) } catch {
            throw SandboxError("unshare(CLONE_NEWPID) failed: \(error)")
        }
        let parent = HostProcess.ownPidfd()
        // Blocked before the fork, so a server that ends at once still leaves SIGCHLD pending
        // for the supervisor's sigwait (unblocked, its default action would discard it).
        var childSignal = sigset_t()
        sigemptyset(&childSignal)
        sigaddset(&childSignal, SIGCHLD)
        pthread_sigmask(SIG_BLOCK, &childSignal, nil)
        let server: pid_t
        do { server = try HostProcess.forkSingleThreaded() } catch {
            pthread_sigmask(SIG_UNBLOCK, &childSignal, nil)
            throw SandboxError("fork into the new pid namespace failed: \(error)")
        }
        guard server == 0 else { supervise(server, forwarding: forwarded) }
        pthread_sigmask(SIG_UNBLOCK, &childSignal, nil)
        do {
            guard try HostProcess.followParent(parent, dyingWith: SIGKILL) else { _exit(1) }
        } catch {
            throw SandboxError("prctl(PR_SET_PDEATHSIG) failed: \(error)")
        }
        if parent >= 0 { Glibc.close(parent) }
        guard ProcSelfFD.reopenInChild() else {
            throw SandboxError("cannot open /proc/self/fd in the new pid namespace")
        }
    }

    /// The parent's whole remaining life: forward `forwarded` to `server`, reap children, and
    /// end as the server ended.
    private static func supervise(_ server: pid_t, forwarding forwarded: [Int32]) -> Never {
        HostProcess.closeDescriptors(from: 3)
        // Nothing here needs a privilege: signalling a process of the same uid takes none.
        _ = try? Sandbox.limitCapabilities(to: 0)
        _ = try? HostCapabilities.setNoNewPrivileges()
        var set = sigset_t()
        sigemptyset(&set)
        for signal in forwarded + [SIGCHLD] { sigaddset(&set, signal) }
        pthread_sigmask(SIG_BLOCK, &set, nil)   // `forwarded` were blocked by the server's set-up already
        while true {
            var received: Int32 = 0
            guard sigwait(&set, &received) == 0 else { continue }
            guard received == SIGCHLD else {
                _ = kill(server, received)
                continue
            }
            while let (pid, ending) = HostProcess.reapAny() {
                if pid == server { HostProcess.endLike(ending) }
            }
        }
    }
}
