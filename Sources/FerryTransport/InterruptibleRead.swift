import FerryProtocol
import FerrySystem
import Synchronization

/// A reader thread's blocking read(2) on its /dev/fuse descriptor, which another thread can end
/// (`interrupt`): the read returns EINTR, as a wait would on a kick.
///
/// A read under way is ended with a signal, sent while `interrupt` holds the state lock, so it
/// is delivered before the read's caller goes on (at the latest on the return from read(2)):
/// never while the thread handles a request, where it would end a handler's system call with
/// EINTR. An interrupt while no read is under way is kept, and the next read returns at once
/// without reading. What remains is a signal that lands between the start of `read` and the
/// thread's entry into read(2) (the handler runs, then the read sleeps), so a caller that must
/// see the reader go round interrupts it again after a while (`CloseOrdering.settle` and the
/// abandoning stop do).
final class InterruptibleRead: Sendable {
    private struct State {
        /// True from just before the read until just after it returns.
        var reading = false
        /// An interrupt came while no read was under way: the next read returns at once.
        var interrupted = false
    }

    private let threadID: Int32
    private let state = Mutex(State())

    /// For the calling thread, which must have `WakeSignal.reader`'s handler installed and unblocked.
    init() { threadID = HostThread.currentID }

    /// Reads one request into `buffer` from the blocking descriptor `fd`, sleeping until one
    /// comes; `.retry` when interrupted (before or during the read).
    func read(_ fd: Int32, into buffer: MessageBuffer) -> DevFuseDevice.ReadResult {
        let proceed = state.withLock { state in
            if state.interrupted {
                state.interrupted = false
                return false
            }
            state.reading = true
            return true
        }
        guard proceed else { return .retry }
        defer { state.withLock { $0.reading = false } }
        return DevFuseDevice.read(fd, into: buffer)
    }

    /// Ends the read under way, or the next one if none is (from any thread).
    func interrupt() {
        state.withLock { state in
            if state.reading {
                HostThread.signal(threadID: threadID, WakeSignal.reader)
            } else {
                state.interrupted = true
            }
        }
    }
}
