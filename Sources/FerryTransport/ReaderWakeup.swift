import Glibc

/// A signal whose only job is to interrupt a reader blocked in read(2) on /dev/fuse (EINTR):
/// installed with an empty handler and without SA_RESTART.
enum ReaderWakeup {
    static let signal = SIGUSR1

    static func install() {
        var action = sigaction()
        action.__sigaction_handler.sa_handler = { _ in }
        sigemptyset(&action.sa_mask)
        action.sa_flags = 0
        sigaction(signal, &action, nil)
    }
}
