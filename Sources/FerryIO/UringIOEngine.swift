import FerrySystem
import Glibc
import Synchronization

/// The io_uring engine: operations are prepared as submission entries and handed to the
/// kernel in batches (`flush`: one io_uring_enter for all of them); the kernel runs them
/// asynchronously and posts completions, which also signal an eventfd so the owning thread can
/// sleep on its request source and its completions at once (no polling when idle). The eventfd
/// signals only while the thread is about to sleep (`prepareToSleep` until the next `reap`): a
/// read that completes inside io_uring_enter, the common case for the page cache, then costs no
/// eventfd write, no extra epoll wake-up and no eventfd read.
///
/// Results match the sync engine's: a write that stops short continues from where it stopped
/// (as the pwrite loop does), and EINTR or EAGAIN from the kernel resubmits the operation.
///
/// Writes through the page cache run with the plain syscall at submission instead: file
/// systems such as ext4 cannot take a buffered write without possibly blocking, so io_uring
/// would hand every one to a worker thread (a context switch each way, measured at 30-45% fewer
/// 4 KiB writes per second than pwrite here). O_DIRECT writes, reads, fsync and fallocate go
/// through the ring.
///
/// An operation submitted while nothing else is in flight is held back from the ring until the
/// thread either flushes (it goes on to other work: the operation joins the ring) or waits for
/// it alone (`reap(wait: true)`): then the thread runs it itself with the plain syscall, as the
/// sync engine would. The thread waits either way, and io_uring would only add a hop: an
/// O_DIRECT write's completion runs in a kernel worker (ext4 and iomap finish async direct
/// writes in a workqueue) before it wakes the thread, and fsync and fallocate always run in an
/// io-wq worker. Measured at queue depth 1 (protocol/io-core.md, "Waiting for one operation").
///
/// An engine made by `SharedRing.makeEngine` uses that ring (a FUSE queue's) instead of its
/// own: its operations are tagged apart from the owner's commands, it has no eventfd (the
/// owner sleeps on the ring itself), and `reap(wait: false)` submits nothing: what it prepared
/// goes to the kernel with the owner's next io_uring_enter, together with the owner's commands.
public final class UringIOEngine: IOEngine {
    public var kind: IOEngineKind { .uring }
    public let depth: Int
    public private(set) var inFlight = 0
    public var completionFD: Int32? { completions?.fd.rawValue }

    private let ring: IORing
    /// Signalled on completions while the thread sleeps (nil when sharing a ring).
    private let completions: EventCounter?
    /// The ring shared with its owner's commands (nil: the engine's own ring).
    private let shared: SharedRing?
    /// Added to the slot number in each operation's tag.
    private let tagBase: UInt64
    /// Per slot: the operation as it is now in the kernel, and the bytes a write already wrote.
    private var operations: [IOOperation?]
    private var written: [Int32]
    /// Completions of operations that ran at submission (buffered writes).
    private var finishedAtSubmission: [IOCompletion] = []
    /// Completions settled and not yet handed over: those the shared ring's owner drained
    /// (`settle`), and those `sleep` took from the engine's own ring; the next `reap` delivers them.
    private var settled: [IOCompletion] = []
    /// Eventfds `sleep` polls through the engine's own ring.
    private var polls = EventPolls()
    /// The operation submitted while nothing else was in flight, not yet in the ring (only on
    /// the engine's own ring): run at once by a `reap(wait: true)` that would wait for it alone.
    private var heldBack: Int?

    public init(depth: Int) throws(Errno) {
        self.depth = depth
        ring = try IORing(entries: depth)
        let completions = try EventCounter()
        try ring.registerEventFD(completions.fd.rawValue)
        ring.signalCompletions(false)
        self.completions = completions
        shared = nil
        tagBase = 0
        operations = Array(repeating: nil, count: depth)
        written = Array(repeating: 0, count: depth)
        finishedAtSubmission.reserveCapacity(depth)
        settled.reserveCapacity(depth)
    }

    /// An engine on `shared`'s ring (`SharedRing.makeEngine`).
    init(sharing shared: SharedRing, depth: Int) {
        self.depth = depth
        ring = shared.ring
        completions = nil
        self.shared = shared
        tagBase = SharedRing.engineTag
        operations = Array(repeating: nil, count: depth)
        written = Array(repeating: 0, count: depth)
        finishedAtSubmission.reserveCapacity(depth)
        settled.reserveCapacity(depth)
    }

    /// A completion of this engine's that the shared ring's owner drained: settled now, handed
    /// over by the next `reap`.
    func settle(slot: Int, result: Int32) {
        if let done = finish(slot: slot, result: result) { settled.append(done) }
    }

    public func submit(_ operation: IOOperation, slot: Int) {
        precondition(operations[slot] == nil, "slot \(slot) is already in flight")
        inFlight += 1
        if case .write(_, _, _, cached: true) = operation {
            finishedAtSubmission.append(IOCompletion(slot: slot, result: SyncIOEngine.run(operation)))
            return
        }
        if case .writev(_, _, _, cached: true) = operation {   // pwritev, for the same reason
            finishedAtSubmission.append(IOCompletion(slot: slot, result: SyncIOEngine.run(operation)))
            return
        }
        operations[slot] = operation
        written[slot] = 0
        if shared == nil && inFlight == 1 {
            heldBack = slot
            return
        }
        releaseHeldBack()   // first: the ring starts operations in the order they came
        enqueue(operation, slot: slot)
    }

    /// Puts the held-back operation into the ring (not yet submitted).
    private func releaseHeldBack() {
        guard let slot = heldBack, let operation = operations[slot] else { return }
        heldBack = nil
        enqueue(operation, slot: slot)
    }

    /// Runs the held-back operation on this thread with the plain syscall, when it is the only
    /// operation in flight, and hands its completion to `body` (unless it continues in the
    /// ring: a short write, EINTR). False when there was no such operation.
    private func runHeldBackAlone(_ body: (IOCompletion) -> Void) -> Bool {
        guard let slot = heldBack, inFlight == 1, let operation = operations[slot] else { return false }
        heldBack = nil
        if let done = finish(slot: slot, result: SyncIOEngine.run(operation)) { body(done) }
        return true
    }

    private func enqueue(_ operation: IOOperation, slot: Int) {
        if !ring.prepare(operation, tag: tagBase | UInt64(slot)) {
            flush()
            let prepared = ring.prepare(operation, tag: tagBase | UInt64(slot))
            precondition(prepared, "io_uring submission queue full with \(inFlight) of \(depth) in flight")
        }
    }

    public func flush() {
        releaseHeldBack()
        submitPrepared()
    }

    /// Hands the kernel what is in the ring, leaving a held-back operation held: a thread that
    /// only looks for completions (`reap(wait: false)`) may still wait for it alone next.
    private func submitPrepared() {
        while ring.unsubmitted > 0 {
            switch ring.submit() {
            case .success: continue
            case .failure(.interrupted): continue
            case .failure: return   // EAGAIN/EBUSY: the next flush (or reap) tries again
            }
        }
    }

    public func prepareToSleep() -> Bool {
        // On a shared ring the owner's io_uring_enter submits and sleeps; the completions wake it.
        if shared != nil { return finishedAtSubmission.isEmpty && settled.isEmpty }
        flush()
        guard finishedAtSubmission.isEmpty else { return false }
        guard inFlight > 0 else { return true }
        ring.signalCompletions(true)
        // The flag store must be visible before the completion ring is read; the kernel orders
        // its side (completion posted, then the flag read) with a full barrier as well.
        atomicMemoryFence(ordering: .sequentiallyConsistent)
        return !ring.hasCompletions
    }

    @discardableResult
    public func reap(wait: Bool, _ body: (IOCompletion) -> Void) -> Int {
        guard wait else {
            if shared == nil { submitPrepared() }
            return collect(body)
        }
        var delivered = 0
        while true {
            delivered += collect(body)
            if delivered > 0 || inFlight == 0 {
                if shared == nil { submitPrepared() }   // continuations prepared by `finish`
                return delivered
            }
            if runHeldBackAlone({ done in
                delivered += 1
                body(done)
            }) { continue }
            releaseHeldBack()
            ring.submitAndWait()   // what is queued starts, and the thread sleeps: one io_uring_enter
        }
    }

    /// Hands the completions already posted to `body`.
    private func collect(_ body: (IOCompletion) -> Void) -> Int {
        if completions != nil { ring.signalCompletions(false) }
        var delivered = finishedAtSubmission.count + settled.count
        for completion in finishedAtSubmission {
            inFlight -= 1
            body(completion)
        }
        finishedAtSubmission.removeAll(keepingCapacity: true)
        for completion in settled { body(completion) }
        settled.removeAll(keepingCapacity: true)
        func settle(_ slot: Int, _ result: Int32) {
            if let done = finish(slot: slot, result: result) {
                delivered += 1
                body(done)
            }
        }
        if let shared {
            shared.drainForEngine(settle)
        } else {
            _ = drainOwnRing { done in
                delivered += 1
                body(done)
            }
        }
        return delivered
    }

    /// Takes every completion posted to the engine's own ring: settled operations go to `body`,
    /// polls of eventfds to `polls`.
    private func drainOwnRing(_ body: (IOCompletion) -> Void) -> Int {
        ring.drain { tag, result in
            if let fd = EventPolls.descriptor(ofTag: tag) {
                polls.fired(fd)
            } else if let done = finish(slot: Int(tag), result: result) {
                body(done)
            }
        }
    }

    public func sleep(untilCompletionOrSignal eventFDs: [Int32]) -> [Int32] {
        precondition(shared == nil, "an engine on a shared ring sleeps in its owner's ring")
        releaseHeldBack()
        for fd in eventFDs where !polls.isArmed(fd) {
            if !ring.preparePoll(fd: fd, tag: EventPolls.tag(of: fd)) {
                flush()
                let prepared = ring.preparePoll(fd: fd, tag: EventPolls.tag(of: fd))
                precondition(prepared, "io_uring submission queue full after a flush")
            }
            polls.armed(fd)
        }
        ring.signalCompletions(false)   // the thread sleeps in the ring itself: no eventfd
        if finishedAtSubmission.isEmpty && settled.isEmpty && !polls.anyFired && !ring.hasCompletions {
            ring.submitAndWait()   // queued operations and polls start, and the thread sleeps: one io_uring_enter
        } else {
            flush()
        }
        _ = drainOwnRing { settled.append($0) }
        let signalled = polls.takeFired()
        for fd in signalled { EventCounter.drain(fd) }
        return signalled
    }

    /// Settles one completion: nil if the operation continues (a short write, EINTR, EAGAIN).
    private func finish(slot: Int, result: Int32) -> IOCompletion? {
        guard let operation = operations[slot] else { return nil }
        if result == -EINTR || result == -EAGAIN {
            enqueue(operation, slot: slot)
            return nil
        }
        if case let .write(fd, offset, data, cached) = operation, result > 0, Int(result) < data.count {
            let rest = IOOperation.write(fd: fd, offset: offset + Int64(result),
                                         data: UnsafeRawBufferPointer(rebasing: data[Int(result)...]), cached: cached)
            written[slot] += result
            operations[slot] = rest
            enqueue(rest, slot: slot)
            return nil
        }
        if let rest = vectoredRest(operation, result: result) {
            written[slot] += result
            operations[slot] = rest
            enqueue(rest, slot: slot)
            return nil
        }
        operations[slot] = nil
        inFlight -= 1
        let total = result >= 0 ? written[slot] + result : result
        return IOCompletion(slot: slot, result: total)
    }

    /// What is left of a vectored write that wrote only `result` of its bytes (nil: it is done).
    private func vectoredRest(_ operation: IOOperation, result: Int32) -> IOOperation? {
        guard case let .writev(fd, offset, vectors, cached) = operation, result > 0,
              Int(result) < vectors.totalLength else { return nil }
        return .writev(fd: fd, offset: offset + Int64(result), vectors: vectors.dropping(Int(result)), cached: cached)
    }
}
