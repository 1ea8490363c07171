import FerryProtocol
import FerrySystem

/// Per-thread state of one request worker: its credentials and reply buffer. Created by the
/// transport on the thread that uses it and never shared.
public final class Worker {
    /// The thread's file-system identity.
    public let credentials: ThreadCredentials
    /// Where replies are encoded.
    public let replyBuffer: MessageBuffer

    /// Creates the state for the calling thread; gives the thread its own umask.
    public init(options: EngineOptions, switchCredentials: Bool) {
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
