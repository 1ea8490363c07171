import Glibc
import Logging
import Synchronization

/// A warning logged at most once per interval: the calls in between are counted, and the next
/// line says how many there were. For conditions a client can trigger in a loop.
public final class RateLimitedWarning: Sendable {
    private let logger: Logger
    private let interval: Int
    /// Monotonic second of the last line (Int.min: never), and the calls since.
    private let state = Mutex<(last: Int, suppressed: Int)>((Int.min, 0))

    public init(logger: Logger, intervalSeconds: Int) {
        self.logger = logger
        self.interval = intervalSeconds
    }

    /// Logs `message(suppressed)` at warning level unless a line went out less than the
    /// interval ago; `suppressed` is the number of calls that logged nothing since then.
    public func warn(_ message: (Int) -> String) {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        let second = Int(now.tv_sec)
        let suppressed: Int? = state.withLock { s in
            if s.last != Int.min && second - s.last < interval {
                s.suppressed += 1
                return nil
            }
            let count = s.suppressed
            s = (second, 0)
            return count
        }
        if let suppressed { logger.warning("\(message(suppressed))") }
    }
}
