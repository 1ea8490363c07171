import FerryFS
import FerryIO
import FerryProtocol
import FerrySystem
import Glibc
import Logging
import Synchronization

/// The protocol engine: turns one request's bytes into one reply's bytes by decoding the
/// request, running it on the filesystem with the caller's credentials, and encoding the answer.
///
/// Transports call `handle` from any number of threads, each with its own `Worker`. Nothing
/// here blocks on another request; the only shared state is the filesystem's own tables.
public final class FUSEEngine: Sendable {
    /// The filesystem requests run on.
    public let fs: PassthroughFS
    /// Settings.
    public let options: EngineOptions
    let logger: Logger
    let negotiated = Mutex<Negotiated?>(nil)
    /// Set once INIT succeeded; read by every request without taking a lock.
    let initialized = Atomic<Bool>(false)
    /// The agreed INIT flags, for the per-request checks (valid once `initialized`).
    let agreedFlags = Atomic<UInt64>(0)
    /// Whether request threads switch to each caller's credentials (Ferry runs as root).
    public let switchCredentials: Bool
    /// Nodes the kernel was told have set-id bits (see `nodesWithHiddenChanges`).
    let setIDReports = SetIDReports()
    /// Closes in flight, which lock requests queued after them must not overtake.
    let closeOrdering = CloseOrdering()
    /// Backing ids of the files the kernel reads and writes directly (FUSE passthrough).
    let backing: BackingFiles
    /// Makes each worker's I/O engine (io_uring, or the sync fallback).
    public let ioEngines: IOEngineFactory
    /// Callers' supplementary groups, read from /proc at most every 100 ms per thread.
    let callerGroups = CallerGroups()
    /// Ids already refused with a log line at warning level (see `becomeCaller`).
    let refusedIDs = Mutex<Set<UInt32>>([])

    public init(fs: PassthroughFS, options: EngineOptions, logger: Logger) {
        self.fs = fs
        self.options = options
        self.logger = logger
        self.switchCredentials = geteuid() == 0
        self.backing = BackingFiles(logger: logger)
        self.ioEngines = IOEngineFactory(kind: options.ioEngine, depth: options.ioDepth, logger: logger)
    }

    /// Gives the engine the connection's /dev/fuse descriptor, for the passthrough ioctls
    /// (FUSE_DEV_IOC_BACKING_OPEN/CLOSE). Call before serving requests.
    public func attachBackingDevice(_ fd: Int32) { backing.attach(device: fd) }

    /// Backing ids registered right now (one per inode open in passthrough mode).
    public var passthroughBackingIDs: Int { backing.openBackingIDs }

    /// What INIT settled (nil before INIT).
    public var session: Negotiated? { negotiated.withLock { $0 } }

    /// Encodes a reply without body for a request answered later (a blocking lock granted or
    /// interrupted) and hands it to `sink`, which writes it where the request came from.
    func sendDeferredReply(unique: UInt64, error: Errno?, sink: DeferredReplySink) {
        let bytes = ReplyFraming.headerOnly(unique: unique, errno: error?.rawValue ?? 0)
        logger.debug("#\(unique) deferred reply -> \(error.map { "\($0)" } ?? "ok")")
        sink(bytes)
    }

    /// Makes the per-thread state for a request thread; call it on that thread. `deferredReplies`
    /// writes replies completed later to the channel this worker reads from (the kernel matches
    /// a reply only on the /dev/fuse descriptor that delivered its request); `notifications`
    /// writes the invalidations a request's own side effects call for, before its reply.
    /// `kick` wakes the thread from its wait for a request; a transport whose reader threads
    /// give one takes part in lock ordering (`waitingForRequest`, `stoppedWaiting`, `retire`).
    public func makeWorker(deferredReplies: @escaping DeferredReplySink = { _ in },
                           notifications: @escaping NotificationSink = { _ in 0 },
                           kick: (@Sendable () -> Void)? = nil) -> Worker {
        makeWorker(io: ioEngines.make(), deferredReplies: deferredReplies, notifications: notifications, kick: kick)
    }

    /// Reader threads call this before each wait for a request (see `CloseOrdering`).
    public func waitingForRequest(_ worker: Worker) {
        if let progress = worker.progress { closeOrdering.readerWaiting(progress) }
    }

    /// Reader threads call this when a wait ended, with the request read (nil: none), before
    /// they hand it to `handle`.
    public func stoppedWaiting(_ worker: Worker, request: ByteView?) {
        guard let progress = worker.progress else { return }
        closeOrdering.readerStopped(progress, with: request.flatMap { try? RequestDecoder.header($0) })
    }

    /// A reader that takes several requests in one wait (a FUSE ring queue) calls this instead,
    /// with the headers of all of them, before it hands any to `handle`.
    public func stoppedWaiting(_ worker: Worker, requests: [InHeader]) {
        guard let progress = worker.progress else { return }
        closeOrdering.readerStopped(progress, withAll: requests)
    }

    /// Whether `opcode` ends locks (FLUSH, RELEASE, RELEASEDIR): a ring queue handles these
    /// before the other requests it holds (protocol/fuse-uring.md, lock ordering).
    public static func isClose(_ opcode: UInt32) -> Bool { CloseOrdering.isClose(opcode) }

    /// A ring queue calls this right before each reap of its ring (after a wait, and between
    /// requests), then `stoppedWaiting(_:requests:)` or `announce` with what the reap took.
    public func reapStarting(_ worker: Worker) {
        if let progress = worker.progress { closeOrdering.reapStarting(progress) }
    }

    /// A ring queue that reaped again while handling a batch announces what it took with this
    /// (no change to its waiting state; `requests` may be empty), before it hands any of them
    /// to `handle`.
    public func announce(_ worker: Worker, requests: [InHeader]) {
        guard let progress = worker.progress else { return }
        closeOrdering.announce(requests, by: progress)
    }

    /// A reader thread that stops reading for good calls this.
    public func retire(_ worker: Worker) {
        if let progress = worker.progress { closeOrdering.remove(progress) }
    }

    /// Handles one request; the result's bytes live in `worker`'s reply buffer until the next call.
    ///
    /// `payloadInVectors`: the request is a READ or WRITE whose data stays where the transport
    /// has it, in the buffers it put into `worker.payloadVectors` (vhost-user: guest memory).
    /// `bytes` then hold the headers only (`fuse_in_header.len` still counts a WRITE's data);
    /// the host file is read into or written from those buffers, and a READ's reply carries its
    /// header alone, with a length that counts the bytes already in place.
    public func handle(_ bytes: ByteView, worker: Worker, payloadInVectors: Bool = false) -> EngineResult {
        let header: InHeader
        var detached = 0
        if payloadInVectors {
            guard worker.canTakeRequest else {
                logger.error("request with its data in place while no I/O slot is free; dropped")
                return .noReply
            }
            worker.data.current.vectorPayload = true
            if bytes.load(UInt32.self, at: 4) == Opcode.write.rawValue { detached = worker.payloadVectors.totalLength }
        } else if worker.canTakeRequest {
            worker.data.current.vectorPayload = false
        }
        do {
            header = try RequestDecoder.header(bytes, detached: detached)
        } catch {
            logger.error("dropping undecodable request (\(bytes.count) bytes): \(error)")
            return .noReply
        }
        defer { closeOrdering.finished(header) }
        var writer = WireWriter(worker.replyBuffer, offset: ReplyFraming.bodyOffset)
        let request: Request
        do {
            let ext = InitFlags(rawValue: agreedFlags.load(ordering: .acquiring)).contains(.setxattrExt)
            request = try RequestDecoder.decode(bytes, setxattrExt: ext, detached: detached)
            if payloadInVectors {
                switch request.operation {
                case .read, .write: break
                default: throw DecodeError.invalidField("data in place for a request that is neither READ nor WRITE")
                }
            }
        } catch {
            let name = Opcode(rawValue: header.opcode)?.description ?? "opcode \(header.opcode)"
            logger.error("#\(header.unique) \(name): malformed request: \(error); answering EINVAL")
            ReplyFraming.finishError(&writer, unique: header.unique, errno: EINVAL)
            return .reply(writer.written)
        }
        let outcome: Outcome
        do {
            outcome = try dispatch(request, worker: worker, writer: &writer)
        } catch {
            outcome = .failed(error)
        }
        if case .replied = outcome {
            invalidateAttributes(nodesWithHiddenChanges(request), worker: worker)
        }
        return finish(request.header, outcome, writer: &writer)
    }

    /// How a handler ended.
    enum Outcome {
        /// The body is in the writer.
        case replied
        /// No reply is sent for this request (FORGET, INTERRUPT).
        case silent
        /// The I/O core runs it; `completeData` sends the reply.
        case submitted
        /// The reply is sent later, through the reply sink (a blocking lock).
        case deferred
        /// Answer with this errno.
        case failed(Errno)
    }

    private func finish(_ header: InHeader, _ outcome: Outcome, writer: inout WireWriter) -> EngineResult {
        var outcome = outcome
        if case .replied = outcome, writer.overflowed {
            logger.error("#\(header.unique): reply did not fit the buffer; answering EIO")
            outcome = .failed(Errno.io)
        }
        switch outcome {
        case .silent:
            logRequest(header, result: "no reply")
            return .noReply
        case .deferred:
            logRequest(header, result: "waiting")
            return .noReply
        case .submitted:
            logRequest(header, result: "in flight")
            return .noReply
        case .replied:
            ReplyFraming.finishSuccess(&writer, unique: header.unique)
            logRequest(header, result: "ok, \(writer.count) bytes")
        case let .failed(error):
            ReplyFraming.finishError(&writer, unique: header.unique, errno: error.rawValue)
            logRequest(header, result: "\(error)")
        }
        return .reply(writer.written)
    }

    private func logRequest(_ header: InHeader, result: @autoclosure () -> String) {
        guard logger.logLevel <= .debug else { return }
        let name = Opcode(rawValue: header.opcode)?.description ?? "opcode \(header.opcode)"
        logger.debug("#\(header.unique) \(name) node=\(header.nodeID) uid=\(header.uid) gid=\(header.gid) pid=\(header.pid) -> \(result())")
    }
}
