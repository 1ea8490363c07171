import FerrySystem
import Glibc

/// Blocks a set of signals in the whole process (call before starting threads) and delivers
/// them to a closure on one dedicated thread via sigwait.
final class SignalWaiter: Sendable {
    /// What a server acts on: SIGINT, SIGTERM and SIGHUP stop it, SIGUSR1 prints statistics.
    /// A pid namespace's supervisor forwards the same ones.
    static let serverSignals: [Int32] = [SIGINT, SIGTERM, SIGHUP, SIGUSR1]

    private let signals: [Int32]

    init(signals: [Int32]) {
        self.signals = signals
        var set = SignalWaiter.makeSet(signals)
        pthread_sigmask(SIG_BLOCK, &set, nil)
    }

    /// Starts the waiting thread; `handler` runs for every signal received.
    func start(_ handler: @escaping @Sendable (Int32) -> Void) throws {
        let signals = self.signals
        _ = try HostThread.spawn(name: "ferry-signals") {
            var set = SignalWaiter.makeSet(signals)
            while true {
                var received: Int32 = 0
                if sigwait(&set, &received) == 0 { handler(received) }
            }
        }
    }

    private static func makeSet(_ signals: [Int32]) -> sigset_t {
        var set = sigset_t()
        sigemptyset(&set)
        for s in signals { sigaddset(&set, s) }
        return set
    }
}
