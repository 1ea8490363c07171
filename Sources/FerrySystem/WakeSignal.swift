import Glibc

/// Signals whose only job is to break a thread out of a blocking syscall with EINTR: installed
/// with an empty handler and without SA_RESTART. Real-time signals, so SIGUSR1 and SIGUSR2
/// stay free for the operator (SIGUSR1 prints the counters).
public enum WakeSignal {
    /// Wakes /dev/fuse readers: asleep in read(2) for a lock settle (`InterruptibleRead`), or
    /// when a stopping server abandons the connection.
    public static let reader = __libc_current_sigrtmin() + 1
    /// Wakes lock waiters blocked in F_OFD_SETLKW or flock when their request is interrupted.
    public static let lockWaiter = __libc_current_sigrtmin() + 2

    /// Installs the empty handler for `signal` (idempotent).
    public static func install(_ signal: Int32) {
        var action = sigaction()
        action.__sigaction_handler.sa_handler = { _ in }
        sigemptyset(&action.sa_mask)
        action.sa_flags = 0
        sigaction(signal, &action, nil)
    }
}
