import FerryProtocol
import FerrySystem

/// Writes a complete reply message to the kernel from any thread.
public typealias DeferredReplySink = @Sendable ([UInt8]) -> Void

/// Per-thread state of one request worker: its credentials and reply buffer. Created by the
/// transport on the thread that uses it and never shared.
public final class Worker {
    /// The thread's file-system identity.
    public let credentials: ThreadCredentials
    /// Where replies are encoded.
    public let replyBuffer: MessageBuffer
    /// Where replies completed later (by a lock waiter) are written.
    public let deferredReplies: DeferredReplySink

    /// Creates the state for the calling thread; gives the thread its own umask.
    public init(options: EngineOptions, switchCredentials: Bool, deferredReplies: @escaping DeferredReplySink) {
        self.deferredReplies = deferredReplies
        credentials = ThreadCredentials(switching: switchCredentials)
        replyBuffer = MessageBuffer(capacity: options.replyBufferSize)
        // Its own umask, so each create applies its caller's umask (DONT_MASK) and nothing else.
        try? ThreadCredentials.unshareFilesystemContext()
        credentials.setUmask(0)
    }
}

/// What the transport does after the engine handled a request.
public enum EngineResult {
    /// Write these bytes back (a reply).
    case reply(ByteView)
    /// Nothing to write (FORGET, INTERRUPT, undecodable header).
    case noReply
}
