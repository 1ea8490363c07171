import FerrySystem
import Logging
import Synchronization

/// A per-thread I/O engine: takes data operations for numbered slots and hands back their
/// completions. The thread that created an engine is the only one that uses it (a reply must go
/// out on that thread's own /dev/fuse descriptor, and io_uring submissions carry the caller's
/// credentials of the thread that submits them).
///
/// Every engine runs operations with the semantics of the plain syscalls (`SyncIOEngine` is the
/// reference); which one runs is invisible to the filesystem and the protocol engine.
public protocol IOEngine: AnyObject {
    /// What runs underneath, for logs and statistics ("io_uring" or "sync").
    var kind: IOEngineKind { get }
    /// How many operations may be in flight at once; slots are `0..<depth`.
    var depth: Int { get }
    /// Operations submitted and not yet reaped.
    var inFlight: Int { get }
    /// A descriptor that becomes readable when completions are waiting (to sleep on together
    /// with a request source), or nil when completions are ready as soon as `submit` returns.
    var completionFD: Int32? { get }

    /// Queues `operation` for `slot` (which must not be in flight). The operation may start
    /// only at the next `flush`, or at once.
    func submit(_ operation: IOOperation, slot: Int)
    /// Starts every queued operation (one io_uring_enter for the whole batch).
    func flush()
    /// Before the owning thread sleeps on its request source and `completionFD`: starts every
    /// queued operation and makes the next completion signal `completionFD`. Returns false when
    /// completions are already waiting (reap them instead of sleeping). Between this call and
    /// the next `reap`, completions signal; otherwise they need not (an operation that completes
    /// while the thread is busy anyway costs no wake-up).
    func prepareToSleep() -> Bool
    /// Starts the queued operations and hands every completion that is ready to `body`; with
    /// `wait`, first waits until at least one is ready (if anything is in flight). Returns how
    /// many were handed over. (The io_uring engine keeps a lone operation held back until a
    /// wait runs it or a `flush` starts it: `UringIOEngine`.)
    @discardableResult
    func reap(wait: Bool, _ body: (IOCompletion) -> Void) -> Int
    /// Sleeps until a completion is ready or one of `eventFDs` (non-blocking eventfds) is
    /// signalled, then returns the signalled ones with their counts read (drained); completions
    /// are left for `reap`. For a thread whose only other wake-ups are eventfds (a vhost-user
    /// queue: kicks, stop, replies from other threads). The io_uring engine waits for all of it
    /// in one io_uring_enter: a poll of each eventfd rides the ring beside the operations in
    /// flight, so a completion does not interrupt a poll(2) elsewhere with task work. The sync
    /// engine, whose completions are ready at once, polls `eventFDs`.
    func sleep(untilCompletionOrSignal eventFDs: [Int32]) -> [Int32]
}

/// Which engine to run: `--io-engine uring|sync`.
public enum IOEngineKind: String, Sendable, CaseIterable {
    /// io_uring (liburing): operations batched per submission, completed asynchronously.
    case uring
    /// pread/pwrite and friends on the calling thread, one at a time.
    case sync
}

/// Makes I/O engines of one kind for the threads that ask, falling back to the sync engine
/// (with one log line) when io_uring cannot be set up here.
public final class IOEngineFactory: Sendable {
    /// The kind asked for.
    public let requested: IOEngineKind
    /// Operations in flight per engine.
    public let depth: Int
    private let logger: Logger
    private let fellBack = Mutex(false)

    public init(kind: IOEngineKind, depth: Int, logger: Logger) {
        self.requested = kind
        self.depth = max(1, depth)
        self.logger = logger
    }

    /// Whether io_uring can be set up on this host (a probe ring is created and torn down).
    public static func uringAvailable() -> Result<Void, Errno> {
        Result { () throws(Errno) in _ = try IORing(entries: 2) }
    }

    /// A new engine for the calling thread.
    public func make() -> IOEngine {
        if requested == .uring {
            do { return try UringIOEngine(depth: depth) } catch {
                let first = fellBack.withLock { old in defer { old = true }; return !old }
                if first { logger.warning("io_uring unavailable (\(error)); using the sync I/O engine") }
            }
        }
        return SyncIOEngine(depth: depth)
    }
}
