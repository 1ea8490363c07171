import FerrySystem
import Glibc
import Logging
import Synchronization

/// One bounded resource of a connection (see `ResourceLimits`): a counter that refuses to pass
/// `limit`, answering `refusal`, with a rate-limited warning so that a guest hitting the bound in
/// a loop cannot flood the log.
public final class ResourceBound: Sendable {
    /// What is counted, for the log line ("inodes", "open files", "lock waiters").
    public let name: String
    /// The most that may be held at once.
    public let limit: Int
    /// The errno a refused request gets.
    public let refusal: Errno
    /// The option that sets the bound, named in the log line.
    let option: String
    private let held = Atomic<Int>(0)
    private let refusals = Atomic<Int>(0)
    private let warning: RateLimitedWarning

    /// Seconds between two warnings of one bound.
    public static let warningInterval: Int = 10

    public init(name: String, limit: Int, refusal: Errno, option: String, logger: Logger) {
        self.name = name
        self.limit = max(limit, 0)
        self.refusal = refusal
        self.option = option
        self.warning = RateLimitedWarning(logger: logger, intervalSeconds: ResourceBound.warningInterval)
    }

    /// How many are held now.
    public var count: Int { held.load(ordering: .relaxed) }

    /// How many requests were refused since start.
    public var refused: Int { refusals.load(ordering: .relaxed) }

    /// Takes one unit, or throws `refusal` (and warns) when that would pass the bound.
    public func acquire() throws(Errno) {
        let before = held.wrappingAdd(1, ordering: .acquiringAndReleasing).oldValue
        guard before >= limit else { return }
        held.wrappingSubtract(1, ordering: .relaxed)
        refusals.wrappingAdd(1, ordering: .relaxed)
        let (name, limit, refusal, option) = (self.name, self.limit, self.refusal, self.option)
        warning.warn { suppressed in
            "resource bound reached: \(limit) \(name) (\(option)); answering \(refusal)"
                + (suppressed > 0 ? " (\(suppressed) more refusals since the last warning)" : "")
        }
        throw refusal
    }

    /// "12/100 open files (3 refused)", for the stats report.
    public var summary: String {
        let refused = self.refused
        return "\(count)/\(limit) \(name)" + (refused > 0 ? " (\(refused) refused)" : "")
    }

    /// Gives back one unit taken by `acquire`.
    public func release() {
        held.wrappingSubtract(1, ordering: .acquiringAndReleasing)
    }
}
