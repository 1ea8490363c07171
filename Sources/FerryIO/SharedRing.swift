import FerrySystem
import Glibc

/// One io_uring that a thread shares between its own commands and its I/O engine's operations:
/// the ring of a FUSE-over-io_uring queue, which fetches requests and commits replies
/// (IORING_OP_URING_CMD, prepared by the transport) and carries the host reads and writes of
/// those requests (`makeEngine`). One io_uring_enter then submits a READ's host read together
/// with the commits and fetches of other requests, and the read lands in the entry's own
/// payload buffer.
///
/// Completions are sorted by tag: the engine's operations carry `engineTag` in their tag, and
/// their completions go to the engine whoever drains the ring; every other completion is the
/// owner's (`reap`). When the engine drains the ring while it waits for its own operations
/// (every slot in flight, or a thread that stops), the owner's completions are kept for the
/// next `reap`. Owned and used by one thread.
public final class SharedRing {
    /// One completion of the owner's: its tag and result (>= 0, or -errno).
    public struct Completion {
        public var tag: UInt64
        public var result: Int32
    }

    /// Tags of the engine's operations: this bit and the slot number. Owner tags must not
    /// have it set with the upper 30 bits clear (small numbers and UInt64.max are free).
    static let engineTag: UInt64 = 1 << 62
    private static let engineMask: UInt64 = ~UInt64(0xffff_ffff)

    let ring: IORing
    /// The owner's completions drained by the engine.
    private var held: [Completion] = []
    /// Receives the engine's completions (slot, result).
    private weak var engine: UringIOEngine?

    /// A ring with room for `entries` submissions and `completions` completions, with 128-byte
    /// submission entries (IORING_SETUP_SQE128 | CQSIZE | SUBMIT_ALL).
    public init(entries: Int, completions: Int) throws(Errno) {
        ring = try IORing(entries: entries, completions: completions)
        held.reserveCapacity(64)
    }

    /// An I/O engine of `depth` slots whose operations go through this ring (one per ring).
    /// It has no completion descriptor: the owner sleeps on this ring, which its completions
    /// wake.
    public func makeEngine(depth: Int) -> IOEngine {
        precondition(engine == nil, "a shared ring carries one I/O engine")
        let made = UringIOEngine(sharing: self, depth: depth)
        engine = made
        return made
    }

    /// Registers `fd` as fixed file 0 (the /dev/fuse descriptor commands go to).
    public func registerFixedFile(_ fd: Int32) throws(Errno) { try ring.registerFixedFile(fd) }

    /// Prepares IORING_OP_URING_CMD `command` on fixed file 0, naming `iovecs` (two, or nil; they
    /// must stay valid until the kernel took the command), tagged `tag`. Returns the 80-byte
    /// command area (zeroed) to fill before the next submit, or nil when the submission queue
    /// is full.
    public func prepareCommand(_ command: UInt32, iovecs: UnsafePointer<iovec>?, tag: UInt64) -> UnsafeMutableRawPointer? {
        ring.prepareCommand(command, iovecs: iovecs, tag: tag)
    }

    /// Prepares a one-shot wait for `fd` to become readable; false when the queue is full.
    public func preparePollIn(_ fd: Int32, tag: UInt64) -> Bool { ring.preparePoll(fd: fd, tag: tag) }

    /// Submits everything prepared (the owner's and the engine's); the number submitted or -errno.
    public func submit() -> Int32 {
        switch ring.submit() {
        case let .success(n): return Int32(n)
        case let .failure(error): return -error.rawValue
        }
    }

    /// Submits everything prepared and sleeps until a completion is there (one io_uring_enter);
    /// returns at once when the engine's drain kept completions of the owner's. -errno on
    /// failure (EINTR: a signal).
    public func submitAndWait() -> Int32 {
        guard held.isEmpty else { return submit() }
        return ring.submitAndWaitResult()
    }

    /// Links the engine's read prepared last, when it reads into `buffer` and is not submitted
    /// yet, to the next entry the owner prepares (at once): that entry starts only after the read
    /// filled its buffer in full, and is cancelled (-ECANCELED) otherwise. The read still posts
    /// its completion. Returns whether it linked.
    public func linkLastRead(into buffer: UnsafeMutableRawPointer) -> Bool { ring.linkLastRead(into: buffer) }

    /// Like `submitAndWait`, but sleeps until `count` completions are there (those present
    /// included) or `timeout` nanoseconds passed: for an owner that expects completions it need
    /// not wake for (reads whose follow-up is linked). -ETIME when the time ran out.
    public func submitAndWait(count: Int, timeout: Int) -> Int32 {
        guard held.isEmpty, count > 1 else { return submitAndWait() }
        return ring.submitAndWait(count: count, timeout: timeout)
    }

    /// Moves the owner's completions that are ready into `batch` (appending), without waiting;
    /// the engine's go to the engine (its next `reap` hands them over).
    public func reap(into batch: inout [Completion]) {
        if !held.isEmpty {
            batch.append(contentsOf: held)
            held.removeAll(keepingCapacity: true)
        }
        _ = ring.drain { tag, result in
            if SharedRing.isEngineTag(tag) {
                engine?.settle(slot: Int(truncatingIfNeeded: tag & 0xffff_ffff), result: result)
            } else {
                batch.append(Completion(tag: tag, result: result))
            }
        }
    }

    /// Drains the ring for the engine: its completions to `body`, the owner's kept for `reap`.
    func drainForEngine(_ body: (Int, Int32) -> Void) {
        _ = ring.drain { tag, result in
            if SharedRing.isEngineTag(tag) {
                body(Int(truncatingIfNeeded: tag & 0xffff_ffff), result)
            } else {
                held.append(Completion(tag: tag, result: result))
            }
        }
    }

    static func isEngineTag(_ tag: UInt64) -> Bool { tag & engineMask == engineTag }
}
