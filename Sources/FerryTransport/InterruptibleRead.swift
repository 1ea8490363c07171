import FerryProtocol
import FerrySystem
import Synchronization

/// A reader thread's blocking read(2) on its /dev/fuse descriptor, which another thread can end
/// (`interrupt`) with a signal: the read returns EINTR, as a wait would on a kick.
///
/// The signal is sent only while the read is under way, never while the thread handles a
/// request, where it would end a system call of the handler with EINTR. A signal that lands
/// just before the thread enters read(2) is lost (the handler ran, the read then sleeps), so a
/// caller that must see the reader go round interrupts it again after a while
/// (`CloseOrdering.settle` does).
final class InterruptibleRead: Sendable {
    private let threadID: Int32
    /// True from just before the read until just after it returns.
    private let reading = Mutex<Bool>(false)

    /// For the calling thread, which must have `WakeSignal.reader`'s handler installed and unblocked.
    init() { threadID = HostThread.currentID }

    /// Reads one request into `buffer` from the blocking descriptor `fd`, sleeping until one comes.
    func read(_ fd: Int32, into buffer: MessageBuffer) -> DevFuseDevice.ReadResult {
        reading.withLock { $0 = true }
        defer { reading.withLock { $0 = false } }
        return DevFuseDevice.read(fd, into: buffer)
    }

    /// Ends the read under way, if one is (from any thread).
    func interrupt() {
        reading.withLock { reading in
            if reading { HostThread.signal(threadID: threadID, WakeSignal.reader) }
        }
    }
}
