import CURing
import FerryProtocol
import FerrySystem
import Glibc

/// One io_uring with 128-byte SQEs that carries FUSE ring commands (IORING_OP_URING_CMD on the
/// /dev/fuse descriptor) and polls; the only place the transport touches liburing's pointers.
/// Owned and used by one thread.
final class CommandRing {
    /// One completion: what was submitted (`userData`) and its result (>= 0, or -errno).
    struct Completion {
        var userData: UInt64
        var result: Int32
    }

    private let ring: UnsafeMutablePointer<io_uring>

    /// A ring with room for `entries` submissions and `completions` completions.
    init(entries: UInt32, completions: UInt32) throws(Errno) {
        ring = UnsafeMutablePointer<io_uring>.allocate(capacity: 1)
        ring.initialize(to: io_uring())
        let rc = ferry_uring_init_sqe128(entries, completions, ring)
        guard rc == 0 else {
            ring.deallocate()
            throw Errno(rawValue: -rc)
        }
    }

    deinit {
        io_uring_queue_exit(ring)
        ring.deallocate()
    }

    /// Registers `fd` as fixed file 0 (the /dev/fuse descriptor the commands go to).
    func registerFixedFile(_ fd: Int32) throws(Errno) {
        var files = [fd]
        let rc = io_uring_register_files(ring, &files, 1)
        guard rc == 0 else { throw Errno(rawValue: -rc) }
    }

    /// Queues a FUSE ring command on fixed file 0; false when the submission queue is full.
    /// `iovecs` (two: header and payload buffer) is needed by REGISTER only and must stay
    /// valid until the kernel has taken the command.
    func queueCommand(_ command: FUSERingABI.Command, iovecs: UnsafePointer<iovec>?, commitID: UInt64,
                      queueID: UInt16, userData: UInt64) -> Bool {
        guard let sqe = io_uring_get_sqe(ring) else { return false }
        let area = ferry_uring_prep_cmd(sqe, command.rawValue, 0, iovecs, userData)!
        area.storeBytes(of: UInt64(0).littleEndian, toByteOffset: FUSERingABI.commandFlagsOffset, as: UInt64.self)
        area.storeBytes(of: commitID.littleEndian, toByteOffset: FUSERingABI.commandCommitIDOffset, as: UInt64.self)
        area.storeBytes(of: queueID.littleEndian, toByteOffset: FUSERingABI.commandQueueIDOffset, as: UInt16.self)
        return true
    }

    /// Queues a one-shot wait for `fd` to become readable; false when the queue is full.
    func queuePollIn(_ fd: Int32, userData: UInt64) -> Bool {
        guard let sqe = io_uring_get_sqe(ring) else { return false }
        ferry_uring_prep_poll_in(sqe, fd, userData)
        return true
    }

    /// Submits what is queued; returns the number submitted or -errno.
    func submit() -> Int32 { io_uring_submit(ring) }

    /// Submits what is queued and sleeps until at least one completion is there; -errno on
    /// failure (EINTR: a signal).
    func submitAndWait() -> Int32 { io_uring_submit_and_wait(ring, 1) }

    /// Moves every completion that is ready into `batch` (appending), without waiting.
    func reap(into batch: inout [Completion]) {
        var cqe: UnsafeMutablePointer<io_uring_cqe>?
        while io_uring_peek_cqe(ring, &cqe) == 0, let completion = cqe {
            batch.append(Completion(userData: completion.pointee.user_data, result: completion.pointee.res))
            io_uring_cqe_seen(ring, completion)
        }
    }
}
