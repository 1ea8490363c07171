import FerryEngine
import FerryIO
import FerryProtocol
import FerrySystem
import Glibc
import Logging
import Synchronization

/// A queue's call eventfd (the guest interrupt), which the front-end may replace while the
/// queue runs (SET_VRING_CALL).
final class CallEvent: Sendable {
    private let fd = Mutex<Int32>(-1)

    /// Installs `new` (nil: none), closing the previous one.
    func replace(_ new: Int32?) {
        fd.withLock { current in
            if current >= 0 { Glibc.close(current) }
            current = new ?? -1
        }
    }

    /// Interrupts the guest.
    func signal() {
        fd.withLock { current in
            guard current >= 0 else { return }
            var one: UInt64 = 1
            _ = Glibc.write(current, &one, 8)
        }
    }
}

/// Replies completed on other threads (a blocking lock granted or interrupted), waiting for
/// the queue thread that owns their descriptor chains.
final class DeferredInbox: Sendable {
    let replies = Mutex<[[UInt8]]>([])
    let event: EventCounter

    init() throws(Errno) { event = try EventCounter() }

    func post(_ bytes: [UInt8]) {
        replies.withLock { $0.append(bytes) }
        event.signal()
    }

    func take() -> [[UInt8]] { replies.withLock { list in defer { list = [] }; return list } }
}

/// The thread that serves one virtqueue: it sleeps on the queue's kick eventfd, takes the
/// descriptor chains the guest made available, runs each FUSE request through the engine and
/// puts the reply into the chain's device-writable buffers, then returns the chain on the used
/// ring and interrupts the guest (as EVENT_IDX allows).
///
/// The data of READ and WRITE stays in guest memory: only the FUSE headers are copied, and the
/// worker's I/O engine reads the host file into (or writes it from) the chain's buffers through
/// iovecs that point into the mapped regions (`placeData`). Every other request is copied into
/// the worker's request buffer, and its reply copied back.
final class QueueRunner: @unchecked Sendable {
    let index: Int
    let queue: SplitQueue
    let kickFD: Int32
    let call: CallEvent
    let engine: FUSEEngine
    let logger: Logger
    private let stopEvent: EventCounter
    /// A new memory table for the thread to take between chains (`switchMemory`), the event
    /// that wakes it for that, and the one it answers on once it took it.
    private let nextMemory = Mutex<GuestMemory?>(nil)
    private let memoryEvent: EventCounter
    private let memoryTaken: EventCounter
    private var thread: HostThread?

    init(index: Int, queue: SplitQueue, kickFD: Int32, call: CallEvent, engine: FUSEEngine, logger: Logger) throws(Errno) {
        self.index = index
        self.queue = queue
        self.kickFD = kickFD
        self.call = call
        self.engine = engine
        self.logger = logger
        stopEvent = try EventCounter()
        memoryEvent = try EventCounter()
        memoryTaken = try EventCounter()
    }

    /// Hands the running thread a new memory table (a region added or removed) and returns once
    /// it takes chains through it: every chain taken after this returns is translated through
    /// `memory`. Chains taken before keep the old table (and its mappings) until answered.
    /// False if the thread did not take it within `timeoutSeconds` (it still will, at its next
    /// pass).
    func switchMemory(_ memory: GuestMemory, timeoutSeconds: Int = 30) -> Bool {
        memoryTaken.drain()
        nextMemory.withLock { $0 = memory }
        memoryEvent.signal()
        for _ in 0..<(timeoutSeconds * 10) {
            if Host.waitReadable([memoryTaken.fd.rawValue], timeoutMilliseconds: 100) == [true] {
                if nextMemory.withLock({ $0 == nil }) { memoryTaken.drain(); return true }
            }
        }
        return nextMemory.withLock { $0 == nil }
    }

    func start() throws(Errno) {
        thread = try HostThread.spawn(name: "ferry-vq-\(index)") { [self] in self.run() }
    }

    /// Stops the thread (after the data requests in flight completed) and returns the next
    /// available index it would have taken (for GET_VRING_BASE).
    func stop() -> UInt16 {
        stopEvent.signal()
        thread?.join()
        thread = nil
        return queue.lastAvailable
    }

    /// Opcodes the guest expects no reply for: their chains go back at once with 0 bytes.
    private static let silentOpcodes: Set<UInt32> = [Opcode.forget.rawValue, Opcode.batchForget.rawValue,
                                                      Opcode.interrupt.rawValue]

    /// Most pieces a READ's or WRITE's data may have in guest memory to stay there (IOV_MAX,
    /// what preadv and io_uring's readv take); a request in more pieces is copied.
    static let maxDataPieces = 1024

    /// Where a request's data is when the engine gets it.
    enum DataPlacement {
        /// In the worker's request buffer, like the rest of the request (and the reply).
        case copied
        /// A WRITE's data stays in the chain's readable buffers.
        case writeInPlace
        /// A READ's data goes straight into the chain's writable buffers behind the reply header.
        case readInPlace
    }

    /// Fills `list` with the guest memory a READ's or WRITE's data occupies in `chain` (behind
    /// the FUSE headers), already checked against the memory table when the chain was taken;
    /// `.copied` for every other request, and for data in more than `maxDataPieces` pieces.
    static func placeData(opcode: UInt32, chain: DescriptorChain, into list: IOVectorList) -> DataPlacement {
        let headers = FUSEABI.inHeaderSize + FUSEABI.ioInSize
        list.removeAll()
        let placement: DataPlacement
        if opcode == Opcode.write.rawValue, chain.readableLength > headers {
            chain.forEachSegment(writable: false, after: headers) { list.append($0) }
            placement = .writeInPlace
        } else if opcode == Opcode.read.rawValue, chain.readableLength == headers,
                  chain.writableLength > FUSEABI.outHeaderSize {
            chain.forEachSegment(writable: true, after: FUSEABI.outHeaderSize) { list.append($0) }
            placement = .readInPlace
        } else {
            return .copied
        }
        guard list.count <= maxDataPieces else {
            list.removeAll()
            return .copied
        }
        return placement
    }

    /// A FUSE_INTERRUPT for request `unique`, as the kernel would send it.
    static func interruptRequest(_ unique: UInt64) -> [UInt8] {
        var bytes: [UInt8] = []
        func put<T: FixedWidthInteger>(_ v: T) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
        put(UInt32(FUSEABI.inHeaderSize + 8)); put(Opcode.interrupt.rawValue); put(UInt64(0)); put(UInt64(0))
        put(UInt32(0)); put(UInt32(0)); put(UInt32(0)); put(UInt16(0)); put(UInt16(0))
        put(unique)
        return bytes
    }

    private func run() {
        let inbox: DeferredInbox
        do { inbox = try DeferredInbox() } catch {
            logger.error("queue \(index): cannot create its event counter: \(error)")
            return
        }
        let worker = engine.makeWorker(deferredReplies: { bytes in inbox.post(bytes) },
                                       notifications: { _ in ENOSYS })   // virtio-fs has no notification queue
        /// Requests answered later: their chain, whether a READ's data is in it already, and the
        /// memory table the chain was taken with (it keeps the chain's buffers mapped, should a
        /// region be removed meanwhile).
        var pending: [UInt64: (chain: DescriptorChain, dataInPlace: Bool, memory: GuestMemory)] = [:]
        var pushed = false
        /// READ and WRITE requests whose data stayed in guest memory, and those copied.
        var dataInPlace = 0, dataCopied = 0
        let queue = self.queue
        let logger = self.logger
        let index = self.index

        func complete(_ chain: DescriptorChain, _ bytes: UnsafeRawBufferPointer, dataInPlace: Bool = false) {
            var written = 0
            if let n = chain.writeReply(bytes) {
                written = n
                // A READ read into place: the header's length counts the data behind it.
                if dataInPlace, n == FUSEABI.outHeaderSize {
                    let claimed = Int(UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: 0, as: UInt32.self)))
                    if claimed > n, claimed <= chain.writableLength { written = claimed }
                }
            } else {
                logger.error("queue \(index): reply of \(bytes.count) bytes does not fit the chain's \(chain.writableLength) writable bytes")
                if bytes.count >= FUSEABI.outHeaderSize, chain.writableLength >= FUSEABI.outHeaderSize {
                    let unique = UnsafeRawBufferPointer(rebasing: bytes[8..<16]).loadUnaligned(as: UInt64.self)
                    let header = ReplyFraming.headerOnly(unique: UInt64(littleEndian: unique), errno: EIO)
                    written = header.withUnsafeBytes { chain.writeReply($0) } ?? 0
                }
            }
            queue.push(head: chain.head, length: UInt32(written))
            pushed = true
        }
        func fail(_ chain: DescriptorChain, unique: UInt64?, errno: Int32, _ why: String) {
            logger.error("queue \(index): request in chain \(chain.head): \(why)")
            guard let unique, chain.writableLength >= FUSEABI.outHeaderSize else {
                queue.push(head: chain.head, length: 0)
                pushed = true
                return
            }
            ReplyFraming.headerOnly(unique: unique, errno: errno).withUnsafeBytes { complete(chain, $0) }
        }
        let send: (ByteView) -> Bool = { reply in
            guard let unique = reply.load(UInt64.self, at: 8), let waiting = pending.removeValue(forKey: unique) else {
                logger.error("queue \(index): a reply (\(reply.count) bytes) matches no request waiting on this queue")
                return true
            }
            reply.withUnsafeBytes { complete(waiting.chain, $0, dataInPlace: waiting.dataInPlace) }
            return true
        }
        func handle(_ chain: DescriptorChain) {
            let buffer = worker.requestBuffer
            guard chain.readableLength >= FUSEABI.inHeaderSize else {
                return fail(chain, unique: nil, errno: EIO, "\(chain.readableLength) readable bytes, less than a FUSE header")
            }
            // The header first: it says whether the data can stay in guest memory.
            _ = chain.copyReadable(into: UnsafeMutableRawBufferPointer(rebasing: buffer.mutableBytes[..<FUSEABI.inHeaderSize]))
            let header = buffer.view(count: FUSEABI.inHeaderSize)
            let unique = header.load(UInt64.self, at: 8)!
            let length = Int(header.load(UInt32.self, at: 0)!)
            guard length == chain.readableLength else {
                return fail(chain, unique: unique, errno: EIO, "FUSE header says \(length) bytes, the chain holds \(chain.readableLength)")
            }
            let opcode = header.load(UInt32.self, at: 4)!
            let placement = QueueRunner.placeData(opcode: opcode, chain: chain, into: worker.payloadVectors)
            if placement != .copied {
                dataInPlace += 1
            } else if opcode == Opcode.read.rawValue || opcode == Opcode.write.rawValue {
                dataCopied += 1
            }
            // Only the headers of a WRITE whose data stays in place are copied.
            let copy = placement == .writeInPlace ? FUSEABI.inHeaderSize + FUSEABI.ioInSize : chain.readableLength
            guard copy <= buffer.capacity else {
                return fail(chain, unique: unique, errno: EIO, "request of \(chain.readableLength) bytes exceeds the \(buffer.capacity)-byte buffer")
            }
            let n = chain.copyReadable(into: UnsafeMutableRawBufferPointer(rebasing: buffer.mutableBytes[..<copy]))
            let view = buffer.view(count: n)
            let silent = QueueRunner.silentOpcodes.contains(opcode)
            guard silent || pending[unique] == nil else {
                return fail(chain, unique: unique, errno: EBUSY, "unique \(unique) is already in flight")
            }
            switch engine.handle(view, worker: worker, payloadInVectors: placement != .copied) {
            case let .reply(bytes):
                bytes.withUnsafeBytes { complete(chain, $0) }
            case .noReply:
                if silent {
                    queue.push(head: chain.head, length: 0)
                    pushed = true
                } else {
                    pending[unique] = (chain, placement == .readInPlace, queue.memory)   // in the I/O core, or a blocking lock
                }
            }
        }

        var broken = false
        /// Takes a new memory table handed over by `switchMemory`, between chains.
        func takeNewMemory() {
            guard let memory = nextMemory.withLock({ next in defer { next = nil }; return next }) else { return }
            do {
                try queue.adopt(memory)
                logger.info("queue \(index): now on the new memory table (\(memory.regions.count) region(s)), \(pending.count) request(s) in flight on the old one")
            } catch {
                logger.error("queue \(index): \(error) in the new memory table; the queue stops until the guest resets the device")
                queue.markBroken()
                broken = true
            }
            memoryTaken.signal()
        }
        // The thread sleeps in its I/O engine: with io_uring, kicks and the queue's own events
        // are polled in the ring that runs its reads and writes (one io_uring_enter per sleep).
        let stopFD = stopEvent.fd.rawValue
        let events = [kickFD, stopFD, inbox.event.fd.rawValue, memoryEvent.fd.rawValue]
        serving: while true {
            takeNewMemory()
            _ = engine.completeData(worker, wait: false, send: send)
            for bytes in inbox.take() { bytes.withUnsafeBytes { _ = send(ByteView($0)) } }
            var took = 0
            while !broken, worker.canTakeRequest, took < 64 {
                do {
                    guard let chain = try queue.pop() else { break }
                    took += 1
                    handle(chain)
                } catch let QueueError.badChain(head, reason) {
                    logger.error("queue \(index): descriptor chain \(head): \(reason); returned unanswered")
                    queue.push(head: head, length: 0)
                    pushed = true
                    took += 1
                } catch {
                    logger.error("queue \(index): \(error); the queue stops until the guest resets the device")
                    broken = true
                }
            }
            if pushed {
                pushed = false
                if queue.needsSignal() { call.signal() }
            }
            // A full batch: look again at once. A queue found empty goes on towards the sleep,
            // whose io_uring_enter also submits the I/O the batch queued (and returns at once if
            // completions are ready): one system call where a flush at the top of the loop and
            // the sleep made two.
            if took >= 64 { continue }
            if !worker.canTakeRequest {
                _ = engine.completeData(worker, wait: true, send: send)
                continue
            }
            // (No prepareToSleep: the sleep below submits what is queued and returns at once
            // when completions are ready, in the same system call.)
            if !broken && queue.armNotification() { continue }
            if worker.sleep(untilCompletionOrSignal: events).contains(stopFD) { break serving }
        }
        engine.drainData(worker, send: send)
        // What is left waits for a host lock: interrupt it (EINTR), so that no waiter outlives
        // the queue and every chain taken goes back to the guest.
        if !pending.isEmpty {
            logger.info("queue \(index): stopping; interrupting \(pending.count) blocked lock request(s)")
            for unique in pending.keys {
                QueueRunner.interruptRequest(unique).withUnsafeBytes { _ = engine.handle(ByteView($0), worker: worker) }
            }
            for _ in 0..<50 where !pending.isEmpty {
                _ = Host.waitReadable([inbox.event.fd.rawValue], timeoutMilliseconds: 100)
                inbox.event.drain()
                for bytes in inbox.take() { bytes.withUnsafeBytes { _ = send(ByteView($0)) } }
            }
            if !pending.isEmpty { logger.warning("queue \(index): \(pending.count) request(s) left unanswered") }
        }
        for bytes in inbox.take() { bytes.withUnsafeBytes { _ = send(ByteView($0)) } }
        if pushed, queue.needsSignal() { call.signal() }
        engine.retire(worker)
        if dataInPlace + dataCopied > 0 {
            logger.info("queue \(index): \(dataInPlace) READ/WRITE with their data in guest memory, \(dataCopied) copied")
        }
    }
}
