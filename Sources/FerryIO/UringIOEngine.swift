import FerrySystem
import Glibc

/// The io_uring engine: operations are prepared as submission entries and handed to the
/// kernel in batches (`flush`: one io_uring_enter for all of them); the kernel runs them
/// asynchronously and posts completions, which also signal an eventfd so the owning thread can
/// sleep on its request source and its completions at once (no polling when idle).
///
/// Results match the sync engine's: a write that stops short continues from where it stopped
/// (as the pwrite loop does), and EINTR or EAGAIN from the kernel resubmits the operation.
public final class UringIOEngine: IOEngine {
    public var kind: IOEngineKind { .uring }
    public let depth: Int
    public private(set) var inFlight = 0
    public var completionFD: Int32? { completions.fd.rawValue }

    private let ring: IORing
    private let completions: EventCounter
    /// Per slot: the operation as it is now in the kernel, and the bytes a write already wrote.
    private var operations: [IOOperation?]
    private var written: [Int32]

    public init(depth: Int) throws(Errno) {
        self.depth = depth
        ring = try IORing(entries: depth)
        completions = try EventCounter()
        try ring.registerEventFD(completions.fd.rawValue)
        operations = Array(repeating: nil, count: depth)
        written = Array(repeating: 0, count: depth)
    }

    public func submit(_ operation: IOOperation, slot: Int) {
        precondition(operations[slot] == nil, "slot \(slot) is already in flight")
        operations[slot] = operation
        written[slot] = 0
        inFlight += 1
        enqueue(operation, slot: slot)
    }

    private func enqueue(_ operation: IOOperation, slot: Int) {
        if !ring.prepare(operation, tag: UInt64(slot)) {
            flush()
            let prepared = ring.prepare(operation, tag: UInt64(slot))
            precondition(prepared, "io_uring submission queue full with \(inFlight) of \(depth) in flight")
        }
    }

    public func flush() {
        while ring.unsubmitted > 0 {
            switch ring.submit() {
            case .success: continue
            case .failure(.interrupted): continue
            case .failure: return   // EAGAIN/EBUSY: the next flush (or reap) tries again
            }
        }
    }

    @discardableResult
    public func reap(wait: Bool, _ body: (IOCompletion) -> Void) -> Int {
        flush()
        completions.drain()
        var delivered = 0
        while true {
            _ = ring.drain { tag, result in
                if let done = finish(slot: Int(tag), result: result) {
                    delivered += 1
                    body(done)
                }
            }
            if delivered > 0 || !wait || inFlight == 0 { return delivered }
            flush()   // continuations prepared by `finish`
            ring.waitForCompletion()
        }
    }

    /// Settles one completion: nil if the operation continues (a short write, EINTR, EAGAIN).
    private func finish(slot: Int, result: Int32) -> IOCompletion? {
        guard let operation = operations[slot] else { return nil }
        if result == -EINTR || result == -EAGAIN {
            enqueue(operation, slot: slot)
            return nil
        }
        if case let .write(fd, offset, data) = operation, result > 0, Int(result) < data.count {
            let rest = IOOperation.write(fd: fd, offset: offset + Int64(result),
                                         data: UnsafeRawBufferPointer(rebasing: data[Int(result)...]))
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
}
