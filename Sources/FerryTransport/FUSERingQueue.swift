import FerryEngine
import FerryProtocol
import FerrySystem
import Glibc
import Logging
import Synchronization

/// One ring entry: the header page and payload buffer the kernel writes a request into and
/// reads the reply from (protocol/fuse-uring.md), and where the entry is.
final class FUSERingEntry {
    enum State {
        /// Registered or committed: the kernel owns the buffers.
        case inKernel
        /// Holds a request the queue thread is handling.
        case holding
        /// Holds a request answered later (a blocking lock): committed when the reply comes.
        case parked
        /// Holds a data request the worker's I/O engine runs: committed when it completes.
        case inIO
        /// The kernel ended the entry (unmount, abort) or refused it.
        case dead
    }

    let index: Int
    let header: MessageBuffer
    let payload: MessageBuffer
    /// iov[0] = header, iov[1] = payload; read by the kernel at REGISTER.
    let iovecs: UnsafeMutablePointer<iovec>
    var state = State.inKernel
    /// The commit id of the request held (valid while holding or parked).
    var commitID: UInt64 = 0
    /// The last command submitted, to submit again after EAGAIN/EINTR.
    var lastCommand = FUSERingABI.Command.register

    /// A READ whose COMMIT_AND_FETCH is linked to its host read (IOSQE_IO_LINK): the kernel
    /// commits the reply, prepared for a full read, as soon as the read filled the payload;
    /// a short or failed read cancels the commit (-ECANCELED) and the reply is committed the
    /// ordinary way (protocol/fuse-uring.md, "Queues").
    enum Link {
        /// No linked commit.
        case none
        /// Read and commit submitted; neither the read's reply nor the commit's end seen.
        case armed
        /// The commit was cancelled before the read's reply came: commit that reply.
        case canceled
        /// The read's reply was a full read: the linked commit answers it (unless a cancel comes).
        case replied
        /// A short or failed read was committed the ordinary way: its cancel is still to come.
        case expectCancel
    }
    var link = Link.none
    /// The bytes a full read of the linked READ moves.
    var linkedSize = 0
    /// The linked READ is on a file the client opened with O_DIRECT (`fuse_read_in.flags`): its
    /// host read goes to the device and completes later, so the queue's wait does not count it.
    var linkedDirect = false

    init(index: Int, payloadSize: Int) {
        self.index = index
        header = MessageBuffer(capacity: MessageBuffer.pageSize)
        payload = MessageBuffer(capacity: payloadSize)
        iovecs = UnsafeMutablePointer<iovec>.allocate(capacity: FUSERingABI.iovecCount)
        iovecs[0] = iovec(iov_base: header.mutableBytes.baseAddress, iov_len: header.capacity)
        iovecs[1] = iovec(iov_base: payload.mutableBytes.baseAddress, iov_len: payload.capacity)
    }

    deinit { iovecs.deallocate() }

    /// The request's header fields that lock ordering needs, straight from in_out.
    var inHeader: InHeader {
        let h = header.view(count: FUSEABI.inHeaderSize)
        return InHeader(length: h.load(UInt32.self, at: 0) ?? 0, opcode: h.load(UInt32.self, at: 4) ?? 0,
                        unique: h.load(UInt64.self, at: 8) ?? 0, nodeID: h.load(UInt64.self, at: 16) ?? 0,
                        uid: 0, gid: 0, pid: 0)
    }

    /// Puts a reply (out header + body, as the engine encodes it for /dev/fuse) into the
    /// entry: the header into in_out, the body into the payload, its length into payload_sz.
    /// A READ that ran into the payload buffer (`fuse_out_header.len` counts more bytes than
    /// `reply` has) leaves its data where it is: only the header is stored.
    func storeReply(_ reply: ByteView) {
        let out = header.mutableBytes
        let declared = Int(reply.load(UInt32.self, at: 0) ?? 0)
        let inPlace = declared > reply.count && reply.count == FUSEABI.outHeaderSize
        let bodyCount = inPlace ? min(declared - FUSEABI.outHeaderSize, payload.capacity)
                                : max(0, reply.count - FUSEABI.outHeaderSize)
        reply.withUnsafeBytes { bytes in
            out.copyMemory(from: UnsafeRawBufferPointer(rebasing: bytes.prefix(FUSEABI.outHeaderSize)))
            if !inPlace && bodyCount > 0 {
                payload.mutableBytes.copyMemory(from: UnsafeRawBufferPointer(rebasing: bytes[FUSEABI.outHeaderSize...]))
            }
        }
        out.storeBytes(of: UInt32(bodyCount).littleEndian,
                       toByteOffset: FUSERingABI.entInOutOffset + FUSERingABI.entPayloadSizeOffset, as: UInt32.self)
    }

    /// The bytes a READ held asks for (`fuse_read_in.size`, at byte 16 of op_in), at most the
    /// payload buffer.
    var readSize: Int {
        let size = header.view(count: FUSERingABI.requestHeaderSize).load(UInt32.self, at: FUSERingABI.opInOffset + 16) ?? 0
        return min(Int(size), payload.capacity)
    }

    /// Whether the READ held comes from a file the client opened with O_DIRECT
    /// (`fuse_read_in.flags`, at byte 32 of op_in); Ferry opens the host file the same way.
    var readIsDirect: Bool {
        let flags = header.view(count: FUSERingABI.requestHeaderSize).load(UInt32.self, at: FUSERingABI.opInOffset + 32) ?? 0
        return Int32(bitPattern: flags) & HostFlags.oDirect != 0
    }

    /// Stores the reply of a READ that reads `size` bytes into the payload (header only, as the
    /// engine encodes it), before the read ran: what the linked commit hands the kernel.
    func storeFullReadReply(size: Int, unique: UInt64) {
        let out = header.mutableBytes
        out.storeBytes(of: UInt32(FUSEABI.outHeaderSize + size).littleEndian, toByteOffset: 0, as: UInt32.self)
        out.storeBytes(of: Int32(0), toByteOffset: 4, as: Int32.self)
        out.storeBytes(of: unique.littleEndian, toByteOffset: 8, as: UInt64.self)
        out.storeBytes(of: UInt32(size).littleEndian,
                       toByteOffset: FUSERingABI.entInOutOffset + FUSERingABI.entPayloadSizeOffset, as: UInt32.self)
    }

    /// Whether `reply` (the engine's) says the READ linked to this entry's commit read in full.
    func isFullRead(_ reply: ByteView) -> Bool {
        reply.count == FUSEABI.outHeaderSize && reply.load(Int32.self, at: 4) == 0
            && reply.load(UInt32.self, at: 0).map(Int.init) == FUSEABI.outHeaderSize + linkedSize
    }

    /// Where the request held lies in the entry (nil when its sizes do not add up).
    var layout: RingRequestLayout? {
        RingRequestLayout(header: header.view(count: FUSERingABI.requestHeaderSize), payloadCapacity: payload.capacity)
    }

    /// Rebuilds the /dev/fuse form of the request held in `buffer`: its header and op_in part,
    /// then the payload unless `withPayload` is false (a READ or WRITE whose data stays in the
    /// payload buffer). Returns the bytes written, or nil when they do not fit.
    func assembleRequest(_ layout: RingRequestLayout, into buffer: MessageBuffer, withPayload: Bool = true) -> Int? {
        let length = withPayload ? layout.length : layout.length - layout.payloadLength
        guard length <= buffer.capacity else { return nil }
        let dest = buffer.mutableBytes
        let src = header.mutableBytes
        dest.baseAddress!.copyMemory(from: src.baseAddress! + FUSERingABI.inOutOffset, byteCount: FUSEABI.inHeaderSize)
        dest.baseAddress!.advanced(by: FUSEABI.inHeaderSize)
            .copyMemory(from: src.baseAddress! + FUSERingABI.opInOffset, byteCount: layout.opInLength)
        if withPayload {
            dest.baseAddress!.advanced(by: FUSEABI.inHeaderSize + layout.opInLength)
                .copyMemory(from: payload.mutableBytes.baseAddress!, byteCount: layout.payloadLength)
        }
        return length
    }

    /// Whether the request held is a READ or WRITE whose data can stay in the payload buffer:
    /// a READ (its reply's data is read straight into the payload) or a WRITE whose payload is
    /// its data and nothing else (the host file is written from the payload).
    func dataInPlace(_ layout: RingRequestLayout) -> Bool {
        switch inHeader.opcode {
        case Opcode.read.rawValue: return layout.payloadLength == 0
        case Opcode.write.rawValue:
            guard layout.payloadLength > 0, layout.opInLength >= FUSEABI.ioInSize else { return false }
            // fuse_write_in.size, at byte 16 of op_in (after fh and offset).
            let size = header.view(count: FUSERingABI.requestHeaderSize).load(UInt32.self, at: FUSERingABI.opInOffset + 16) ?? 0
            return Int(size) == layout.payloadLength
        default: return false
        }
    }

    /// The payload buffer as the I/O core's data buffer: all of it for a READ (the engine cuts
    /// it to the size asked), the data for a WRITE.
    func payloadData(_ layout: RingRequestLayout, isRead: Bool) -> UnsafeMutableRawBufferPointer {
        isRead ? payload.mutableBytes : UnsafeMutableRawBufferPointer(rebasing: payload.mutableBytes.prefix(layout.payloadLength))
    }
}

/// One FUSE ring queue: a thread pinned to CPU `qid` with its own io_uring, `depth` entries
/// registered with the kernel, and an eventfd that brings it deferred replies, lock-ordering
/// kicks and the request to stop (protocol/fuse-uring.md, "Queues").
final class FUSERingQueue: @unchecked Sendable {
    let qid: Int
    let depth: Int
    private let engine: FUSEEngine
    private let deviceFD: Int32
    private let payloadSize: Int
    private let logger: Logger

    // Shared with other threads.
    private let wake: EventCounter
    private let inbox = Mutex<[[UInt8]]>([])
    private let stopping = Atomic<Bool>(false)
    /// Requests answered through this queue's ring.
    let served = Atomic<Int>(0)
    /// The entries (queue thread only). Kept as long as the queue: the kernel may still hold
    /// pointers to their buffers until it has torn the ring down.
    private var entries: [FUSERingEntry] = []

    private static let wakeTag = UInt64.max
    /// READs commit through a link to their host read (FERRY_RING_LINKED_COMMITS=0 turns it off,
    /// for comparisons).
    static let linkedCommits = getenv("FERRY_RING_LINKED_COMMITS").map { String(cString: $0) != "0" } ?? true

    /// Makes requests of its own on this queue's CPU so that the kernel hands out what it queued.
    let nudger: RingNudger
    /// Entries parked since the last nudge (queue thread only).
    private var parkedSinceNudge = 0
    /// Whether READs link their commit to their host read (the I/O engine is on this ring).
    private var linkReads = false
    /// READs whose linked commit fetched the entry's next request before their reply was
    /// handled (by unique): the reply needs nothing more.
    private var linkedDone = Set<UInt64>()

    init(qid: Int, depth: Int, engine: FUSEEngine, deviceFD: Int32, payloadSize: Int, mountpoint: String, helper: HostHelper? = nil,
         logger: Logger) throws(Errno) {
        self.qid = qid
        nudger = RingNudger(cpu: qid, mountpoint: mountpoint, helper: helper, logger: logger)
        self.depth = depth
        self.engine = engine
        self.deviceFD = deviceFD
        self.payloadSize = payloadSize
        self.logger = logger
        wake = try EventCounter()
    }

    /// Hands a reply completed later (by a lock waiter, any thread) to the queue thread.
    func postDeferred(_ reply: [UInt8]) {
        inbox.withLock { $0.append(reply) }
        wake.signal()
    }

    /// Asks the queue thread to leave (from any thread).
    func stop() {
        nudger.stop()
        stopping.store(true, ordering: .releasing)
        wake.signal()
    }

    /// The queue thread's body: sets up the ring, registers the entries, reports through
    /// `registered` (nil or why not), then serves until the kernel ends every entry or `stop`.
    func run(registered: (Error?) -> Void) {
        do {
            try HostThread.pinCurrent(toCPU: qid)
        } catch {
            logger.warning("ring queue \(qid): cannot pin to CPU \(qid): \(error)")
        }
        let ring: CommandRing
        do {
            // Completions: room for every entry a queue may grow to (blocked locks), so the
            // kernel never has to hold completions back.
            // Submissions: a command per entry, the polls, and the I/O engine's operations.
            ring = try CommandRing(entries: UInt32(depth + engine.ioEngines.depth + 2),
                                   completions: UInt32(2 * FUSERingQueue.maximumEntries))
            try ring.registerFixedFile(deviceFD)
        } catch {
            registered(error)
            return
        }
        for index in 0..<depth {
            let entry = FUSERingEntry(index: index, payloadSize: payloadSize)
            entries.append(entry)
            _ = ring.queueCommand(.register, iovecs: entry.iovecs, commitID: 0, queueID: UInt16(qid), userData: UInt64(index))
        }
        _ = ring.queuePollIn(wake.fd.rawValue, userData: FUSERingQueue.wakeTag)
        let submitted = ring.submit()
        var batch: [CommandRing.Completion] = []
        batch.reserveCapacity(2 * (depth + 1))
        ring.reap(into: &batch)
        if submitted < 0 {
            registered(Errno(rawValue: -submitted)); return
        }
        if let failed = batch.first(where: { $0.tag != FUSERingQueue.wakeTag && $0.result < 0 && $0.result != -EAGAIN }) {
            registered(Errno(rawValue: -failed.result)); return
        }
        registered(nil)

        // The host I/O of READ and WRITE goes through this same ring (io engine uring): one
        // io_uring_enter submits reads with the commits and fetches of other requests.
        linkReads = engine.ioEngines.requested == .uring && FUSERingQueue.linkedCommits
        let io = engine.ioEngines.requested == .uring ? ring.shared.makeEngine(depth: engine.ioEngines.depth)
                                                       : engine.ioEngines.make()
        // Replies committed so far go to the kernel before a notification: a notification may
        // wait in the kernel for a request whose reply is still only prepared here.
        let worker = engine.makeWorker(io: io, deferredReplies: { [self] bytes in self.postDeferred(bytes) },
                                       notifications: { [deviceFD] message in
                                           _ = ring.submit()
                                           return DevFuseDevice.send(deviceFD, message)
                                       },
                                       kick: { [wake] in wake.signal() })
        let commitData = { [self] (reply: ByteView) -> Bool in self.commitData(reply, ring: ring) }
        defer {
            engine.drainData(worker, send: { _ in false })   // the kernel may still write into their buffers
            engine.retire(worker)
        }
        // Neither engine has a completion descriptor to poll: the shared ring's completions wake
        // the thread in its io_uring_enter, and the sync engine's are ready at submission.
        precondition(worker.completionFD == nil, "a ring queue's I/O engine completes on the queue's own ring")
        var ready: [FUSERingEntry] = []
        ready.reserveCapacity(depth)
        var headers: [InHeader] = []
        headers.reserveCapacity(depth)
        var unexpected = 0

        while true {
            engine.waitingForRequest(worker)
            if batch.isEmpty {
                while !worker.prepareToSleep() { _ = engine.completeData(worker, send: commitData) }
                // Reads whose commit is linked post completions the thread need not wake for (the
                // kernel commits their replies): wait for one more completion than there are
                // of them, at most 200 us (a read from the disk, or an idle queue). O_DIRECT
                // reads are not counted: they complete later, and waiting past them cost more
                // CPU than the wake-up they save (protocol/fuse-uring.md).
                let armed = entries.reduce(0) { $0 + ($1.link == .armed && !$1.linkedDirect ? 1 : 0) }
                let rc = armed > 0 ? ring.shared.submitAndWait(count: 1 + armed, timeout: 200_000) : ring.submitAndWait()
                if rc < 0 && rc != -EINTR && rc != -EAGAIN && rc != -EBUSY && rc != -ETIME {
                    logger.error("ring queue \(qid): io_uring_enter failed: \(Errno(rawValue: -rc))")
                    engine.stoppedWaiting(worker, requests: [])
                    break
                }
            }
            engine.reapStarting(worker)
            ring.reap(into: &batch)
            // Everything reaped is announced before any of it runs (close-before-lock ordering).
            ready.removeAll(keepingCapacity: true)
            headers.removeAll(keepingCapacity: true)
            absorb(&batch, into: &ready, headers: &headers, ring: ring, unexpected: &unexpected, worker: worker)
            engine.stoppedWaiting(worker, requests: headers)
            // Closes first, then the rest, each in the kernel's order (smallest unique first):
            // a lock request that settles then holds no close another settling queue waits for.
            // Between requests, completions that arrived meanwhile are announced and join the
            // batch: that narrows the window in which a lock request on another queue could
            // miss a close this thread holds unannounced (protocol/fuse-uring.md).
            while !ready.isEmpty {
                ready.swapAt(FUSERingQueue.nextToHandle(in: ready), ready.count - 1)
                let entry = ready.removeLast()
                handle(entry, worker: worker, ring: ring, commitData: commitData)
                engine.reapStarting(worker)
                ring.reap(into: &batch)
                headers.removeAll(keepingCapacity: true)
                if !batch.isEmpty {
                    absorb(&batch, into: &ready, headers: &headers, ring: ring, unexpected: &unexpected, worker: worker)
                }
                engine.announce(worker, requests: headers)   // also when empty: a lock request may wait for this reap
                // Replies and reads prepared meanwhile ride on the next wait's io_uring_enter
                // (or go before a notification: see `makeWorker` above).
            }
            growIfParked(ring: ring)
            if parkedSinceNudge > 0 {
                // The fresh entries must be in the kernel before the nudges arrive.
                _ = ring.submit()
                nudger.nudge(parkedSinceNudge)
                parkedSinceNudge = 0
            }
            if stopping.load(ordering: .acquiring) { break }
            if !entries.contains(where: { $0.state != .dead }) { break }
        }
    }

    /// Index of the request to handle next: the oldest close (FLUSH, RELEASE, RELEASEDIR) if
    /// any, else the oldest request. A close never waits, and running it before a lock request
    /// queued earlier is a valid order for two requests in flight at once.
    static func nextToHandle(in ready: [FUSERingEntry]) -> Int {
        var next = 0
        for i in ready.indices.dropFirst() {
            let candidate = ready[i].inHeader, best = ready[next].inHeader
            let candidateCloses = FUSEEngine.isClose(candidate.opcode), bestCloses = FUSEEngine.isClose(best.opcode)
            if candidateCloses != bestCloses ? candidateCloses : candidate.unique < best.unique { next = i }
        }
        return next
    }

    /// Sorts completions: requests into `ready` (their headers into `headers`), EAGAIN/EINTR
    /// submitted again, ended entries marked dead, and a wake-up served (deferred replies
    /// committed, the eventfd poll re-armed). Empties `batch`.
    private func absorb(_ batch: inout [CommandRing.Completion], into ready: inout [FUSERingEntry],
                        headers: inout [InHeader], ring: CommandRing, unexpected: inout Int, worker: Worker) {
        var woken = false
        for completion in batch {
            if completion.tag == FUSERingQueue.wakeTag { woken = true; continue }
            guard completion.tag < UInt64(entries.count) else { continue }
            let entry = entries[Int(completion.tag)]
            switch completion.result {
            case 0:
                // A linked commit that fetched the next request before its read's reply was
                // handled: that reply needs nothing more.
                if entry.link == .armed { linkedDone.insert(entry.commitID) }
                entry.link = .none
                entry.state = .holding
                ready.append(entry)
                headers.append(entry.inHeader)
            case -ECANCELED where entry.link != .none:
                switch entry.link {
                case .armed: entry.link = .canceled   // the read's reply comes and is committed
                case .replied:   // a full read that took a retry (the link broke on its EAGAIN)
                    entry.link = .none
                    entry.storeFullReadReply(size: entry.linkedSize, unique: entry.commitID)
                    commit(entry, ring: ring)
                default: entry.link = .none
                }
            case -EAGAIN, -EINTR:
                // A linked commit that ran (its read was full) and is to be sent again.
                if entry.link == .armed { linkedDone.insert(entry.commitID) }
                entry.link = .none
                resubmit(entry, ring: ring)
            default:
                entry.state = .dead
                let error = -completion.result
                if error != ENOTCONN && error != ECONNABORTED && error != ENODEV {
                    unexpected += 1
                    if unexpected <= 3 { logger.warning("ring queue \(qid): entry \(entry.index) ended: \(Errno(rawValue: error))") }
                }
            }
        }
        batch.removeAll(keepingCapacity: true)
        // Operations of the I/O engine that completed on this ring (reaped with the rest).
        if worker.dataInFlight > 0 { _ = engine.completeData(worker) { commitData($0, ring: ring) } }
        if woken {
            wake.drain()
            commitDeferred(entries, ring: ring)
            if !ring.queuePollIn(wake.fd.rawValue, userData: FUSERingQueue.wakeTag) {
                _ = ring.submit()   // the queue is full of commits: make room, then re-arm
                _ = ring.queuePollIn(wake.fd.rawValue, userData: FUSERingQueue.wakeTag)
            }
        }
    }

    /// Entries the kernel should always have free for new requests of this CPU.
    private var minimumFree: Int { max(1, depth / 2) }
    /// Upper bound on entries per queue (blocking locks waiting at once, plus `depth`).
    static let maximumEntries = 4096

    /// Registers more entries when blocked lock requests hold so many that fewer than
    /// `minimumFree` are left to the kernel: a waiter must never keep the unlock that would
    /// release it from being delivered (protocol/fuse-uring.md, "Queues").
    private func growIfParked(ring: CommandRing) {
        var free = 0, parked = 0
        for entry in entries {
            if entry.state == .inKernel { free += 1 } else if entry.state == .parked { parked += 1 }
        }
        guard parked > 0 else { return }
        while free < minimumFree && entries.count < FUSERingQueue.maximumEntries {
            let entry = FUSERingEntry(index: entries.count, payloadSize: payloadSize)
            entries.append(entry)
            if !ring.queueCommand(.register, iovecs: entry.iovecs, commitID: 0, queueID: UInt16(qid), userData: UInt64(entry.index)) {
                _ = ring.submit()
                _ = ring.queueCommand(.register, iovecs: entry.iovecs, commitID: 0, queueID: UInt16(qid), userData: UInt64(entry.index))
            }
            free += 1
        }
        if entries.count > grownLogged + depth {
            grownLogged = entries.count
            logger.info("ring queue \(qid): \(entries.count) entries (\(parked) held by blocked lock requests)")
        }
    }
    private var grownLogged = 0

    private func handle(_ entry: FUSERingEntry, worker: Worker, ring: CommandRing, commitData: (ByteView) -> Bool) {
        // The request is rebuilt in a free slot of the worker's I/O engine: a WRITE's data stays
        // there until the host has it. With every slot in flight, one must complete first.
        if !worker.canTakeRequest { _ = engine.completeData(worker, wait: true, send: commitData) }
        let request = worker.requestBuffer
        entry.commitID = entry.header.view(count: FUSERingABI.requestHeaderSize)
            .load(UInt64.self, at: FUSERingABI.entInOutOffset + FUSERingABI.entCommitIDOffset) ?? 0
        served.add(1, ordering: .relaxed)
        guard let layout = entry.layout,
              case let inPlace = entry.dataInPlace(layout),
              let length = entry.assembleRequest(layout, into: request, withPayload: !inPlace) else {
            let h = entry.inHeader
            logger.error("ring queue \(qid): request #\(h.unique) with inconsistent sizes; answering EIO")
            var writer = WireWriter(worker.replyBuffer)
            ReplyFraming.finishError(&writer, unique: h.unique, errno: EIO)
            entry.storeReply(writer.written)
            commit(entry, ring: ring)
            return
        }
        if inPlace {
            // READ and WRITE: the host file is read into / written from the entry's payload
            // buffer itself (page-aligned, so O_DIRECT files take it as it is); the request
            // buffer gets the headers only.
            let vectors = worker.payloadVectors
            vectors.removeAll()
            vectors.append(entry.payloadData(layout, isRead: entry.inHeader.opcode == Opcode.read.rawValue))
        }
        let inFlight = worker.dataInFlight
        switch engine.handle(request.view(count: length), worker: worker, payloadInVectors: inPlace) {
        case let .reply(bytes):
            entry.storeReply(bytes)
            commit(entry, ring: ring)
        case .noReply where worker.dataInFlight > inFlight:
            // A data request: the I/O engine runs it; `commitData` answers it when it completes
            // (at once for the sync engine).
            entry.state = .inIO
            if inPlace, linkReads, entry.inHeader.opcode == Opcode.read.rawValue {
                linkCommit(entry, ring: ring)
            }
            _ = engine.completeData(worker, send: commitData)
        case .noReply:
            // A blocking lock: its waiter posts the reply later (postDeferred). Nothing else
            // arrives on a ring without a reply (FORGET and INTERRUPT use /dev/fuse).
            entry.state = .parked
            parkedSinceNudge += 1
        }
    }

    /// Commits the replies lock waiters posted, each into the entry that carries its request.
    private func commitDeferred(_ entries: [FUSERingEntry], ring: CommandRing) {
        let replies = inbox.withLock { list -> [[UInt8]] in
            defer { list.removeAll() }
            return list
        }
        for reply in replies {
            reply.withUnsafeBytes { bytes in
                let view = ByteView(bytes)
                let unique = view.load(UInt64.self, at: 8) ?? 0
                guard let entry = entries.first(where: { $0.state == .parked && $0.commitID == unique }) else {
                    logger.warning("ring queue \(qid): deferred reply for #\(unique), which no entry holds; dropped")
                    return
                }
                entry.storeReply(view)
                commit(entry, ring: ring)
            }
            _ = ring.submit()
        }
    }

    /// Commits the reply of a data request that completed into the entry holding the request.
    private func commitData(_ reply: ByteView, ring: CommandRing) -> Bool {
        let unique = reply.load(UInt64.self, at: 8) ?? 0
        if linkedDone.remove(unique) != nil { return true }
        guard let entry = entries.first(where: { $0.state == .inIO && $0.commitID == unique }) else {
            logger.warning("ring queue \(qid): data reply for #\(unique), which no entry holds; dropped")
            return true
        }
        switch entry.link {
        case .armed where entry.isFullRead(reply):
            entry.link = .replied   // the kernel runs the linked commit
            entry.state = .inKernel
            return true
        case .armed: entry.link = .expectCancel
        case .canceled: entry.link = .none
        default: break
        }
        entry.storeReply(reply)
        commit(entry, ring: ring)
        return true
    }

    /// Links the entry's COMMIT_AND_FETCH to the READ's host read prepared just now on this
    /// ring, with the reply of a full read stored beforehand, when that read reads into the
    /// entry's payload buffer and is not submitted yet.
    private func linkCommit(_ entry: FUSERingEntry, ring: CommandRing) {
        let size = entry.readSize
        guard size > 0, ring.shared.linkLastRead(into: entry.payload.mutableBytes.baseAddress!) else { return }
        let unique = entry.commitID
        entry.storeFullReadReply(size: size, unique: unique)
        entry.linkedSize = size
        entry.linkedDirect = entry.readIsDirect
        entry.link = .armed
        entry.lastCommand = .commitAndFetch
        let queued = ring.queueCommand(.commitAndFetch, iovecs: nil, commitID: unique, queueID: UInt16(qid),
                                       userData: UInt64(entry.index))
        precondition(queued, "no submission entry for a linked commit (room was checked)")
    }

    private func commit(_ entry: FUSERingEntry, ring: CommandRing) {
        entry.state = .inKernel
        entry.lastCommand = .commitAndFetch
        if !ring.queueCommand(.commitAndFetch, iovecs: nil, commitID: entry.commitID, queueID: UInt16(qid),
                              userData: UInt64(entry.index)) {
            _ = ring.submit()   // cannot happen (an SQE per entry and one for the poll); be safe
            _ = ring.queueCommand(.commitAndFetch, iovecs: nil, commitID: entry.commitID, queueID: UInt16(qid),
                                  userData: UInt64(entry.index))
        }
    }

    private func resubmit(_ entry: FUSERingEntry, ring: CommandRing) {
        entry.state = .inKernel
        _ = ring.queueCommand(entry.lastCommand, iovecs: entry.lastCommand == .register ? entry.iovecs : nil,
                              commitID: entry.commitID, queueID: UInt16(qid), userData: UInt64(entry.index))
    }
}
