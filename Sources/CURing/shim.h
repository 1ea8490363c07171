// liburing from Debian's liburing-dev: its static inline helpers (io_uring_get_sqe,
// io_uring_prep_read, ...) are callable from Swift as they are.
// Glibc's feature macros are settled by the first header: include the system headers here
// before liburing.h, whose own `#define _XOPEN_SOURCE 500` would otherwise lay fd_set out with
// `fds_bits` where every other C module of Ferry (CFerrySys) has `__fds_bits`, and Clang
// refuses the two definitions once both modules meet in one Swift module (on a clean build).
#include <sys/types.h>
#include <sys/select.h>
#include <signal.h>
#include <sched.h>
#include <liburing.h>
#include <string.h>
#include <poll.h>

// Debian 12's headers predate FUSE-over-io_uring; what the FUSE rings need from an SQE that
// Swift cannot reach (anonymous unions, the SQE128 command area) is set here. The FUSE layouts
// themselves live in FerryProtocol (URingABI.swift, protocol/fuse-uring.md).

/// A ring for FUSE commands: 128-byte SQEs (the command area), a CQ of `cq_entries`, and
/// submission that goes on past a failing SQE.
static inline int ferry_uring_init_sqe128(unsigned entries, unsigned cq_entries, struct io_uring *ring) {
    struct io_uring_params params;
    memset(&params, 0, sizeof params);
    params.flags = IORING_SETUP_SQE128 | IORING_SETUP_CQSIZE | IORING_SETUP_SUBMIT_ALL;
    params.cq_entries = cq_entries;
    return io_uring_queue_init_params(entries, ring, &params);
}

/// Fills a 128-byte SQE as IORING_OP_URING_CMD `cmd_op` on fixed file `fixed_index`; `iov`
/// (may be NULL) becomes addr/len = 2. Returns the 80-byte command area, zeroed.
static inline void *ferry_uring_prep_cmd(struct io_uring_sqe *sqe, unsigned cmd_op, int fixed_index,
                                         const struct iovec *iov, unsigned long long user_data) {
    memset(sqe, 0, 128);
    sqe->opcode = IORING_OP_URING_CMD;
    sqe->flags = IOSQE_FIXED_FILE;
    sqe->fd = fixed_index;
    sqe->cmd_op = cmd_op;
    if (iov) {
        sqe->addr = (unsigned long long)(uintptr_t)iov;
        sqe->len = 2;
    }
    sqe->user_data = user_data;
    return sqe->cmd;
}

