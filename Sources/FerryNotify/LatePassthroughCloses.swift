import Glibc
import Synchronization

/// Nodes whose last passed-through writer was released a moment ago: the kernel may emit that
/// file's CLOSE_WRITE (from its backing file's final fput, which runs after RELEASE is queued)
/// after Ferry handled the RELEASE and lifted the node's ignore mark. Such a late event is the
/// client's own close, not a host change (protocol/notify-ring.md).
final class LatePassthroughCloses: Sendable {
    /// How long after the release a bare CLOSE_WRITE still counts as the client's.
    static let window: Int64 = 50_000_000
    /// At most this many nodes are remembered (older ones are dropped first).
    static let capacity = 4096

    private let released = Mutex<[UInt64: Int64]>([:])

    /// Node `nodeID` just lost its last passed-through writer.
    func noteReleased(_ nodeID: UInt64) {
        let now = LatePassthroughCloses.now()
        released.withLock { released in
            if released.count >= LatePassthroughCloses.capacity {
                released = released.filter { now - $0.value < LatePassthroughCloses.window }
                if released.count >= LatePassthroughCloses.capacity { released.removeAll() }
            }
            released[nodeID] = now
        }
    }

    /// Whether a CLOSE_WRITE (without MODIFY) of `nodeID` is the late close of its last
    /// passed-through writer; each release explains one such event.
    func explains(closeOf nodeID: UInt64) -> Bool {
        let now = LatePassthroughCloses.now()
        return released.withLock { released in
            guard let at = released.removeValue(forKey: nodeID) else { return false }
            return now - at < LatePassthroughCloses.window
        }
    }

    /// CLOCK_MONOTONIC_COARSE in nanoseconds (a vDSO read).
    private static func now() -> Int64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC_COARSE, &ts)
        return Int64(ts.tv_sec) * 1_000_000_000 + Int64(ts.tv_nsec)
    }
}
