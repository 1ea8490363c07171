import FerryIO
import FerryProtocol
import FerrySystem

/// Writes a complete reply message to the kernel from any thread.
public typealias DeferredReplySink = @Sendable ([UInt8]) -> Void

/// Writes one notification message to the kernel; returns 0 or the errno (ENOENT: the kernel
/// no longer has the node, which is not a failure).
public typealias NotificationSink = (ByteView) -> Int32

/// Per-thread state of one request worker: its credentials and reply buffer. Created by the
/// transport on the thread that uses it and never shared.
public final class Worker {
    /// The thread's file-system identity.
    public let credentials: ThreadCredentials
    /// Where replies are encoded; a READ reply's data starts on a page boundary, so a host
    /// file opened with O_DIRECT reads straight into it.
    public let replyBuffer: MessageBuffer
    /// Where replies completed later (by a lock waiter) are written.
    public let deferredReplies: DeferredReplySink
    /// Where notifications sent during a request (before its reply) are written.
    let notifications: NotificationSink
    /// Where those notifications are encoded.
    private let notificationBuffer = MessageBuffer(capacity: FUSENotification.maxSize)
    /// The reader thread's place in lock ordering (nil for a worker that reads nothing itself).
    let progress: ReaderProgress?
    /// Its data requests in flight on its I/O engine, and the buffers requests are read into.
    let data: DataSlots

    /// Creates the state for the calling thread; gives the thread its own umask.
    init(options: EngineOptions, switchCredentials: Bool, deferredReplies: @escaping DeferredReplySink,
         notifications: @escaping NotificationSink, progress: ReaderProgress?, data: DataSlots) {
        self.data = data
        self.deferredReplies = deferredReplies
        self.notifications = notifications
        self.progress = progress
        credentials = ThreadCredentials(switching: switchCredentials)
        // Data operations queued under one caller's identity start before the next one's.
        credentials.willChange = { [io = data.io] in io.flush() }
        replyBuffer = MessageBuffer(capacity: options.replyBufferSize, alignedAt: FUSEABI.readPayloadOffset)
        // Its own umask, so each create applies its caller's umask (DONT_MASK) and nothing else.
        try? ThreadCredentials.unshareFilesystemContext()
        credentials.setUmask(0)
    }

    /// Where to read the next request: a free slot's buffer, placed so that a WRITE's data lands
    /// on a page boundary (an O_DIRECT host file takes it as it is; protocol/fuse-abi.md,
    /// "Buffer layout"). Only while `canTakeRequest`.
    public var requestBuffer: MessageBuffer { data.current.request }

    /// Where a transport that leaves a READ's or WRITE's data in place (vhost-user: guest
    /// memory) puts the buffers of the next request's data, before `FUSEEngine.handle(_:worker:
    /// payloadInVectors: true)`. The free slot's list, like `requestBuffer`; only while
    /// `canTakeRequest`.
    public var payloadVectors: IOVectorList { data.current.vectors }

    /// Whether a request can be read now: false while every slot of the I/O engine is in flight
    /// (then `FUSEEngine.completeData(wait: true)` frees one).
    public var canTakeRequest: Bool { data.hasFreeSlot }

    /// Data requests in flight on this worker's I/O engine.
    public var dataInFlight: Int { data.inFlight }

    /// A descriptor that is readable when data requests completed (nil: they complete at once).
    public var completionFD: Int32? { data.io.completionFD }

    /// Before the thread sleeps: starts the data requests queued on the I/O engine and makes
    /// their completions signal `completionFD`. False when replies of completed data requests
    /// are waiting (`FUSEEngine.completeData` instead of sleeping).
    public func prepareToSleep() -> Bool { data.io.prepareToSleep() }

    /// Sleeps until a data request completed or one of `eventFDs` is signalled; returns the
    /// signalled ones, drained (`IOEngine.sleep(untilCompletionOrSignal:)`). Completed data
    /// requests are answered by `FUSEEngine.completeData` afterwards.
    public func sleep(untilCompletionOrSignal eventFDs: [Int32]) -> [Int32] {
        data.io.sleep(untilCompletionOrSignal: eventFDs)
    }

    /// Encodes and writes `notification` on this worker's channel; returns 0 or the errno.
    func sendNotification(_ notification: FUSENotification) -> Int32 {
        notifications(notification.encode(into: notificationBuffer))
    }
}

/// What the transport does after the engine handled a request.
public enum EngineResult {
    /// Write these bytes back (a reply).
    case reply(ByteView)
    /// Nothing to write (FORGET, INTERRUPT, undecodable header).
    case noReply
}
