import CURing
import FerrySystem
import Glibc

/// One io_uring instance (liburing's `struct io_uring`): the only place the I/O core touches
/// submission and completion queue entries. Not thread-safe: one thread owns a ring.
final class IORing {
    private let ring: UnsafeMutablePointer<io_uring>
    /// Submission queue entries.
    let entries: Int
    /// The entry prepared last while it is not yet submitted, and the buffer it reads into when
    /// it is a one-buffer readv (`linkLastRead`).
    private var lastPrepared: UnsafeMutablePointer<io_uring_sqe>?
    private var lastReadBuffer: UnsafeMutableRawPointer?

    /// Sets up a ring with `entries` submission slots (completion queue twice that).
    init(entries: Int) throws(Errno) {
        ring = .allocate(capacity: 1)
        ring.initialize(to: io_uring())
        var params = io_uring_params()
        params.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_CLAMP
        var result = io_uring_queue_init_params(UInt32(entries), ring, &params)
        if result == -EINVAL {   // before Linux 6.0: no SINGLE_ISSUER
            params = io_uring_params()
            params.flags = IORING_SETUP_CLAMP
            result = io_uring_queue_init_params(UInt32(entries), ring, &params)
        }
        guard result == 0 else {
            ring.deallocate()
            throw Errno(rawValue: -result)
        }
        self.entries = entries
    }

    /// Sets up a ring whose submissions are 128 bytes (the command area of IORING_OP_URING_CMD)
    /// with room for `entries` submissions and `completions` completions, submission going on
    /// past a failing entry (IORING_SETUP_SQE128 | CQSIZE | SUBMIT_ALL): the ring of a FUSE
    /// queue, which carries its commands and its I/O operations (`SharedRing`).
    init(entries: Int, completions: Int) throws(Errno) {
        ring = .allocate(capacity: 1)
        ring.initialize(to: io_uring())
        let result = ferry_uring_init_sqe128(UInt32(entries), UInt32(completions), ring)
        guard result == 0 else {
            ring.deallocate()
            throw Errno(rawValue: -result)
        }
        self.entries = entries
    }

    deinit {
        io_uring_queue_exit(ring)
        ring.deallocate()
    }

    /// Signals `eventFD` whenever a completion is posted. (Not the _async registration: that
    /// signals only completions of io_uring's worker threads, never an O_DIRECT completion run
    /// as task work, and a thread sleeping elsewhere would not hear of it.)
    func registerEventFD(_ eventFD: Int32) throws(Errno) {
        let result = io_uring_register_eventfd(ring, eventFD)
        guard result == 0 else { throw Errno(rawValue: -result) }
    }

    /// Turns the registered eventfd's signal on or off (a flag in the shared completion ring, no
    /// system call). Returns false where the kernel has no such flag (before Linux 5.8): the
    /// eventfd then signals every completion.
    @discardableResult
    func signalCompletions(_ enabled: Bool) -> Bool {
        io_uring_cq_eventfd_toggle(ring, enabled) == 0
    }

    /// Whether completions are waiting to be drained.
    var hasCompletions: Bool { io_uring_cq_ready(ring) > 0 }

    /// Fills the next free submission entry with `operation`, tagged `tag`; false if the
    /// submission queue is full (flush first).
    func prepare(_ operation: IOOperation, tag: UInt64) -> Bool {
        guard let sqe = io_uring_get_sqe(ring) else { return false }
        switch operation {
        case let .read(fd, offset, buffer):
            io_uring_prep_read(sqe, fd, buffer.baseAddress, UInt32(buffer.count), UInt64(offset))
        case let .write(fd, offset, data, _):
            io_uring_prep_write(sqe, fd, data.baseAddress, UInt32(data.count), UInt64(offset))
        case let .readv(fd, offset, vectors):
            io_uring_prep_readv(sqe, fd, vectors.base, UInt32(vectors.count), UInt64(offset))
            if vectors.count == 1 { lastReadBuffer = vectors.base[0].iov_base }
        case let .writev(fd, offset, vectors, _):
            io_uring_prep_writev(sqe, fd, vectors.base, UInt32(vectors.count), UInt64(offset))
        case let .fsync(fd, dataOnly):
            io_uring_prep_fsync(sqe, fd, dataOnly ? UInt32(IORING_FSYNC_DATASYNC) : 0)
        case let .fallocate(fd, mode, offset, length):
            io_uring_prep_fallocate(sqe, fd, mode, off_t(offset), off_t(length))
        }
        io_uring_sqe_set_data64(sqe, tag)
        lastPrepared = sqe
        if case .readv = operation {} else { lastReadBuffer = nil }
        return true
    }

    /// Fills the next free submission entry with a one-shot poll of `fd` for input, tagged
    /// `tag`; false if the submission queue is full (flush first). On either kind of ring: a
    /// poll reads only an entry's first 64 bytes, which the prep call fills in full.
    func preparePoll(fd: Int32, tag: UInt64) -> Bool {
        guard let sqe = io_uring_get_sqe(ring) else { return false }
        lastPrepared = sqe
        lastReadBuffer = nil
        io_uring_prep_poll_add(sqe, fd, UInt32(POLLIN))
        io_uring_sqe_set_data64(sqe, tag)
        return true
    }

    /// Makes the entry prepared last start the one prepared next only once it succeeded in full
    /// (IOSQE_IO_LINK: a failure or a short read cancels the next with -ECANCELED), when that
    /// entry is a one-buffer readv into `buffer`, not yet submitted, and one more entry fits.
    /// Returns whether it did; the caller must then prepare the next entry before any submit.
    func linkLastRead(into buffer: UnsafeMutableRawPointer) -> Bool {
        guard let sqe = lastPrepared, lastReadBuffer == buffer, io_uring_sq_space_left(ring) >= 1 else { return false }
        sqe.pointee.flags |= UInt8(1 << IOSQE_IO_LINK_BIT)
        return true
    }

    /// Registers `fd` as fixed file 0.
    func registerFixedFile(_ fd: Int32) throws(Errno) {
        var files = [fd]
        let result = io_uring_register_files(ring, &files, 1)
        guard result == 0 else { throw Errno(rawValue: -result) }
    }

    /// Fills the next free (128-byte) submission entry as IORING_OP_URING_CMD `command` on fixed
    /// file 0, naming `iovecs` (two, or nil), tagged `tag`; returns its 80-byte command area,
    /// zeroed, or nil when the submission queue is full. Only on a ring made with
    /// `init(entries:completions:)`.
    func prepareCommand(_ command: UInt32, iovecs: UnsafePointer<iovec>?, tag: UInt64) -> UnsafeMutableRawPointer? {
        guard let sqe = io_uring_get_sqe(ring) else { return nil }
        lastPrepared = sqe
        lastReadBuffer = nil
        return ferry_uring_prep_cmd(sqe, command, 0, iovecs, tag)
    }

    /// Hands every prepared entry to the kernel and sleeps until a completion is ready (one
    /// io_uring_enter); returns the entries submitted or -errno (EINTR: a signal).
    func submitAndWaitResult() -> Int32 {
        lastPrepared = nil
        return io_uring_submit_and_wait(ring, 1)
    }

    /// Hands every prepared entry to the kernel and sleeps until `count` completions are ready
    /// (counting those already there) or `timeout` nanoseconds passed, in one io_uring_enter;
    /// returns the entries submitted or -errno (ETIME: the time ran out, EINTR: a signal).
    func submitAndWait(count: Int, timeout: Int) -> Int32 {
        lastPrepared = nil
        var cqe: UnsafeMutablePointer<io_uring_cqe>?
        var ts = __kernel_timespec(tv_sec: 0, tv_nsec: Int64(timeout))
        return io_uring_submit_and_wait_timeout(ring, &cqe, UInt32(count), &ts, nil)
    }

    /// Entries prepared and not yet handed to the kernel.
    var unsubmitted: Int { Int(io_uring_sq_ready(ring)) }

    /// Hands every prepared entry to the kernel (io_uring_enter); returns how many it took, or
    /// the errno (EINTR, EAGAIN and EBUSY mean "try again later").
    func submit() -> Result<Int, Errno> {
        lastPrepared = nil
        let result = io_uring_submit(ring)
        return result >= 0 ? .success(Int(result)) : .failure(Errno(rawValue: -result))
    }

    /// Takes every completion that is ready, in order: (tag, result).
    func drain(_ body: (UInt64, Int32) -> Void) -> Int {
        var count = 0
        var cqe: UnsafeMutablePointer<io_uring_cqe>?
        while io_uring_peek_cqe(ring, &cqe) == 0, let entry = cqe {
            let tag = entry.pointee.user_data, result = entry.pointee.res
            io_uring_cqe_seen(ring, entry)
            body(tag, result)
            count += 1
        }
        return count
    }

    /// Hands every prepared entry to the kernel and sleeps until at least one completion is
    /// ready, in one io_uring_enter (EINTR ends the wait early).
    func submitAndWait() {
        lastPrepared = nil
        _ = io_uring_submit_and_wait(ring, 1)   // leaves the entries for `drain`
    }
}
