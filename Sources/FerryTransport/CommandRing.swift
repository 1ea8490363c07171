import FerryIO
import FerryProtocol
import FerrySystem
import Glibc

/// The io_uring of one FUSE queue, seen from the transport: FUSE ring commands
/// (IORING_OP_URING_CMD on the /dev/fuse descriptor, fixed file 0) and polls, on a `SharedRing`
/// whose I/O engine (`makeEngine`) carries the host reads and writes of the same requests.
/// The only place the transport fills a command area. Owned and used by one thread.
final class CommandRing {
    typealias Completion = SharedRing.Completion

    let shared: SharedRing

    /// A ring with room for `entries` submissions and `completions` completions.
    init(entries: UInt32, completions: UInt32) throws(Errno) {
        shared = try SharedRing(entries: Int(entries), completions: Int(completions))
    }

    /// Registers `fd` as fixed file 0 (the /dev/fuse descriptor the commands go to).
    func registerFixedFile(_ fd: Int32) throws(Errno) { try shared.registerFixedFile(fd) }

    /// Queues a FUSE ring command on fixed file 0; false when the submission queue is full.
    /// `iovecs` (two: header and payload buffer) is needed by REGISTER only and must stay
    /// valid until the kernel has taken the command.
    func queueCommand(_ command: FUSERingABI.Command, iovecs: UnsafePointer<iovec>?, commitID: UInt64,
                      queueID: UInt16, userData: UInt64) -> Bool {
        guard let area = shared.prepareCommand(command.rawValue, iovecs: iovecs, tag: userData) else { return false }
        area.storeBytes(of: UInt64(0).littleEndian, toByteOffset: FUSERingABI.commandFlagsOffset, as: UInt64.self)
        area.storeBytes(of: commitID.littleEndian, toByteOffset: FUSERingABI.commandCommitIDOffset, as: UInt64.self)
        area.storeBytes(of: queueID.littleEndian, toByteOffset: FUSERingABI.commandQueueIDOffset, as: UInt16.self)
        return true
    }

    /// Queues a one-shot wait for `fd` to become readable; false when the queue is full.
    func queuePollIn(_ fd: Int32, userData: UInt64) -> Bool { shared.preparePollIn(fd, tag: userData) }

    /// Submits what is queued (commands and I/O); returns the number submitted or -errno.
    func submit() -> Int32 { shared.submit() }

    /// Submits what is queued and sleeps until at least one completion is there; -errno on
    /// failure (EINTR: a signal).
    func submitAndWait() -> Int32 { shared.submitAndWait() }

    /// Moves every command or poll completion that is ready into `batch` (appending), without
    /// waiting; completions of the I/O engine's operations go to the engine.
    func reap(into batch: inout [Completion]) { shared.reap(into: &batch) }
}
